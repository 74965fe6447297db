"""`lw reuse` end to end on a small real market: packages submitted, searched, reused in workers."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

import badpackages as bp
from learnware_cli.errors import EXIT_USAGE, InputError
from learnware_cli.experiment.synthetic import make_regions, sample_mixture
from learnware_cli.market.store import Market
from learnware_cli.market.store import parse_learnware_ref
from learnware_cli.reuse.market_models import refs_from_search_json

DIM = 5
K = 20
N_TRAIN = 400


def _write_csv(path, arr) -> str:
    np.savetxt(path, np.asarray(arr).reshape(len(arr), -1), delimiter=",")
    return str(path)


def _developer_zip(folder, region, seed: int, gamma: float):
    """What a developer does: train on their region, fit the RKME, pack."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    from learnware_cli.market.pack import pack_sklearn
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.rkme import fit_rkme

    folder.mkdir()
    rng = np.random.default_rng(seed)
    x = region.sample(N_TRAIN, rng)
    with threadpool_limits(1):  # OpenMP threads fighting JAX's pool made this fit 10x slower
        model = HistGradientBoostingRegressor(max_iter=50, random_state=0).fit(x, region.target(x))
    joblib.dump(model, folder / "model.joblib")
    fit_rkme(x, k=K, gamma=gamma, seed=seed).save(folder / "rkme.json")
    semantic = build_semantic(
        name=f"region {seed} regressor", description="synthetic region", data="Table", task="Regression",
        library="Scikit-learn", scenarios=["Business"], license="MIT", input_dim=DIM, output_dim=1,
    )
    return pack_sklearn(folder / "model.joblib", folder / "rkme.json", semantic, folder / "learnware.zip")


def _add_numpy_learnware(market: Market, folder, init_code: str) -> str:
    """Store a tiny numpy-model package directly (the submit checks would rightly refuse it).

    Its RKME sits far from every region, so searches never pick it.
    """
    from learnware_cli.rkme import RKMESpec

    folder.mkdir()
    spec = RKMESpec(z=np.full((K, DIM), 100.0) + np.arange(K)[:, None], beta=np.full(K, 1.0 / K), gamma=market.gamma)
    spec.save(folder / "rkme.json")
    package = bp.write_zip(folder / "package.zip", bp.members(**{"__init__.py": init_code, "rkme.json": json.dumps(spec.to_json_dict())}))
    semantic = bp.semantic(task="Regression", output_dim=1)
    record = {"input_dim": DIM, "output_dim": 1, "task": "Regression", "K": K}
    entry, _ = market.add_version({"package.zip": package, "rkme.json": folder / "rkme.json"}, semantic, record)
    return entry["id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from learnware_cli.market.submit import submit_packages

    tmp = tmp_path_factory.mktemp("reuse-cli")
    market = Market.create(tmp / "market", k=K)
    regions = make_regions(3, DIM, seed=3)
    zips = [_developer_zip(tmp / f"dev{i}", region, seed=i, gamma=market.gamma) for i, region in enumerate(regions)]
    outcomes = submit_packages(market, zips)
    assert all(o.accepted for o in outcomes), [o.reason for o in outcomes]
    ids = [o.id for o in outcomes]
    raiser = _add_numpy_learnware(market, tmp / "raiser", bp.numpy_model(body="raise ValueError('bad predict')"))
    crasher = _add_numpy_learnware(market, tmp / "crasher", bp.numpy_model(prelude="raise RuntimeError('boom at import')\n"))

    # the user: half their rows from region 0, half from region 1
    x, y, _ = sample_mixture(regions[:2], [0.5, 0.5], 300, np.random.default_rng(10))
    x_lab, y_lab, _ = sample_mixture(regions[:2], [0.5, 0.5], 80, np.random.default_rng(11))
    files = {
        "user": _write_csv(tmp / "user.csv", x),
        "y": _write_csv(tmp / "y.csv", y),
        "labeled_x": _write_csv(tmp / "labeled_x.csv", x_lab),
        "labeled_y": _write_csv(tmp / "labeled_y.csv", y_lab),
    }
    return {"market": str(market.root), "tmp": tmp, "ids": ids, "raiser": raiser, "crasher": crasher, **files}


@pytest.fixture(scope="module")
def found(world):
    """`lw search --data user.csv --json > found.json` (run once, in-process)."""
    from learnware_cli.cli.app import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["search", "--market", world["market"], "--data", world["user"], "-k", "3", "--json"])
    assert code == 0
    path = world["tmp"] / "found.json"
    path.write_text(buffer.getvalue())
    return path, json.loads(buffer.getvalue())


# --------------------------------------------------------------------------- library pieces


def test_parse_learnware_ref():
    assert parse_learnware_ref("00000003@2") == ("00000003", 2)
    assert parse_learnware_ref("00000003") == ("00000003", None)
    for bad in ("@2", "00000003@", "00000003@x", "00000003@0"):
        with pytest.raises(InputError):
            parse_learnware_ref(bad)


def test_refs_from_search_json_prefers_the_mixture():
    single = [{"id": "a", "version": 1}, {"id": "b", "version": 2}]
    mixture = {"learnwares": [{"id": "b", "version": 2, "weight": 0.7}, {"id": "c", "version": 1, "weight": 0.3}]}
    assert refs_from_search_json({"single": single, "mixture": mixture}) == [("b", 2, 0.7), ("c", 1, 0.3)]
    assert refs_from_search_json({"single": single, "mixture": None}) == [("a", 1, 1.0), ("b", 2, 1.0)]
    for bad in ({"single": [], "mixture": None}, {"ok": False, "error": "x", "message": "m"}, [1, 2]):
        with pytest.raises(InputError):
            refs_from_search_json(bad)


# --------------------------------------------------------------------------- the command


def test_job_selector_on_search_mixture_beats_the_top_learnware(world, found, lw_json):
    path, doc = found
    assert {m["id"] for m in doc["mixture"]["learnwares"]} >= set(world["ids"][:2])
    code, mixed = lw_json("reuse", "--market", world["market"], "--from", path, "--data", world["user"],
                          "--method", "job-selector", "--evaluate", world["y"])
    assert code == 0, mixed
    assert mixed["ok"] and mixed["method"] == "job-selector" and mixed["rows"] == 300 and mixed["failures"] == []
    assert mixed["metric"]["name"] == "mse"
    assert {d["id"] for d in mixed["learnwares"] if d["used"]} >= set(world["ids"][:2])

    top = doc["single"][0]["id"]
    code, alone = lw_json("reuse", "--market", world["market"], "--learnware", top, "--data", world["user"], "--evaluate", world["y"])
    assert code == 0 and alone["method"] == "single", alone
    assert [d["id"] for d in alone["learnwares"]] == [top]
    # the top learnware knows only half the user's rows; routing gets both halves right
    assert mixed["metric"]["value"] < 0.5 * alone["metric"]["value"], (mixed["metric"], alone["metric"])


def test_named_version_writes_one_prediction_per_row(world, lw):
    out = world["tmp"] / "pred" / "pred.csv"
    code, stdout, stderr = lw("reuse", "--market", world["market"], "--learnware", f"{world['ids'][0]}@1",
                              "--data", world["user"], "--out", out)
    assert code == 0, stderr
    assert f"written to {out}" in " ".join(stdout.split())
    pred = np.loadtxt(out, delimiter=",")
    assert pred.shape == (300,) and np.all(np.isfinite(pred))


def test_method_needing_labels_without_them_is_a_usage_error(world, lw):
    code, stdout, stderr = lw("reuse", "--market", world["market"], "--learnware", world["ids"][0],
                              "--data", world["user"], "--method", "ensemble-pruning", "--out", world["tmp"] / "x.csv")
    assert code == EXIT_USAGE and stdout == ""
    assert "ensemble-pruning" in stderr and "--labeled" in stderr and len(stderr.strip().splitlines()) == 1


def test_unknown_version_is_not_found(world, lw_json):
    code, doc = lw_json("reuse", "--market", world["market"], "--learnware", f"{world['ids'][0]}@9",
                        "--data", world["user"], "--out", world["tmp"] / "x.csv")
    assert code == 4 and doc["error"] == "not-found"


def test_failing_learnwares_are_reported_and_skipped(world, lw_json):
    good, raiser, crasher = world["ids"][0], world["raiser"], world["crasher"]
    code, doc = lw_json("reuse", "--market", world["market"], "--learnware", raiser, "--learnware", crasher,
                        "--learnware", good, "--method", "average", "--data", world["user"], "--evaluate", world["y"])
    assert code == 0, doc
    reasons = {f["id"]: f["reason"] for f in doc["failures"]}
    assert set(reasons) == {raiser, crasher} and all(f["version"] == 1 for f in doc["failures"])
    assert "bad predict" in reasons[raiser] and "boom at import" in reasons[crasher]
    assert [d["id"] for d in doc["learnwares"] if d["used"]] == [good]
    assert doc["metric"]["value"] > 0


def test_nothing_left_is_a_one_line_error(world, lw):
    code, _, stderr = lw("reuse", "--market", world["market"], "--learnware", world["crasher"], "--data", world["user"],
                         "--out", world["tmp"] / "x.csv")
    assert code == EXIT_USAGE and "boom at import" in stderr


def test_user_ensemble_with_labels(world, lw):
    code, stdout, stderr = lw("reuse", "--market", world["market"], "--learnware", world["ids"][0], "--learnware", world["ids"][1],
                              "--labeled", world["labeled_x"], world["labeled_y"], "--data", world["user"], "--evaluate", world["y"])
    assert code == 0, stderr
    text = " ".join(stdout.split())
    assert "user-ensemble" in text and "mse:" in text


def test_job_selector_weighs_named_learnwares_by_the_users_rkme(world, found, lw_json):
    """With --learnware (no search weights) the user's RKME is fitted locally to weigh them."""
    _, doc = found
    top = doc["single"][0]["id"]
    named = [arg for lid in world["ids"] for arg in ("--learnware", lid)]  # includes region 2, which the user lacks
    code, routed = lw_json("reuse", "--market", world["market"], *named, "--data", world["user"],
                           "--method", "job-selector", "--evaluate", world["y"])
    assert code == 0, routed
    shares = routed["routing"]
    assert set(shares) == set(world["ids"]) and sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert shares[world["ids"][2]] <= 0.06  # only the minimum herd for the region the user lacks
    code, alone = lw_json("reuse", "--market", world["market"], "--learnware", top, "--data", world["user"], "--evaluate", world["y"])
    assert routed["metric"]["value"] < 0.5 * alone["metric"]["value"], (routed["metric"], alone["metric"])
