"""A market on object storage (s3://BUCKET/PREFIX), shared by machines that share no disk.

Object storage has no lock and no rename; it has atomic whole-object writes and a
conditional create (``If-None-Match: *``: the PUT fails if the key exists). The
market is built on those two alone::

    s3://BUCKET/PREFIX/
      market.json                 the market's configuration (created once, conditionally)
      log/000000000001.json ...   the commit log: one record per commit, created with put_if_absent
      blobs/SHA256                every stored file (package.zip, semantic.json, report.json,
                                  and rkme.json for versions stored before the specification was
                                  read from package.zip), content-addressed: an upload never
                                  overwrites another file, and identical packages are stored once
      segments/NAME/KEY.npy       search arrays of one commit (zs, betas, selfs, sketch);
                                  NAME is unique per upload, the rows' ids live in the log
      snapshots/000000000064.sqlite   the catalog as of a seq: new readers start there

**The log record is the commit point.** A writer reads the log's tail (its replica
is synced), computes the next ids, versions and seq from it, uploads its blobs and
segments (under keys nobody else writes), then creates ``log/{seq}``. If another
writer took that seq first, the create fails: it syncs again, renumbers and retries.
A writer that dies before the create leaves only unreferenced objects, which
``lw reindex`` deletes once they are an hour old; one that dies after it has
committed. Readers never see a half commit: each record is one object, and an object
is written whole or not at all.

**Readers keep a replica**: ``$LW_CACHE/markets/HASH/`` (default ``~/.cache/lw``), an
ordinary market folder whose index.sqlite is the log replayed (from the newest
snapshot, on a cold start). Bringing it up to date is one LIST request
(``log/`` after the last applied seq) when nothing changed. Version folders and
search segments are downloaded the first time a command needs them, checked
against their sha256, and kept. Everything that reads a market (list, show,
search, reuse) works on the replica unchanged; the writes (submit, remove,
reindex) go through this module. Apply is deterministic: every replica at seq N
holds the same catalog rows.

Two extra tables in the replica's index.sqlite say where each version's files and
each segment's arrays are on the remote: ``remote_versions`` (blobs, island,
semantic of every version) and ``remote_segments`` (arrays, ids, versions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import re
import shutil
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from learnware_cli.errors import MarketError, NotFoundError, RejectedError
from learnware_cli.market.objstore import ObjectStore, is_remote, normalize_url, open_store
from learnware_cli.market.store import (
    CATALOG_FILE,
    FORMAT_VERSION,
    ID_PATTERN,
    RECORD_FILE,
    Market,
    NewVersion,
    RebuildResult,
    SweepResult,
    now_iso,
    semantic_name,
    new_market_config,
)

LOG = "log/"
SNAPSHOTS = "snapshots/"
BLOBS = "blobs/"
SEGMENTS = "segments/"
LOG_FORMAT = 1
SNAPSHOT_EVERY = 64  # the writer of every 64th commit uploads a snapshot of the catalog
COMMIT_TIMEOUT_S = 600.0  # a writer gives up after this long (well under SWEEP_AGE_S: its uploads stay safe)
SWEEP_AGE_S = 3600.0  # unreferenced objects younger than this may belong to a writer about to commit
SEQ_KEY = "remote_seq"
PARALLEL = 8  # concurrent downloads / uploads

VERSION_FILES = ("package.zip", "rkme.json", "semantic.json", "report.json")  # a version's blobs: package.zip and any of the rest
SEGMENT_ARRAYS = ("zs", "betas", "selfs", "sketch")
_SHA = re.compile(r"[0-9a-f]{64}")
_SEGMENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_LOG_KEY = re.compile(r"log/([0-9]{12})\.json")
_SNAPSHOT_KEY = re.compile(r"snapshots/([0-9]{12})\.sqlite")

SIDE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS remote_versions (id TEXT NOT NULL, version INTEGER NOT NULL, island TEXT, "
    "semantic TEXT NOT NULL, blobs TEXT NOT NULL, PRIMARY KEY (id, version)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS remote_segments (name TEXT PRIMARY KEY, arrays TEXT NOT NULL, ids TEXT NOT NULL, "
    "versions TEXT NOT NULL) WITHOUT ROWID",
)


def log_key(seq: int) -> str:
    return f"{LOG}{seq:012d}.json"


def snapshot_key(seq: int) -> str:
    return f"{SNAPSHOTS}{seq:012d}.sqlite"


def cache_base() -> Path:
    """Where replicas live: $LW_CACHE, else $XDG_CACHE_HOME/lw, else ~/.cache/lw."""
    if os.environ.get("LW_CACHE"):
        return Path(os.environ["LW_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lw"


def replica_path(url: str) -> Path:
    return cache_base() / "markets" / hashlib.sha256(normalize_url(url).encode()).hexdigest()[:16]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _package_spec(package: bytes, record: dict, limits):
    """The specification a package's bytes hold where record's spec_file says, read as ``store.version_spec`` reads it."""
    import tempfile

    from learnware_cli.market.store import version_spec

    with tempfile.TemporaryDirectory(prefix="lw-spec-") as tmp:
        (Path(tmp) / "package.zip").write_bytes(package)
        return version_spec(Path(tmp), record, limits)


def _npy_bytes(array) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class BadLog(MarketError):
    """A log record this module could not have written (hand-edited, or from a newer lw)."""


# ----------------------------------------------------------------------------- the replica


class RemoteMarket(Market):
    """The local replica of a remote market: reads as a market folder; writes commit to the remote log."""

    def __init__(self, root: Path, config: dict, remote: "Remote"):
        super().__init__(root, config)
        self.remote = remote

    @property
    def url(self) -> str:
        return self.remote.url

    # reads: fetch what a command needs the first time it needs it
    def version_dir(self, learnware_id: str, version: int) -> Path:
        folder = super().version_dir(learnware_id, version)
        if not (folder / RECORD_FILE).is_file():
            self.remote.materialize(self, learnware_id, version, folder)
        return folder

    def island_view(self, island: str, all_versions: bool = False):
        self.remote.fetch_segments(self, island)
        return super().island_view(island, all_versions)

    # writes: through the log
    def add_versions(self, items: list[NewVersion]) -> list[tuple[dict, dict]]:
        return self.remote.add_versions(self, items)

    def remove(self, learnware_id: str, version: Optional[int] = None) -> dict:
        return self.remote.remove(self, learnware_id, version)

    def compact(self, island: str, everything: bool = False) -> int:
        return 0  # segments are remote objects: merging them is a log operation (not in this version)

    def sweep(self) -> SweepResult:
        return self.remote.sweep(self)

    def repair_index(self, force: bool = False, only: Optional[set] = None, reason: Optional[str] = None) -> Optional[RebuildResult]:
        return self.remote.repair(self, force)

    @property
    def applied(self) -> int:
        """The seq of the last log record this replica has applied."""
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (SEQ_KEY,)).fetchone()
        return int(row[0]) if row else 0


# ----------------------------------------------------------------------------- the remote


class Remote:
    """One market on object storage and this machine's replica of it."""

    def __init__(self, url: str, store: Optional[ObjectStore] = None, replica: Optional[Path] = None):
        self.url = normalize_url(url) if is_remote(url) else str(url)
        self.store = store if store is not None else open_store(self.url)
        self.root = Path(replica) if replica is not None else replica_path(self.url)
        self.writer = uuid.uuid4().hex
        self.commit_timeout_s = COMMIT_TIMEOUT_S
        self.snapshot_every = SNAPSHOT_EVERY

    # -- creating and opening -------------------------------------------------

    def create(self, name: Optional[str] = None, gamma: Optional[float] = None, k: Optional[int] = None) -> dict:
        """`lw init s3://...`: write market.json, refusing (atomically) if one is there."""
        config = new_market_config(name or (self.url.rstrip("/").rsplit("/", 1)[-1] or "market"), gamma, k)
        config["storage"] = {"kind": "s3", "log": LOG_FORMAT}
        with _remote_errors(f"cannot create the market at {self.url}"):
            if self.store.list(LOG):
                raise MarketError(f"{self.url}: holds a market log already; refusing to overwrite it")
            if not self.store.put_if_absent("market.json", json.dumps(config, indent=2).encode()):
                raise MarketError(f"{self.url}: a market already exists here; refusing to overwrite it")
        return config

    def open(self, sync: bool = True) -> RemoteMarket:
        """The replica, built on first use, brought up to date with the log (one LIST when nothing changed)."""
        config_path = self.root / "market.json"
        if not config_path.is_file():
            with _remote_errors(f"cannot open the market at {self.url}"):
                try:
                    raw = self.store.get("market.json")
                except KeyError:
                    raise MarketError(f"{self.url}: not a market (no market.json); create one with `lw init {self.url}`") from None
            try:
                config = json.loads(raw)
            except ValueError as exc:
                raise MarketError(f"{self.url}/market.json: unreadable market configuration ({exc})") from None
            if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
                raise MarketError(f"{self.url}/market.json: unsupported market format")
            self._build_replica(config)
        market = Market.open(self.root)
        market = RemoteMarket(self.root, market.config, self)
        if sync:
            from learnware_cli.market.store import IndexDamaged

            try:
                self.sync(market)
            except IndexDamaged:  # the replica is derived data: rebuild it from the log rather than fail
                self.repair(market, force=True)
        return market

    def _build_replica(self, config: dict) -> None:
        from learnware_cli.market.store import market_write

        self.root.parent.mkdir(parents=True, exist_ok=True)
        with market_write("cannot create the market's local replica", self.root):
            try:
                Market._build(self.root, config)
            except OSError:
                if not (self.root / "market.json").is_file():  # else another process built it meanwhile
                    raise
            (self.root / "REMOTE").write_text(self.url + "\n", encoding="utf-8")

    # -- reading the log ------------------------------------------------------

    def sync(self, market: RemoteMarket) -> int:
        """Apply every log record after the replica's seq -> the seq now applied."""
        with _remote_errors(f"cannot read the market at {self.url}"):
            applied = market.applied
            if applied == 0:
                applied = self._start_from_snapshot(market)
            keys = self.store.list(LOG, start_after=log_key(applied))
            seqs = []
            for key in keys:
                match = _LOG_KEY.fullmatch(key)
                if match is None:
                    continue
                seq = int(match.group(1))
                if seq != applied + len(seqs) + 1:
                    break  # a gap cannot be written by this protocol: read only the contiguous part
                seqs.append(seq)
            if not seqs:
                return applied
            records = _parallel(lambda s: self._read_record(s), seqs)
        return self._apply(market, records)

    def _read_record(self, seq: int) -> dict:
        raw = self.store.get(log_key(seq))
        try:
            record = json.loads(raw)
        except ValueError:
            raise BadLog(f"{self.url}/{log_key(seq)}: not JSON; the market's log is damaged") from None
        if not isinstance(record, dict) or record.get("seq") != seq or record.get("format") != LOG_FORMAT:
            raise BadLog(f"{self.url}/{log_key(seq)}: not a log record of format {LOG_FORMAT} for seq {seq}")
        return record

    def _apply(self, market: RemoteMarket, records: list[dict]) -> int:
        """Apply records (in seq order) in one catalog transaction; those already applied are skipped."""
        from learnware_cli.market.catalog import CatalogError

        gone: list[tuple[str, int]] = []
        try:
            with market.catalog.write() as conn:
                for statement in SIDE_SCHEMA:
                    conn.execute(statement)
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (SEQ_KEY,)).fetchone()
                applied = int(row[0]) if row else 0
                for record in records:
                    if record["seq"] <= applied:
                        continue
                    if record["seq"] != applied + 1:
                        break
                    gone += apply_record(conn, record, f"{self.url}/{log_key(record['seq'])}")
                    applied = record["seq"]
                conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (SEQ_KEY, str(applied)))
                conn.execute("INSERT INTO meta VALUES ('updated', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (now_iso(),))
        except CatalogError as exc:
            raise MarketError(f"{market.root}: the replica of {self.url} is damaged ({exc}); run `lw reindex --rebuild --market {self.url}`") from None
        for learnware_id, version in gone:  # removed versions: their local copies go too (best effort)
            shutil.rmtree(market.root / "learnwares" / learnware_id / f"v{version}", ignore_errors=True)
        return applied

    def _start_from_snapshot(self, market: RemoteMarket) -> int:
        """A replica that has applied nothing starts from the newest snapshot, if there is one -> its seq."""
        from learnware_cli.market.catalog import Catalog, set_meta

        seqs = [int(m.group(1)) for m in map(_SNAPSHOT_KEY.fullmatch, self.store.list(SNAPSHOTS)) if m]
        if not seqs:
            return 0
        seq = max(seqs)
        tmp = market.root / f".snapshot-{uuid.uuid4().hex[:8]}.sqlite"
        try:
            tmp.write_bytes(self.store.get(snapshot_key(seq)))
            try:
                conn = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
                try:
                    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                    conn.execute("SELECT count(*) FROM remote_versions").fetchone()
                finally:
                    conn.close()
            except sqlite3.DatabaseError:
                return 0  # a damaged snapshot: replay the log instead
            if int(meta.get(SEQ_KEY, -1)) != seq:
                return 0
            with market.lock():
                if market.applied != 0:
                    return market.applied
                old = market.generation
                market.catalog.close()
                os.replace(tmp, market.root / CATALOG_FILE)
                with Catalog(market.root / CATALOG_FILE).write() as conn:
                    set_meta(conn, "generation", max(int(meta.get("generation", 0)), old + 1))
                market.catalog.close()
            return seq
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    # -- fetching files on first need ----------------------------------------

    def materialize(self, market: RemoteMarket, learnware_id: str, version: int, folder: Path) -> None:
        """Download one version's files into its replica folder (checked against their sha256; record.json last)."""
        with market._reading() as conn:
            row = conn.execute("SELECT blobs, semantic FROM remote_versions WHERE id = ? AND version = ?", (learnware_id, version)).fetchone()
            record_row = conn.execute("SELECT record FROM versions WHERE id = ? AND version = ?", (learnware_id, version)).fetchone()
        if row is None or record_row is None:
            return  # not in the market: the caller finds no files, as in a local market
        blobs, semantic, record = json.loads(row[0]), json.loads(row[1]), json.loads(record_row[0])
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp"
        building.mkdir()
        try:
            with _remote_errors(f"cannot download {learnware_id}@{version} from {self.url}"):
                contents = _parallel(lambda name: (name, self._blob(blobs[name])), [n for n in VERSION_FILES if n in blobs])
            for name, data in contents:
                (building / name).write_bytes(data)
            document = {"id": learnware_id, "name": semantic_name(semantic), "semantic": semantic, "record": record}
            (building / RECORD_FILE).write_text(json.dumps(document, indent=1), encoding="utf-8")
            try:
                os.rename(building, folder)
            except OSError:
                if not (folder / RECORD_FILE).is_file():  # else another process got there first
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)

    def _blob(self, sha: str) -> bytes:
        data = self.store.get(BLOBS + sha)
        if _sha(data) != sha:
            from learnware_cli.market.integrity import IntegrityError

            raise IntegrityError(f"{self.url}/{BLOBS}{sha}: its content does not match its sha256 (the stored object was modified)")
        return data

    def fetch_segments(self, market: RemoteMarket, island: str) -> None:
        """Make sure every segment of an island is on disk (arrays downloaded, ids and versions from the log)."""
        import numpy as np

        from learnware_cli.market import segments as seg

        with market._reading() as conn:
            rows = conn.execute(
                "SELECT s.name, r.arrays, r.ids, r.versions FROM segments s JOIN remote_segments r ON r.name = s.name WHERE s.island = ?",
                (island,),
            ).fetchall()
        todo = []
        for name, arrays, ids, versions in rows:
            folder = market.root / seg.SEGMENTS_DIR / name
            if (folder / "ids.npy").is_file():
                continue  # ids.npy is written last
            todo.append((name, json.loads(arrays), json.loads(ids), json.loads(versions)))
        if not todo:
            return
        jobs = [(name, key) for name, arrays, _, _ in todo for key in arrays]
        with _remote_errors(f"cannot download the search segments of {island} from {self.url}"):
            fetched = dict(zip(jobs, _parallel(lambda job: self.store.get(f"{SEGMENTS}{job[0]}/{job[1]}.npy"), jobs)))
        for name, arrays, ids, versions in todo:
            folder = market.root / seg.SEGMENTS_DIR / name
            folder.mkdir(parents=True, exist_ok=True)
            for key in arrays:
                _write_atomic(folder / f"{key}.npy", fetched[(name, key)])
            _write_atomic(folder / "versions.npy", _npy_bytes(np.asarray(versions, dtype=np.int32)))
            _write_atomic(folder / "ids.npy", _npy_bytes(np.asarray(ids, dtype=np.int64)))

    # -- writing: the commit loop ---------------------------------------------

    def commit(self, market: RemoteMarket, build) -> tuple[int, Any]:
        """Sync, build the ops against the synced state, create log/{seq}; on a lost race, again.

        build(market) -> (ops, next_id, result). Returns (seq, result).
        """
        deadline = time.monotonic() + self.commit_timeout_s
        attempt = 0
        while True:
            applied = self.sync(market)
            ops, next_id, result = build(market)
            seq = applied + 1
            token = uuid.uuid4().hex
            record = {"format": LOG_FORMAT, "seq": seq, "writer": self.writer, "token": token, "time": now_iso(), "next_id": next_id, "ops": ops}
            data = json.dumps(record, separators=(",", ":")).encode()
            with _remote_errors(f"cannot write the market at {self.url}"):
                created = self.store.put_if_absent(log_key(seq), data)
                if not created:
                    created = self._is_ours(seq, token)  # a retried request whose first try had landed
            if created:
                self._apply(market, [record])
                if seq % self.snapshot_every == 0:
                    with contextlib.suppress(Exception):  # an optimisation: a failed snapshot loses nothing
                        self.snapshot(market)
                return seq, result
            attempt += 1
            if time.monotonic() > deadline:
                raise MarketError(f"{self.url}: could not commit within {self.commit_timeout_s:.0f} s ({attempt} other writers went first); try again")
            time.sleep(random.uniform(0.0, min(0.05 * 2 ** min(attempt, 6), 2.0)))

    def _is_ours(self, seq: int, token: str) -> bool:
        try:
            record = json.loads(self.store.get(log_key(seq)))
        except (KeyError, ValueError):
            return False
        return isinstance(record, dict) and record.get("token") == token and record.get("writer") == self.writer

    def add_versions(self, market: RemoteMarket, items: list[NewVersion]) -> list[tuple[dict, dict]]:
        """Upload the items' blobs and search segments, then commit one log record that adds them all."""
        from learnware_cli.market import segments as seg
        from learnware_cli.specs import load_spec

        uploads: dict[str, bytes] = {}
        prepared = []
        for item in items:
            blobs = {}
            for stored_name, source in item.files.items():
                data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
                blobs[stored_name] = _sha(data)
                uploads[blobs[stored_name]] = data
            semantic_bytes = json.dumps(item.semantic, indent=1).encode()
            blobs["semantic.json"] = _sha(semantic_bytes)
            uploads[blobs["semantic.json"]] = semantic_bytes
            checksum = blobs["package.zip"]
            if item.checksum is not None and checksum != item.checksum.lower():
                raise RejectedError("archive", f"{item.files['package.zip']}: changed after its checks (sha256 differs); nothing was stored")
            if item.spec is None and "rkme.json" not in item.files:  # the spec is in the package: parse the bytes uploaded
                item = dataclasses.replace(item, spec=_package_spec(uploads[checksum], item.record_fields, market.package_limits))
            prepared.append((item, blobs, checksum, seg.island_of(item.record_fields, item.semantic)))
        items = [item for item, _, _, _ in prepared]
        groups: dict[str, list[int]] = {}
        for position, (_, _, _, island) in enumerate(prepared):
            if island is not None:
                groups.setdefault(island, []).append(position)
        segment_uploads: list[tuple[str, str, list[int], list[str]]] = []
        segment_objects: dict[str, bytes] = {}
        for island, positions in groups.items():
            specs = [items[p].spec if items[p].spec is not None else load_spec(Path(items[p].files["rkme.json"]), source=str(items[p].files["rkme.json"])) for p in positions]
            # the sketch index (a FAISS file) stays local: a replica never deserialises one a bucket gives it
            arrays = {key: value for key, value in seg.stack_specs(specs, market.gamma).items() if key in SEGMENT_ARRAYS}
            name = seg.new_name(island)
            for key, value in arrays.items():
                segment_objects[f"{SEGMENTS}{name}/{key}.npy"] = _npy_bytes(value)
            segment_uploads.append((name, island, positions, sorted(arrays)))
        with _remote_errors(f"cannot upload to {self.url}"):
            # unconditional puts: they refresh an existing object's age, so a sweep never takes a blob a commit is about to reference
            _parallel(lambda pair: self.store.put(*pair), [(BLOBS + sha, data) for sha, data in uploads.items()] + list(segment_objects.items()))

        def build(current: RemoteMarket):
            with current._reading() as conn:
                next_id = int(dict(conn.execute("SELECT key, value FROM meta").fetchall()).get("next_id", 1))
                ops, placed = [], []
                for item, blobs, checksum, island in prepared:
                    if item.update_id is None:
                        learnware_id, version = f"{next_id:08d}", 1
                        next_id += 1
                    else:
                        learnware_id = item.update_id if ID_PATTERN.fullmatch(item.update_id) else (f"{int(item.update_id):08d}" if item.update_id.isdigit() else item.update_id)
                        latest = conn.execute("SELECT max(version) FROM versions WHERE id = ?", (learnware_id,)).fetchone()[0]
                        if latest is None:
                            raise NotFoundError(f"no learnware {item.update_id!r} in market {self.url}")
                        version = int(latest) + 1
                    record = {"version": version, "submitted": now_iso(), "checksum": checksum, "path": f"learnwares/{learnware_id}/v{version}"}
                    record.update({key: value for key, value in item.record_fields.items() if key not in record})
                    ops.append({"op": "add", "id": learnware_id, "name": semantic_name(item.semantic), "semantic": item.semantic, "record": record, "island": island, "blobs": blobs})
                    placed.append((learnware_id, record))
            for name, island, positions, arrays in segment_uploads:
                ops.append({
                    "op": "segment", "name": name, "island": island, "arrays": arrays,
                    "ids": [int(placed[p][0]) for p in positions], "versions": [placed[p][1]["version"] for p in positions],
                })
            return ops, next_id, placed

        _, placed = self.commit(market, build)
        return [(market.entry(learnware_id), record) for learnware_id, record in placed]

    def remove(self, market: RemoteMarket, learnware_id: str, version: Optional[int] = None) -> dict:
        entry = market.entry(learnware_id)  # NotFoundError before anything is written
        learnware_id = entry["id"]

        def build(current: RemoteMarket):
            before = current.entry(learnware_id)
            if version is not None:
                current.version_record(before, version)  # NotFoundError if there is no such version
            return [{"op": "remove", "id": learnware_id, "version": version}], int(dict(current.catalog.meta()).get("next_id", 1)), before

        _, before = self.commit(market, build)
        return before

    def snapshot(self, market: RemoteMarket) -> Optional[int]:
        """Upload a consistent copy of the replica's catalog as snapshots/{seq}.sqlite -> that seq."""
        tmp = market.root / f".snapshot-out-{uuid.uuid4().hex[:8]}.sqlite"
        try:
            source = sqlite3.connect(f"file:{market.root / CATALOG_FILE}?mode=ro", uri=True)
            target = sqlite3.connect(str(tmp))
            try:
                source.backup(target)
                seq = int(target.execute("SELECT value FROM meta WHERE key = ?", (SEQ_KEY,)).fetchone()[0])
            finally:
                source.close()
                target.close()
            if seq > 0:
                self.store.put_if_absent(snapshot_key(seq), tmp.read_bytes())
            return seq
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    # -- maintenance ----------------------------------------------------------

    def sweep(self, market: RemoteMarket, min_age_s: float = SWEEP_AGE_S) -> SweepResult:
        """Delete remote objects no commit references (older than min_age_s), old snapshots, and the replica's leftovers."""
        result = SweepResult()
        self.sync(market)
        with market._reading() as conn:
            blobs = {sha for (text,) in conn.execute("SELECT blobs FROM remote_versions") for sha in json.loads(text).values()}
            segments = {name for (name,) in conn.execute("SELECT name FROM segments")}
            listed = {(i, int(v)) for i, v in conn.execute("SELECT id, version FROM versions")}
        now = time.time()
        with _remote_errors(f"cannot clean up the market at {self.url}"):
            doomed = []
            for key, _, mtime in self.store.stat_list(BLOBS):
                if key[len(BLOBS):] not in blobs and now - mtime >= min_age_s:
                    doomed.append(key)
            for key, _, mtime in self.store.stat_list(SEGMENTS):
                if key[len(SEGMENTS):].split("/", 1)[0] not in segments and now - mtime >= min_age_s:
                    doomed.append(key)
            snapshots = sorted(k for k in self.store.list(SNAPSHOTS) if _SNAPSHOT_KEY.fullmatch(k))
            doomed += snapshots[:-2]  # the two newest are enough to start from
            _parallel(self.store.delete, doomed)
        result.removed += [f"{self.url}/{key}" for key in doomed]
        for folder, learnware_id, version in market._version_folders():  # local copies of removed versions
            if version is not None and (learnware_id, version) not in listed:
                shutil.rmtree(folder, ignore_errors=True)
                result.removed.append(str(folder))
        from learnware_cli.market import segments as seg

        for path in (market.root / seg.SEGMENTS_DIR).glob("*"):
            if path.name not in segments:
                shutil.rmtree(path, ignore_errors=True)
        for path in list(market.root.glob(".snapshot-*")) + list((market.root / "learnwares").glob("*/.v*.tmp")):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        return result

    def repair(self, market: RemoteMarket, force: bool = False) -> Optional[RebuildResult]:
        """`lw reindex`: the replica is derived data; rebuild it by replaying the whole log if forced or damaged."""
        from learnware_cli.market.catalog import Catalog
        from learnware_cli.market.store import IndexDamaged

        reason = "requested (--rebuild)"
        if not force:
            try:
                market.read_index(fresh=True)
                return None
            except IndexDamaged as exc:
                reason = exc.why
        building = market.root / f".{CATALOG_FILE}.{uuid.uuid4().hex[:8]}.building"
        try:
            Catalog.create(building, generation=max(market_generation(market) + 1, time.time_ns() // 1_000_000))
            rebuilt = RemoteMarket(market.root, market.config, self)
            rebuilt._catalog = Catalog(building)
            with _remote_errors(f"cannot read the market at {self.url}"):
                keys = sorted(k for k in self.store.list(LOG) if _LOG_KEY.fullmatch(k))
                seqs = [int(_LOG_KEY.fullmatch(k).group(1)) for k in keys]
                seqs = [s for n, s in enumerate(seqs) if s == n + 1]
                records = _parallel(self._read_record, seqs)
            self._apply(rebuilt, records)
            rebuilt.catalog.close()
            with market.lock():
                market.catalog.close()
                os.replace(building, market.root / CATALOG_FILE)
        finally:
            with contextlib.suppress(OSError):
                building.unlink()
        index = market.read_index(fresh=True)
        return RebuildResult(reason=reason, learnwares=len(index["learnwares"]), versions=sum(len(e["versions"]) for e in index["learnwares"].values()))


def market_generation(market: Market) -> int:
    with contextlib.suppress(Exception):
        return market.generation
    return 0


# ----------------------------------------------------------------------------- applying one record


def apply_record(conn, record: dict, where: str) -> list[tuple[str, int]]:
    """Apply one log record to a catalog (inside its transaction) -> the (id, version)s it removed.

    Deterministic: the same record on the same catalog state gives the same rows,
    so every replica at seq N holds the same catalog. A record this module could
    not have written raises BadLog (nothing of the transaction lands).
    """
    gone: list[tuple[str, int]] = []
    ops = record.get("ops")
    if not isinstance(ops, list):
        raise BadLog(f"{where}: no ops")
    for op in ops:
        kind = op.get("op") if isinstance(op, dict) else None
        if kind == "add":
            _apply_add(conn, op, where)
        elif kind == "segment":
            _apply_segment(conn, op, record["seq"], where)
        elif kind == "remove":
            gone += _apply_remove(conn, op, where)
        else:
            raise BadLog(f"{where}: unknown operation {kind!r}")
    next_id = record.get("next_id")
    current = int(conn.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()[0])
    highest = conn.execute("SELECT max(CAST(id AS INTEGER)) FROM learnwares").fetchone()[0] or 0
    wanted = max(current, int(highest) + 1, next_id if isinstance(next_id, int) else 0)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'next_id'", (str(wanted),))
    return gone


def _check_id(learnware_id: Any, where: str) -> str:
    if not isinstance(learnware_id, str) or not ID_PATTERN.fullmatch(learnware_id):
        raise BadLog(f"{where}: learnware id {learnware_id!r} is not 8 digits")
    return learnware_id


def _apply_add(conn, op: dict, where: str) -> None:
    from learnware_cli.market.catalog import put_version

    learnware_id = _check_id(op.get("id"), where)
    record, semantic, blobs = op.get("record"), op.get("semantic"), op.get("blobs")
    if not isinstance(record, dict) or not isinstance(semantic, dict) or not isinstance(blobs, dict):
        raise BadLog(f"{where}: an add of {learnware_id} lacks its record, semantic or blobs")
    version = record.get("version")
    latest = conn.execute("SELECT max(version) FROM versions WHERE id = ?", (learnware_id,)).fetchone()[0]
    if not isinstance(version, int) or isinstance(version, bool) or version != (latest or 0) + 1:
        raise BadLog(f"{where}: {learnware_id} version {version!r} does not follow version {latest or 0}")
    if set(blobs) - set(VERSION_FILES) or "package.zip" not in blobs or not all(isinstance(v, str) and _SHA.fullmatch(v) for v in blobs.values()):
        raise BadLog(f"{where}: the blobs of {learnware_id}@{version} are not sha256 names of its files")
    if blobs["package.zip"] != record.get("checksum"):
        raise BadLog(f"{where}: {learnware_id}@{version}'s package blob is not its recorded checksum")
    if latest is not None:  # an update: the previous version's search row is superseded
        previous = conn.execute("SELECT island FROM remote_versions WHERE id = ? AND version = ?", (learnware_id, latest)).fetchone()
        if previous and previous[0]:
            conn.execute("INSERT OR IGNORE INTO dead VALUES (?, ?, ?, 0)", (previous[0], learnware_id, latest))
    record["path"] = f"learnwares/{learnware_id}/v{version}"
    island = op.get("island") if isinstance(op.get("island"), str) else None
    put_version(conn, learnware_id, str(op.get("name") or semantic_name(semantic)), semantic, record)
    conn.execute(
        "INSERT OR REPLACE INTO remote_versions VALUES (?, ?, ?, ?, ?)",
        (learnware_id, version, island, json.dumps(semantic), json.dumps(blobs, sort_keys=True)),
    )


def _apply_segment(conn, op: dict, seq: int, where: str) -> None:
    from learnware_cli.market import segments as seg

    name, island, arrays, ids, versions = (op.get(k) for k in ("name", "island", "arrays", "ids", "versions"))
    if not isinstance(name, str) or not _SEGMENT_NAME.fullmatch(name) or not isinstance(island, str):
        raise BadLog(f"{where}: bad segment name {name!r}")
    if not isinstance(arrays, list) or not {"zs", "betas", "selfs"} <= set(arrays) <= set(SEGMENT_ARRAYS):
        raise BadLog(f"{where}: segment {name} does not list its arrays")
    if not isinstance(ids, list) or not isinstance(versions, list) or len(ids) != len(versions) or not ids:
        raise BadLog(f"{where}: segment {name} has no rows")
    if not all(isinstance(i, int) and 0 < i < 10**8 for i in ids) or not all(isinstance(v, int) and v >= 1 for v in versions):
        raise BadLog(f"{where}: segment {name} lists a bad id or version")
    try:
        seg.split_island(island)
    except ValueError:
        raise BadLog(f"{where}: segment {name} names no island ({island!r})") from None
    conn.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?)", (name, island, len(ids), seg.level_of(len(ids)), seq))
    conn.execute("INSERT INTO remote_segments VALUES (?, ?, ?, ?)", (name, json.dumps(sorted(arrays)), json.dumps(ids), json.dumps(versions)))


def _apply_remove(conn, op: dict, where: str) -> list[tuple[str, int]]:
    """As Market.remove: drop rows, mark search rows removed, restore the previous version as latest."""
    learnware_id = _check_id(op.get("id"), where)
    version = op.get("version")
    numbers = [int(v) for (v,) in conn.execute("SELECT version FROM versions WHERE id = ? ORDER BY version", (learnware_id,))]
    if not numbers:
        raise BadLog(f"{where}: removes {learnware_id}, which the market does not hold")
    if version is None or numbers == [version]:
        gone = numbers
        conn.execute("DELETE FROM versions WHERE id = ?", (learnware_id,))
        conn.execute("DELETE FROM learnwares WHERE id = ?", (learnware_id,))
    else:
        if version not in numbers:
            raise BadLog(f"{where}: removes {learnware_id}@{version}, which the market does not hold")
        gone = [version]
        conn.execute("DELETE FROM versions WHERE id = ? AND version = ?", (learnware_id, version))
        if version == numbers[-1]:
            previous = numbers[-2]
            row = conn.execute("SELECT island, semantic FROM remote_versions WHERE id = ? AND version = ?", (learnware_id, previous)).fetchone()
            semantic = json.loads(row[1]) if row else {}
            conn.execute("UPDATE learnwares SET name = ?, semantic = ?, latest = ? WHERE id = ?", (semantic_name(semantic), json.dumps(semantic), previous, learnware_id))
            if row and row[0]:
                conn.execute("DELETE FROM dead WHERE island = ? AND id = ? AND version = ? AND removed = 0", (row[0], learnware_id, previous))
    for number in gone:
        row = conn.execute("SELECT island FROM remote_versions WHERE id = ? AND version = ?", (learnware_id, number)).fetchone()
        if row and row[0]:
            conn.execute("INSERT OR REPLACE INTO dead VALUES (?, ?, ?, 1)", (row[0], learnware_id, number))
        conn.execute("DELETE FROM remote_versions WHERE id = ? AND version = ?", (learnware_id, number))
    return [(learnware_id, number) for number in gone]


# ----------------------------------------------------------------------------- helpers


def _parallel(fn, jobs: list) -> list:
    """fn over jobs, PARALLEL at a time (network waits), results in order; the first error is raised."""
    jobs = list(jobs)
    if len(jobs) <= 1:
        return [fn(job) for job in jobs]
    with ThreadPoolExecutor(min(PARALLEL, len(jobs))) as pool:
        return list(pool.map(fn, jobs))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _remote_errors(what: str):
    """A storage failure (no credentials, no bucket, network) as one MarketError line; never the credentials."""
    from learnware_cli.errors import LwError

    try:
        yield
    except LwError:
        raise
    except KeyError as exc:
        raise MarketError(f"{what}: the object {exc.args[0] if exc.args else ''} is missing from the bucket (deleted by hand?); run `lw reindex`") from None
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp and OSError all end here
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MarketError(f"{what}: {type(exc).__name__}: {text}") from None


def open_market(url: str, sync: bool = True) -> RemoteMarket:
    """The synced replica of the market at url (what `--market s3://...` opens)."""
    return Remote(url).open(sync=sync)


def create_market(url: str, name: Optional[str] = None, gamma: Optional[float] = None, k: Optional[int] = None) -> dict:
    return Remote(url).create(name=name, gamma=gamma, k=k)
