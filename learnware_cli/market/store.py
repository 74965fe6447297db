"""The market on disk: a folder of learnware packages and one JSON index.

Layout::

    MARKET/
      market.json            name, format version, kernel (gamma, K), vocabulary, check limits
      index.json             every learnware and every version (the only source of truth)
      README.md              for whoever opens the folder
      .lock                  taken (flock) by every writer
      learnwares/ID/vN/      package.zip, rkme.json, semantic.json, report.json
      cache/                 derived data (search arrays); safe to delete

Writers stage files in .staging/, move them into place with one rename, and
only then replace index.json atomically, all under the lock. A writer killed
at any moment leaves the previous or the next index, never a half one; at
worst an unreferenced folder, which ``Market.sweep`` removes.
"""

from __future__ import annotations

import contextlib
import gc
import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Optional

from learnware_cli.errors import InputError, MarketError, NotFoundError

FORMAT_VERSION = 1
DEFAULT_MARKET_ENV = "LW_MARKET"
LOCK_TIMEOUT_S = 120.0


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


_INDEX_CACHE: dict = {}


@dataclass
class NewVersion:
    """A checked package ready to store: files by stored name, semantic spec, record fields."""

    files: dict
    semantic: dict
    record_fields: dict
    update_id: Optional[str] = None


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
        except (OSError, json.JSONDecodeError) as exc:
            raise MarketError(f"{config_path}: unreadable market configuration ({exc})") from None
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
        # build beside the target, then one rename: an interrupted init leaves no half market
        root.parent.mkdir(parents=True, exist_ok=True)
        building = root.parent / f".{root.name}.init-{uuid.uuid4().hex[:8]}"
        building.mkdir()
        try:
            (building / "learnwares").mkdir()
            (building / ".lock").touch()
            readme = template_text("README.md").replace("{name}", config["name"])
            (building / "README.md").write_text(readme, encoding="utf-8")
            (building / "index.json").write_text(template_text("index.json"), encoding="utf-8")
            (building / "market.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
            if root.exists():
                root.rmdir()  # empty, checked above
            os.rename(building, root)
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
        return cls(root, config)

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
        """The parsed index. Shared and read-only unless fresh=True (writers edit a fresh copy).

        Parsed copies are kept per (mtime, size) of index.json: a big market's
        index is parsed once per change, not once per search.
        """
        path = self.root / "index.json"
        try:
            stat = path.stat()
            key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if not fresh and key in _INDEX_CACHE:
                return _INDEX_CACHE[key]
            index = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MarketError(f"{path}: index missing; run `lw reindex`") from None
        except json.JSONDecodeError as exc:
            raise MarketError(f"{path}: corrupt index ({exc.msg}); run `lw reindex`") from None
        if not isinstance(index.get("learnwares"), dict):
            raise MarketError(f"{path}: corrupt index (no learnwares table)")
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
            with lock:
                yield
        except Timeout:
            raise MarketError(f"{self.root}: market is locked by another writer (waited {timeout:.0f} s)") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict]:
        """Lock, hand out the current index for editing, then write it atomically (generation + 1)."""
        with self.lock():
            index = self.read_index(fresh=True)
            yield index
            index["generation"] = int(index.get("generation", 0)) + 1
            index["updated"] = now_iso()
            atomic_write_text(self.root / "index.json", json.dumps(index, indent=1))

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
        return self.root / relative

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
        """Store several checked packages in one transaction (one index write for a bulk submit)."""
        batch = self.root / ".staging" / uuid.uuid4().hex
        batch.mkdir(parents=True)
        try:
            staged = []
            for number, item in enumerate(items):
                folder = batch / str(number)
                folder.mkdir()
                for stored_name, source in item.files.items():
                    shutil.copyfile(source, folder / stored_name)
                (folder / "semantic.json").write_text(json.dumps(item.semantic, indent=1), encoding="utf-8")
                staged.append((item, folder, sha256_file(folder / "package.zip")))
            results = []
            with self.transaction() as index:
                for item, folder, checksum in staged:
                    results.append(self._place(index, item, folder, checksum))
            return results
        finally:
            shutil.rmtree(batch, ignore_errors=True)

    def _place(self, index: dict, item: "NewVersion", folder: Path, checksum: str) -> tuple[dict, dict]:
        """Move one staged version into learnwares/ and record it in index (inside a transaction)."""
        if item.update_id is None:
            learnware_id = f"{int(index.get('next_id', 1)):08d}"
            index["next_id"] = int(index.get("next_id", 1)) + 1
            entry = {"id": learnware_id, "versions": []}
        else:
            entry = self.entry(item.update_id, index)
            learnware_id = entry["id"]
        version = (entry["versions"][-1]["version"] + 1) if entry["versions"] else 1
        relative = f"learnwares/{learnware_id}/v{version}"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # left by a writer killed before its index write
            shutil.rmtree(target)
        os.rename(folder, target)
        record = {"version": version, "submitted": now_iso(), "checksum": checksum, "path": relative, **item.record_fields}
        entry["versions"].append(record)
        entry["name"] = item.semantic.get("Name", {}).get("Values", "")
        entry["semantic"] = item.semantic
        index["learnwares"][learnware_id] = entry
        return entry, record

    def remove(self, learnware_id: str, version: Optional[int] = None) -> dict:
        """Drop a learnware (or one of its versions) from the index, then delete its files."""
        with self.transaction() as index:
            entry = self.entry(learnware_id, index)
            learnware_id = entry["id"]
            if version is None or len(entry["versions"]) == 1 and entry["versions"][0]["version"] == version:
                del index["learnwares"][learnware_id]
                doomed = [self.root / "learnwares" / learnware_id]
            else:
                record = self.version_record(entry, version)
                entry["versions"] = [r for r in entry["versions"] if r is not record]
                doomed = [self.root / record["path"]]
        for folder in doomed:
            shutil.rmtree(folder, ignore_errors=True)
        return entry

    def sweep(self) -> list[str]:
        """Delete what no index entry references: staging leftovers and orphan version folders."""
        removed = []
        with self.lock():
            index = self.read_index()
            referenced = {r["path"] for e in index["learnwares"].values() for r in e["versions"]}
            staging = self.root / ".staging"
            if staging.exists():
                removed.append(".staging")
                shutil.rmtree(staging, ignore_errors=True)
            base = self.root / "learnwares"
            for id_dir in sorted(base.iterdir()) if base.exists() else []:
                for version_dir in sorted(id_dir.iterdir()):
                    relative = f"learnwares/{id_dir.name}/{version_dir.name}"
                    if relative not in referenced:
                        shutil.rmtree(version_dir, ignore_errors=True)
                        removed.append(relative)
                if not any(id_dir.iterdir()):
                    id_dir.rmdir()
        return removed
