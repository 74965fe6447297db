"""What a hostile market folder can no longer do to the user of `lw show`, `list`, `search`, `reuse`.

* swap a stored package.zip after its checks passed: the recorded sha256 no longer matches, so
  `show` fails and `reuse` leaves that learnware out (never runs it);
* point an index record's "path" elsewhere: folders are derived from id and version;
* ship a model that passed the submit checks but answers out of contract at reuse time (class 99
  in a 2-class task, NaN labels, too many columns, a predict_proba of the wrong width): left out
  with a one-line reason, like a crash;
* put terminal escapes, bidi overrides or rich markup into names and descriptions: human output
  shows them inert; --json keeps them exact.

Models are tiny numpy packages stored directly (the submit checks would refuse the bad ones).
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import badpackages as bp
from learnware_cli.errors import EXIT_MARKET, EXIT_USAGE
from learnware_cli.market.store import Market

HOSTILE_NAME = "\x1b]0;pwned\x07\x1b[2J[bold red]x[/][link=https://evil.example]y[/link]\u202egnp.exe\x9b31m"
HOSTILE_DESCRIPTION = "\x1b[31mred\x07\x00\u2066tail"
# bytes no terminal should receive from us: C0 (but newline), DEL, C1, bidi overrides/isolates
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

PROBA_METHOD = """
    def predict_proba(self, X):
        return {proba}
"""


def _code(body: str, output_shape: str = "(1,)", proba: str | None = None) -> str:
    """A numpy model whose predict runs body (and, when given, a predict_proba returning proba)."""
    code = bp.numpy_model(body=body, output_shape=output_shape)
    return code + (PROBA_METHOD.format(proba=proba) if proba else "")


def _store(market: Market, folder, code: str, task: str = "Classification", output_dim: int = bp.N_CLASSES, **semantic) -> str:
    """Store a package with this model code as a new learnware, bypassing the submit checks."""
    folder.mkdir()
    (folder / "rkme.json").write_text(bp.spec_json())
    package = bp.write_zip(folder / "package.zip", bp.members(**{"__init__.py": code}))
    record = {"input_dim": bp.DIM, "output_dim": output_dim, "task": task, "K": bp.K}
    meaning = bp.semantic(task=task, output_dim=output_dim, **semantic)
    entry, _ = market.add_version({"package.zip": package, "rkme.json": folder / "rkme.json"}, meaning, record)
    return entry["id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reuse-safety")
    market = Market.create(tmp / "market", k=bp.K)
    reg = {"task": "Regression", "output_dim": 1}
    models = {
        "good": _code(bp.GOOD_BODY),
        "good_reg": _code("return np.asarray(X)[:, 0] * 2.0"),
        "tampered": _code(bp.GOOD_BODY),
        "label99": _code("return np.full(len(X), 99)"),
        "label_nan": _code("return np.full(len(X), np.nan)"),
        "proba_wide": _code(bp.GOOD_BODY, proba="np.full((len(X), 3), 1.0 / 3)"),
        "proba_inf": _code(bp.GOOD_BODY, proba="np.full((len(X), 2), np.inf)"),
        "reg_wide": _code("return np.zeros((len(X), 3))"),
        "scores": _code("return np.eye(2)[(np.asarray(X)[:, 0] > 0).astype(int)]", output_shape="(2,)"),
        "hostile": _code(bp.GOOD_BODY),
        "hostile_error": _code("raise ValueError('\\x1b]0;pwned\\x07 [bold]loud[/]')"),
    }
    ids = {}
    for key, code in models.items():
        extra = reg if key in ("good_reg", "reg_wide") else {}
        if key == "hostile":
            extra = {"Name": {"Values": HOSTILE_NAME, "Type": "String"}, "Description": {"Values": HOSTILE_DESCRIPTION, "Type": "String"}}
        ids[key] = _store(market, tmp / key, code, **extra)
    # after the checks: someone with write access swaps the stored zip for other code
    swapped = bp.write_zip(tmp / "swapped.zip", bp.members(**{"__init__.py": _code("return np.ones(len(X), dtype=np.int64)")}))
    shutil.copyfile(swapped, market.version_dir(ids["tampered"], 1) / "package.zip")
    x = bp.data()[0]
    np.savetxt(tmp / "x.csv", x, delimiter=",")
    return {"market": str(market.root), "root": market.root, "tmp": tmp, "ids": ids, "x": str(tmp / "x.csv"), "n": len(x)}


def _reuse(lw_json, world, *keys, method="average"):
    named = [arg for key in keys for arg in ("--learnware", world["ids"][key])]
    out = world["tmp"] / f"pred-{'-'.join(keys)}-{method}.csv"
    code, doc = lw_json("reuse", "--market", world["market"], *named, "--method", method, "--data", world["x"], "--out", out)
    return code, doc, out


# --------------------------------------------------------------------------- 1. verified bytes


def test_show_refuses_a_modified_package(world, lw, lw_json):
    lid = world["ids"]["tampered"]
    code, out, err = lw("show", lid, "--market", world["market"])
    assert code == EXIT_MARKET and out == "", (code, out, err)
    assert len(err.strip().splitlines()) == 1
    assert f"learnware {lid}@1: package.zip does not match its recorded sha256" in " ".join(err.split())
    code, doc = lw_json("show", lid, "--market", world["market"])
    assert code == EXIT_MARKET and doc["error"] == "market"


def test_show_reports_the_package_verified(world, lw, lw_json):
    code, doc = lw_json("show", world["ids"]["good"], "--market", world["market"])
    assert code == 0 and doc["package_verified"] is True
    code, out, _ = lw("show", world["ids"]["good"], "--market", world["market"])
    assert code == 0 and "verified" in out


def test_index_paths_are_not_followed(world, lw_json):
    """A record whose "path" points at another learnware's folder still shows (and verifies) its own."""
    from conftest import read_index, write_index

    good, other = world["ids"]["good"], world["ids"]["good_reg"]
    index = read_index(world["market"])
    index["learnwares"][good]["versions"][0]["path"] = f"learnwares/{other}/v1"
    write_index(world["market"], index)
    try:
        code, doc = lw_json("show", good, "--market", world["market"])
    finally:
        index["learnwares"][good]["versions"][0]["path"] = f"learnwares/{good}/v1"
        write_index(world["market"], index)
    assert code == 0, doc
    assert doc["semantic"]["Task"]["Values"] == ["Classification"]


@pytest.mark.parametrize("lid, version", [("../../etc", 1), ("00000001", "../v1"), ("00000001", True), ("00000001", 0)])
def test_ids_and_versions_that_could_name_a_path_are_a_corrupt_index(world, lid, version):
    from learnware_cli.errors import MarketError
    from learnware_cli.market.integrity import version_folder

    with pytest.raises(MarketError, match="corrupt index"):
        version_folder(Market.open(world["market"]), lid, {"version": version})


def test_reuse_leaves_a_modified_package_out(world, lw_json):
    lid = world["ids"]["tampered"]
    code, doc, out = _reuse(lw_json, world, "tampered", "good")
    assert code == 0, doc
    assert [f["id"] for f in doc["failures"]] == [lid]
    assert "does not match its recorded sha256" in doc["failures"][0]["reason"]
    assert [d["id"] for d in doc["learnwares"]] == [world["ids"]["good"]]
    code, doc, _ = _reuse(lw_json, world, "tampered")
    assert code == EXIT_USAGE and "does not match its recorded sha256" in doc["message"]


# --------------------------------------------------------------------------- 2. outputs re-checked


@pytest.mark.parametrize(
    "bad, good, why, method",
    [
        ("label99", "good", "label 99", "single"),
        ("label99", "good", "label 99", "average"),
        ("label_nan", "good", "NaN", "single"),
        ("proba_wide", "good", "predict_proba returned rows of shape (3,)", "average"),  # single never asks for probabilities
        ("proba_inf", "good", "NaN or Inf", "average"),
        ("reg_wide", "good_reg", "shape (3,)", "single"),
        ("reg_wide", "good_reg", "shape (3,)", "average"),
    ],
)
def test_outputs_out_of_contract_leave_the_learnware_out(world, lw_json, bad, good, why, method):
    code, doc, out = _reuse(lw_json, world, bad, good, method=method)
    assert code == 0, doc
    reasons = {f["id"]: f["reason"] for f in doc["failures"]}
    assert set(reasons) == {world["ids"][bad]} and why in reasons[world["ids"][bad]], reasons
    assert len(reasons[world["ids"][bad]].splitlines()) == 1
    assert [d["id"] for d in doc["learnwares"] if d["used"]] == [world["ids"][good]]
    pred = np.loadtxt(out, delimiter=",")
    assert pred.shape == (world["n"],) and np.all(np.isfinite(pred))
    if good == "good":
        assert set(np.unique(pred)) <= {0.0, 1.0}


def test_one_score_column_per_class_is_within_the_contract(world, lw_json):
    """predict may answer with scores (as submit accepts): the best class is the label."""
    code, doc, out = _reuse(lw_json, world, "scores", method="single")
    assert code == 0 and doc["failures"] == [], doc
    x = np.loadtxt(world["x"], delimiter=",")
    assert np.array_equal(np.loadtxt(out, delimiter=","), (x[:, 0] > 0).astype(float))


def test_nothing_left_in_contract_is_an_error(world, lw_json):
    code, doc, out = _reuse(lw_json, world, "label99", method="single")
    assert code == EXIT_USAGE and "label 99" in doc["message"], doc
    assert not out.exists()


# --------------------------------------------------------------------------- 3. inert market text


def _strings(doc) -> set:
    """Every string value in a JSON document."""
    if isinstance(doc, dict):
        return set().union(*map(_strings, doc.values())) if doc else set()
    if isinstance(doc, list):
        return set().union(*map(_strings, doc)) if doc else set()
    return {doc} if isinstance(doc, str) else set()


def _assert_inert(text: str) -> None:
    assert "\x1b" not in text
    assert not UNSAFE.search(text), repr(UNSAFE.search(text).group())


@pytest.fixture
def wide(monkeypatch):
    """A wide console, so table cells are not folded mid-word (the consoles exist already: set them, not $COLUMNS)."""
    from learnware_cli.cli import output

    monkeypatch.setenv("COLUMNS", "400")
    for console in (output.stdout, output.stderr):
        monkeypatch.setattr(console, "_width", 400)


@pytest.mark.parametrize(
    "command",
    [
        ["show", "{hostile}"],
        ["versions", "{hostile}"],
        ["list"],
        ["search", "--tag", "Task=Classification", "-k", "20"],
        ["search", "--data", "{x}", "-k", "20"],
        ["reuse", "--learnware", "{hostile}", "--data", "{x}", "--out", "{tmp}/hostile.csv"],
    ],
)
def test_market_text_reaches_the_terminal_inert(world, lw, lw_json, wide, command):
    args = [a.format(hostile=world["ids"]["hostile"], x=world["x"], tmp=world["tmp"]) for a in command]
    code, out, err = lw(*args, "--market", world["market"])
    assert code == 0, err
    _assert_inert(out + err)
    assert "[bold red]x[/]" in out  # markup shown, not obeyed
    assert "pwned" in out  # the text is still there to be seen
    code, doc = lw_json(*args, "--market", world["market"])
    assert code == 0
    if command[0] != "versions":  # (its JSON holds no name)
        assert HOSTILE_NAME in _strings(doc)  # JSON stays exact


def test_model_error_text_reaches_the_terminal_inert(world, lw, wide):
    code, out, err = lw("reuse", "--market", world["market"], "--learnware", world["ids"]["hostile_error"],
                        "--learnware", world["ids"]["good"], "--method", "average", "--data", world["x"],
                        "--out", world["tmp"] / "err.csv")
    assert code == 0, err
    _assert_inert(out + err)
    assert "[bold]loud[/]" in out and "pwned" in out


def test_sanitiser():
    from learnware_cli.cli.output import safe

    assert safe("plain name 7") == "plain name 7"
    cleaned = safe(HOSTILE_NAME + HOSTILE_DESCRIPTION + "\u200f\u2028")
    _assert_inert(cleaned)
    assert "\u200f" not in cleaned and "\u2028" not in cleaned
    assert "\\[bold red]" in cleaned and "\\[link=" in cleaned
    assert safe("a\tb\nc") == "a b c"
    assert safe(None) == "" and safe(3) == "3"
