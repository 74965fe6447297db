"""The market on disk: a folder of learnware packages and one JSON index.

Layout::

    MARKET/
      market.json            name, format version, kernel (gamma, K), vocabulary, check limits
      index.json             every learnware and every version (what readers trust)
      README.md              for whoever opens the folder
      .lock                  taken (flock) by every writer
      .staging/BATCH/        a submit's files on their way in; BATCH/.held is flocked by its writer
      learnwares/ID/vN/      package.zip, semantic.json, report.json, and record.json
                             (the version's index record, with id, name and semantic spec);
                             the specification is read from package.zip (the file the record's
                             spec_file names), or from rkme.json in folders stored before that
      cache/                 derived data (search arrays); safe to delete

Writers stage files in .staging/, move them into place with one rename, and
only then replace index.json atomically, all under the lock. A writer killed
at any moment leaves the previous or the next index, never a half one; at
worst a leftover folder that says it is one (see ``Market.sweep``).

Every version folder carries its own record.json, so the folders alone can
rebuild a lost or damaged index (``Market.repair_index``). Folder paths are
always derived from the id and version (``Market.version_dir``), never read
from the index: an edited index must not be able to name a path.
"""

from __future__ import annotations

import contextlib
import gc
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Optional

from learnware_cli.errors import InputError, LwError, MarketError, NotFoundError, RejectedError

FORMAT_VERSION = 1
DEFAULT_MARKET_ENV = "LW_MARKET"
LOCK_TIMEOUT_S = 120.0

INDEX_FILE = "index.json"  # the index of markets before the catalog: upgraded on first write access
CATALOG_FILE = "index.sqlite"
STAGING = ".staging"
BATCH_LOCK = ".held"  # in each staging batch, flocked by the writer that made it
RECORD_FILE = "record.json"
PENDING_MARK = ".pending"  # in a stored version folder until its index write is done
REMOVED_MARK = ".removed"  # in a doomed version folder from just before its index write
STORED_FILES = ("package.zip", "semantic.json")  # what a version folder needs to be served, besides its specification:
SPEC_COPY = "rkme.json"  # the market's own copy of it, in folders whose record names no spec_file (older markets)
ID_PATTERN = re.compile(r"[0-9]{8}")  # the ids this module makes: f"{n:08d}"
VERSION_FOLDER = re.compile(r"v([1-9][0-9]*)")


def default_market_path() -> Path:
    """$LW_MARKET, else ./market (a market is a project folder, like a git repo)."""
    return Path(os.environ.get(DEFAULT_MARKET_ENV, "market"))


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + fsync + rename: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, separators=(",", ":")), encoding="utf-8")  # compact: a bulk submit writes thousands


def os_error_text(exc: OSError) -> str:
    """'PATH: reason' for an OSError: the one line a user needs (read-only folder, disk full, ...)."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


@contextlib.contextmanager
def market_write(what: str, where: Path) -> Iterator[None]:
    """Report an OSError while writing the market as a one-line MarketError, not a traceback.

    ``where`` names the path when the error itself carries none (a failed
    write() on a full disk has no file name).
    """
    try:
        yield
    except OSError as exc:
        text = os_error_text(exc) if exc.filename else f"{where}: {exc.strerror or exc}"
        raise MarketError(f"{what}: {text}") from None


def template_text(name: str) -> str:
    return resources.files("learnware_cli.market_template").joinpath(name).read_text(encoding="utf-8")


def parse_learnware_ref(text: str) -> tuple[str, Optional[int]]:
    """'00000003@2' -> ('00000003', 2); '00000003' -> ('00000003', None)."""
    ident, sep, version = str(text).strip().partition("@")
    if not ident:
        raise InputError(f"bad learnware reference {text!r} (expected ID or ID@VERSION)")
    if not sep:
        return ident, None
    try:
        number = int(version)
    except ValueError:
        number = 0
    if number < 1:
        raise InputError(f"bad version in {text!r} (expected ID@N with N a positive whole number)")
    return ident, number


def semantic_name(semantic: dict) -> str:
    """The Name value of a semantic specification ('' if it has none)."""
    name = semantic.get("Name")
    return str(name.get("Values", "")) if isinstance(name, dict) else ""


def _semantic_value(semantic: dict, key: str, field_name: str) -> Any:
    value = semantic.get(key)
    return value.get(field_name) if isinstance(value, dict) else None


def _is_version_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class IndexDamaged(MarketError):
    """index.json is missing, unparsable or inconsistent: `lw reindex` rebuilds it from the version folders."""

    def __init__(self, path: Path, why: str, command: str = "lw reindex --rebuild"):
        super().__init__(f"{path}: {why}; run `{command}`")
        self.why = why


def validate_index(index: Any, path: Path) -> None:
    """Refuse an index this module could not have written.

    Ids and version numbers name folders, so a damaged or hand-edited index
    must fail here rather than reach a path: ids are 8 digits, each table key
    is its entry's id, every entry has versions, numbered 1, 2, ... strictly
    increasing, and next_id lies above every id (or the next submit would
    overwrite a stored learnware).
    """

    def damaged(why: str) -> IndexDamaged:
        return IndexDamaged(path, f"corrupt index ({why})")

    if not isinstance(index, dict) or not isinstance(index.get("learnwares"), dict):
        raise damaged("no learnwares table")
    for key, entry in index["learnwares"].items():
        if not ID_PATTERN.fullmatch(key):
            raise damaged(f"learnware id {key!r} is not 8 digits")
        if not isinstance(entry, dict) or entry.get("id") != key:
            raise damaged(f"the entry under {key} does not have id {key}")
        versions = entry.get("versions")
        if not isinstance(versions, list) or not versions:
            raise damaged(f"learnware {key} has no versions")
        previous = 0
        for record in versions:
            number = record.get("version") if isinstance(record, dict) else None
            if not _is_version_number(number) or number <= previous:
                raise damaged(f"learnware {key}: version {number!r} is not a whole number above {previous}")
            previous = number
    next_id = index.get("next_id", 1)
    highest = max((int(key) for key in index["learnwares"]), default=0)
    if not _is_version_number(next_id) or next_id <= highest:
        raise damaged(f"next_id {next_id!r} is not above the highest id {highest}")


_INDEX_CACHE: dict = {}


@dataclass
class NewVersion:
    """A checked package ready to store: files by stored name, semantic spec, record fields.

    files maps stored names (package.zip, report.json, and rkme.json where the
    market keeps its own copy of the specification) to a local path or to the
    file's bytes. A record_fields["spec_file"] says which file of package.zip
    holds the specification (see ``version_spec``); then no rkme.json is needed.
    """

    files: dict
    semantic: dict
    record_fields: dict
    update_id: Optional[str] = None
    checksum: Optional[str] = None  # sha256 of package.zip as the checks read it; the stored copy must match
    spec: Any = None  # the parsed specification, when the caller has it (else it is read from files["rkme.json"])


@dataclass
class SweepResult:
    """What ``Market.sweep`` deleted, and the unlisted folders it kept (each 'PATH: why')."""

    removed: list = field(default_factory=list)
    kept: list = field(default_factory=list)


@dataclass
class RebuildResult:
    """What ``Market.repair_index`` rebuilt: counts, and the folders it reconstructed or skipped ('PATH: why')."""

    reason: str
    learnwares: int = 0
    versions: int = 0
    reconstructed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    backup: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


class _Skip(Exception):
    """A version folder the rebuild leaves out (and on disk); the message says why."""


class Market:
    """A market folder. Reads need no lock; every write goes through ``transaction``."""

    def __init__(self, root: Path, config: dict):
        self.root = Path(root)
        self.config = config
        self._catalog = None

    # -- opening and creating -------------------------------------------------

    @classmethod
    def open(cls, root=None) -> "Market":
        root = Path(root) if root is not None else default_market_path()
        config_path = root / "market.json"
        if not config_path.is_file():
            raise MarketError(f"{root}: not a market (no market.json); create one with `lw init {root}`")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MarketError(f"{config_path}: unreadable market configuration ({exc})") from None
        if not isinstance(config, dict):
            raise MarketError(f"{config_path}: unreadable market configuration (not a JSON object)")
        if config.get("format_version") != FORMAT_VERSION:
            raise MarketError(f"{config_path}: unsupported market format {config.get('format_version')!r}")
        market = cls(root, config)
        if not (root / CATALOG_FILE).exists() and (root / INDEX_FILE).is_file():
            market._upgrade_from_json()
        return market

    def _upgrade_from_json(self) -> None:
        """A market written before the catalog: build index.sqlite and the search segments from what index.json lists.

        Needs write access once; index.json stays beside the catalog (unused).
        """
        index = _read_json(self.root / INDEX_FILE)
        try:
            validate_index(index, self.root / INDEX_FILE)
        except IndexDamaged:
            index = None  # damaged: `lw reindex` adopts every complete folder
        only = None if index is None else {(e["id"], r["version"]) for e in index["learnwares"].values() for r in e["versions"]}
        try:
            self.repair_index(force=True, only=only, reason="upgraded from index.json")
        except MarketError as exc:
            raise MarketError(f"{self.root}: written by an older lw (index.json); open it once with write access to upgrade it ({exc.message})") from None

    @classmethod
    def create(cls, root, name: Optional[str] = None, gamma: Optional[float] = None, k: Optional[int] = None) -> "Market":
        """Make a new market from market_template/. Refuses a folder that already holds one or any files."""
        root = Path(root)
        if (root / "market.json").exists():
            raise MarketError(f"{root}: a market already exists here; refusing to overwrite it")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise MarketError(f"{root}: exists and is not an empty folder; refusing to overwrite it")
        config = new_market_config(name or root.resolve().name, gamma, k)
        with market_write("cannot create the market", root):
            cls._build(root, config)
        return cls(root, config)

    @staticmethod
    def _build(root: Path, config: dict) -> None:
        """Build beside the target, then one rename: an interrupted init leaves no half market."""
        root.parent.mkdir(parents=True, exist_ok=True)
        building = root.parent / f".{root.name}.init-{uuid.uuid4().hex[:8]}"
        building.mkdir()
        try:
            (building / "learnwares").mkdir()
            (building / ".lock").touch()
            readme = template_text("README.md").replace("{name}", config["name"])
            (building / "README.md").write_text(readme, encoding="utf-8")
            from learnware_cli.market.catalog import Catalog

            Catalog.create(building / CATALOG_FILE)
            (building / "segments").mkdir()
            (building / "market.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
            if root.exists():
                root.rmdir()  # empty, checked above
            os.rename(building, root)
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)

    # -- configuration --------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.get("name", self.root.name)

    @property
    def gamma(self) -> float:
        return float(self.config["kernel"]["gamma"])

    @property
    def k(self) -> int:
        return int(self.config["kernel"]["K"])

    @property
    def vocabulary(self) -> dict:
        return self.config.get("vocabulary", {})

    @property
    def limits(self) -> dict:
        return self.config.get("limits", {})

    @property
    def model_timeout_s(self) -> float:
        """Wall time a submitted model may take per call (load, predict), in submit checks and reuse."""
        return float(self.limits.get("model_timeout_s", 60))

    @property
    def model_memory_mb(self) -> int:
        """Address-space limit of a model worker."""
        return int(self.limits.get("model_memory_mb", 4096))

    # -- index ----------------------------------------------------------------

    @property
    def catalog(self):
        """The index (``catalog.Catalog`` over index.sqlite), opened once per Market object."""
        if self._catalog is None:
            from learnware_cli.market.catalog import Catalog

            self._catalog = Catalog(self.root / CATALOG_FILE)
        return self._catalog

    def _catalog_error(self, exc) -> "IndexDamaged":
        why = str(exc)
        return IndexDamaged(self.root / CATALOG_FILE, why, "lw reindex" if why == "index missing" else "lw reindex --rebuild")

    @contextlib.contextmanager
    def _reading(self) -> Iterator:
        """A consistent read of the catalog (one SQLite read transaction); damage raises IndexDamaged."""
        from learnware_cli.market.catalog import CatalogError

        try:
            with self.catalog.snapshot() as conn:
                yield conn
        except CatalogError as exc:
            raise self._catalog_error(exc) from None
        except sqlite3.DatabaseError as exc:
            raise self._catalog_error(f"corrupt index ({exc})") from None
        except OSError as exc:
            raise MarketError(f"cannot read the market index: {os_error_text(exc)}") from None

    @property
    def generation(self) -> int:
        """Bumped by every write: derived caches keyed by it are current while it is unchanged."""
        with self._reading() as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def read_index(self, fresh: bool = False) -> dict:
        """The whole index as one dict (learnwares table, next_id, generation): for commands that need every entry.

        Commands that touch a few entries use ``entry``, ``page`` and ``count``.
        The dict is built once per generation and shared read-only (fresh=True
        gives a private copy). An index this module could not have written
        raises IndexDamaged.
        """
        from learnware_cli.market.catalog import entry_from_rows

        with self._reading() as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            key = (str(self.root.resolve()), self.config.get("created", ""), meta.get("generation"))
            if not fresh and _INDEX_CACHE.get("key") == key:
                return _INDEX_CACHE["index"]
            records: dict[str, list] = {}
            for learnware_id, record in conn.execute("SELECT id, record FROM versions ORDER BY id, version"):
                records.setdefault(learnware_id, []).append(record)
            table = {}
            for learnware_id, name, semantic, _ in conn.execute("SELECT id, name, semantic, latest FROM learnwares ORDER BY id"):
                table[learnware_id] = entry_from_rows(learnware_id, name, semantic, records.get(learnware_id, []))
        orphans = sorted(set(records) - set(table))
        if orphans:
            raise IndexDamaged(self.root / CATALOG_FILE, f"corrupt index (versions of {orphans[0]!r}, a learnware it does not list)")
        index = {"format_version": FORMAT_VERSION, "generation": int(meta.get("generation", 0)), "next_id": int(meta.get("next_id", 1)), "learnwares": table}
        validate_index(index, self.root / CATALOG_FILE)
        if not fresh:
            _INDEX_CACHE.clear()
            _INDEX_CACHE.update(key=key, index=index)
            # a big index is a large, long-lived object graph: keep the cyclic GC from
            # re-scanning it on every allocation burst (it cost 0.1 s per search at 10k entries)
            gc.freeze()
        return index

    @contextlib.contextmanager
    def lock(self, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.root / ".lock"), timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise MarketError(f"{self.root}: market is locked by another writer (waited {timeout:.0f} s)") from None
        except OSError as exc:  # a read-only market cannot be locked, hence not written
            raise MarketError(f"cannot lock the market for writing: {os_error_text(exc)}") from None
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def _writing(self) -> Iterator:
        """One catalog write transaction, under the market lock: all of it lands (generation + 1) or none."""
        from learnware_cli.market.catalog import CatalogError

        with self.lock():
            try:
                with self.catalog.write() as conn:
                    yield conn
                    conn.execute("INSERT INTO meta VALUES ('updated', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (now_iso(),))
            except CatalogError as exc:
                raise self._catalog_error(exc) from None
            except sqlite3.OperationalError as exc:
                raise MarketError(f"cannot write the market index: {self.root / CATALOG_FILE}: {exc}") from None

    # -- learnwares -----------------------------------------------------------

    def entries(self) -> list[dict]:
        return list(self.read_index()["learnwares"].values())

    def count(self) -> int:
        """How many learnwares the market holds (one query)."""
        with self._reading() as conn:
            return int(conn.execute("SELECT count(*) FROM learnwares").fetchone()[0])

    def feature_entries(self) -> list[dict]:
        """The entries ({"id", "semantic"}) whose columns can be market features: build_vocabulary of these has the
        features build_vocabulary of every entry has (the others describe no column), read through a partial index."""
        from learnware_cli.market.catalog import DESCRIBES_COLUMNS

        with self._reading() as conn:
            rows = conn.execute(f"SELECT id, semantic FROM learnwares WHERE {DESCRIBES_COLUMNS} ORDER BY id").fetchall()
        return [{"id": i, "semantic": json.loads(semantic)} for i, semantic in rows]

    def semantic_matches(self, query: dict, text: Optional[str] = None) -> list[tuple[str, float]]:
        """(id, score) of the learnwares whose latest semantic spec passes query's tag filters, ranked by text
        (search.semantic.semantic_search's rules and order), without building entries: the filters run in SQLite
        (catalog.tag_condition) and only the names and descriptions of the kept rows are read."""
        from learnware_cli.market.catalog import tag_condition
        from learnware_cli.search.semantic import TEXT_KEYS, text_scores

        condition, params = tag_condition(query, self.vocabulary)
        texts = ", ".join(f"json_extract(semantic, '$.{key}.Values')" for key in TEXT_KEYS) if text else "NULL"
        with self._reading() as conn:
            rows = conn.execute(f"SELECT id, {texts} FROM learnwares WHERE {condition} ORDER BY id", params).fetchall()
        if not text:
            return [(row[0], 1.0) for row in rows]
        return [(row[0], score) for row, score in text_scores(rows, text, haystacks=lambda row: [str(h or "").lower() for h in row[1:]])]

    def undescribed_elsewhere(self) -> int:
        """Input columns of the learnwares that describe none (not in feature_entries): what
        build_vocabulary(every entry).undescribed_columns() adds to that of feature_entries(), summed in SQLite
        (an Input object whose Dimension is a non-negative integer, as features._input_block reads it)."""
        from learnware_cli.market.catalog import DESCRIBES_COLUMNS

        dimension = "json_extract(semantic, '$.Input.Dimension')"
        with self._reading() as conn:
            (total,) = conn.execute(
                f"SELECT coalesce(sum({dimension}), 0) FROM learnwares WHERE NOT ({DESCRIBES_COLUMNS}) "
                f"AND json_type(semantic, '$.Input') = 'object' AND json_type(semantic, '$.Input.Dimension') = 'integer' AND {dimension} >= 0"
            ).fetchone()
        return int(total)

    def holders_of(self, checksum: str) -> list[tuple[str, int]]:
        """(id, version) of every stored version whose package.zip has this sha256 (an index lookup)."""
        with self._reading() as conn:
            rows = conn.execute("SELECT id, version FROM versions WHERE json_extract(record, '$.checksum') = ? ORDER BY id, version", (checksum,)).fetchall()
        return [(str(i), int(v)) for i, v in rows]

    def page(self, limit: int, offset: int = 0) -> list[dict]:
        """Entries in id order, ``limit`` of them from ``offset``: what `lw list` shows without reading them all."""
        with self._reading() as conn:
            ids = [row[0] for row in conn.execute("SELECT id FROM learnwares ORDER BY id LIMIT ? OFFSET ?", (limit, offset))]
        return [self.entry(learnware_id) for learnware_id in ids]

    def entry(self, learnware_id: str, index: Optional[dict] = None) -> dict:
        """The index entry of an id; a short numeric id ("7") means its padded form ("00000007")."""
        if index is not None:
            table = index["learnwares"]
            if learnware_id not in table and learnware_id.isdigit():
                learnware_id = f"{int(learnware_id):08d}"
            if learnware_id in table:
                return table[learnware_id]
            raise NotFoundError(f"no learnware {learnware_id!r} in market {self.root}")
        from learnware_cli.market.catalog import entry_from_rows

        if not ID_PATTERN.fullmatch(learnware_id) and learnware_id.isdigit():
            learnware_id = f"{int(learnware_id):08d}"
        with self._reading() as conn:
            row = conn.execute("SELECT name, semantic FROM learnwares WHERE id = ?", (learnware_id,)).fetchone()
            records = [r[0] for r in conn.execute("SELECT record FROM versions WHERE id = ? ORDER BY version", (learnware_id,))]
        if row is None:
            raise NotFoundError(f"no learnware {learnware_id!r} in market {self.root}")
        entry = entry_from_rows(learnware_id, row[0], row[1], records)
        validate_index({"learnwares": {learnware_id: entry}, "next_id": int(learnware_id) + 1 if learnware_id.isdigit() else 1}, self.root / CATALOG_FILE)
        return entry

    @staticmethod
    def version_record(entry: dict, version: Optional[int] = None) -> dict:
        """The named version of an entry, or its latest."""
        versions = entry["versions"]
        if version is None:
            return versions[-1]
        for record in versions:
            if record["version"] == version:
                return record
        known = ", ".join(str(r["version"]) for r in versions)
        raise NotFoundError(f"learnware {entry['id']} has no version {version} (versions: {known})")

    def path(self, relative: str) -> Path:
        """A path inside the market. Not for a record's "path": use ``version_dir`` (index paths are never trusted)."""
        return self.root / relative

    def version_dir(self, learnware_id: str, version: int) -> Path:
        """The folder of one stored version, derived from the id and version (never from index paths)."""
        if not ID_PATTERN.fullmatch(str(learnware_id)) or not _is_version_number(version):
            raise MarketError(
                f"{self.root}: corrupt index (no stored version can be {learnware_id!r}@{version!r}: ids are 8 digits, "
                "versions whole numbers from 1); run `lw reindex --rebuild`"
            )
        return self.root / "learnwares" / learnware_id / f"v{version}"

    def version_spec(self, learnware_id: str, version: int, record: Optional[dict] = None):
        """The specification of one stored version (a ``specs.Specification``); see the module function ``version_spec``.

        record: the version's index record, when the caller has it (else its
        folder's record.json says where the specification is).
        """
        return version_spec(self.version_dir(learnware_id, version), record, self.package_limits)

    @property
    def package_limits(self):
        """The caps stored packages are read under (``package.PackageLimits``): the market's entry and size limits."""
        from learnware_cli.market.package import PackageLimits

        defaults = PackageLimits()

        def positive(key: str, default: int) -> int:
            value = self.limits.get(key, default)
            return value if _is_version_number(value) else default  # a bad value: submit reports it; reading keeps the default

        return PackageLimits(max_entries=positive("max_package_entries", defaults.max_entries), max_total_bytes=positive("max_package_bytes", defaults.max_total_bytes))

    def _relative(self, folder: Path) -> str:
        return folder.relative_to(self.root).as_posix()

    def _inside(self, folder: Path) -> bool:
        """Is folder reached without a symbolic link below the market root? Nothing is written or deleted through one."""
        return folder.resolve() == self.root.resolve() / self._relative(folder)

    def add_version(
        self,
        files: dict[str, Path],
        semantic: dict,
        record_fields: dict[str, Any],
        update_id: Optional[str] = None,
    ) -> tuple[dict, dict]:
        """Store a checked package as a new learnware (or a new version of update_id).

        files maps stored names (package.zip, rkme.json, ...) to local paths.
        Returns (entry, version record). All-or-nothing: see the module docstring.
        """
        return self.add_versions([NewVersion(files, semantic, record_fields, update_id)])[0]

    def add_versions(self, items: list["NewVersion"]) -> list[tuple[dict, dict]]:
        """Store several checked packages in one transaction (one catalog commit for a bulk submit).

        The copies, and the search segments of their specifications, are made
        outside the market lock (a big bulk submit must not stall other
        writers) in a staging batch that holds its own lock, so a concurrent
        sweep leaves it alone. Each stored folder is marked pending until the
        commit that lists it is done.
        """
        with market_write("cannot store the package", self.root), self._staging_batch() as batch:
            staged = [(item, batch / str(n), self._stage(batch / str(n), item)) for n, item in enumerate(items)]
            items = [self._with_spec(item, folder) for item, folder, _ in staged]
            segments = self._stage_segments(batch, items)
            with self._writing() as conn:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                state = {"next_id": int(meta.get("next_id", 1))}
                results = [self._place(conn, state, item, folder, checksum) for item, folder, checksum in staged]
                self._place_segments(conn, segments, results, int(meta.get("generation", 0)))
                conn.execute("UPDATE meta SET value = ? WHERE key = 'next_id'", (str(state["next_id"]),))
            self._compact_quietly({island for island, _, _ in segments})
        _unmark([self.version_dir(entry["id"], record["version"]) for entry, record in results], PENDING_MARK)
        return results

    def _with_spec(self, item: "NewVersion", staged: Path) -> "NewVersion":
        """The item with its parsed specification: given, or read from its staged files as ``version_spec`` will read them."""
        if item.spec is not None:
            return item
        return replace(item, spec=version_spec(staged, item.record_fields, self.package_limits))

    def _stage_segments(self, batch: Path, items: list["NewVersion"]) -> list[tuple[str, Path, list[int]]]:
        """Stack the items' specifications per island into staged segment folders -> [(island, folder, item positions)]."""
        from learnware_cli.market import segments as seg
        from learnware_cli.specs import load_spec

        groups: dict[str, list[int]] = {}
        for position, item in enumerate(items):
            island = seg.island_of(item.record_fields, item.semantic)
            if island is not None:
                groups.setdefault(island, []).append(position)
        staged = []
        for island, positions in groups.items():
            specs = [item.spec if item.spec is not None else load_spec(Path(items[p].files["rkme.json"]), source=str(items[p].files["rkme.json"])) for p in positions for item in [items[p]]]
            folder = batch / f"segment-{len(staged)}"
            seg.write_arrays(folder, seg.stack_specs(specs, self.gamma))
            staged.append((island, folder, positions))
        return staged

    def _place_segments(self, conn, staged: list, results: list, generation: int) -> None:
        """Give staged segments their ids and versions, move them in, and register them (inside the commit)."""
        import numpy as np

        from learnware_cli.market import segments as seg

        for island, folder, positions in staged:
            ids = np.array([int(results[p][0]["id"]) for p in positions], dtype=np.int64)
            versions = np.array([results[p][1]["version"] for p in positions], dtype=np.int32)
            seg.write_arrays(folder, {"ids": ids, "versions": versions})
            name = seg.new_name(island)
            (self.root / seg.SEGMENTS_DIR).mkdir(exist_ok=True)
            os.rename(folder, self.root / seg.SEGMENTS_DIR / name)
            conn.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?)", (name, island, len(positions), seg.level_of(len(positions)), generation))

    def island_view(self, island: str, all_versions: bool = False):
        """Every search segment of one island with its live rows (``segments.IslandView``), read in one snapshot.

        all_versions: superseded versions count too (removed ones never).
        A segment merged away between the listing and the opening is read again.
        """
        from learnware_cli.market import segments as seg

        for attempt in range(3):
            with self._reading() as conn:
                names = [row[0] for row in conn.execute("SELECT name FROM segments WHERE island = ? ORDER BY seq, name", (island,))]
                dead = {(int(i), int(v)) for i, v, removed in conn.execute("SELECT id, version, removed FROM dead WHERE island = ?", (island,)) if removed or not all_versions}
            try:
                parts = []
                for name in names:
                    arrays = seg.open_segment(self.root, name)
                    parts.append(seg.Segment(name=name, live=seg.live_mask(arrays["ids"], arrays["versions"], dead), **arrays))
                return seg.IslandView(island, parts)
            except FileNotFoundError:
                if attempt == 2:
                    raise MarketError(f"{self.root}: a search segment of {island} is missing; run `lw reindex --rebuild`") from None
            except (OSError, ValueError) as exc:
                raise MarketError(f"{self.root}: a search segment of {island} is unreadable ({exc}); run `lw reindex --rebuild`") from None
        raise AssertionError("unreachable")

    def islands(self) -> list[str]:
        """The islands that have search segments."""
        with self._reading() as conn:
            return [row[0] for row in conn.execute("SELECT DISTINCT island FROM segments ORDER BY island")]

    def _compact_quietly(self, islands: set) -> None:
        """Merge small segments of the islands just written (a failure leaves them as they are: still correct)."""
        with contextlib.suppress(MarketError, OSError):
            for island in sorted(islands):
                self.compact(island)

    def compact(self, island: str, everything: bool = False) -> int:
        """Merge segments of one island: MERGE_FANOUT of one level into one of the next (tiered), or all (everything).

        The merged segment drops dead rows (and their dead records). The merge is
        written beside the others, swapped in by one commit, and the old folders
        deleted after it (a reader that has them open keeps its mapping).
        Returns how many segments were merged.
        """
        from learnware_cli.market import segments as seg

        merged_count = 0
        while True:
            with self._reading() as conn:
                rows = conn.execute("SELECT name, rows, level FROM segments WHERE island = ? ORDER BY seq, name", (island,)).fetchall()
            by_level: dict[int, list] = {}
            for name, count, level in rows:
                by_level.setdefault(level, []).append(name)
            group = [name for name, _, _ in rows] if everything and len(rows) > 1 else next((names[:seg.MERGE_FANOUT] for _, names in sorted(by_level.items()) if len(names) >= seg.MERGE_FANOUT), None)
            if not group:
                return merged_count
            with self.lock():
                name = self._merge(island, group)
            merged_count += len(group)
            if everything or name is None:
                return merged_count

    def _merge(self, island: str, group: list[str]) -> Optional[str]:
        import numpy as np

        from learnware_cli.market import segments as seg

        with self._reading() as conn:
            listed = {row[0] for row in conn.execute("SELECT name FROM segments WHERE island = ?", (island,))}
            dead = {(int(i), int(v)) for i, v in conn.execute("SELECT id, version FROM dead WHERE island = ?", (island,))}
            seq = conn.execute("SELECT min(seq) FROM segments WHERE island = ?", (island,)).fetchone()[0]
        if not set(group) <= listed:
            return None  # another writer merged them meanwhile
        parts = []
        for name in group:
            arrays = seg.open_segment(self.root, name)
            parts.append({**arrays, "live": seg.live_mask(arrays["ids"], arrays["versions"], dead)})
        merged = seg.merge_arrays(parts)
        dropped = [(int(i), int(v)) for p in parts for i, v in zip(np.asarray(p["ids"])[~p["live"]], np.asarray(p["versions"])[~p["live"]])]
        name = seg.new_name(island)
        target = self.root / seg.SEGMENTS_DIR / name
        rows = int(merged["ids"].shape[0]) if "ids" in merged else 0
        if rows:
            building = self.root / seg.SEGMENTS_DIR / f".{name}.building"
            seg.write_arrays(building, merged)
            os.rename(building, target)
        with self.catalog.write() as conn:
            conn.executemany("DELETE FROM segments WHERE name = ?", [(n,) for n in group])
            conn.executemany("DELETE FROM dead WHERE island = ? AND id = ? AND version = ?", [(island, f"{i:08d}", v) for i, v in dropped])
            if rows:
                first_seq = min(conn.execute("SELECT coalesce(min(seq), ?) FROM segments WHERE island = ?", (seq, island)).fetchone()[0], seq)
                conn.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?)", (name, island, rows, seg.level_of(rows), first_seq))
        self.catalog.close()
        for old in group:
            seg.remove_folder(self.root, old)
        return name

    @contextlib.contextmanager
    def _staging_batch(self) -> Iterator[Path]:
        """A new .staging/BATCH/ folder whose .held file this process flocks until the batch is done.

        Folder and flock are made under the market lock, which sweep also
        holds: sweep never sees a live writer's batch unheld. The OS drops the
        flock of a killed writer, so the next sweep deletes its batch.
        """
        batch = self.root / STAGING / uuid.uuid4().hex
        with self.lock():
            batch.mkdir(parents=True)
            held = _flock_new(batch / BATCH_LOCK)
            (batch / PENDING_MARK).touch()  # what _stage links each staged folder's mark to
        try:
            yield batch
        finally:
            shutil.rmtree(batch, ignore_errors=True)
            os.close(held)  # drops the flock

    def _stage(self, folder: Path, item: "NewVersion") -> str:
        """Copy one item's files into its staging folder, marked pending -> sha256 of the copied package.zip."""
        folder.mkdir()
        try:  # a hard link to the batch's empty mark: the same mark for sweep, one inode fewer per version (bulk writes)
            os.link(folder.parent / PENDING_MARK, folder / PENDING_MARK)
        except OSError:  # no hard links here (or no batch mark): a file of its own
            (folder / PENDING_MARK).touch()
        checksum = None
        for stored_name, source in item.files.items():
            if isinstance(source, (bytes, bytearray, memoryview)):  # in memory (the bulk path): written once, hashed here
                (folder / stored_name).write_bytes(source)
                if stored_name == "package.zip":
                    checksum = hashlib.sha256(source).hexdigest()
            else:
                shutil.copyfile(source, folder / stored_name)
        _write_json(folder / "semantic.json", item.semantic)
        checksum = checksum or sha256_file(folder / "package.zip")
        if item.checksum is not None and checksum != item.checksum.lower():
            source = item.files["package.zip"]
            raise RejectedError("archive", f"{'package.zip' if isinstance(source, (bytes, bytearray, memoryview)) else source}: changed after its checks (sha256 differs); nothing was stored")
        return checksum

    def _place(self, conn, state: dict, item: "NewVersion", folder: Path, checksum: str) -> tuple[dict, dict]:
        """Move one staged version into learnwares/ and insert it into the catalog (inside the commit).

        Its record.json is written into the staged folder before the rename, so
        every stored folder can stand in for its catalog rows. An update makes
        the previous version's search row dead (superseded).
        """
        from learnware_cli.market import segments as seg
        from learnware_cli.market.catalog import entry_from_rows, put_version

        if item.update_id is None:
            learnware_id = f"{state['next_id']:08d}"
            state["next_id"] += 1
            entry = {"id": learnware_id, "versions": []}
        else:
            learnware_id = item.update_id if ID_PATTERN.fullmatch(item.update_id) else f"{int(item.update_id):08d}"
            row = conn.execute("SELECT name, semantic FROM learnwares WHERE id = ?", (learnware_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no learnware {item.update_id!r} in market {self.root}")
            records = [r[0] for r in conn.execute("SELECT record FROM versions WHERE id = ? ORDER BY version", (learnware_id,))]
            entry = entry_from_rows(learnware_id, row[0], row[1], records)
            previous = entry["versions"][-1]
            island = seg.island_of(previous, entry["semantic"])
            if island is not None:
                conn.execute("INSERT OR IGNORE INTO dead VALUES (?, ?, ?, 0)", (island, learnware_id, previous["version"]))
        version = (entry["versions"][-1]["version"] + 1) if entry["versions"] else 1
        target = self.version_dir(learnware_id, version)
        record = {"version": version, "submitted": now_iso(), "checksum": checksum, "path": self._relative(target)}
        record.update({key: value for key, value in item.record_fields.items() if key not in record})
        name = semantic_name(item.semantic)
        _write_json(folder / RECORD_FILE, {"id": learnware_id, "name": name, "semantic": item.semantic, "record": record})
        target.parent.mkdir(parents=True, exist_ok=True)
        if not self._inside(target.parent):
            raise MarketError(f"{target.parent}: a symbolic link; refusing to store through it")
        if target.exists():
            self._drop_leftover(target)
        os.rename(folder, target)
        put_version(conn, learnware_id, name, item.semantic, record)
        entry["versions"].append(record)
        entry["name"] = name
        entry["semantic"] = item.semantic
        return entry, record

    def _drop_leftover(self, target: Path) -> None:
        """Delete an unlisted folder in the way of a new version, only if it says it is a leftover (see sweep)."""
        if not _marked(target):
            raise MarketError(
                f"{target}: exists but the index does not list it (a damaged index?); run `lw reindex --rebuild`"
            )
        shutil.rmtree(target)

    def remove(self, learnware_id: str, version: Optional[int] = None) -> dict:
        """Drop a learnware (or one of its versions) from the catalog, then delete its files.

        The doomed folders are marked removed before the commit: a remover
        killed after it leaves marked, unlisted folders that sweep deletes;
        killed before it, the catalog still lists them (sweep clears the
        marks). A failed commit takes the marks back at once. Removing the
        latest version makes the one before it the learnware's latest again
        (its name and semantic specification included, read from its record.json).
        """
        from learnware_cli.market import segments as seg

        doomed: list[Path] = []
        entry = self.entry(learnware_id)
        learnware_id = entry["id"]
        with market_write(f"cannot remove {learnware_id}", self.root):
            try:
                with self._writing() as conn:
                    entry = self.entry(learnware_id)  # as of this commit (the lock is held)
                    numbers = [r["version"] for r in entry["versions"]]
                    if version is None or numbers == [version]:
                        gone = entry["versions"]
                        conn.execute("DELETE FROM versions WHERE id = ?", (learnware_id,))
                        conn.execute("DELETE FROM learnwares WHERE id = ?", (learnware_id,))
                        doomed = list((self.root / "learnwares" / learnware_id).glob("*"))
                    else:
                        gone = [self.version_record(entry, version)]  # NotFoundError if there is no such version
                        conn.execute("DELETE FROM versions WHERE id = ? AND version = ?", (learnware_id, version))
                        if version == numbers[-1]:
                            self._restore_latest(conn, entry, entry["versions"][-2])
                        doomed = [self.version_dir(learnware_id, version)]
                    for record in gone:
                        island = seg.island_of(record, entry["semantic"]) if record is entry["versions"][-1] else _island_of_folder(self, learnware_id, record)
                        if island is not None:
                            conn.execute("INSERT OR REPLACE INTO dead VALUES (?, ?, ?, 1)", (island, learnware_id, record["version"]))
                    doomed = [folder for folder in doomed if folder.is_dir() and self._inside(folder)]
                    for folder in doomed:
                        (folder / REMOVED_MARK).touch()
            except BaseException:
                _unmark(doomed, REMOVED_MARK)
                raise
            for folder in doomed:
                shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.root / "learnwares" / learnware_id).rmdir()  # only if nothing is left in it
        return entry

    def _restore_latest(self, conn, entry: dict, record: dict) -> None:
        """Make an earlier version the latest again: its search row lives, its name and semantic are the entry's."""
        from learnware_cli.market import segments as seg

        stored, _ = _read_record(self.version_dir(entry["id"], record["version"]) / RECORD_FILE, entry["id"], record["version"])
        semantic = stored["semantic"] if stored else entry["semantic"]
        name = stored["name"] if stored else entry.get("name", "")
        conn.execute("UPDATE learnwares SET name = ?, semantic = ?, latest = ? WHERE id = ?", (name, json.dumps(semantic), record["version"], entry["id"]))
        island = seg.island_of(record, semantic)
        if island is not None:
            conn.execute("DELETE FROM dead WHERE island = ? AND id = ? AND version = ? AND removed = 0", (island, entry["id"], record["version"]))

    # -- repair ---------------------------------------------------------------

    def _version_folders(self) -> Iterator[tuple[Path, str, Optional[int]]]:
        """(folder, id, version) for every learnwares/*/* folder; version None if it is not a real ID/vN folder."""
        base = self.root / "learnwares"
        for id_dir in sorted(base.iterdir()) if base.is_dir() else []:
            for folder in sorted(id_dir.iterdir()) if id_dir.is_dir() else []:
                if folder.is_dir():
                    match = VERSION_FOLDER.fullmatch(folder.name)
                    valid = match is not None and ID_PATTERN.fullmatch(id_dir.name) is not None and self._inside(folder)
                    yield folder, id_dir.name, int(match.group(1)) if valid else None

    def sweep(self) -> SweepResult:
        """Delete what killed writers left behind, and only that.

        The rule for a version folder the index does not list: it is deleted
        only if it carries a mark that says it is a leftover.

        - ``.pending``: written by add_versions before the rename, cleared after
          the index write. Unlisted and pending: the submitter died before its
          index write (the package was never in the market).
        - ``.removed``: written by remove before its index write. Unlisted and
          removed: the removal is done; only the deletion was cut short.

        An unlisted folder without a mark was lost by the index (damage, a hand
        edit, an older lw): it is kept and reported; `lw reindex --rebuild`
        adopts it. A listed folder is never touched, except that a stale mark in
        it (its writer died on the other side of its index write) is cleared.
        The index must be valid (an entry without versions is damage, not an
        instruction to delete), else nothing is touched. Staging batches go
        unless a live writer holds their lock.
        """
        result = SweepResult()
        with market_write("cannot clean up the market", self.root), self.lock():
            self.read_index(fresh=True)  # a damaged index: touch nothing
            with self._reading() as conn:
                listed = {(i, int(v)) for i, v in conn.execute("SELECT id, version FROM versions")}
                registered = {row[0] for row in conn.execute("SELECT name FROM segments")}
            self._sweep_staging(result)
            self._sweep_segments(registered, result)
            for folder, learnware_id, version in self._version_folders():
                relative = self._relative(folder)
                if (learnware_id, version) in listed:
                    _unmark([folder], PENDING_MARK, REMOVED_MARK)
                elif version is not None and _marked(folder):
                    shutil.rmtree(folder)
                    result.removed.append(relative)
                else:
                    result.kept.append(f"{relative}: not in the index, not marked as a leftover; kept (`lw reindex --rebuild` adopts it if complete)")
            for id_dir in (self.root / "learnwares").glob("*"):
                with contextlib.suppress(OSError):
                    id_dir.rmdir()  # only if empty
        return result

    def _sweep_segments(self, registered: set, result: SweepResult) -> None:
        """Delete segment folders the catalog does not register (a writer died before its commit, or after a merge)."""
        from learnware_cli.market.segments import SEGMENTS_DIR

        folder = self.root / SEGMENTS_DIR
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.name not in registered and self._inside(path):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
                result.removed.append(self._relative(path))

    def _sweep_staging(self, result: SweepResult) -> None:
        """Delete every staging batch no live writer holds (under the market lock: see _staging_batch)."""
        staging = self.root / STAGING
        for batch in sorted(staging.iterdir()) if staging.is_dir() else []:
            if not batch.is_dir():
                batch.unlink()
            elif _held_by_a_writer(batch / BATCH_LOCK):
                continue
            else:
                shutil.rmtree(batch)
            result.removed.append(self._relative(batch))
        with contextlib.suppress(OSError):
            staging.rmdir()  # only if empty

    def repair_index(self, force: bool = False, only: Optional[set] = None, reason: Optional[str] = None) -> Optional[RebuildResult]:
        """`lw reindex`: rebuild the catalog and search segments from the version folders if forced or if damaged.

        Returns None when the index was fine and not forced. Each folder's
        record.json gives its rows; a folder without one (an older market) is
        reconstructed from semantic.json, its specification (rkme.json, else the
        file learnware.yaml names in package.zip) and the package's sha256.
        Folders that cannot be read are skipped and reported, never deleted.
        only: the (id, version) pairs to adopt (an upgrade from index.json keeps
        exactly what that index listed). next_id becomes the highest id + 1.
        The generation jumps to at least the current time in milliseconds: the
        old one may be lost with the old index, and no cache built from an
        earlier index may match the new one. The new catalog replaces the old
        one with one rename; the old file is kept beside it.
        """
        from learnware_cli.market.catalog import Catalog, put_version, set_meta

        with market_write("cannot rebuild the market index", self.root / CATALOG_FILE), self.lock():
            reason = reason or "requested (--rebuild)"
            if not force:
                try:
                    self.read_index(fresh=True)
                    return None
                except IndexDamaged as exc:
                    reason = exc.why
            result = RebuildResult(reason=reason)
            table, semantics = self._entries_from_folders(result, only)
            old_generation = _salvage_generation(self.root)
            building = self.root / f".{CATALOG_FILE}.{uuid.uuid4().hex[:8]}.building"
            try:
                Catalog.create(building, next_id=max((int(key) for key in table), default=0) + 1, generation=max(old_generation + 1, time.time_ns() // 1_000_000))
                rebuilt = Catalog(building)
                with rebuilt.write() as conn:
                    for learnware_id, entry in table.items():
                        for record in entry["versions"]:
                            semantic = semantics[(learnware_id, record["version"])]
                            put_version(conn, learnware_id, semantic_name(semantic) or entry["name"], semantic, record)
                        conn.execute("UPDATE learnwares SET name = ?, semantic = ? WHERE id = ?", (entry["name"], json.dumps(entry["semantic"]), learnware_id))
                    self._rebuild_segments(conn, table, semantics)
                    set_meta(conn, "rebuilt", now_iso())
                result.backup = self._keep_old_index()
                self.catalog.close()
                os.replace(building, self.root / CATALOG_FILE)
                _fsync_dir(self.root)
            finally:
                with contextlib.suppress(OSError):
                    building.unlink()
            with self._reading() as conn:
                registered = {row[0] for row in conn.execute("SELECT name FROM segments")}
            self._sweep_segments(registered, SweepResult())
        return result

    def _rebuild_segments(self, conn, table: dict, semantics: dict, chunk: int = 20000) -> None:
        """Search segments for every stored version (superseded ones recorded dead), registered through conn."""
        import numpy as np

        from learnware_cli.market import segments as seg

        groups: dict[str, list] = {}
        records = {(learnware_id, record["version"]): record for learnware_id, entry in table.items() for record in entry["versions"]}
        limits = self.package_limits
        for learnware_id, entry in table.items():
            latest = entry["versions"][-1]["version"]
            for record in entry["versions"]:
                island = seg.island_of(record, semantics[(learnware_id, record["version"])])
                if island is not None:
                    groups.setdefault(island, []).append((learnware_id, record["version"]))
                    if record["version"] != latest:
                        conn.execute("INSERT OR IGNORE INTO dead VALUES (?, ?, ?, 0)", (island, learnware_id, record["version"]))
        (self.root / seg.SEGMENTS_DIR).mkdir(exist_ok=True)
        for island, keys in sorted(groups.items()):
            for start in range(0, len(keys), chunk):
                part = keys[start : start + chunk]
                specs = [version_spec(self.version_dir(i, v), records[(i, v)], limits) for i, v in part]
                arrays = seg.stack_specs(specs, self.gamma)
                arrays["ids"] = np.array([int(i) for i, _ in part], dtype=np.int64)
                arrays["versions"] = np.array([v for _, v in part], dtype=np.int32)
                name = seg.new_name(island)
                building = self.root / seg.SEGMENTS_DIR / f".{name}.building"
                seg.write_arrays(building, arrays)
                os.rename(building, self.root / seg.SEGMENTS_DIR / name)
                conn.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?)", (name, island, len(part), seg.level_of(len(part)), start))

    def _entries_from_folders(self, result: RebuildResult, only: Optional[set] = None) -> tuple[dict, dict]:
        """(the learnwares table the version folders describe, {(id, version): that version's semantic}); counts and notes go into result."""
        found: dict[str, list[dict]] = {}
        for folder, learnware_id, version in self._version_folders():
            relative = self._relative(folder)
            if version is None:
                result.skipped.append(f"{relative}: not a learnwares/ID/vN folder (ID 8 digits, no symbolic links)")
                continue
            if only is not None and (learnware_id, version) not in only:
                continue
            try:
                stored, note = self._stored_version(folder, learnware_id, version)
            except _Skip as why:
                result.skipped.append(f"{relative}: {why}")
                continue
            if note:
                result.reconstructed.append(f"{relative}: {note}")
            found.setdefault(learnware_id, []).append(stored)
        table, semantics = {}, {}
        for learnware_id in sorted(found):
            stored = sorted(found[learnware_id], key=lambda s: s["record"]["version"])
            latest = stored[-1]
            table[learnware_id] = {
                "id": learnware_id,
                "versions": [s["record"] for s in stored],
                "name": latest["name"],
                "semantic": latest["semantic"],
            }
            for s in stored:
                semantics[(learnware_id, s["record"]["version"])] = s["semantic"]
        result.learnwares = len(table)
        result.versions = sum(len(e["versions"]) for e in table.values())
        return table, semantics

    def _stored_version(self, folder: Path, learnware_id: str, version: int) -> tuple[dict, Optional[str]]:
        """(record.json document, note) of one version folder; reconstructed (with a note) where record.json fails."""
        if (folder / REMOVED_MARK).exists():
            raise _Skip("being removed (`lw remove` was cut short); sweep deletes it")
        stored, problem = _read_record(folder / RECORD_FILE, learnware_id, version)
        in_package = stored is not None and bool(stored["record"].get("spec_file"))  # else the folder keeps rkme.json
        needed = STORED_FILES if in_package or stored is None else (*STORED_FILES, SPEC_COPY)
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise _Skip(f"incomplete (no {', '.join(missing)}); left as it is")
        if stored is not None:
            return stored, None
        return self._reconstruct(folder, learnware_id, version), f"{problem}; reconstructed from its files (price and notes are lost)"

    def _reconstruct(self, folder: Path, learnware_id: str, version: int) -> dict:
        """The record.json document of a folder without one, from the files every market version holds."""
        from learnware_cli.specs import load_spec

        semantic = _read_json(folder / "semantic.json")
        if not isinstance(semantic, dict):
            raise _Skip("no record.json and semantic.json is unreadable; left as it is")
        spec_file = None
        try:
            if (folder / SPEC_COPY).is_file():
                spec = load_spec(_read_json(folder / SPEC_COPY), source=SPEC_COPY)
            else:  # stored with its spec only in the package: learnware.yaml names the file
                from learnware_cli.market.package import read_package_spec

                spec, spec_file = read_package_spec(folder / "package.zip", None, self.package_limits)
        except RejectedError as exc:
            raise _Skip(f"no record.json, no {SPEC_COPY}, and package.zip gives no specification ({exc.reason}); left as it is") from None
        except LwError as exc:
            raise _Skip(f"no record.json and {exc.message}; left as it is") from None
        package = folder / "package.zip"
        try:
            stat, checksum = package.stat(), sha256_file(package)
        except OSError as exc:
            raise _Skip(f"no record.json and package.zip is unreadable ({exc.strerror or exc}); left as it is") from None
        record = {
            "version": version,
            "submitted": _dt.datetime.fromtimestamp(stat.st_mtime, _dt.timezone.utc).isoformat(timespec="seconds"),
            "checksum": checksum,
            "path": self._relative(folder),
            **stored_record_fields(semantic, spec, stat.st_size),
        }
        if spec_file is not None:
            record["spec_file"] = spec_file
        return {"id": learnware_id, "name": semantic_name(semantic), "semantic": semantic, "record": record}

    def _keep_old_index(self) -> Optional[str]:
        """Copy the catalog aside before a rebuild replaces it -> the copy's name (None if there was none)."""
        path = self.root / CATALOG_FILE
        if not path.is_file():
            return None
        backup = path.with_name(f"{CATALOG_FILE}.{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S%fZ}.bak")
        shutil.copyfile(path, backup)
        return backup.name


def new_market_config(name: str, gamma: Optional[float] = None, k: Optional[int] = None) -> dict:
    """market.json of a new market: the template's, with the vocabulary, name, creation time and kernel (gamma, K)."""
    from learnware_cli.market.semantic import VOCABULARY

    config = json.loads(template_text("market.json"))
    config["vocabulary"] = VOCABULARY
    config["name"] = name
    config["created"] = now_iso()
    if gamma is not None:
        if not gamma > 0:
            raise InputError(f"gamma must be positive, got {gamma}")
        config["kernel"]["gamma"] = float(gamma)
    if k is not None:
        if k < 1:
            raise InputError(f"K must be at least 1, got {k}")
        config["kernel"]["K"] = int(k)
    return config


def stored_record_fields(semantic: dict, spec, package_bytes: int) -> dict:
    """The index record fields a version's files determine (what submit records besides price and notes).

    input_dim is the specification's dimension (a table's width; an image
    spec's C x 32 x 32) and spec_kind its island kind ("table", "image",
    "text:EMBEDDER"), which the search cache groups by.
    """
    task = _semantic_value(semantic, "Task", "Values")
    island = spec.island_key()
    return {
        "input_dim": island.dim,
        "output_dim": _semantic_value(semantic, "Output", "Dimension"),
        "task": task[0] if isinstance(task, list) and task else "",
        "K": len(spec.stack_arrays().beta),
        "spec_kind": island.kind,
        "package_bytes": package_bytes,
    }


def version_spec(folder: Path, record: Optional[dict] = None, limits=None, package: Optional[Path] = None):
    """The specification of the version stored in folder: what every reader of a stored spec goes through.

    A folder's rkme.json (the market's own copy: folders stored before specs
    were kept once, or a spec the package does not hold) is loaded when it
    exists. Else the spec is read out of package.zip (or ``package``: a
    verified private copy of it), from the file the record's ``spec_file``
    names (record: the version's index record, else the folder's record.json;
    without either, learnware.yaml names it), under the caps of ``limits``
    (``package.PackageLimits``) and with the checks' parsers: the package is
    untrusted input even after its checks. A package that no longer yields it
    (the file missing, oversized, unparsable) is one MarketError, which names
    the version.
    """
    from learnware_cli.specs import load_spec

    folder = Path(folder)
    copy = folder / SPEC_COPY
    if copy.is_file():
        return load_spec(copy, source=str(copy))
    if record is None:
        stored = _read_json(folder / RECORD_FILE)
        record = stored.get("record") if isinstance(stored, dict) else None
    rel = record.get("spec_file") if isinstance(record, dict) else None
    where = f"learnware {folder.parent.name}@{folder.name[1:]}" if VERSION_FOLDER.fullmatch(folder.name) else str(folder)
    if rel is not None and (not isinstance(rel, str) or not rel):
        raise MarketError(f"{where}: its record names no valid spec file ({rel!r}); the stored version is damaged: remove it or resubmit")
    from learnware_cli.market.package import read_package_spec

    try:
        spec, _ = read_package_spec(package if package is not None else folder / "package.zip", rel, limits)
    except RejectedError as exc:
        raise MarketError(f"{where}: its specification cannot be read from its package.zip ({exc.reason}); the stored package is damaged: remove it or resubmit") from None
    return spec


def _read_json(path: Path) -> Any:
    """A JSON file's content, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _read_record(path: Path, learnware_id: str, version: int) -> tuple[Optional[dict], str]:
    """(record.json document, '') if it exists and belongs to its folder, else (None, what is wrong)."""
    if not path.is_file():
        return None, "no record.json"
    stored = _read_json(path)
    record = stored.get("record") if isinstance(stored, dict) else None
    if not (
        isinstance(record, dict)
        and stored.get("id") == learnware_id
        and record.get("version") == version
        and isinstance(record.get("checksum"), str)
        and isinstance(stored.get("semantic"), dict)
    ):
        return None, "record.json is unreadable or belongs to another folder"
    record["path"] = f"learnwares/{learnware_id}/v{version}"  # for older readers; never read here
    return {"id": learnware_id, "name": str(stored.get("name", "")), "semantic": stored["semantic"], "record": record}, ""


def _salvage_generation(root: Path) -> int:
    """The generation of a (possibly damaged) catalog, or of an older market's index.json; 0 if neither can be read."""
    with contextlib.suppress(Exception):
        conn = sqlite3.connect(f"file:{root / CATALOG_FILE}?mode=ro", uri=True)
        try:
            value = int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            if value >= 1:
                return value
        finally:
            conn.close()
    index = _read_json(root / INDEX_FILE)
    generation = index.get("generation") if isinstance(index, dict) else None
    return generation if _is_version_number(generation) else 0  # a positive whole number, like a version


def _island_of_folder(market: "Market", learnware_id: str, record: dict) -> Optional[str]:
    """The search island of a stored version, judged by its own semantic specification (its record.json)."""
    from learnware_cli.market import segments as seg

    stored, _ = _read_record(market.version_dir(learnware_id, record["version"]) / RECORD_FILE, learnware_id, record["version"])
    return seg.island_of(record, stored["semantic"] if stored else {})


def _marked(folder: Path) -> bool:
    """Does the folder say it is a writer's leftover (see Market.sweep)?"""
    return (folder / PENDING_MARK).exists() or (folder / REMOVED_MARK).exists()


def _unmark(folders: list, *marks: str) -> None:
    """Clear marks, best effort: a mark left behind is cleared by the next sweep."""
    for folder in folders:
        for mark in marks:
            with contextlib.suppress(OSError):
                (folder / mark).unlink(missing_ok=True)


def _flock_new(path: Path) -> int:
    """Create path and hold an exclusive flock on it -> the fd (closing it drops the lock).

    flock, not the market's FileLock: the OS drops it when its holder dies,
    which is exactly the test ``_held_by_a_writer`` needs.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _held_by_a_writer(path: Path) -> bool:
    """Is path flocked by a live process? (A missing file: no; its writer died before taking it, or is done.)"""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the probe's own flock, if it got one
    return False
