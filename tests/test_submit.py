"""`lw submit` against a real market: rejections leave it untouched, parallel and killed
submitters leave a valid index, reference-format packages are accepted, versions work."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import badpackages as bp
from learnware_cli.errors import EXIT_NOT_FOUND, EXIT_REJECTED
from learnware_cli.market.store import Market
from conftest import assert_spec_stored_once, read_index

# the market-level subset of the corpus: one or more per check (test_checks.py runs every case)
MARKET_CASES = [
    "not-a-zip",
    "dotdot-path",
    "symlink-entry",
    "zip-bomb-ratio",
    "yaml-os-system",
    "bad-semantic-value",
    "nan-spec",
    "spec-wrong-dimension",
    "model-sleeps-forever",
    "model-raises-in-predict",
    "model-prints-megabytes",
    "output-wrong-dim",
]
CASES = {case.name: case for case in bp.BAD_CASES}


def snapshot(root: Path) -> dict:
    """Every path under root with its bytes' digest (folders as None): 'byte-identical' made testable."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = None if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_valid_market(root: Path) -> dict:
    index = read_index(root)
    for entry in index["learnwares"].values():
        for record in entry["versions"]:
            folder = root / record["path"]
            for name in ("package.zip", "semantic.json", "report.json"):
                assert (folder / name).is_file(), f"{folder / name} missing"
            assert not (folder / "rkme.json").exists() and record["spec_file"] == "rkme.json"  # the spec is stored once, in the package
            data = (folder / "package.zip").read_bytes()
            assert hashlib.sha256(data).hexdigest() == record["checksum"]
    return index


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tmp_path_factory.mktemp("submit-corpus")


@pytest.fixture
def market(tmp_path):
    return Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)


@pytest.mark.parametrize("name", MARKET_CASES)
def test_rejected_package_leaves_market_byte_identical(name, corpus, market, lw_json):
    case = CASES[name]
    zip_path = case.build(_fresh(corpus, name))
    before = snapshot(market.root)
    args = ["submit", zip_path, "--market", market.root]
    if "timeout" in case.options:
        args += ["--timeout", case.options["timeout"]]
    code, doc = lw_json(*args)
    assert code == EXIT_REJECTED, doc
    assert doc["ok"] is False and doc["check"] == case.check
    assert case.needle.lower() in doc["message"].lower()
    assert "\n" not in doc["message"]
    assert snapshot(market.root) == before


def _fresh(corpus: Path, name: str) -> Path:
    folder = corpus / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_accepted_package_is_stored_and_listed(corpus, market, lw_json):
    package = bp.good_sklearn_zip(corpus / "good")
    code, doc = lw_json("submit", package, "--market", market.root, "--notes", "first")
    (stored,) = doc["results"]
    assert code == 0 and doc["ok"] and doc["accepted"] == [stored] and stored["id"] == "00000001" and stored["version"] == 1
    assert stored["record"]["input_dim"] == bp.DIM and stored["record"]["notes"] == "first"
    index = assert_valid_market(market.root)
    assert_spec_stored_once(market.root, "00000001", 1, package)  # a table RKME in lw's layout
    assert list(index["learnwares"]) == ["00000001"]
    code, listing = lw_json("list", "--market", market.root, "--tag", "Task=Classification")
    assert code == 0 and [r["id"] for r in listing["learnwares"]] == ["00000001"]
    code, shown = lw_json("show", "1", "--market", market.root)  # short ids are padded
    assert code == 0 and shown["id"] == "00000001" and shown["rkme"]["dim"] == bp.DIM
    assert [c["check"] for c in shown["report"]["passed"]][-1] == "model-output"


def test_beimingwu_package_is_accepted_and_predicts(corpus, market, lw_json, tmp_path):
    from learnware_cli.market.package import extract_package
    from learnware_cli.market.worker import ModelWorker

    package = bp.beimingwu_zip(corpus / "beimingwu")
    code, doc = lw_json("submit", package, "--market", market.root)
    assert code == 0, doc
    assert_spec_stored_once(market.root, "00000001", 1, package)  # under the package's top folder
    stored = market.path(doc["results"][0]["record"]["path"]) / "package.zip"
    folder = extract_package(stored, tmp_path / "unpacked")
    x, _, _ = bp.data(7)
    with ModelWorker(folder, timeout=30) as worker:
        assert worker.predict(x).shape[0] == 7


def test_versions_update_show_and_remove(corpus, market, lw, lw_json):
    first = bp.good_sklearn_zip(corpus / "v1")
    second = bp.good_sklearn_zip(corpus / "v2", task="Classification")
    assert lw_json("submit", first, "--market", market.root)[0] == 0
    code, doc = lw_json("submit", second, "--market", market.root, "--update", "00000001", "--price", "9.5")
    (stored,) = doc["results"]
    assert code == 0 and stored["id"] == "00000001" and stored["version"] == 2 and stored["record"]["price"] == 9.5
    code, versions = lw_json("versions", "00000001", "--market", market.root)
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    code, shown = lw_json("show", "00000001@1", "--market", market.root)
    assert code == 0 and shown["version"]["version"] == 1
    assert lw_json("show", "00000001@7", "--market", market.root)[0] == EXIT_NOT_FOUND
    assert lw_json("submit", second, "--market", market.root, "--update", "00000099")[0] == EXIT_NOT_FOUND
    assert lw_json("remove", "00000001@1", "--market", market.root)[0] == 0
    index = assert_valid_market(market.root)
    assert [v["version"] for v in index["learnwares"]["00000001"]["versions"]] == [2]
    assert not (market.root / "learnwares" / "00000001" / "v1").exists()
    assert lw_json("remove", "00000001", "--market", market.root)[0] == 0
    assert assert_valid_market(market.root)["learnwares"] == {}


def test_bulk_submit_reports_each_package(corpus, market, lw_json):
    good = bp.good_numpy_zip(corpus / "bulk-good")
    bad = CASES["nan-spec"].build(_fresh(corpus, "bulk-bad"))
    code, doc = lw_json("submit", good, bad, good, "--market", market.root)
    assert code == EXIT_REJECTED and doc["ok"] is False
    assert [a["id"] for a in doc["accepted"]] == ["00000001", "00000002"]
    assert [r["check"] for r in doc["rejected"]] == ["spec"]
    assert len(assert_valid_market(market.root)["learnwares"]) == 2
    code, listing = lw_json("list", "--market", market.root, "--limit", "1")
    assert code == 0 and listing["count"] == 2 and [r["id"] for r in listing["learnwares"]] == ["00000001"]


def _submit_process(zip_path: Path, market: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "learnware_cli", "submit", str(zip_path), "--market", str(market), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_parallel_submitters_all_land(corpus, market):
    good = bp.good_numpy_zip(corpus / "parallel")
    procs = [_submit_process(good, market.root) for _ in range(8)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outputs]
    ids = sorted(json.loads(out)["results"][0]["id"] for out, _ in outputs)
    assert ids == [f"{i:08d}" for i in range(1, 9)]
    index = assert_valid_market(market.root)
    assert len(index["learnwares"]) == 8


@pytest.mark.slow
def test_killed_submitter_leaves_a_valid_index(corpus, market, lw_json):
    good = bp.good_numpy_zip(corpus / "killed")
    rng = random.Random(0)
    for _ in range(4):
        proc = _submit_process(good, market.root)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_valid_market(market.root)
    # a later submit and a sweep still work, and leave no unreferenced folders
    assert lw_json("submit", good, "--market", market.root)[0] == 0
    code, doc = lw_json("reindex", "--market", market.root)
    assert code == 0
    index = assert_valid_market(market.root)
    referenced = {r["path"] for e in index["learnwares"].values() for r in e["versions"]}
    on_disk = {f"learnwares/{p.parent.name}/{p.name}" for p in (market.root / "learnwares").glob("*/v*")}
    assert on_disk == referenced
    assert not (market.root / ".staging").exists()


def test_pack_cli_builds_a_package_the_market_accepts(tmp_path, market, lw, lw_json):
    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge

    x, _, y = bp.data(300)
    np.savetxt(tmp_path / "X.csv", x, delimiter=",")
    joblib.dump(Ridge().fit(x, y), tmp_path / "model.joblib")
    common = ["--model", tmp_path / "model.joblib", "--market", market.root, "--out", tmp_path / "pkg.zip"]
    code, doc = lw_json("pack", *common, "--data", tmp_path / "X.csv", "--name", "ridge", "--task", "Regression", "--scenario", "Business")
    assert code == 0 and doc["input_dim"] == bp.DIM, doc
    code, doc = lw_json("submit", tmp_path / "pkg.zip", "--market", market.root)
    assert code == 0 and doc["results"][0]["record"]["output_dim"] == 1 and doc["results"][0]["name"] == "ridge", doc

    # flag mistakes are usage errors (exit 2) in one line, before any work is done
    np.savetxt(tmp_path / "narrow.csv", x[:, :2], delimiter=",")
    for args, needle in [
        (["--data", tmp_path / "X.csv", "--name", "r", "--task", "Regresion"], "did you mean 'Regression'"),
        (["--data", tmp_path / "narrow.csv", "--name", "r", "--task", "Regression"], f"takes {bp.DIM} features"),
        (["--data", tmp_path / "X.csv", "--spec", tmp_path / "X.csv", "--name", "r", "--task", "Regression"], "exactly one of"),
    ]:
        code, _, err = lw("pack", *common, *args)
        assert code == 2 and needle in err and err.strip().count("\n") == 0, (args, err)
    code, _, err = lw("pack", "--model", tmp_path / "none.joblib", "--data", tmp_path / "X.csv", "--name", "r", "--task", "Regression", "--out", tmp_path / "p.zip")
    assert code == 2 and "none.joblib: no such file" in err


def test_a_spec_in_the_reference_layout_is_stored_once_and_read_back_as_submitted(corpus, market, lw_json):
    """The reference package writes its own key order, no cuda_idx/device, its own spacing, maybe the older type name:
    the market reads that very file back from the package, nothing re-serialised."""
    spec = bp.spec_dict()
    for type_name in ("RKMETableSpecification", "RKMEStatSpecification"):
        theirs = {"z": spec["z"], "beta": spec["beta"], "gamma": spec["gamma"], "num_points": spec["num_points"], "type": type_name}
        folder = _fresh(corpus, f"reference-{type_name}")
        package = bp.write_zip(folder / "reference.zip", bp.members(**{"rkme.json": json.dumps(theirs, indent=4)}), top="their_learnware/")
        code, doc = lw_json("submit", package, "--market", market.root)
        assert code == 0, doc
        (stored,) = doc["accepted"]
        loaded = assert_spec_stored_once(market.root, stored["id"], 1, package)
        assert loaded.num_points == spec["num_points"] and loaded.gamma == spec["gamma"]
    code, shown = lw_json("show", stored["id"], "--market", market.root)
    assert code == 0 and shown["rkme"]["K"] == bp.K and shown["rkme"]["dim"] == bp.DIM
