"""ONNX learnwares in a market: pack (converted or exported), checks without a worker, mixed markets, reuse."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
from conftest import assert_spec_stored_once, read_index


@pytest.fixture()
def models(tmp_path):
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X @ np.array([1.0, 2.0, -1.0, 0.5])
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    np.savetxt(tmp_path / "y.csv", y)
    joblib.dump(Ridge().fit(X, y), tmp_path / "ridge.joblib")
    joblib.dump(RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y), tmp_path / "rf.joblib")
    joblib.dump(LogisticRegression().fit(X, (y > 0).astype(int)), tmp_path / "lr.joblib")
    return tmp_path


def _pack(lw_json, folder, model: str, task: str, *extra):
    out = folder / f"{model}-{'-'.join(e.strip('-') for e in extra if e.startswith('--'))}.zip"
    code, doc = lw_json("pack", "--model", folder / f"{model}.joblib", "--data", folder / "X.csv", "--market", folder / "market",
                        "--name", f"{model} {' '.join(extra)}", "--task", task, "--out", out, *extra)
    assert code == 0, doc
    return out


def test_a_mixed_market_checks_and_reuses_onnx_and_python_learnwares_alike(models, lw_json):
    import zipfile

    assert lw_json("init", models / "market")[0] == 0
    zips = [_pack(lw_json, models, "ridge", "Regression", "--onnx"), _pack(lw_json, models, "rf", "Regression", "--onnx"),
            _pack(lw_json, models, "lr", "Classification", "--onnx"), _pack(lw_json, models, "ridge", "Regression")]
    with zipfile.ZipFile(zips[0]) as archive:
        assert "model.onnx" in archive.namelist() and "__init__.py" not in archive.namelist()
    code, doc = lw_json("submit", *zips, "--market", models / "market")
    assert code == 0 and len(doc["accepted"]) == 4, doc
    for number, package in enumerate(zips, 1):  # ONNX and Python learnwares alike keep their spec once, in the package
        assert_spec_stored_once(models / "market", f"{number:08d}", 1, package)
    kinds = {}
    for learnware in ("00000001", "00000002", "00000003", "00000004"):
        code, shown = lw_json("show", learnware, "--market", models / "market")
        kinds[shown["name"].split()[0] + ("-onnx" if shown["model_kind"] == "onnx" else "-py")] = shown["report"]["model"]["sandbox"]
    assert set(kinds) == {"ridge-onnx", "rf-onnx", "lr-onnx", "ridge-py"}
    code, found = lw_json("search", "--market", models / "market", "--data", models / "X.csv", "-k", "4")
    assert code == 0 and len(found["single"]) == 4  # search does not care which kind
    code, onnx = lw_json("reuse", "--market", models / "market", "-l", "00000001", "--data", models / "X.csv", "--out", models / "onnx.csv")
    code, python = lw_json("reuse", "--market", models / "market", "-l", "00000004", "--data", models / "X.csv", "--out", models / "py.csv")
    assert np.allclose(np.loadtxt(models / "onnx.csv"), np.loadtxt(models / "py.csv"), atol=1e-5)  # the same Ridge, both ways
    code, averaged = lw_json("reuse", "--market", models / "market", "-l", "00000001", "-l", "00000004", "--method", "average",
                             "--data", models / "X.csv", "--evaluate", models / "y.csv")
    assert code == 0 and averaged["metric"]["value"] < 1e-3


def test_a_model_that_cannot_be_converted_is_packed_as_python_with_a_note(models, lw):
    from sklearn.neighbors import RadiusNeighborsRegressor

    X = np.loadtxt(models / "X.csv", delimiter=",")
    joblib.dump(RadiusNeighborsRegressor(radius=5.0).fit(X, X[:, 0]), models / "odd.joblib")
    assert lw("init", models / "market")[0] == 0
    code, out, err = lw("pack", "--model", models / "odd.joblib", "--onnx", "--data", models / "X.csv", "--market", models / "market",
                        "--name", "odd", "--task", "Regression", "--out", models / "odd.zip")
    if "packed as a Python learnware" not in err:
        pytest.skip("this skl2onnx converts RadiusNeighborsRegressor")
    import zipfile

    with zipfile.ZipFile(models / "odd.zip") as archive:
        assert "__init__.py" in archive.namelist()


def test_an_onnx_package_with_a_bad_graph_is_rejected_in_one_line_and_the_market_untouched(models, lw_json, tmp_path):
    import zipfile

    assert lw_json("init", models / "market")[0] == 0
    good = _pack(lw_json, models, "ridge", "Regression", "--onnx")
    before = read_index(models / "market")
    with zipfile.ZipFile(good) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["model.onnx"] = members["model.onnx"][: len(members["model.onnx"]) // 2]  # truncated
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    code, doc = lw_json("submit", bad, "--market", models / "market")
    assert code == 3 and doc["rejected"][0]["check"] == "model-load" and "\n" not in doc["rejected"][0]["reason"], doc
    assert read_index(models / "market")["learnwares"] == before["learnwares"]


def test_an_exported_onnx_model_packs_with_onnx_model(models, lw_json):
    from learnware_cli.market import onnx_kind

    estimator = joblib.load(models / "ridge.joblib")
    (models / "ridge.onnx").write_bytes(onnx_kind.convert_sklearn(estimator, 4))
    assert lw_json("init", models / "market")[0] == 0
    code, doc = lw_json("pack", "--onnx-model", models / "ridge.onnx", "--data", models / "X.csv", "--market", models / "market",
                        "--name", "exported", "--task", "Regression", "--out", models / "exported.zip")
    assert code == 0, doc
    code, doc = lw_json("submit", models / "exported.zip", "--market", models / "market")
    assert code == 0 and len(doc["accepted"]) == 1
