"""The market on disk: a folder of learnware packages and one JSON index.

Layout::

    MARKET/
      market.json            name, format version, kernel (gamma, K), vocabulary, check limits
      index.json             every learnware and every version (what readers trust)
      README.md              for whoever opens the folder
      .lock                  taken (flock) by every writer
      .staging/BATCH/        a submit's files on their way in; BATCH/.held is flocked by its writer
      learnwares/ID/vN/      package.zip, rkme.json, semantic.json, report.json, and record.json
                             (the version's index record, with id, name and semantic spec)
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
import time
import uuid
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Optional

from learnware_cli.errors import InputError, LwError, MarketError, NotFoundError, RejectedError

FORMAT_VERSION = 1
DEFAULT_MARKET_ENV = "LW_MARKET"
LOCK_TIMEOUT_S = 120.0

INDEX_FILE = "index.json"
STAGING = ".staging"
BATCH_LOCK = ".held"  # in each staging batch, flocked by the writer that made it
RECORD_FILE = "record.json"
PENDING_MARK = ".pending"  # in a stored version folder until its index write is done
REMOVED_MARK = ".removed"  # in a doomed version folder from just before its index write
STORED_FILES = ("package.zip", "rkme.json", "semantic.json")  # what a version folder needs to be served
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
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")


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
    """A checked package ready to store: files by stored name, semantic spec, record fields."""

    files: dict
    semantic: dict
    record_fields: dict
    update_id: Optional[str] = None
    checksum: Optional[str] = None  # sha256 of package.zip as the checks read it; the stored copy must match


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
        return cls(root, config)

    @classmethod
    def create(cls, root, name: Optional[str] = None, gamma: Optional[float] = None, k: Optional[int] = None) -> "Market":
        """Make a new market from market_template/. Refuses a folder that already holds one or any files."""
        root = Path(root)
        if (root / "market.json").exists():
            raise MarketError(f"{root}: a market already exists here; refusing to overwrite it")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise MarketError(f"{root}: exists and is not an empty folder; refusing to overwrite it")
        from learnware_cli.market.semantic import VOCABULARY

        config = json.loads(template_text("market.json"))
        config["vocabulary"] = VOCABULARY
        config["name"] = name or root.resolve().name
        config["created"] = now_iso()
        if gamma is not None:
            if not gamma > 0:
                raise InputError(f"gamma must be positive, got {gamma}")
            config["kernel"]["gamma"] = float(gamma)
        if k is not None:
            if k < 1:
                raise InputError(f"K must be at least 1, got {k}")
            config["kernel"]["K"] = int(k)
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
            (building / INDEX_FILE).write_text(template_text("index.json"), encoding="utf-8")
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

    def read_index(self, fresh: bool = False) -> dict:
        """The parsed, validated index. Shared and read-only unless fresh=True (writers edit a fresh copy).

        Parsed copies are kept per (mtime, size) of index.json: a big market's
        index is parsed once per change, not once per search. A missing,
        unparsable or inconsistent index raises IndexDamaged.
        """
        path = self.root / INDEX_FILE
        try:
            stat = path.stat()
            key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if not fresh and key in _INDEX_CACHE:
                return _INDEX_CACHE[key]
            index = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexDamaged(path, "index missing", "lw reindex") from None
        except OSError as exc:
            raise MarketError(f"cannot read the market index: {os_error_text(exc)}") from None
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            raise IndexDamaged(path, f"corrupt index ({getattr(exc, 'msg', None) or type(exc).__name__})") from None
        validate_index(index, path)
        if not fresh:
            _INDEX_CACHE.clear()
            _INDEX_CACHE[key] = index
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
    def transaction(self) -> Iterator[dict]:
        """Lock, hand out the current index for editing, then write it atomically (generation + 1).

        Nothing is written if the body raises.
        """
        with self.lock():
            index = self.read_index(fresh=True)
            yield index
            index["generation"] = int(index.get("generation", 0)) + 1
            self._write_index(index)

    def _write_index(self, index: dict) -> None:
        index["updated"] = now_iso()
        path = self.root / INDEX_FILE
        with market_write("cannot write the market index", path):
            atomic_write_text(path, json.dumps(index, indent=1))

    # -- learnwares -----------------------------------------------------------

    def entries(self) -> list[dict]:
        return list(self.read_index()["learnwares"].values())

    def entry(self, learnware_id: str, index: Optional[dict] = None) -> dict:
        """The index entry of an id; a short numeric id ("7") means its padded form ("00000007")."""
        index = index or self.read_index()
        table = index["learnwares"]
        if learnware_id not in table and learnware_id.isdigit():
            learnware_id = f"{int(learnware_id):08d}"
        try:
            return table[learnware_id]
        except KeyError:
            raise NotFoundError(f"no learnware {learnware_id!r} in market {self.root}") from None

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
        """Store several checked packages in one transaction (one index write for a bulk submit).

        The copies are made outside the market lock (a big bulk submit must not
        stall other writers) in a staging batch that holds its own lock, so a
        concurrent sweep leaves it alone. Each stored folder is marked pending
        until the index write that lists it is done.
        """
        with market_write("cannot store the package", self.root), self._staging_batch() as batch:
            staged = [(item, batch / str(n), self._stage(batch / str(n), item)) for n, item in enumerate(items)]
            with self.transaction() as index:
                results = [self._place(index, item, folder, checksum) for item, folder, checksum in staged]
        _unmark([self.version_dir(entry["id"], record["version"]) for entry, record in results], PENDING_MARK)
        return results

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
        try:
            yield batch
        finally:
            shutil.rmtree(batch, ignore_errors=True)
            os.close(held)  # drops the flock

    def _stage(self, folder: Path, item: "NewVersion") -> str:
        """Copy one item's files into its staging folder, marked pending -> sha256 of the copied package.zip."""
        folder.mkdir()
        (folder / PENDING_MARK).touch()
        for stored_name, source in item.files.items():
            shutil.copyfile(source, folder / stored_name)
        _write_json(folder / "semantic.json", item.semantic)
        checksum = sha256_file(folder / "package.zip")
        if item.checksum is not None and checksum != item.checksum.lower():
            raise RejectedError("archive", f"{item.files['package.zip']}: changed after its checks (sha256 differs); nothing was stored")
        return checksum

    def _place(self, index: dict, item: "NewVersion", folder: Path, checksum: str) -> tuple[dict, dict]:
        """Move one staged version into learnwares/ and record it in index (inside a transaction).

        Its record.json is written into the staged folder before the rename, so
        every stored folder can stand in for its index entry.
        """
        if item.update_id is None:
            learnware_id = f"{int(index.get('next_id', 1)):08d}"
            index["next_id"] = int(index.get("next_id", 1)) + 1
            entry = {"id": learnware_id, "versions": []}
        else:
            entry = self.entry(item.update_id, index)
            learnware_id = entry["id"]
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
        entry["versions"].append(record)
        entry["name"] = name
        entry["semantic"] = item.semantic
        index["learnwares"][learnware_id] = entry
        return entry, record

    def _drop_leftover(self, target: Path) -> None:
        """Delete an unlisted folder in the way of a new version, only if it says it is a leftover (see sweep)."""
        if not _marked(target):
            raise MarketError(
                f"{target}: exists but the index does not list it (a damaged index?); run `lw reindex --rebuild`"
            )
        shutil.rmtree(target)

    def remove(self, learnware_id: str, version: Optional[int] = None) -> dict:
        """Drop a learnware (or one of its versions) from the index, then delete its files.

        The doomed folders are marked removed before the index write: a remover
        killed after that write leaves marked, unlisted folders that sweep
        deletes; killed before it, the index still lists them (sweep clears the
        marks). A failed index write takes the marks back at once.
        """
        doomed: list[Path] = []
        with market_write(f"cannot remove {learnware_id}", self.root):
            try:
                with self.transaction() as index:
                    entry = self.entry(learnware_id, index)
                    learnware_id = entry["id"]
                    if version is None or [r["version"] for r in entry["versions"]] == [version]:
                        del index["learnwares"][learnware_id]
                        doomed = list((self.root / "learnwares" / learnware_id).glob("*"))
                    else:
                        self.version_record(entry, version)  # NotFoundError if there is no such version
                        entry["versions"] = [r for r in entry["versions"] if r["version"] != version]
                        doomed = [self.version_dir(learnware_id, version)]
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
            index = self.read_index(fresh=True)
            listed = {(e["id"], r["version"]) for e in index["learnwares"].values() for r in e["versions"]}
            self._sweep_staging(result)
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

    def repair_index(self, force: bool = False) -> Optional[RebuildResult]:
        """`lw reindex`: rebuild index.json from the version folders if forced or if it is missing or damaged.

        Returns None when the index was fine and not forced. Each folder's
        record.json gives its entry; a folder without one (an older market) is
        reconstructed from semantic.json, rkme.json and the package's sha256.
        Folders that cannot be read are skipped and reported, never deleted.
        next_id becomes the highest id + 1. The generation jumps to at least the
        current time in milliseconds: the old one may be lost with the old
        index, and no search cache built from an earlier index may match the
        new one. The replaced index.json is kept beside it.
        """
        with market_write("cannot rebuild the market index", self.root / INDEX_FILE), self.lock():
            reason = "requested (--rebuild)"
            if not force:
                try:
                    self.read_index(fresh=True)
                    return None
                except IndexDamaged as exc:
                    reason = exc.why
            result = RebuildResult(reason=reason)
            table = self._entries_from_folders(result)
            old_generation = _salvage_generation(self.root / INDEX_FILE)
            index = {
                "format_version": FORMAT_VERSION,
                "generation": max(old_generation + 1, time.time_ns() // 1_000_000),
                "next_id": max((int(key) for key in table), default=0) + 1,
                "learnwares": table,
                "rebuilt": now_iso(),
            }
            result.backup = self._keep_old_index()
            self._write_index(index)
        return result

    def _entries_from_folders(self, result: RebuildResult) -> dict:
        """The learnwares table the version folders describe; counts and notes go into result."""
        found: dict[str, list[dict]] = {}
        for folder, learnware_id, version in self._version_folders():
            relative = self._relative(folder)
            if version is None:
                result.skipped.append(f"{relative}: not a learnwares/ID/vN folder (ID 8 digits, no symbolic links)")
                continue
            try:
                stored, note = self._stored_version(folder, learnware_id, version)
            except _Skip as why:
                result.skipped.append(f"{relative}: {why}")
                continue
            if note:
                result.reconstructed.append(f"{relative}: {note}")
            found.setdefault(learnware_id, []).append(stored)
        table = {}
        for learnware_id in sorted(found):
            stored = sorted(found[learnware_id], key=lambda s: s["record"]["version"])
            latest = stored[-1]
            table[learnware_id] = {
                "id": learnware_id,
                "versions": [s["record"] for s in stored],
                "name": latest["name"],
                "semantic": latest["semantic"],
            }
        result.learnwares = len(table)
        result.versions = sum(len(e["versions"]) for e in table.values())
        return table

    def _stored_version(self, folder: Path, learnware_id: str, version: int) -> tuple[dict, Optional[str]]:
        """(record.json document, note) of one version folder; reconstructed (with a note) where record.json fails."""
        if (folder / REMOVED_MARK).exists():
            raise _Skip("being removed (`lw remove` was cut short); sweep deletes it")
        missing = [name for name in STORED_FILES if not (folder / name).is_file()]
        if missing:
            raise _Skip(f"incomplete (no {', '.join(missing)}); left as it is")
        stored, problem = _read_record(folder / RECORD_FILE, learnware_id, version)
        if stored is not None:
            return stored, None
        return self._reconstruct(folder, learnware_id, version), f"{problem}; reconstructed from its files (price and notes are lost)"

    def _reconstruct(self, folder: Path, learnware_id: str, version: int) -> dict:
        """The record.json document of a folder without one, from the files every market version holds."""
        from learnware_cli.specs import load_spec

        semantic = _read_json(folder / "semantic.json")
        if not isinstance(semantic, dict):
            raise _Skip("no record.json and semantic.json is unreadable; left as it is")
        try:
            spec = load_spec(_read_json(folder / "rkme.json"), source="rkme.json")
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
        return {"id": learnware_id, "name": semantic_name(semantic), "semantic": semantic, "record": record}

    def _keep_old_index(self) -> Optional[str]:
        """Copy index.json aside before a rebuild replaces it -> the copy's name (None if there was none)."""
        path = self.root / INDEX_FILE
        if not path.is_file():
            return None
        backup = path.with_name(f"{INDEX_FILE}.{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S%fZ}.bak")
        shutil.copyfile(path, backup)
        return backup.name


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


def _salvage_generation(path: Path) -> int:
    """The generation of a (possibly damaged) index file, or 0 if it cannot be read."""
    index = _read_json(path)
    generation = index.get("generation") if isinstance(index, dict) else None
    return generation if _is_version_number(generation) else 0  # a positive whole number, like a version


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
