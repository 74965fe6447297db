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


def _add_numpy_learnware(market: Market, folder, init_code: str, task: str = "Regression", output_dim: int = 1) -> str:
    """Store a tiny numpy-model package directly (the submit checks would rightly refuse it).

    Its RKME sits far from every region, so searches never pick it.
    """
    from learnware_cli.rkme import RKMESpec

    folder.mkdir()
    spec = RKMESpec(z=np.full((K, DIM), 100.0) + np.arange(K)[:, None], beta=np.full(K, 1.0 / K), gamma=market.gamma)
    spec.save(folder / "rkme.json")
    package = bp.write_zip(folder / "package.zip", bp.members(**{"__init__.py": init_code, "rkme.json": json.dumps(spec.to_json_dict())}))
    semantic = bp.semantic(task=task, output_dim=output_dim)
    record = {"input_dim": DIM, "output_dim": output_dim, "task": task, "K": K}
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


def test_refs_from_search_json_use_and_k():
    single = [{"id": "a", "version": 1}, {"id": "b", "version": 2}, {"id": "c", "version": 1}]
    mixture = {"learnwares": [{"id": "b", "version": 2, "weight": 0.7}, {"id": "c", "version": 1, "weight": 0.3}]}
    doc = {"single": single, "mixture": mixture}
    assert refs_from_search_json(doc, use="ranking") == [("a", 1, 1.0), ("b", 2, 1.0), ("c", 1, 1.0)]
    assert refs_from_search_json(doc, use="ranking", k=2) == [("a", 1, 1.0), ("b", 2, 1.0)]
    assert refs_from_search_json(doc, k=1) == [("b", 2, 0.7)]
    assert refs_from_search_json(doc, use="mixture", k=5) == [("b", 2, 0.7), ("c", 1, 0.3)]
    with pytest.raises(InputError, match="no mixture"):
        refs_from_search_json({"single": single, "mixture": None}, use="mixture")
    for bad in ({"use": "best"}, {"k": 0}, {"k": -1}, {"k": True}):
        with pytest.raises(InputError):
            refs_from_search_json(doc, **bad)
    with pytest.raises(InputError, match="bad weight"):
        refs_from_search_json({"single": single, "mixture": {"learnwares": [{"id": "b", "weight": -0.5}]}})


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
    out = world["tmp"] / "pred" / "pred.csv"  # a missing folder is created
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
                              "--labeled", world["labeled_x"], world["labeled_y"], "--data", world["user"], "--evaluate", world["y"],
                              "--method", "user-ensemble")
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


# --------------------------------------------------------------------------- auto, --use/-k, flags checked first


def test_labels_without_a_method_choose_by_cross_validation(world, found, lw, lw_json):
    path, _ = found
    args = ["reuse", "--market", world["market"], "--from", path, "--data", world["user"],
            "--labeled", world["labeled_x"], world["labeled_y"], "--evaluate", world["y"]]
    code, doc = lw_json(*args)
    assert code == 0, doc
    auto = doc["auto"]
    assert doc["method"] == "auto" and auto["metric"] == "mse" and auto["folds"] == 5 and auto["labeled_rows"] == 80
    assert set(auto["cv"]) == {"single", "average", "job-selector", "ensemble-pruning", "feature-augment", "user-ensemble"}
    assert auto["chosen"] == min(auto["cv"], key=auto["cv"].get)
    assert "cross-validated MSE" in auto["reason"]
    code, stdout, stderr = lw(*args)
    assert code == 0, stderr
    text = " ".join(stdout.split())
    assert f"auto chose {auto['chosen']}" in text and "cv MSE" in text and "<- chosen" in text
    for method in auto["cv"]:
        assert method in text


def test_few_labels_fall_back_and_say_so(world, lw_json):
    few_x, few_y = world["tmp"] / "few_x.csv", world["tmp"] / "few_y.csv"
    np.savetxt(few_x, np.loadtxt(world["labeled_x"], delimiter=",")[:5], delimiter=",")
    np.savetxt(few_y, np.loadtxt(world["labeled_y"], delimiter=",")[:5], delimiter=",")
    code, doc = lw_json("reuse", "--market", world["market"], "--learnware", world["ids"][0], "--learnware", world["ids"][1],
                        "--labeled", few_x, few_y, "--data", world["user"], "--evaluate", world["y"])
    assert code == 0, doc
    assert doc["auto"]["chosen"] == "job-selector" and doc["auto"]["cv"] == {} and doc["auto"]["folds"] == 0
    assert "only 5 labeled rows" in doc["auto"]["reason"]


def test_use_and_k_pick_from_the_search_result(world, found, lw_json):
    path, doc = found
    base = ["reuse", "--market", world["market"], "--from", path, "--data", world["user"], "--evaluate", world["y"]]
    code, top1 = lw_json(*base, "--use", "ranking", "-k", "1")
    assert code == 0, top1
    assert [d["id"] for d in top1["learnwares"]] == [doc["single"][0]["id"]] and top1["method"] == "single"
    code, top3 = lw_json(*base, "--use", "ranking", "-k", "3", "--method", "average")
    assert code == 0, top3
    assert [d["id"] for d in top3["learnwares"]] == [d["id"] for d in doc["single"][:3]]
    assert all(d["weight"] == 1.0 for d in top3["learnwares"])
    code, mixed = lw_json(*base, "-k", "1")
    assert code == 0, mixed
    assert [d["id"] for d in mixed["learnwares"]] == [doc["mixture"]["learnwares"][0]["id"]]


@pytest.fixture
def no_workers(monkeypatch):
    """Fail loudly (exit 1, not 2) if any model worker would start."""
    import learnware_cli.reuse.market_models as market_models

    def refuse(*args, **kwargs):
        raise AssertionError("workers were started before the flags were checked")

    monkeypatch.setattr(market_models, "open_learnwares", refuse)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--timeout", "-1"], "must be a positive number"),
        (["--timeout", "0"], "must be a positive number"),
        (["--timeout", "nan"], "must be a positive number"),
        (["--from", "{found}", "-k", "0"], "-k"),
        (["--from", "{found}", "--use", "best"], "--use must be ranking or mixture"),
        (["--learnware", "{id}", "-k", "2"], "use them with --from"),
        (["--learnware", "{id}", "--labeled", "{labeled_x}", "{y}"], "80 rows but"),
        (["--learnware", "{id}", "--labeled", "{labeled_x}", "{labeled_y}", "--evaluate", "{labeled_y}"], "80 rows but"),
        (["--learnware", "{id}", "--out", "{tmp}"], "is a folder"),
        (["--learnware", "{id}", "--out", "{user}/pred.csv"], "is not a folder"),
        (["--learnware", "{id}", "--out", "{user}/deeper/pred.csv"], "is not a folder"),
    ],
)
def test_bad_flag_values_are_one_line_before_any_work(world, found, lw, no_workers, extra, expected):
    values = {**world, "found": found[0], "id": world["ids"][0]}
    args = [a.format(**values) for a in extra]
    if "--from" not in args and "--learnware" not in args:
        args += ["--learnware", world["ids"][0]]
    if "--out" not in args and "--evaluate" not in args:
        args += ["--out", world["tmp"] / "never.csv"]
    code, stdout, stderr = lw("reuse", "--market", world["market"], "--data", world["user"], *args)
    assert code == EXIT_USAGE, (code, stderr)
    lines = stderr.strip().splitlines()
    assert stdout == "" and (len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("Try "))), lines  # + a usage hint
    assert expected in lines[0], lines


def test_missing_and_infinite_cells_are_counted(world, lw, lw_json):
    x = np.loadtxt(world["user"], delimiter=",")
    x[0, 1] = x[5, 2] = x[7, 0] = np.nan
    x[9, 4] = np.inf
    holes = world["tmp"] / "holes.csv"
    np.savetxt(holes, x, delimiter=",")
    lab = np.loadtxt(world["labeled_x"], delimiter=",")
    lab[3, 3] = -np.inf
    lab_holes = world["tmp"] / "lab_holes.csv"
    np.savetxt(lab_holes, lab, delimiter=",")
    args = ["reuse", "--market", world["market"], "--learnware", world["ids"][0], "--data", holes, "--evaluate", world["y"]]
    code, doc = lw_json(*args)
    assert code == 0, doc
    assert doc["replaced_cells"] == 4 and "labeled_replaced_cells" not in doc and np.isfinite(doc["metric"]["value"])
    code, doc = lw_json(*args, "--labeled", lab_holes, world["labeled_y"], "--method", "feature-augment")
    assert code == 0, doc
    assert doc["replaced_cells"] == 4 and doc["labeled_replaced_cells"] == 1
    code, stdout, _ = lw(*args)
    assert code == 0 and f"4 missing or infinite cell(s) of {holes} replaced by column means" in " ".join(stdout.split())
    code, doc = lw_json("reuse", "--market", world["market"], "--learnware", world["ids"][0], "--data", world["user"], "--evaluate", world["y"])
    assert doc["replaced_cells"] == 0


def test_average_refuses_classifiers_with_different_class_counts(world, lw):
    market = Market.open(world["market"])
    two = _add_numpy_learnware(market, world["tmp"] / "two-classes", bp.numpy_model(body="return np.zeros(len(X), dtype=np.int64)"),
                               task="Classification", output_dim=2)
    three = _add_numpy_learnware(market, world["tmp"] / "three-classes", bp.numpy_model(body="return np.full(len(X), 2)"),
                                 task="Classification", output_dim=3)
    code, stdout, stderr = lw("reuse", "--market", world["market"], "--learnware", two, "--learnware", three,
                              "--method", "average", "--data", world["user"], "--out", world["tmp"] / "mixed.csv")
    assert code == EXIT_USAGE and stdout == "", stderr
    message = " ".join(stderr.split())
    assert len(stderr.strip().splitlines()) == 1
    assert f"{two}: 2" in message and f"{three}: 3" in message
