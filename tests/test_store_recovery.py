"""The market survives its own writers and a damaged index: a sweep spares live submits, the folders
rebuild the index, index paths are never followed, damage is never a reason to delete, OS errors are
one line, and a market that cannot be written can still be searched."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from learnware_cli.errors import EXIT_MARKET, MarketError
from learnware_cli.experiment.synthetic import spec_only_semantic
from learnware_cli.market import store
from learnware_cli.market.store import Market, stored_record_fields
from learnware_cli.rkme.spec import RKMESpec
from conftest import read_index, write_index

GAMMA = 0.1
DIM = 3


def _spec(seed: int) -> RKMESpec:
    rng = np.random.default_rng(seed)
    return RKMESpec(z=rng.normal(size=(4, DIM)) + seed, beta=np.full(4, 0.25), gamma=GAMMA, num_points=50)


def _add(market: Market, work: Path, seed: int, update_id=None, **extra) -> tuple[dict, dict]:
    """Store a spec-only learnware (or a new version of update_id) the way submit does."""
    folder = work / f"in-{seed}"
    folder.mkdir(parents=True)
    package = folder / "package.zip"
    with zipfile.ZipFile(package, "w") as zf:
        zf.writestr("README.txt", f"learnware {seed}")
    spec = _spec(seed)
    spec.save(folder / "rkme.json")
    semantic = spec_only_semantic(f"learnware {seed}", DIM)
    fields = {**stored_record_fields(semantic, spec, package.stat().st_size), **extra}
    return market.add_version({"package.zip": package, "rkme.json": folder / "rkme.json"}, semantic, fields, update_id)


@pytest.fixture
def market(tmp_path) -> Market:
    """00000001 (v1, v2 with notes and a price) and 00000002 (v1)."""
    market = Market.create(tmp_path / "market", gamma=GAMMA, k=5)
    _add(market, tmp_path, 1)
    _add(market, tmp_path, 2, update_id="00000001", notes="retrained", price=9.5)
    _add(market, tmp_path, 3)
    return market


def _index(market: Market) -> dict:
    return read_index(market.root)


def _edit_index(market: Market, change) -> None:
    index = _index(market)
    change(index)
    write_index(market.root, index)


def _folders(market: Market) -> set[str]:
    return {p.relative_to(market.root).as_posix() for p in (market.root / "learnwares").glob("*/*")}


# -- 1. a sweep never takes the staging folder of a live submit ------------------------------------


def test_sweep_spares_a_live_submitters_staging_and_the_submit_lands(market, tmp_path, monkeypatch):
    copying, go_on = threading.Event(), threading.Event()
    copy = shutil.copyfile

    def slow_copy(source, target, **kwargs):
        if Path(target).name == "package.zip":
            copying.set()
            assert go_on.wait(30)
        return copy(source, target, **kwargs)

    monkeypatch.setattr(store.shutil, "copyfile", slow_copy)
    outcome = {}

    def submit_in_background():
        try:
            outcome["stored"] = _add(market, tmp_path, 4)
        except Exception as exc:  # noqa: BLE001  (reported by the assertion below)
            outcome["error"] = exc

    submit = threading.Thread(target=submit_in_background)
    submit.start()
    try:
        assert copying.wait(30)
        dead = market.root / ".staging" / "from-a-killed-writer"
        dead.mkdir()  # no .held, or a .held nobody holds: its writer is gone
        swept = market.sweep()
    finally:
        go_on.set()
        submit.join(30)
    assert "stored" in outcome, f"the submit was lost: {outcome.get('error')!r}"
    entry, record = outcome["stored"]
    assert entry["id"] == "00000003" and record["version"] == 1
    assert swept.removed == [".staging/from-a-killed-writer"]
    index = market.read_index()
    assert "00000003" in index["learnwares"]
    assert (market.version_dir("00000003", 1) / "package.zip").is_file()
    assert not (market.version_dir("00000003", 1) / store.PENDING_MARK).exists()
    assert market.sweep().removed == [] and not (market.root / ".staging").exists()


# -- 2. the folders rebuild a lost or damaged index ------------------------------------------------


def test_each_version_folder_holds_its_record(market):
    index = _index(market)
    for entry in index["learnwares"].values():
        for record in entry["versions"]:
            stored = json.loads((market.version_dir(entry["id"], record["version"]) / "record.json").read_text())
            assert stored["id"] == entry["id"] and stored["record"] == record
    latest = json.loads((market.version_dir("00000001", 2) / "record.json").read_text())
    assert latest["name"] == index["learnwares"]["00000001"]["name"] and latest["semantic"] == index["learnwares"]["00000001"]["semantic"]


@pytest.mark.parametrize("damage", ["garbage", "missing", "binary"])
def test_plain_reindex_rebuilds_a_damaged_index_from_the_folders(market, lw, lw_json, damage):
    before = _index(market)
    path = market.root / "index.sqlite"
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(b'{"learnwares": {"0000' if damage == "garbage" else b"\xff\xfe\x00junk")
    code, _, err = lw("list", "--market", market.root)
    assert code == EXIT_MARKET and "lw reindex" in err and "Traceback" not in err
    code, doc = lw_json("reindex", "--market", market.root)
    assert code == 0, doc
    assert doc["rebuilt"]["learnwares"] == 2 and doc["rebuilt"]["versions"] == 3
    assert ("missing" if damage == "missing" else "corrupt") in doc["rebuilt"]["reason"]
    after = _index(market)
    assert after["learnwares"] == before["learnwares"]  # every field, notes and price included
    assert after["next_id"] == 3 and after["generation"] > before["generation"]
    assert (doc["rebuilt"]["backup"] is None) == (damage == "missing")
    assert lw_json("list", "--market", market.root)[1]["count"] == 2
    assert doc["removed"] == [] and _folders(market) == {"learnwares/00000001/v1", "learnwares/00000001/v2", "learnwares/00000002/v1"}


def test_rebuild_flag_rebuilds_a_readable_index_and_reports_it(market, lw, lw_json):
    before = _index(market)
    code, doc = lw_json("reindex", "--market", market.root)
    assert code == 0 and doc["rebuilt"] is None
    code, doc = lw_json("reindex", "--rebuild", "--market", market.root)
    assert code == 0 and doc["rebuilt"]["reason"].startswith("requested")
    assert _index(market)["learnwares"] == before["learnwares"]
    code, out, _ = lw("reindex", "--rebuild", "--market", market.root)
    assert code == 0 and "Rebuilt the index from the version folders" in out


def test_rebuild_reconstructs_older_folders_and_skips_incomplete_ones(market, lw_json):
    before = _index(market)
    legacy = market.version_dir("00000002", 1)
    (legacy / "record.json").unlink()  # a folder stored by an older lw
    broken = market.version_dir("00000001", 1)
    (broken / "rkme.json").unlink()  # incomplete: must be reported and left alone
    stray = market.root / "learnwares" / "not-an-id" / "v1"
    stray.mkdir(parents=True)
    (market.root / "index.sqlite").write_text("{")
    code, doc = lw_json("reindex", "--rebuild", "--market", market.root)
    assert code == 0, doc
    rebuilt = doc["rebuilt"]
    assert [n.split(":")[0] for n in rebuilt["reconstructed"]] == ["learnwares/00000002/v1"]
    assert sorted(n.split(":")[0] for n in rebuilt["skipped"]) == ["learnwares/00000001/v1", "learnwares/not-an-id/v1"]
    assert "incomplete (no rkme.json)" in " ".join(rebuilt["skipped"])
    assert broken.is_dir() and stray.is_dir(), "a rebuild never deletes a folder"
    index = _index(market)
    assert [r["version"] for r in index["learnwares"]["00000001"]["versions"]] == [2]
    record = index["learnwares"]["00000002"]["versions"][0]
    old = before["learnwares"]["00000002"]["versions"][0]
    assert record["checksum"] == hashlib.sha256((legacy / "package.zip").read_bytes()).hexdigest() == old["checksum"]
    for key in ("version", "input_dim", "output_dim", "task", "K", "package_bytes"):
        assert record[key] == old[key], key
    assert index["learnwares"]["00000002"]["semantic"] == before["learnwares"]["00000002"]["semantic"]


# -- 3. paths in the index are never followed; the index is validated -------------------------------


def test_remove_ignores_a_hostile_path_in_the_index(market, tmp_path, lw_json):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    _edit_index(market, lambda index: index["learnwares"]["00000001"]["versions"][0].update(path="../precious"))
    code, doc = lw_json("remove", "00000001@1", "--market", market.root)
    assert code == 0, doc
    assert (outside / "keep.txt").read_text() == "mine"
    assert not market.version_dir("00000001", 1).exists() and market.version_dir("00000001", 2).is_dir()


def test_remove_and_sweep_never_delete_through_a_symbolic_link(market, tmp_path, lw_json):
    outside = tmp_path / "precious" / "v1"
    outside.mkdir(parents=True)
    (outside / store.PENDING_MARK).touch()  # even a folder that looks like a leftover
    (outside / "keep.txt").write_text("mine")
    shutil.rmtree(market.root / "learnwares" / "00000002")
    (market.root / "learnwares" / "00000002").symlink_to(outside.parent, target_is_directory=True)
    swept = market.sweep()
    assert swept.removed == [] and [note.split(":")[0] for note in swept.kept] == ["learnwares/00000002/v1"]
    assert lw_json("remove", "00000002", "--market", market.root)[0] == 0
    assert (outside / "keep.txt").read_text() == "mine" and (outside / store.PENDING_MARK).exists()


def _hostile_id(index):
    index["learnwares"]["../../x"] = dict(index["learnwares"]["00000002"], id="../../x")


def _orphan_versions(index):
    index["learnwares"]["00000002"]["_no_learnware_row"] = True  # its versions stay, its learnware row is lost


def _versions_not_increasing(index):
    index["learnwares"]["00000001"]["versions"].reverse()


def _version_not_a_number(index):
    index["learnwares"]["00000002"]["versions"][0]["version"] = "1"


def _version_zero(index):
    index["learnwares"]["00000002"]["versions"][0]["version"] = 0


def _next_id_too_low(index):
    index["next_id"] = 2


@pytest.mark.parametrize(
    "damage, damaged_id",
    [(_hostile_id, "../../x"), (_orphan_versions, None), (_versions_not_increasing, "00000001"), (_version_not_a_number, "00000002"),
     (_version_zero, "00000002"), (_next_id_too_low, None)],
)
def test_an_inconsistent_index_is_a_corrupt_index(market, lw_json, damage, damaged_id):
    """Reading the whole index (list --limit 0) finds any damage; a command on a damaged entry finds its damage.
    Nothing is deleted."""
    _edit_index(market, damage)
    folders = _folders(market)
    commands = [["list", "--limit", "0"]] + ([["show", damaged_id], ["remove", damaged_id]] if damaged_id else [])
    for args in commands:
        code, doc = lw_json(*args, "--market", market.root)
        assert code == EXIT_MARKET and "corrupt index" in doc["message"] and "lw reindex --rebuild" in doc["message"], args
    assert _folders(market) == folders
    with pytest.raises(MarketError):
        market.version_dir("../../x", 1)


# -- 4. damage is never a reason to delete ----------------------------------------------------------


def test_an_entry_without_versions_is_repaired_not_deleted(market, lw_json):
    before = _index(market)
    _edit_index(market, lambda index: index["learnwares"]["00000001"].update(versions=[]))
    code, doc = lw_json("reindex", "--market", market.root)
    assert code == 0, doc
    assert doc["rebuilt"] is not None and "00000001 has no versions" in doc["rebuilt"]["reason"]
    assert doc["removed"] == []
    assert _index(market)["learnwares"] == before["learnwares"]
    assert market.version_dir("00000001", 1).is_dir() and market.version_dir("00000001", 2).is_dir()


def test_sweep_keeps_unlisted_folders_without_a_leftover_mark(market, lw_json):
    _edit_index(market, lambda index: index["learnwares"].pop("00000002"))  # the index lost an entry
    code, doc = lw_json("reindex", "--market", market.root)
    assert code == 0 and doc["removed"] == []
    assert [note.split(":")[0] for note in doc["kept"]] == ["learnwares/00000002/v1"]
    assert market.version_dir("00000002", 1).is_dir()
    code, doc = lw_json("reindex", "--rebuild", "--market", market.root)  # and a rebuild adopts it
    assert code == 0 and "00000002" in _index(market)["learnwares"] and doc["kept"] == []


def test_a_killed_submitters_folder_is_swept_and_its_slot_reused(market, tmp_path, monkeypatch):
    from learnware_cli.market import catalog

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # dies after the rename, before the commit

    with monkeypatch.context() as patched:
        patched.setattr(catalog, "put_version", killed)
        with pytest.raises(KeyboardInterrupt):
            _add(market, tmp_path, 5)
    leftover = market.version_dir("00000003", 1)
    assert (leftover / store.PENDING_MARK).exists() and "00000003" not in market.read_index()["learnwares"]
    assert market.sweep().removed == ["learnwares/00000003/v1"]
    with monkeypatch.context() as patched:
        patched.setattr(catalog, "put_version", killed)
        with pytest.raises(KeyboardInterrupt):
            _add(market, tmp_path, 6)
    entry, _ = _add(market, tmp_path, 7)  # the next submit takes the same slot over the leftover
    assert entry["id"] == "00000003" and market.sweep().removed == []


def test_a_killed_removers_folder_is_swept(market, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # dies after the index write, before deleting the files

    monkeypatch.setattr(store.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        market.remove("00000001", 1)
    monkeypatch.undo()
    assert (market.version_dir("00000001", 1) / store.REMOVED_MARK).exists()
    assert market.sweep().removed == ["learnwares/00000001/v1"]


def test_a_new_version_never_overwrites_a_folder_the_index_lost(market, tmp_path):
    _edit_index(market, lambda index: index["learnwares"]["00000001"]["versions"].pop())  # lost v2
    with pytest.raises(MarketError, match="lw reindex --rebuild"):
        _add(market, tmp_path, 8, update_id="00000001")
    assert json.loads((market.version_dir("00000001", 2) / "record.json").read_text())["record"]["notes"] == "retrained"


# -- 5. OS errors are one-line market errors --------------------------------------------------------


def _fail(code: int, filename=None):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), *([str(filename)] if filename else []))

    return fail


def test_a_read_only_index_write_is_one_line_and_changes_nothing(market, lw, monkeypatch):
    before = _index(market)
    import sqlite3

    from learnware_cli.market import catalog

    def read_only(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(catalog.Catalog, "write", read_only)
    code, out, err = lw("remove", "00000001@1", "--market", market.root)
    assert code == EXIT_MARKET and "Traceback" not in err
    line = " ".join(err.split())  # rich may wrap the one line to the terminal
    assert "readonly database" in line and "index.sqlite" in line
    assert _index(market) == before
    assert not (market.version_dir("00000001", 1) / store.REMOVED_MARK).exists()


def test_a_full_disk_while_storing_is_a_market_error_and_leaves_no_trace(market, tmp_path, monkeypatch):
    before, folders = _index(market), _folders(market)
    monkeypatch.setattr(store.shutil, "copyfile", _fail(errno.ENOSPC))  # write() errors carry no file name
    with pytest.raises(MarketError) as caught:
        _add(market, tmp_path, 9)
    assert "No space left on device" in caught.value.message and str(market.root) in caught.value.message
    assert _index(market) == before and _folders(market) == folders
    assert list((market.root / ".staging").glob("*")) == []


def test_init_on_a_read_only_folder_is_one_line(tmp_path, lw_json, monkeypatch):
    monkeypatch.setattr(store.os, "rename", _fail(errno.EROFS, tmp_path / "m"))
    code, doc = lw_json("init", tmp_path / "m")
    assert code == EXIT_MARKET and "Read-only file system" in doc["message"] and "\n" not in doc["message"]
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.init-*"))


def test_any_uncaught_os_error_is_one_line_with_exit_5(market, lw, monkeypatch):
    monkeypatch.setattr(Market, "_reading", _fail(errno.EACCES, market.root / "index.sqlite"))
    code, out, err = lw("list", "--market", market.root)
    assert code == EXIT_MARKET and "Traceback" not in err
    assert "Permission denied" in " ".join(err.split())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod")
def test_a_really_read_only_market(market, lw, tmp_path, monkeypatch):
    monkeypatch.setenv("LW_SEARCH_CACHE", str(tmp_path / "user-cache"))
    for path in [market.root, *market.root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        code, _, err = lw("remove", "00000001", "--market", market.root)
        assert code == EXIT_MARKET and "Traceback" not in err
        _spec(1).save(tmp_path / "user.json")
        code, _, err = lw("search", "--market", market.root, "--spec", tmp_path / "user.json")
        assert code == 0, err
    finally:
        for path in [market.root, *market.root.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


# -- 6. a market that cannot be written can still be searched --------------------------------------


def test_search_writes_nothing_into_the_market(market, tmp_path):
    """A search reads the catalog and the segments; a market on a read-only share serves it unchanged."""
    from learnware_cli.search.engine import search

    def state():
        return {p.relative_to(market.root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size) for p in market.root.rglob("*")}

    before = state()
    found = search(market, _spec(3), k=1).single
    assert found[0]["id"] == "00000002"
    assert search(Market.open(market.root), _spec(3), k=1).single[0]["id"] == "00000002"
    assert state() == before
    _add(market, tmp_path, 10)
    assert search(market, _spec(10), k=1).single[0]["id"] == "00000003"


# -- 7. a market written before the catalog is upgraded on first open --------------------------------


def test_a_market_with_an_index_json_is_upgraded_keeping_exactly_what_it_listed(market, tmp_path):
    """Older lw kept the index in index.json: the first open builds index.sqlite and the search segments from the
    folders it lists, keeps next_id and every record field, and never adopts a folder a killed writer left pending."""
    from learnware_cli.search.engine import search

    before = _index(market)
    leftover = market.version_dir("00000003", 1)  # a submitter killed before its index write
    shutil.copytree(market.version_dir("00000002", 1), leftover)
    (leftover / store.PENDING_MARK).touch()
    (market.root / "index.json").write_text(json.dumps(before))
    (market.root / "index.sqlite").unlink()
    shutil.rmtree(market.root / "segments")

    upgraded = Market.open(market.root)
    after = upgraded.read_index()
    assert after["learnwares"] == before["learnwares"] and after["next_id"] == before["next_id"]
    assert search(upgraded, _spec(3), k=1).single[0]["id"] == "00000002"
    assert upgraded.sweep().removed == ["learnwares/00000003/v1"]


# -- 8. the specification is stored once: in the package, or in an older folder's rkme.json ----------


def _add_new_layout(market: Market, work: Path, seed: int, manifest: bool = True) -> tuple[dict, dict]:
    """Store a learnware the way submit now does: the spec only in package.zip (rkme.json, named by learnware.yaml)."""
    import badpackages as bp

    folder = work / f"new-{seed}"
    folder.mkdir(parents=True)
    spec = _spec(seed)
    files = {"rkme.json": json.dumps(spec.to_json_dict(), indent=2)}
    if manifest:
        files.update({"learnware.yaml": bp.LEARNWARE_YAML, "__init__.py": ""})
    package = bp.write_zip(folder / "package.zip", files, top="mine/")
    semantic = spec_only_semantic(f"learnware {seed}", DIM)
    fields = {**stored_record_fields(semantic, spec, package.stat().st_size), "spec_file": "rkme.json"}
    return market.add_version({"package.zip": package}, semantic, fields)


def _same(a, b) -> bool:
    return type(a) is type(b) and json.dumps(a.to_json_dict(), sort_keys=True) == json.dumps(b.to_json_dict(), sort_keys=True)


@pytest.fixture
def mixed(market, tmp_path) -> Market:
    """The market fixture (folders with rkme.json, as older lw stored them), plus 00000003 (seed 4) and 00000004-5
    (bulk, seeds 5-6) whose specs are only in their packages."""
    from learnware_cli.experiment.synthetic import write_spec_only_learnwares

    _add_new_layout(market, tmp_path, 4)
    write_spec_only_learnwares(market, [_spec(5), _spec(6)], [spec_only_semantic(f"bulk {s}", DIM) for s in (5, 6)])
    return market


def test_old_and_new_version_folders_give_their_specs_alike(mixed, lw_json):
    seeds = {("00000001", 1): 1, ("00000001", 2): 2, ("00000002", 1): 3, ("00000003", 1): 4, ("00000004", 1): 5, ("00000005", 1): 6}
    for (learnware_id, version), seed in seeds.items():
        folder = mixed.version_dir(learnware_id, version)
        record = mixed.version_record(mixed.entry(learnware_id), version)
        assert (folder / "rkme.json").is_file() == (seed <= 3) and ("spec_file" in record) == (seed > 3)
        assert _same(mixed.version_spec(learnware_id, version), _spec(seed)), (learnware_id, version)
        assert _same(store.version_spec(folder, record), _spec(seed))
        code, shown = lw_json("show", f"{learnware_id}@{version}", "--market", mixed.root)
        assert code == 0 and shown["rkme"]["K"] == 4 and shown["package_verified"], shown
    with zipfile.ZipFile(mixed.version_dir("00000004", 1) / "package.zip") as archive:  # the bulk path's package
        assert [(i.filename, i.compress_type) for i in archive.infolist()] == [("rkme.json", zipfile.ZIP_DEFLATED)]
        assert archive.testzip() is None


def test_rebuild_reads_both_layouts_and_search_answers_the_same(mixed, lw_json):
    from learnware_cli.search.engine import search

    users = [_spec(seed) for seed in range(1, 8)]

    def answers():
        market = Market.open(mixed.root)
        return [[(r["id"], r["version"], r["mmd2"]) for r in search(market, user, k=4, mixture=False).single] for user in users]

    before, index = answers(), _index(mixed)
    code, doc = lw_json("reindex", "--rebuild", "--market", mixed.root)
    assert code == 0 and doc["rebuilt"]["learnwares"] == 5 and doc["rebuilt"]["versions"] == 6 and doc["rebuilt"]["skipped"] == [], doc
    assert _index(mixed)["learnwares"] == index["learnwares"]  # spec_file included
    assert answers() == before
    assert [row[0][0] for row in before] == ["00000001", "00000001", "00000002", "00000003", "00000004", "00000005", "00000005"]


def test_rebuild_reconstructs_a_new_layout_folder_from_its_package_manifest(mixed, lw_json):
    """Without record.json, a folder without rkme.json is read through its learnware.yaml; a package that names no
    spec (the bulk path's have no manifest) leaves its folder skipped, as an incomplete older one would be."""
    for learnware_id in ("00000003", "00000004"):
        (mixed.version_dir(learnware_id, 1) / "record.json").unlink()
    code, doc = lw_json("reindex", "--rebuild", "--market", mixed.root)
    assert code == 0, doc
    assert [n.split(":")[0] for n in doc["rebuilt"]["reconstructed"]] == ["learnwares/00000003/v1"]
    (skipped,) = doc["rebuilt"]["skipped"]
    assert skipped.startswith("learnwares/00000004/v1: no record.json, no rkme.json, and package.zip gives no specification"), skipped
    record = _index(mixed)["learnwares"]["00000003"]["versions"][0]
    assert record["spec_file"] == "rkme.json" and record["K"] == 4
    assert _same(Market.open(mixed.root).version_spec("00000003", 1), _spec(4))


@pytest.mark.parametrize("damage", ["member gone", "member renamed in the record", "not a zip", "bad spec_file"])
def test_a_package_that_no_longer_gives_its_spec_is_one_clear_error(mixed, lw, damage):
    folder = mixed.version_dir("00000003", 1)
    if damage == "member gone":
        with zipfile.ZipFile(folder / "package.zip", "w") as archive:
            archive.writestr("mine/learnware.yaml", "x: 1\n")
    elif damage == "not a zip":
        (folder / "package.zip").write_bytes(b"PK\x03\x04 truncated")
    else:
        document = json.loads((folder / "record.json").read_text())
        document["record"]["spec_file"] = "elsewhere.json" if damage == "member renamed in the record" else 7
        (folder / "record.json").write_text(json.dumps(document))
    with pytest.raises(MarketError, match="learnware 00000003@1: its (specification cannot be read from its package.zip|record names no valid spec file)"):
        store.version_spec(folder)
    before = _index(mixed)
    code, _, err = lw("reindex", "--rebuild", "--market", mixed.root)
    line = " ".join(err.split())
    assert code == EXIT_MARKET and "Traceback" not in err and "learnware 00000003@1" in line, err
    assert _index(mixed) == before  # the old index stands


def test_a_spec_over_the_cap_is_refused_not_read(mixed):
    from learnware_cli.market.package import PackageLimits

    folder = mixed.version_dir("00000003", 1)
    with pytest.raises(MarketError, match=r"learnware 00000003@1: .*rkme.json is \d+ bytes, the limit is 100"):
        store.version_spec(folder, None, PackageLimits(max_spec_bytes=100))
    assert _same(store.version_spec(folder, None, PackageLimits(max_spec_bytes=10_000)), _spec(4))


def test_the_bulk_path_stores_each_spec_exactly_in_its_package(tmp_path):
    """write_spec_only_learnwares formats z and beta with Arrow (spec_json): every float64 reads back bit for bit,
    whatever its size, and the text is the reference layout json.dumps would write (a -0.0 takes json.dumps)."""
    from learnware_cli.experiment.synthetic import spec_json, write_spec_only_learnwares

    rng = np.random.default_rng(5)
    specs = []
    for scale in (1e-300, 1e-5, 1.0, 3e7, 1e11):  # the checks allow |z| <= 1e12 (float32 search arrays)
        z = rng.normal(size=(6, DIM)) * scale
        z[0, 0], z[1, 1] = 1.0, 0.0  # integral floats are written "1", "0"
        specs.append(RKMESpec(z=z, beta=rng.dirichlet(np.ones(6)), gamma=GAMMA, num_points=7))
    specs[-1].z[2, 2] = -0.0
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=6)
    ids = write_spec_only_learnwares(market, specs, [spec_only_semantic(f"s{i}", DIM) for i in range(len(specs))])
    for learnware_id, spec in zip(ids, specs):
        stored = market.version_spec(learnware_id, 1)
        for ours, theirs in ((stored.z, spec.z), (stored.beta, spec.beta)):
            assert np.array_equal(np.asarray(ours).view(np.int64), np.asarray(theirs).view(np.int64)), learnware_id
        assert (stored.gamma, stored.num_points) == (spec.gamma, spec.num_points)
        assert list(json.loads(spec_json(spec))) == list(spec.to_json_dict())
    assert spec_json(specs[-1]) == json.dumps(specs[-1].to_json_dict(), separators=(",", ":")).encode()
