"""The market's index as an SQLite file (standard library): what a command needs, read in what it touches.

index.json, a single JSON document, had to be parsed whole by every command
and rewritten whole by every submit (106 MB at 10^5 learnwares). The catalog
keeps the same content in three tables, so ``lw show ID`` reads one row,
``lw list --limit 20`` twenty, and a submit inserts its own rows::

    meta        key -> value: format, generation, next_id, updated
    learnwares  id (8 digits), name, semantic (JSON), latest version (indexed: a count reads
                the small index, not every semantic spec)
    versions    (id, version) -> record (JSON: the index record of one version)

plus the register of the search stack's segments (``market.segments``)::

    segments    name -> island ("KIND/dDIM"), rows, level (merge tier), seq (order)
    dead        (island, id, version) rows of segments that no longer count:
                superseded by a newer version (removed = 0) or removed (1)

Every write is one SQLite transaction (BEGIN IMMEDIATE, rollback journal,
synchronous FULL): a writer killed at any moment leaves the previous or the
next state, and readers never see a half one. The version folders' record.json
files stay the source of truth; ``Market.repair_index`` rebuilds this file
from them.

Why SQLite: it is in Python's standard library, a B-tree gives the id lookups
and ordered pages the commands need, and its transactions are the atomic
commit the market relies on; a columnar format (Parquet) would need a
rewrite per submit or a compaction scheme of our own.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

CATALOG_FILE = "index.sqlite"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE learnwares (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    semantic TEXT NOT NULL,
    latest INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX learnwares_by_latest ON learnwares (latest);
CREATE TABLE versions (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (id, version)
) WITHOUT ROWID;
CREATE TABLE segments (
    name TEXT PRIMARY KEY,
    island TEXT NOT NULL,
    rows INTEGER NOT NULL,
    level INTEGER NOT NULL,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE dead (
    island TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    removed INTEGER NOT NULL,
    PRIMARY KEY (island, id, version)
) WITHOUT ROWID;
"""


# learnwares whose latest semantic spec names or describes an input column: the only ones that add market
# features (market.features), so `lw show` and reuse build the vocabulary from these rows alone (a partial index)
DESCRIBES_COLUMNS = (
    "coalesce(json_extract(semantic, '$.Input.Description'), '{}') <> '{}' "
    "OR coalesce(json_extract(semantic, '$.Input.Features'), '{}') <> '{}'"
)
# markets written before these indexes get them from their next write (one pass over the rows)
DERIVED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS versions_by_checksum ON versions (json_extract(record, '$.checksum'))",
    f"CREATE INDEX IF NOT EXISTS learnwares_with_features ON learnwares (id) WHERE {DESCRIBES_COLUMNS}",
)


class CatalogError(Exception):
    """The catalog file is missing, unreadable or not one this module wrote (the market turns it into IndexDamaged)."""


def _connect(path: Path, write: bool) -> sqlite3.Connection:
    """A connection: read-only unless write; a read-only file system is read as immutable."""
    if write:
        conn = sqlite3.connect(str(path), timeout=120.0, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        return conn
    uri = f"file:{path}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=120.0, isolation_level=None)
    try:
        conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise
        # a read-only share cannot take SQLite's shared lock: read the file as it is
        conn.close()
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, isolation_level=None)
    return conn


class Catalog:
    """One market's index.sqlite. Reads take a snapshot (one read transaction); writes go through ``write``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()  # SQLite connections belong to the thread that opened them

    @property
    def _reader(self) -> Optional[sqlite3.Connection]:
        return getattr(self._local, "conn", None)

    @_reader.setter
    def _reader(self, conn: Optional[sqlite3.Connection]) -> None:
        self._local.conn = conn

    # -- creating -------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, next_id: int = 1, generation: int = 0) -> "Catalog":
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("BEGIN")
            for statement in [*filter(str.strip, SCHEMA.split(";")), *DERIVED_INDEXES]:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("schema", str(SCHEMA_VERSION)), ("generation", str(generation)), ("next_id", str(next_id)), ("updated", "")],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        return cls(path)

    # -- reading --------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """The shared read connection (opened once per process and catalog)."""
        if self._reader is None:
            if not self.path.is_file():
                raise CatalogError("index missing")
            try:
                self._reader = _connect(self.path, write=False)
                schema = self._reader.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            except sqlite3.DatabaseError as exc:
                self._reader = None
                raise CatalogError(f"corrupt index ({exc})") from None
            if schema is None or schema[0] != str(SCHEMA_VERSION):
                self._reader = None
                raise CatalogError(f"corrupt index (schema {schema!r}, expected {SCHEMA_VERSION})")
        return self._reader

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent view across several queries (one read transaction)."""
        conn = self.reader()
        try:
            conn.execute("BEGIN")
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"corrupt index ({exc})") from None
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def query(self, sql: str, params: Iterable = ()) -> list:
        try:
            return self.reader().execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"corrupt index ({exc})") from None

    def meta(self, conn: Optional[sqlite3.Connection] = None) -> dict:
        rows = (conn or self.reader()).execute("SELECT key, value FROM meta").fetchall()
        return dict(rows)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- writing --------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed (generation + 1) if the body returns, rolled back if it raises."""
        conn = _connect(self.path, write=True)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in DERIVED_INDEXES:
                    conn.execute(statement)
                yield conn
                conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"corrupt index ({exc})") from None
        finally:
            conn.close()
            self.close()  # the next read sees the new state from a fresh connection


def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, str(value)))


def put_version(conn: sqlite3.Connection, learnware_id: str, name: str, semantic: dict, record: dict) -> None:
    """Insert one version and make it its learnware's latest (the entry's name and semantic follow it)."""
    conn.execute("INSERT INTO versions VALUES (?, ?, ?)", (learnware_id, record["version"], json.dumps(record)))
    conn.execute(
        "INSERT INTO learnwares VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "name = excluded.name, semantic = excluded.semantic, latest = excluded.latest",
        (learnware_id, name, json.dumps(semantic), record["version"]),
    )


def tag_condition(query: dict, vocabulary: dict) -> tuple[str, list]:
    """(SQL condition on learnwares.semantic, its parameters): true exactly where search.semantic.tags_match
    (semantic, query, vocabulary) is, so a tag-filtered search filters in SQLite instead of parsing every entry.

    For each key with wanted values: the key's values are the elements of its Values array (a non-empty
    string counts as one value, "" and null as none); a Tag key (by the vocabulary, else the spec's own Type)
    passes when one value is wanted, a Class key when it has values and every one is wanted.
    """
    parts, params = [], []
    for key, wanted in query.items():
        if not wanted:
            continue
        path = "$." + json.dumps(str(key)) + ".Values"
        marks = ", ".join("?" * len(wanted))
        counted = "NOT (json_type(semantic, ?) = 'null' OR (json_type(semantic, ?) = 'text' AND j.value = ''))"
        values = f"SELECT 1 FROM json_each(semantic, ?) AS j WHERE {counted}"
        tag = f"EXISTS ({values} AND j.value IN ({marks}))"
        tag_params = [path, path, path, *wanted]
        klass = f"(EXISTS ({values}) AND NOT EXISTS ({values} AND (j.value IS NULL OR j.value NOT IN ({marks}))))"
        class_params = [path, path, path, path, path, path, *wanted]
        declared = (vocabulary or {}).get(key, {}).get("type")
        if declared == "Tag":
            parts.append(tag)
            params += tag_params
        elif declared:
            parts.append(klass)
            params += class_params
        else:
            parts.append(f"(CASE WHEN json_extract(semantic, ?) = 'Tag' THEN {tag} ELSE {klass} END)")
            params += ["$." + json.dumps(str(key)) + ".Type", *tag_params, *class_params]
    return (" AND ".join(parts) or "1"), params


def entry_from_rows(learnware_id: str, name: str, semantic: str, records: list) -> dict:
    """The index entry dict the rest of lw reads: id, name, semantic, versions (oldest first)."""
    return {"id": learnware_id, "name": name, "semantic": json.loads(semantic), "versions": [json.loads(r) for r in records]}
