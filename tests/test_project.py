"""Promises about the project itself: how its tests treat missing reference data."""

from __future__ import annotations

import pytest

from conftest import load_reference


def test_missing_reference_figures_fail_in_ci_and_skip_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have ../shared"):
        load_reference("mmd.json", tmp_path)
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="not checked"):
        load_reference("mmd.json", tmp_path)
