"""`lw search --labeled X y`: the top candidates run on the user's labeled rows and are re-ranked by measured loss.

The market holds small numpy regressors (fast to start), each a different
linear function of the same five inputs, with RKMEs placed so that the
learnware the user's labels come from ranks *last* by specification: only the
measured loss can put it first. One more learnware computes that function on
its columns in another order (its semantic spec says so): it is right only
when the user's columns are read by market feature (a CSV header).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import badpackages as bp
from learnware_cli.errors import EXIT_USAGE, InputError
from learnware_cli.market.semantic import build_semantic
from learnware_cli.market.store import Market
from learnware_cli.reuse.market_models import refs_from_search_json
from learnware_cli.search.check import best_shares, bootstrap_means, check_candidates, percentile_interval, row_losses

DIM = bp.DIM
K = bp.K
GAMMA = bp.GAMMA
COLUMNS = ["age", "income", "height", "weight", "distance"]
WEIGHTS = {  # name -> (weights on COLUMNS, RKME shift: a larger shift ranks lower by specification)
    "near-a": ([1.0, 0.0, 0.0, 0.0, 0.0], 0.00),
    "near-b": ([0.0, 1.0, 1.0, 0.0, 0.0], 0.05),
    "far-c": ([0.0, 0.0, 0.0, 2.0, -1.0], 0.20),
    "truth": ([0.5, -1.0, 0.0, 2.0, 1.0], 0.30),
}
TRUTH = "truth"
PERMUTATION = [4, 3, 2, 1, 0]  # the "reversed" learnware's column c is the user's column PERMUTATION[c]
N_LABELED = 20


def _semantic(name: str, columns=COLUMNS) -> dict:
    return build_semantic(
        name=name, description="a linear regressor for the check tests", data="Table", task="Regression",
        library="Scikit-learn", scenarios=["Business"], license="MIT", input_dim=DIM, output_dim=1, input_desc=list(columns),
    )


def _add(market: Market, folder, name: str, init_code: str, shift: float, columns=COLUMNS) -> str:
    """Store a numpy-model package directly, its RKME the shared one moved by `shift` along every axis."""
    from learnware_cli.rkme import RKMESpec

    folder.mkdir()
    base = bp.spec_dict()
    spec = RKMESpec(z=np.asarray(base["z"], float) + shift, beta=np.asarray(base["beta"], float), gamma=GAMMA)
    spec.save(folder / "rkme.json")
    semantic = _semantic(name, columns)
    files = bp.members(**{"__init__.py": init_code, "rkme.json": json.dumps(spec.to_json_dict()), "semantic_specification.json": json.dumps(semantic)})
    package = bp.write_zip(folder / "package.zip", files)
    record = {"input_dim": DIM, "output_dim": 1, "task": "Regression", "K": K}
    entry, _ = market.add_version({"package.zip": package, "rkme.json": folder / "rkme.json"}, semantic, record)
    return entry["id"]


def _linear(weights) -> str:
    return bp.numpy_model(body=f"return np.asarray(X, dtype=np.float64) @ np.array({list(map(float, weights))})")


def _write(path, arr, header=None) -> str:
    arr = np.asarray(arr, dtype=float)
    np.savetxt(path, arr.reshape(len(arr), -1), delimiter=",", header=",".join(header) if header else "", comments="")
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from learnware_cli.rkme import RKMESpec

    tmp = tmp_path_factory.mktemp("search-check")
    market = Market.create(tmp / "market", gamma=GAMMA, k=K)
    ids = {name: _add(market, tmp / name, name, _linear(w), shift) for name, (w, shift) in WEIGHTS.items()}
    ids["raiser"] = _add(market, tmp / "raiser", "raiser", bp.numpy_model(body="raise ValueError('bad predict')"), 0.10)
    ids["crasher"] = _add(market, tmp / "crasher", "crasher", bp.numpy_model(prelude="raise RuntimeError('boom at import')\n"), 0.15)
    truth_w = np.asarray(WEIGHTS[TRUTH][0])
    # its column c holds the user's column PERMUTATION[c]; so it weighs them by truth_w[PERMUTATION]
    reversed_columns = [COLUMNS[p] for p in PERMUTATION]
    ids["reversed"] = _add(market, tmp / "reversed", "reversed", _linear(truth_w[PERMUTATION]), 0.40, reversed_columns)

    base = bp.spec_dict()
    user_spec = tmp / "user_spec.json"
    RKMESpec(z=np.asarray(base["z"], float), beta=np.asarray(base["beta"], float), gamma=GAMMA).save(user_spec)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N_LABELED, DIM))
    y = x @ truth_w + 0.05 * rng.normal(size=N_LABELED)
    files = {
        "spec": str(user_spec),
        "x": _write(tmp / "x.csv", x),
        "x_header": _write(tmp / "x_header.csv", x, COLUMNS),
        "y": _write(tmp / "y.csv", y),
        "y_short": _write(tmp / "y_short.csv", y[:-3]),
        "x_wide": _write(tmp / "x_wide.csv", np.hstack([x, x[:, :1]])),
    }
    return {"market": market, "root": str(market.root), "tmp": tmp, "ids": ids, "x_rows": x, "y_rows": y, **files}


@pytest.fixture(scope="module")
def checked_all(world):
    """`lw search --spec ... --labeled x.csv y.csv -k 7 --no-mixture --json`, run once."""
    import contextlib
    import io

    from learnware_cli.cli.app import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["search", "--market", world["root"], "--spec", world["spec"], "-k", "7", "--no-mixture",
                     "--labeled", world["x"], world["y"], "--json"])
    assert code == 0, buffer.getvalue()
    return json.loads(buffer.getvalue())


# --------------------------------------------------------------------------- numerics


def test_row_losses_are_squared_errors_and_zero_one_errors():
    assert row_losses("Regression", [1.0, 2.0, 3.0], [1.0, 4.0, 2.0]).tolist() == [0.0, 4.0, 1.0]
    two = row_losses("Regression", [[0.0, 0.0], [1.0, 1.0]], [[1.0, 3.0], [1.0, 1.0]])
    assert two.tolist() == [5.0, 0.0]  # the mean over the outputs of each row
    assert row_losses("classification", [0, 1, 2, 1], [0, 2, 2, 0]).tolist() == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(InputError):
        row_losses("Regression", [[1.0, 2.0]], [[1.0]])
    with pytest.raises(InputError):
        row_losses("Regression", [1.0, 2.0], [1.0])


def test_bootstrap_is_paired_seeded_and_its_intervals_hold_the_mean():
    rng = np.random.default_rng(0)
    losses = np.stack([0.1 * rng.random(30), rng.random(30), rng.random(30) + 0.05])
    means = bootstrap_means(losses, n_boot=500, seed=3)
    assert means.shape == (3, 500)
    assert np.array_equal(means, bootstrap_means(losses, n_boot=500, seed=3))
    assert not np.array_equal(means, bootstrap_means(losses, n_boot=500, seed=4))
    # paired: a constant shift of one candidate's losses shifts its every resample by exactly that
    shifted = bootstrap_means(losses + np.array([[0.0], [0.0], [1.0]]), n_boot=500, seed=3)
    assert np.allclose(shifted[2] - means[2], 1.0) and np.allclose(shifted[:2], means[:2])
    intervals = percentile_interval(means, 0.9)
    assert np.allclose(intervals[:, 0], np.quantile(means, 0.05, axis=1))
    assert np.all(intervals[:, 0] <= losses.mean(axis=1)) and np.all(losses.mean(axis=1) <= intervals[:, 1])
    shares = best_shares(means)
    assert shares[0] == 1.0 and np.all((0 <= shares) & (shares <= 1))
    # small blocks give the same draws' shape and figures of the same size
    assert bootstrap_means(np.ones((2, 4)), n_boot=7).tolist() == [[1.0] * 7] * 2
    for bad in ({"n_boot": 0}, {"n_boot": 2.5}):
        with pytest.raises(InputError):
            bootstrap_means(losses, **bad)
    with pytest.raises(InputError):
        percentile_interval(means, 1.0)


def test_best_shares_count_ties_for_each():
    means = np.array([[0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    assert best_shares(means).tolist() == pytest.approx([2 / 3, 2 / 3])
    rounding = np.array([[0.3, 0.3], [0.1 + 0.2, 0.2]])  # 0.1 + 0.2 != 0.3 in floating point
    assert best_shares(rounding).tolist() == [0.5, 1.0]


def test_mixed_tasks_are_refused_before_any_model_starts(world):
    candidates = [{"id": world["ids"]["truth"], "version": 1, "task": "Regression"}, {"id": "x", "version": 1, "task": "Classification"}]
    with pytest.raises(InputError, match="mix tasks"):
        check_candidates(world["market"], candidates, world["x_rows"], world["y_rows"])
    with pytest.raises(InputError, match="rows but"):
        check_candidates(world["market"], candidates[:1], world["x_rows"], world["y_rows"][:5])


def test_check_candidates_reports_what_it_cannot_run(world):
    ids = world["ids"]
    candidates = [
        {"id": ids["near-a"], "version": 1, "task": "Regression"},
        {"id": ids[TRUTH], "version": 1},
        {"id": ids["far-c"], "version": 1, "task": "Classification"},  # as stated: not run
        {"id": "99999999", "version": 1},  # no such learnware
    ]
    checked = check_candidates(world["market"], candidates, world["x_rows"], world["y_rows"], task="regression", n_boot=200, seed=1)
    assert [(c["id"], c["spec_rank"]) for c in checked] == [(ids[TRUTH], 2), (ids["near-a"], 1)]
    summary = checked.summary
    assert summary["best"] == {"id": ids[TRUTH], "version": 1} and summary["n_boot"] == 200 and summary["asked"] == 4
    assert checked[0]["best_share"] == summary["best_share"] == 1.0 and checked[1]["best_share"] == 0.0
    reasons = {f["id"]: f["reason"] for f in summary["failures"]}
    assert set(reasons) == {ids["far-c"], "99999999"} and "Classification" in reasons[ids["far-c"]]
    again = check_candidates(world["market"], candidates, world["x_rows"], world["y_rows"], task="regression", n_boot=200, seed=1)
    assert [c["loss_interval"] for c in again] == [c["loss_interval"] for c in checked]  # seeded


# --------------------------------------------------------------------------- the command


def test_the_true_learnware_is_ranked_first_by_measured_loss(world, checked_all):
    ids = world["ids"]
    doc = checked_all
    spec_order = [r["id"] for r in sorted(doc["single"], key=lambda r: r["spec_rank"])]
    assert spec_order[0] == ids["near-a"] and spec_order.index(ids[TRUTH]) >= 4  # last but one by specification
    single = doc["single"]
    assert single[0]["id"] == ids[TRUTH] and single[0]["spec_rank"] == spec_order.index(ids[TRUTH]) + 1
    best = single[0]
    assert best["loss_name"] == "mse" and best["measured_loss"] < 0.01
    lo, hi = best["loss_interval"]
    assert 0 <= lo <= best["measured_loss"] <= hi < 0.01  # tight: the labels are its own outputs plus small noise
    measured = [r for r in single if r["measured_loss"] is not None]
    assert {r["id"] for r in measured} == {ids[n] for n in ("near-a", "near-b", "far-c", TRUTH, "reversed")}
    assert [r["measured_loss"] for r in measured] == sorted(r["measured_loss"] for r in measured)
    for r in measured:
        lo, hi = r["loss_interval"]
        assert lo <= r["measured_loss"] <= hi
        assert 0 <= r["best_share"] <= 1
        assert "score" in r and "mmd2" in r  # the search's own fields are kept
    assert measured[1]["loss_interval"][0] > best["loss_interval"][1]  # the runner-up is clearly worse
    checked = doc["checked"]
    assert checked["best"] == {"id": ids[TRUTH], "version": 1}
    assert checked["best_share"] == 1.0 and 0 <= checked["best_share"] <= 1
    assert checked["rows"] == N_LABELED and checked["candidates"] == 7 and checked["measured"] == 5
    assert checked["loss"] == "mse" and checked["n_boot"] == 1000 and checked["level"] == 0.9


def test_failing_learnwares_are_reported_and_the_others_still_ranked(world, checked_all):
    ids = world["ids"]
    reasons = {f["id"]: f["reason"] for f in checked_all["checked"]["failures"]}
    assert set(reasons) == {ids["raiser"], ids["crasher"]}
    assert "bad predict" in reasons[ids["raiser"]] and "boom at import" in reasons[ids["crasher"]]
    tail = checked_all["single"][-2:]  # the failed ones go last, unmeasured
    assert {r["id"] for r in tail} == set(reasons) and all(r["measured_loss"] is None for r in tail)


def test_the_output_is_valid_input_for_reuse_from(world, checked_all):
    refs = refs_from_search_json(checked_all)
    assert refs[0] == (world["ids"][TRUTH], 1, 1.0) and len(refs) == 7


def test_check_2_runs_only_the_top_two(world, lw_json):
    ids = world["ids"]
    code, doc = lw_json("search", "--market", world["root"], "--spec", world["spec"], "-k", "7", "--no-mixture",
                        "--labeled", world["x"], world["y"], "--check", "2")
    assert code == 0, doc
    assert doc["checked"]["candidates"] == 2 and doc["checked"]["measured"] == 2 and doc["checked"]["failures"] == []
    assert {r["id"] for r in doc["single"][:2]} == {ids["near-a"], ids["near-b"]}
    assert all(r["measured_loss"] is None for r in doc["single"][2:]) and len(doc["single"]) == 7
    assert [r["spec_rank"] for r in doc["single"][2:]] == [3, 4, 5, 6, 7]  # the rest keep the search's order


def test_described_columns_are_read_by_market_feature(world, lw_json):
    """With a header, the learnware on reversed columns reads the user's by feature: as right as the truth."""
    ids = world["ids"]
    code, doc = lw_json("search", "--market", world["root"], "--spec", world["spec"], "-k", "7", "--no-mixture",
                        "--labeled", world["x_header"], world["y"])
    assert code == 0, doc
    losses = {r["id"]: r["measured_loss"] for r in doc["single"]}
    assert losses[ids["reversed"]] == pytest.approx(losses[ids[TRUTH]], abs=1e-9)
    assert {r["id"] for r in doc["single"][:2]} == {ids["reversed"], ids[TRUTH]}
    assert doc["checked"]["best_share"] == 1.0  # the two tie (to rounding) in every resample


def test_human_output_shows_the_table_and_how_sure_it_is(world, lw):
    code, out, err = lw("search", "--market", world["root"], "--spec", world["spec"], "-k", "3", "--no-mixture",
                        "--labeled", world["x"], world["y"], "--check", "3")
    assert code == 0, err
    text = " ".join(out.split())
    assert "re-ranked by their MSE on your 20 labeled rows" in text and "measured MSE [interval]" in text
    assert "spec rank" in text and "% of 1000 resamples" in text and " is best in " in text


@pytest.mark.parametrize(
    "args, words",
    [
        (["--labeled", "{x}", "{y_short}"], ["rows"]),
        (["--labeled", "{x_wide}", "{y}"], ["columns"]),
        (["--check", "2"], ["--labeled"]),
        (["--labeled", "{tmp}", "{y}"], ["image", "tables only"]),
    ],
)
def test_bad_flags_exit_2_with_one_line(world, lw, args, words):
    args = [a.format(**{k: world[k] for k in ("x", "y", "y_short", "x_wide")}, tmp=world["tmp"]) for a in args]
    code, out, err = lw("search", "--market", world["root"], "--spec", world["spec"], *args)
    assert code == EXIT_USAGE and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err


def test_all_candidates_failing_is_one_line_exit_2(world, lw):
    code, out, err = lw("search", "--market", world["root"], "--name", "crasher", "--labeled", world["x"], world["y"])
    assert code == EXIT_USAGE and out == "" and len(err.strip().splitlines()) == 1
    assert "no candidate could be checked" in err and "boom at import" in err


def test_check_below_1_is_refused_while_parsing(world, lw):
    code, out, err = lw("search", "--market", world["root"], "--spec", world["spec"], "--labeled", world["x"], world["y"], "--check", "0")
    assert code == EXIT_USAGE and out == "" and "--check" in err.splitlines()[0]


def test_classifiers_are_measured_by_error_rate(tmp_path):
    market = Market.create(tmp_path / "market", gamma=GAMMA, k=K)
    record = {"input_dim": DIM, "output_dim": bp.N_CLASSES, "task": "Classification", "K": K}
    ids = []
    for name, body in (("flipped", "return (np.asarray(X)[:, 0] <= 0).astype(np.int64)"), ("right", bp.GOOD_BODY)):
        (tmp_path / "rkme.json").write_text(bp.spec_json())
        package = bp.write_zip(tmp_path / f"{name}.zip", bp.members(**{"__init__.py": bp.numpy_model(body=body)}))
        entry, _ = market.add_version({"package.zip": package, "rkme.json": tmp_path / "rkme.json"}, bp.semantic(), record)
        ids.append(entry["id"])
    x = np.random.default_rng(2).normal(size=(30, DIM))
    y = (x[:, 0] > 0).astype(float)  # read from a CSV, labels are floats
    y[:3] = 1 - y[:3]  # three rows that even the right model gets wrong
    checked = check_candidates(market, [{"id": i, "version": 1, "task": "Classification"} for i in ids], x, y)
    assert [c["id"] for c in checked] == [ids[1], ids[0]]
    assert checked[0]["loss_name"] == "error_rate" and checked[0]["measured_loss"] == pytest.approx(0.1)
    assert checked[1]["measured_loss"] == pytest.approx(0.9)
    lo, hi = checked[0]["loss_interval"]
    assert 0 <= lo <= 0.1 <= hi <= 1 and checked.summary["best_share"] == 1.0
