"""Shared fixtures: reference figures from ../shared and a CLI runner that stays in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "reference"

# keep the tests' compiled programs out of the user's cache, but share them across tests
os.environ.setdefault("LW_JAX_CACHE", str(ROOT / ".jax_cache"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def reference():
    """Loader of the reference package's figures in ../shared/reference.

    A clone without ../shared skips these checks (and -rs lists them); CI has
    ../shared, so there a missing file fails the run instead of hiding a skip.
    """

    return load_reference


def load_reference(name: str, folder: Path = SHARED) -> dict:
    path = folder / name
    if not path.exists():
        message = f"reference figures not found at {path} (accuracy against the reference package not checked)"
        if _in_ci():
            pytest.fail(message + "; CI must have ../shared beside the clone", pytrace=False)
        pytest.skip(message)
    return json.loads(path.read_text())


@pytest.fixture
def lw(capsys):
    """Run `lw ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from learnware_cli.cli.app import main

    def run(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def lw_json(lw):
    """Run `lw ARGS... --json`; returns (exit code, parsed JSON document)."""

    def run(*args):
        code, out, err = lw(*args, "--json")
        try:
            return code, json.loads(out)
        except json.JSONDecodeError:
            raise AssertionError(f"not JSON (exit {code}): {out!r} / stderr {err!r}")

    return run


def read_index(root) -> dict:
    """The whole index of the market at root, as one dict (learnwares, next_id, generation)."""
    from learnware_cli.market.store import Market

    return Market.open(root).read_index(fresh=True)


def write_index(root, index: dict) -> None:
    """Hand-edit a market's catalog to hold exactly ``index`` (a test's damage: nothing is validated)."""
    import json as _json
    import sqlite3

    conn = sqlite3.connect(str(Path(root) / "index.sqlite"), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM versions")
        conn.execute("DELETE FROM learnwares")
        for key, entry in index["learnwares"].items():
            versions = entry.get("versions") or []
            for position, record in enumerate(versions):  # rows in list order; each record says its own version
                conn.execute("INSERT INTO versions VALUES (?, ?, ?)", (key, position + 1, _json.dumps(record)))
            if not entry.get("_no_learnware_row"):
                conn.execute("INSERT INTO learnwares VALUES (?, ?, ?, ?)", (key, entry.get("name", ""), _json.dumps(entry.get("semantic", {})), len(versions)))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'next_id'", (str(index.get("next_id", 1)),))
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        conn.execute("COMMIT")
    finally:
        conn.close()


def processes_with(text: str) -> list:
    """Pids whose command line mentions text (model workers carry their temp paths, the zygote "--zygote")."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                if text.encode() in fh.read():
                    found.append(int(name))
        except OSError:
            pass
    return found


def wait_until(predicate, seconds: float) -> bool:
    """Poll predicate every 50 ms for up to seconds; its last value."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def assert_spec_stored_once(root, learnware_id: str, version: int, package) -> object:
    """A submitted version keeps its specification once, in its package.zip: its folder has no rkme.json, its
    record names the spec file, and ``Market.version_spec`` is that file of the submitted package, parsed -> it."""
    import zipfile

    from learnware_cli.market.store import Market
    from learnware_cli.specs import load_spec

    market = Market.open(root)
    record = market.version_record(market.entry(learnware_id), version)
    assert not (market.version_dir(learnware_id, version) / "rkme.json").exists()
    with zipfile.ZipFile(package) as archive:
        names = [n for n in archive.namelist() if n == record["spec_file"] or n.endswith("/" + record["spec_file"])]
        assert len(names) == 1, (record["spec_file"], archive.namelist())
        submitted = load_spec(json.loads(archive.read(names[0])), source=names[0])
    stored = market.version_spec(learnware_id, version)
    assert type(stored) is type(submitted)
    assert json.dumps(stored.to_json_dict(), sort_keys=True) == json.dumps(submitted.to_json_dict(), sort_keys=True)
    for ours, theirs in zip(stored.stack_arrays(), submitted.stack_arrays()):
        assert ours.dtype == theirs.dtype and (ours == theirs).all()
    return stored
