"""Submission checks end to end (checks.py) and the model worker (worker.py).

Every case of the bad-package corpus must be rejected by its own check with
a one-line message naming the problem; good packages must pass every check.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import badpackages as bp
from learnware_cli.errors import RejectedError
from learnware_cli.market.checks import CHECK_NAMES, check_package, check_spec
from learnware_cli.market.package import extract_package
from learnware_cli.market.worker import ModelWorker, WorkerError, run_model
from learnware_cli.rkme import RKMESpec

FAST = {"timeout": 20, "memory_mb": 2048}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def good_zip(corpus):
    return bp.good_sklearn_zip(corpus / "good")


@pytest.fixture(scope="module")
def numpy_dir(corpus):
    """The good numpy-model package, extracted, for direct ModelWorker tests."""
    return extract_package(bp.good_numpy_zip(corpus / "numpy"), corpus / "numpy" / "pkg")


# --------------------------------------------------------------------------- good packages


def test_sklearn_classifier_passes_every_check(good_zip):
    report = check_package(good_zip, gamma=bp.GAMMA, k=bp.K, **FAST)
    assert report.passed_names == list(CHECK_NAMES)
    out = report.to_dict()
    assert out["model"]["input_shape"] == [bp.DIM] and out["model"]["output_shape"] == [1]
    assert out["model"]["predict"] == {"shape": [64], "dtype": "int64"}
    assert out["model"]["predict_proba"]["shape"] == [64, 2]
    assert out["spec"]["dim"] == bp.DIM and abs(out["spec"]["beta_sum"] - 1) < 1e-9
    assert all(r["seconds"] >= 0 for r in out["passed"])


@pytest.mark.parametrize("kind", ["regression", "beimingwu"])
def test_regressors_pass_every_check(kind, corpus):
    if kind == "beimingwu":
        zip_path = bp.beimingwu_zip(corpus / kind)
    else:
        zip_path = bp.good_sklearn_zip(corpus / kind, task="Regression")
    report = check_package(zip_path, gamma=bp.GAMMA, n_rows=16, **FAST)
    assert report.passed_names == list(CHECK_NAMES)
    assert report.model["predict"]["shape"] in ([16], [16, 1])


# --------------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("case", bp.BAD_CASES, ids=lambda c: c.name)
def test_bad_package_is_rejected_by_its_check(case, corpus):
    case_dir = corpus / "bad" / case.name
    case_dir.mkdir(parents=True)
    zip_path = case.build(case_dir)
    options = {**FAST, **case.options}
    with pytest.raises(RejectedError) as err:
        check_package(zip_path, gamma=bp.GAMMA, limits=case.limits, load_timeout=30, **options)
    assert err.value.check == case.check, err.value.message
    assert case.needle in err.value.reason, err.value.message
    assert "\n" not in err.value.message and len(err.value.message) < 600


def test_every_check_is_exercised_by_the_corpus():
    assert {c.check for c in bp.BAD_CASES} == set(CHECK_NAMES)


# --------------------------------------------------------------------------- options


def test_semantic_override_wins(corpus):
    case = next(c for c in bp.BAD_CASES if c.name == "bad-semantic-value")
    case_dir = corpus / "override"
    case_dir.mkdir()
    zip_path = case.build(case_dir)
    report = check_package(zip_path, gamma=bp.GAMMA, semantic_override=bp.semantic(), n_rows=8, **FAST)
    assert report.passed_names == list(CHECK_NAMES)
    bad = bp.semantic()
    bad["License"] = {"Values": ["WTFPL"], "Type": "Class"}
    with pytest.raises(RejectedError, match="License value 'WTFPL'"):
        check_package(zip_path, gamma=bp.GAMMA, semantic_override=bad, **FAST)


def test_k_limit_and_gamma(good_zip):
    with pytest.raises(RejectedError, match="at most 5") as err:
        check_package(good_zip, gamma=bp.GAMMA, k=5)
    assert err.value.check == "spec"
    with pytest.raises(RejectedError, match="market's gamma 0.2"):
        check_package(good_zip, gamma=0.2)


def test_tiny_negative_weights_from_the_qp_are_accepted():
    obj = bp.spec_dict()
    beta = np.array(obj["beta"])
    beta[1] += beta[0] + 1e-10
    beta[0] = -1e-10  # what the reference QP returns for an unused point; the sum is still 1
    spec = RKMESpec(z=np.asarray(obj["z"]), beta=beta, gamma=bp.GAMMA)
    summary = check_spec(spec, bp.semantic(), bp.GAMMA)
    assert summary["k"] == bp.K


# --------------------------------------------------------------------------- the worker


def test_worker_answers_and_describes_the_model(numpy_dir):
    x = np.random.default_rng(1).normal(size=(9, bp.DIM))
    with ModelWorker(numpy_dir, timeout=20) as worker:
        info = worker.info()
        assert info["class_name"] == "Model"
        assert info["input_shape"] == (bp.DIM,) and info["output_shape"] == (1,)
        assert info["has_predict_proba"] is False
        y = worker.predict(x)
        np.testing.assert_array_equal(y, (x[:, 0] > 0).astype(np.int64))
        assert worker.predict(x[:2]).shape == (2,)  # the worker stays up between calls
        with pytest.raises(WorkerError) as err:
            worker.predict_proba(x)
        assert err.value.kind == "crash"
    np.testing.assert_array_equal(run_model(numpy_dir, x, timeout=20), y)


def test_worker_is_isolated(corpus):
    """No market environment leaks in; the package cannot shadow our modules or change its source."""
    os.environ["LW_TEST_SECRET"] = "hunter2"
    body = (
        "import os, sys\n"
        "assert 'LW_TEST_SECRET' not in os.environ, 'secret leaked'\n"
        "assert 'shadow' not in sys.modules\n"
        "open(os.path.join(os.path.dirname(__file__), 'learnware.yaml'), 'w').write('tampered')\n"
        "return np.zeros(len(X), dtype=np.int64)"
    )
    files = bp.members(**{"__init__.py": bp.numpy_model(body=body)})
    files["learnware_cli/__init__.py"] = "import sys; sys.modules['shadow'] = 1; raise SystemExit('shadowed')\n"
    files["learnware_cli/market/__init__.py"] = ""
    files["learnware_cli/market/_worker_main.py"] = "raise SystemExit('shadowed')\n"
    zip_path = bp.write_zip(corpus / "isolated.zip", files)
    package_dir = extract_package(zip_path, corpus / "isolated")
    try:
        assert run_model(package_dir, np.zeros((3, bp.DIM)), timeout=20).tolist() == [0, 0, 0]
    finally:
        del os.environ["LW_TEST_SECRET"]
    assert (package_dir / "learnware.yaml").read_text() == bp.LEARNWARE_YAML


def test_worker_timeout_kills_it(numpy_dir, corpus):
    files = bp.members(**{"__init__.py": bp.numpy_model(body="import time\ntime.sleep(1000)")})
    package_dir = extract_package(bp.write_zip(corpus / "sleep.zip", files), corpus / "sleep")
    worker = ModelWorker(package_dir, timeout=1.5, load_timeout=30)
    worker.start()
    pid = worker._proc.pid
    with pytest.raises(WorkerError) as err:
        worker.predict(np.zeros((2, bp.DIM)))
    assert err.value.kind == "timeout" and "1.5 s" in err.value.message
    assert worker._proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(WorkerError, match="has stopped"):
        worker.predict(np.zeros((2, bp.DIM)))  # no silent restart after a failure
