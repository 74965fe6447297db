"""Hostile submissions against the checker and `lw submit`: sizes, numbers, updates, swapped files.

The checker runs in the market process, so no package may crash it, exhaust
its memory or abort the rest of a batch; and what the market stores must be
the bytes it checked. Every package is built at test time (badpackages.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

import pytest

import badpackages as bp
from learnware_cli.errors import EXIT_MARKET, EXIT_REJECTED, EXIT_USAGE, RejectedError, SpecError
from learnware_cli.market import checks, package
from learnware_cli.market import submit as submit_mod
from learnware_cli.market.package import PackageLimits
from learnware_cli.market.store import Market
from learnware_cli.rkme import RKMESpec

HOSTILE = {case.name: case for case in bp.HOSTILE_CASES}
REGRESSION_BODY = "return np.asarray(X)[:, 0]"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture
def market(tmp_path) -> Market:
    return Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)


def build(corpus: Path, name: str, **overrides) -> Path:
    """A numpy-model package (good unless overridden) in its own folder."""
    folder = corpus / name
    folder.mkdir(parents=True, exist_ok=True)
    return bp.write_zip(folder / f"{name}.zip", bp.members(**overrides))


def regression_zip(corpus: Path, name: str = "regression") -> Path:
    return build(
        corpus,
        name,
        **{
            "__init__.py": bp.numpy_model(body=REGRESSION_BODY),
            "semantic_specification.json": json.dumps(bp.semantic(task="Regression", output_dim=1)),
        },
    )


def hostile_zip(corpus: Path, name: str) -> Path:
    folder = corpus / name
    folder.mkdir(parents=True, exist_ok=True)
    return HOSTILE[name].build(folder)


def set_limits(market: Market, **limits) -> Market:
    """Rewrite market.json's limits (a value of None removes the key) and reopen the market."""
    path = market.root / "market.json"
    config = json.loads(path.read_text())
    for key, value in limits.items():
        if value is None:
            config["limits"].pop(key, None)
        else:
            config["limits"][key] = value
    path.write_text(json.dumps(config))
    return Market.open(market.root)


@pytest.fixture
def herd_spy(monkeypatch):
    """Record every herd() call's array size; fail loudly past 64 MiB instead of allocating it."""
    import learnware_cli.rkme as rkme

    calls = []
    real = rkme.herd

    def spy(spec, n_samples, seed=0, n_candidates=None, spread=0.25):
        n_candidates = n_candidates or min(100 * n_samples, 50_000)
        candidate_bytes = 8 * n_candidates * spec.dim
        calls.append({"n_candidates": n_candidates, "bytes": candidate_bytes})
        assert candidate_bytes <= 64 * bp.MiB, f"herding would allocate {candidate_bytes} bytes in the market process"
        return real(spec, n_samples, seed=seed, n_candidates=n_candidates, spread=spread)

    monkeypatch.setattr(rkme, "herd", spy)
    monkeypatch.setattr(rkme.spec, "herd", spy)  # RKMESpec.probe_inputs, what the checks call
    return calls


# --------------------------------------------------------------------------- 1. sizes


@pytest.mark.parametrize("name, limit", [("input-dimension-100000", "max_input_dim = 10000"), ("output-dimension-100000", "max_output_dim = 1000")])
def test_huge_dimensions_are_refused_before_anything_that_wide_exists(name, limit, corpus, herd_spy):
    zip_path = hostile_zip(corpus, name)
    assert zip_path.stat().st_size < 400_000
    with pytest.raises(RejectedError) as err:
        checks.check_package(zip_path, gamma=bp.GAMMA, k=bp.K, timeout=20)
    assert err.value.check == "semantic" and limit in err.value.reason
    assert "\n" not in err.value.message
    assert herd_spy == []


def test_market_limits_come_from_market_json_with_defaults(corpus, market, lw_json):
    wide = hostile_zip(corpus, "input-dimension-100000")
    good = build(corpus, "limits-good")
    cases = [
        ({}, wide, "semantic", "max_input_dim = 10000"),  # the template's value
        ({"max_input_dim": None}, wide, "semantic", "max_input_dim = 10000"),  # a market without the key: the default
        ({"max_input_dim": 4}, good, "semantic", "Input.Dimension 5 is over the market's limit max_input_dim = 4"),
        ({"max_output_dim": 1}, good, "semantic", "Output.Dimension 2 is over the market's limit max_output_dim = 1"),
        ({"max_probe_bytes": 4096}, good, "spec", "max_probe_bytes = 4096"),
        ({"max_package_bytes": 1000}, good, "archive", "max_package_bytes"),
    ]
    for limits, zip_path, check, needle in cases:
        opened = set_limits(market, **limits)
        code, doc = lw_json("submit", zip_path, "--market", opened.root)
        assert code == EXIT_REJECTED and doc["check"] == check and needle in doc["message"], (limits, doc)
        set_limits(market, max_input_dim=10_000, max_output_dim=1_000, max_probe_bytes=256 * bp.MiB, max_package_bytes=200 * bp.MiB)


def test_a_bad_limit_in_market_json_is_a_market_error(corpus, market, lw_json):
    opened = set_limits(market, check_rows="lots")
    code, doc = lw_json("submit", build(corpus, "bad-limit"), "--market", opened.root)
    assert code == EXIT_MARKET and "limits.check_rows" in doc["message"]


def test_probe_rows_shrink_their_candidates_to_the_byte_budget(corpus, herd_spy):
    """Within max_probe_bytes, herding uses fewer candidates rather than more memory."""
    limits = checks.CheckLimits(max_probe_bytes=100_000)
    report = checks.check_package(build(corpus, "probe"), gamma=bp.GAMMA, k=bp.K, timeout=20, check_limits=limits)
    assert report.passed_names == list(checks.CHECK_NAMES)
    (call,) = herd_spy
    assert 64 <= call["n_candidates"] < 6400 and call["bytes"] < limits.max_probe_bytes
    with pytest.raises(RejectedError, match="max_probe_bytes = 20000") as err:
        checks.check_package(build(corpus, "probe"), gamma=bp.GAMMA, k=bp.K, check_limits=checks.CheckLimits(max_probe_bytes=20_000))
    assert err.value.check == "spec" and len(herd_spy) == 1


# --------------------------------------------------------------------------- 2. numbers


def test_huge_numbers_anywhere_are_one_line_rejections(corpus):
    for name, case in HOSTILE.items():
        with pytest.raises(RejectedError) as err:
            checks.check_package(hostile_zip(corpus, name), gamma=bp.GAMMA, k=bp.K, timeout=20)
        assert err.value.check == case.check and case.needle in err.value.reason, (name, err.value.message)
        assert "\n" not in err.value.message and len(err.value.message) < 300, name


def test_a_batch_survives_a_hostile_number(corpus, market, lw_json):
    good = build(corpus, "batch-good")
    bad = hostile_zip(corpus, "spec-5000-digit-integer")
    code, doc = lw_json("submit", good, bad, good, "--market", market.root)
    assert code == EXIT_REJECTED, doc
    assert [a["id"] for a in doc["accepted"]] == ["00000001", "00000002"]
    assert [(r["package"], r["check"]) for r in doc["rejected"]] == [(str(bad), "spec")]
    assert len(market.read_index()["learnwares"]) == 2


def test_a_checker_bug_costs_one_package_not_the_batch(corpus, market, lw_json, monkeypatch):
    good, victim = build(corpus, "bug-good"), build(corpus, "bug-victim")
    real = checks.check_package

    def buggy(zip_path, **kwargs):
        if Path(zip_path).name == victim.name:
            raise ZeroDivisionError("division by zero")
        return real(zip_path, **kwargs)

    monkeypatch.setattr(checks, "check_package", buggy)
    code, doc = lw_json("submit", good, victim, good, "--market", market.root)
    assert code == EXIT_REJECTED and len(doc["accepted"]) == 2, doc
    (rejected,) = doc["rejected"]
    assert rejected["check"] == "internal"
    assert "ZeroDivisionError: division by zero" in rejected["reason"] and "please report" in rejected["reason"]


def test_huge_numbers_in_the_users_own_files(tmp_path, corpus, market, lw):
    path = tmp_path / "rkme.json"
    path.write_text(bp.spec_with_raw("gamma", bp.HUGE_INT))
    with pytest.raises(SpecError, match="unreadable JSON"):
        RKMESpec.load(path)
    semantic = tmp_path / "semantic.json"
    semantic.write_text(bp.semantic_with_dimension("Input", bp.HUGE_INT))
    code, _, err = lw("submit", build(corpus, "override"), "--market", market.root, "--semantic", semantic)
    assert code == EXIT_USAGE and "cannot be read" in err and err.strip().count("\n") == 0


# --------------------------------------------------------------------------- 3. float32-unsafe specs


def test_spec_values_that_overflow_float32_are_rejected():
    obj = bp.spec_dict()
    spec = RKMESpec.from_json_dict(json.loads(bp.spec_with_z("1e39")))
    with pytest.raises(RejectedError, match="magnitude 1e\\+39") as err:
        checks.check_spec(spec, bp.semantic(), bp.GAMMA)
    assert err.value.check == "spec"
    big = RKMESpec.from_json_dict({**obj, "z": [[v * 1e9 for v in row] for row in obj["z"]]})
    assert checks.check_spec(big, bp.semantic(), bp.GAMMA)["dim"] == bp.DIM  # large but safe values pass


# --------------------------------------------------------------------------- 4. updates


def test_update_must_keep_task_and_widths_unless_allowed(corpus, market, lw_json):
    assert lw_json("submit", regression_zip(corpus), "--market", market.root)[0] == 0
    classifier = build(corpus, "classifier")
    before = _snapshot(market.root)
    code, doc = lw_json("submit", classifier, "--market", market.root, "--update", "00000001")
    assert code == EXIT_REJECTED and doc["check"] == "update", doc
    assert "Task from Regression to Classification" in doc["message"] and "Output.Dimension from 1 to 2" in doc["message"]
    assert "--allow-breaking" in doc["message"] and "\n" not in doc["message"]
    assert _snapshot(market.root) == before

    code, doc = lw_json("submit", classifier, "--market", market.root, "--update", "00000001", "--allow-breaking")
    assert code == 0 and doc["results"][0]["version"] == 2 and doc["results"][0]["record"]["breaking"] is True, doc
    code, doc = lw_json("submit", build(corpus, "classifier-v3"), "--market", market.root, "--update", "00000001")
    assert code == 0 and doc["results"][0]["version"] == 3 and "breaking" not in doc["results"][0]["record"], doc
    assert lw_json("submit", classifier, "--market", market.root, "--allow-breaking")[0] == EXIT_USAGE


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


# --------------------------------------------------------------------------- 5. stored bytes are checked bytes


def test_the_stored_zip_is_the_checked_zip_even_if_the_file_is_swapped(corpus, market, lw_json, monkeypatch):
    user_zip = build(corpus, "swap")
    checked = user_zip.read_bytes()
    other = build(corpus, "swap-other", **{"requirements.txt": "numpy\nunchecked\n"}).read_bytes()  # would pass too
    assert other != checked
    real_check_spec = checks.check_spec

    def swapping_check_spec(*args, **kwargs):
        user_zip.write_bytes(other)  # the submitter replaces the file in the middle of the checks
        return real_check_spec(*args, **kwargs)

    monkeypatch.setattr(checks, "check_spec", swapping_check_spec)
    code, doc = lw_json("submit", user_zip, "--market", market.root)
    assert code == 0, doc
    doc = doc["results"][0]
    stored = (market.path(doc["record"]["path"]) / "package.zip").read_bytes()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(checked).hexdigest() == doc["record"]["checksum"]
    assert doc["record"]["package_bytes"] == len(checked)
    report = json.loads((market.path(doc["record"]["path"]) / "report.json").read_text())
    assert report["zip_path"] == str(user_zip) and report["package"]["sha256"] == doc["record"]["checksum"]


def test_staged_copies_are_private_and_carry_their_checksum(corpus, market, monkeypatch):
    modes, items = [], []
    real_stage, real_add = package.stage_zip, Market.add_versions

    def stage_spy(src, dest, limits=None):
        modes.extend(stat.S_IMODE(os.stat(folder).st_mode) for folder in Path(dest).parents[:3])
        return real_stage(src, dest, limits)

    monkeypatch.setattr(package, "stage_zip", stage_spy)
    monkeypatch.setattr(Market, "add_versions", lambda self, new: items.extend(new) or real_add(self, new))
    zip_path = build(corpus, "checksum")
    (outcome,) = submit_mod.submit_packages(market, [zip_path])
    assert outcome.accepted and items[0].checksum == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert modes == [0o700] * 3  # the staging root, the package's folder, its zip's folder


def test_staging_caps_the_bytes_it_reads(tmp_path, monkeypatch):
    limits = PackageLimits(max_total_bytes=bp.MiB)  # the zip file, too, may have at most 1 MiB
    sparse = tmp_path / "huge.zip"
    with open(sparse, "wb") as fh:
        fh.truncate(64 * 1024**3)  # 64 GiB, no blocks: refused from fstat, nothing read
    start = time.monotonic()
    with pytest.raises(RejectedError, match="max_package_bytes") as err:
        package.stage_zip(sparse, tmp_path / "copy.zip", limits)
    assert err.value.check == "archive" and time.monotonic() - start < 1 and not (tmp_path / "copy.zip").exists()

    growing = tmp_path / "growing.zip"
    growing.write_bytes(bytes(3 * bp.MiB))
    real_fstat = os.fstat

    def stale_fstat(fd):  # as if the file grew after it was measured
        st = real_fstat(fd)
        fields = list(st[:10])
        fields[stat.ST_SIZE] = 100
        return os.stat_result(fields)

    monkeypatch.setattr(package.os, "fstat", stale_fstat)
    with pytest.raises(RejectedError, match="max_package_bytes"):
        package.stage_zip(growing, tmp_path / "copy2.zip", limits)
    monkeypatch.undo()
    assert not (tmp_path / "copy2.zip").exists()
    fifo = tmp_path / "fifo.zip"
    os.mkfifo(fifo)
    with pytest.raises(RejectedError, match="not a regular file"):
        package.stage_zip(fifo, tmp_path / "copy3.zip", limits)
