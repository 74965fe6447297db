"""Learnware package archives: safety checks, manifest, safe extraction.

Every submitted zip is untrusted. Nothing here imports or unpickles what it
contains: entries are checked by name and type, every byte is streamed with
caps (header sizes are claims, not facts), and only three kinds of content
are parsed, all with data-only parsers: ``learnware.yaml`` (a SafeLoader that
knows the single extra tag ``!!python/tuple``), the RKME json and
``semantic_specification.json``.

The layout is the reference ``learnware`` package's: files at the root of the
zip or under one top folder::

    learnware.yaml  __init__.py  rkme.json  [semantic_specification.json]
    [requirements.txt | environment.yaml]  model files...

Failures raise ``RejectedError(check, message)`` with check one of
``archive``, ``manifest``, ``spec``, ``semantic``.

``stage_zip`` reads a submitted file once into a private copy while hashing
it: checks read that copy and the market stores it, so what is stored is
what was checked.

This module stays light (no JAX, no NumPy at import time) because the model
worker imports it to read ``learnware.yaml``.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import yaml

from learnware_cli.errors import RejectedError
from learnware_cli.specs.registry import known_types

MiB = 1024 * 1024

MANIFEST_FILE = "learnware.yaml"
MODULE_FILE = "__init__.py"
SEMANTIC_FILE = "semantic_specification.json"
REQUIREMENT_FILES = ("requirements.txt", "environment.yaml", "environment.yml")

# Entries that archivers add and that are no part of the package.
_JUNK_PREFIXES = ("__MACOSX/",)
_JUNK_NAMES = (".DS_Store", "Thumbs.db")

_ALLOWED_COMPRESSION = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)
_CHUNK = 1 * MiB
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record (22 bytes)
_MAX_RECORD_BYTES = 1024  # generous per-entry directory budget (46 bytes + name + extras)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class PackageLimits:
    """Caps on what a package may unpack to.

    max_total_bytes (a market's max_package_bytes) caps both the zip file and
    the sum of what it unpacks to.

    max_compression_ratio applies to entries that unpack to more than
    ratio_min_bytes (small files of repeated bytes compress very well and
    are harmless); it flags zip bombs early, while the byte caps are the
    real guarantee since they are enforced on the streamed data.
    """

    max_entries: int = 1000
    max_total_bytes: int = 200 * MiB
    max_file_bytes: int = 200 * MiB
    max_compression_ratio: float = 250.0
    ratio_min_bytes: int = 1 * MiB
    max_text_bytes: int = 1 * MiB  # learnware.yaml, semantic json, requirements
    max_spec_bytes: int = 64 * MiB


@dataclass
class ArchiveScan:
    """The verified table of contents: root prefix and file -> (zip name, size)."""

    root: str
    files: dict = field(default_factory=dict)  # relative path -> (zip entry name, size in bytes)
    total_bytes: int = 0
    entries: int = 0
    limits: PackageLimits = field(default_factory=PackageLimits, repr=False)

    def has(self, rel: str) -> bool:
        return rel in self.files


@dataclass
class Manifest:
    """What learnware.yaml says: the model class and its kwargs, the RKME file."""

    class_name: str
    kwargs: dict
    spec_file: str
    spec_class: str = "RKMETableSpecification"
    spec_kwargs: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)


@dataclass
class PackageInfo:
    """A package that passed the archive and manifest checks."""

    zip_path: Path
    scan: ArchiveScan
    manifest: Manifest
    spec: object  # a learnware_cli.specs.Specification (today an RKMESpec)
    semantic: Optional[dict]  # validated and normalised, or None when the zip has none
    semantic_raw: Optional[dict]
    requirements_file: Optional[str]
    requirements: Optional[str]
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "root": self.scan.root,
            "files": {rel: size for rel, (_, size) in sorted(self.scan.files.items())},
            "total_bytes": self.scan.total_bytes,
            "model": {"class_name": self.manifest.class_name, "kwargs": _jsonable(self.manifest.kwargs)},
            "spec_file": self.manifest.spec_file,
            "requirements_file": self.requirements_file,
            "warnings": list(self.warnings),
        }


def _jsonable(value):
    """Tuples (from !!python/tuple) to lists so the manifest can be stored as JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _reject(check: str, message: str):
    raise RejectedError(check, message)


def _show(name: str) -> str:
    text = repr(name)
    return text if len(text) <= 120 else text[:117] + "..."


def short_message(exc: BaseException) -> str:
    """An exception's message cut to one short line (Python's own advice after ';' dropped)."""
    text = str(exc).split("\n", 1)[0].split(";", 1)[0].strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# --------------------------------------------------------------------------- JSON


class JSONProblem(ValueError):
    """A JSON text that cannot be parsed; the message is one line naming the file."""


def parse_json(text: str, what: str):
    """json.loads where every failure is a JSONProblem with a one-line message naming `what`.

    Beyond syntax errors (JSONDecodeError), json.loads raises RecursionError
    for deep nesting and a plain ValueError for an integer longer than
    Python's int conversion limit (4300 digits): untrusted text can trigger
    all three, and none of them may escape as a traceback.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONProblem(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise JSONProblem(f"{what} is not valid JSON (nested too deeply)") from None
    except (ValueError, OverflowError) as exc:
        raise JSONProblem(f"{what} holds a number that cannot be read ({short_message(exc)})") from None


# --------------------------------------------------------------------------- YAML


class _ForbiddenTag(yaml.YAMLError):
    def __init__(self, tag: str):
        super().__init__(tag)
        self.tag = tag


class _ManifestLoader(yaml.SafeLoader):
    """SafeLoader plus ``!!python/tuple``; refuses every other python tag and all aliases.

    Aliases are refused because a few nested anchors can describe a document
    exponentially larger than its text (the 'billion laughs'), which would
    blow up as soon as the manifest is copied or serialised.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in learnware.yaml", event.start_mark
            )
        return super().compose_node(parent, index)


def _construct_tuple(loader, node):
    return tuple(loader.construct_sequence(node, deep=True))


def _refuse_python_tag(loader, suffix, node):
    raise _ForbiddenTag(node.tag)


_ManifestLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)
_ManifestLoader.add_multi_constructor("tag:yaml.org,2002:python/", _refuse_python_tag)


def _short_tag(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag


def load_manifest_yaml(text: str):
    """Parse learnware.yaml text with the tuple-only safe loader.

    Raises RejectedError('manifest', ...) for invalid YAML, any python tag
    other than !!python/tuple (e.g. !!python/object/apply:os.system), any
    other unknown tag, and aliases.
    """
    try:
        return yaml.load(text, Loader=_ManifestLoader)  # noqa: S506 (a SafeLoader subclass)
    except _ForbiddenTag as exc:
        _reject("manifest", f"learnware.yaml uses the tag {_short_tag(exc.tag)}, which is not allowed (only !!python/tuple is)")
    except yaml.constructor.ConstructorError as exc:
        row = getattr(exc.problem_mark, "line", None)
        line = f" at line {row + 1}" if row is not None else ""
        problem = (exc.problem or "unknown construct").split("\n")[0]
        _reject("manifest", f"learnware.yaml has a disallowed construct{line}: {problem}")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        _reject("manifest", f"learnware.yaml is not valid YAML{line}: {exc.problem}")
    except (yaml.YAMLError, RecursionError) as exc:
        _reject("manifest", f"learnware.yaml is not valid YAML: {type(exc).__name__}")
    except (ValueError, OverflowError) as exc:
        # a scalar the safe constructors cannot convert: an integer over Python's
        # 4300-digit limit, a date like 2001-13-45
        _reject("manifest", f"learnware.yaml holds a value that cannot be read ({short_message(exc)})")


def _mapping(value, what: str, allow_none: bool = False) -> dict:
    if value is None and allow_none:
        return {}
    if not isinstance(value, dict):
        _reject("manifest", f"{what} must be a mapping, got {type(value).__name__}")
    return value


def parse_manifest(obj) -> Manifest:
    """Validate the parsed learnware.yaml and pull out model class, kwargs and RKME file."""
    obj = _mapping(obj, "learnware.yaml")
    if "model" not in obj:
        _reject("manifest", "learnware.yaml has no 'model' section")
    model = _mapping(obj["model"], "learnware.yaml 'model'")
    class_name = model.get("class_name")
    if not isinstance(class_name, str) or not _IDENTIFIER.match(class_name):
        _reject("manifest", f"model.class_name must be a Python class name, got {_show(str(class_name))}")
    kwargs = _mapping(model.get("kwargs"), "model.kwargs", allow_none=True)
    for key in kwargs:
        if not isinstance(key, str) or not _IDENTIFIER.match(key):
            _reject("manifest", f"model.kwargs key {_show(str(key))} is not a valid argument name")
    specs = obj.get("stat_specifications")
    if not isinstance(specs, list) or not specs:
        _reject("manifest", "learnware.yaml needs a non-empty 'stat_specifications' list")
    for entry in specs:
        if isinstance(entry, dict) and entry.get("class_name") in known_types():  # the registry's kinds
            file_name = entry.get("file_name")
            if not isinstance(file_name, str) or not file_name.strip():
                _reject("manifest", f"the {entry['class_name']} entry has no file_name")
            rel = _normalise_member(file_name.strip(), "manifest", "spec file_name")
            spec_kwargs = _mapping(entry.get("kwargs"), "stat_specifications kwargs", allow_none=True)
            return Manifest(
                class_name=class_name,
                kwargs=dict(kwargs),
                spec_file=rel,
                spec_class=entry["class_name"],
                spec_kwargs=dict(spec_kwargs),
                raw=obj,
            )
    _reject("manifest", "stat_specifications has no RKMETableSpecification entry")


# --------------------------------------------------------------------------- names


def _normalise_member(name: str, check: str = "archive", what: str = "entry") -> str:
    """A zip entry name -> clean relative posix path; rejects every escape trick.

    Refused: control characters (NUL included), backslashes (a Windows
    separator on extraction), absolute paths, drive letters, '..'
    components. Empty and '.' components are dropped.
    """
    if not name:
        _reject(check, f"{what} with an empty name")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        _reject(check, f"{what} {_show(name)} has a control character in its name")
    if "\\" in name:
        _reject(check, f"{what} {_show(name)} has a backslash in its name")
    if name.startswith("/"):
        _reject(check, f"{what} {_show(name)} is an absolute path")
    if _DRIVE.match(name):
        _reject(check, f"{what} {_show(name)} starts with a drive letter")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        _reject(check, f"{what} {_show(name)} climbs out of the package with '..'")
    if not parts:
        _reject(check, f"{what} {_show(name)} names no file")
    return "/".join(parts)


def _entry_type_error(info: zipfile.ZipInfo) -> Optional[str]:
    """Why an entry is not a plain file or folder (symlink, device, fifo), or None."""
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file (device, fifo or socket)"
    return None


def _is_junk(rel: str) -> bool:
    return rel.startswith(_JUNK_PREFIXES) or rel.rsplit("/", 1)[-1] in _JUNK_NAMES


def _directory_size(fh, size: int) -> Optional[tuple[int, int]]:
    """(entry count, central directory bytes) from the end records, or None if not found.

    Read before zipfile parses the directory, which it does in full (one
    ZipInfo per record) however many records there are.
    """
    tail_len = min(size, _EOCD.size + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) - pos < _EOCD.size:
        return None
    entries, cd_size = struct.unpack("<HI", tail[pos + 10 : pos + 16])
    locator = pos - 20
    if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        if offset + 56 <= size:
            fh.seek(offset)
            record = fh.read(56)
            if record[:4] == b"PK\x06\x06":
                entries, cd_size = struct.unpack("<QQ", record[32:48])
    return entries, cd_size


def _precheck(path: Path, limits: PackageLimits) -> bytes:
    """File size and directory size caps, checked before zipfile reads anything; returns the magic."""
    try:
        size = path.stat().st_size
        if size > limits.max_total_bytes:
            _reject("archive", _too_big(size, limits))
        with open(path, "rb") as fh:
            head = fh.read(4)
            counts = _directory_size(fh, size)
    except FileNotFoundError:
        _reject("archive", f"{path}: no such file")
    except IsADirectoryError:
        _reject("archive", f"{path} is a folder, not a zip archive")
    except OSError as exc:
        _reject("archive", f"{path}: cannot read ({exc.strerror or exc})")
    if counts is not None:
        entries, cd_size = counts
        if entries > limits.max_entries:
            _reject("archive", f"archive has {entries} entries, the limit is {limits.max_entries}")
        if cd_size > limits.max_entries * _MAX_RECORD_BYTES:
            _reject("archive", f"archive directory is {cd_size} bytes, too large for {limits.max_entries} entries")
    return head


def _too_big(size: int, limits: PackageLimits) -> str:
    return f"archive file is {size} bytes, over the package size limit of {limits.max_total_bytes} bytes (max_package_bytes)"


def _open_zip(zip_path, limits: Optional[PackageLimits] = None) -> zipfile.ZipFile:
    path = Path(zip_path)
    head = _precheck(path, limits or PackageLimits())
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        if head == b"PK\x03\x04":
            _reject("archive", f"{path.name} is a truncated or damaged zip (no central directory)")
        _reject("archive", f"{path.name} is not a zip archive")
    except _READ_ERRORS as exc:
        _reject("archive", f"{path.name} is not a readable zip archive ({type(exc).__name__}: {exc})")


def _list_entries(zf: zipfile.ZipFile, limits: PackageLimits) -> ArchiveScan:
    """Header-level checks on every entry; returns the table of contents (sizes as declared)."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        _reject("archive", f"archive has {len(infos)} entries, the limit is {limits.max_entries}")
    seen: dict[str, str] = {}
    folded: dict[str, str] = {}
    files: dict[str, tuple[str, int]] = {}
    declared = 0
    for info in infos:
        if "\x00" in info.orig_filename:
            _reject("archive", f"entry {_show(info.orig_filename)} has a NUL byte in its name")
        rel = _normalise_member(info.filename)
        problem = _entry_type_error(info)
        if problem:
            _reject("archive", f"entry {_show(info.filename)} {problem}")
        if info.flag_bits & 0x1:
            _reject("archive", f"entry {_show(info.filename)} is encrypted")
        if info.compress_type not in _ALLOWED_COMPRESSION:
            _reject("archive", f"entry {_show(info.filename)} uses unsupported compression method {info.compress_type}")
        if rel in seen:
            _reject("archive", f"duplicate entry {_show(rel)}")
        if rel.casefold() in folded:
            _reject("archive", f"entries {_show(folded[rel.casefold()])} and {_show(rel)} differ only in case")
        seen[rel] = info.filename
        folded[rel.casefold()] = rel
        if info.is_dir():
            continue
        _check_declared_size(info, rel, limits)
        declared += info.file_size
        if declared > limits.max_total_bytes:
            _reject("archive", f"archive unpacks to more than {limits.max_total_bytes} bytes (zip bomb?)")
        files[rel] = (info.filename, info.file_size)
    _check_file_dir_conflicts(files)
    root = _find_root(files)
    kept = {rel[len(root):]: v for rel, v in files.items() if rel.startswith(root) and not _is_junk(rel)}
    return ArchiveScan(root=root, files=kept, total_bytes=declared, entries=len(infos), limits=limits)


def _check_declared_size(info: zipfile.ZipInfo, rel: str, limits: PackageLimits) -> None:
    if info.file_size > limits.max_file_bytes:
        _reject("archive", f"entry {_show(rel)} unpacks to {info.file_size} bytes, the per-file limit is {limits.max_file_bytes} (zip bomb?)")
    if info.file_size > limits.ratio_min_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            _reject("archive", f"entry {_show(rel)} has compression ratio {ratio:.0f}:1, over the limit {limits.max_compression_ratio:.0f}:1 (zip bomb?)")


def _check_file_dir_conflicts(files: dict) -> None:
    """'a' as a file and 'a/b' as another file cannot both be extracted."""
    for rel in files:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in files:
                _reject("archive", f"entry {_show(prefix)} is both a file and a folder")


def _find_root(files: dict) -> str:
    """'' when learnware.yaml is at the top, else 'top/' when every file lies under one folder."""
    real = [rel for rel in files if not _is_junk(rel)]
    if MANIFEST_FILE in real or not real:
        return ""
    tops = {rel.split("/", 1)[0] for rel in real}
    if len(tops) == 1 and all("/" in rel for rel in real):
        return tops.pop() + "/"
    return ""


def _stream(zf: zipfile.ZipFile, zip_name: str, rel: str, cap: int, cap_reason: str) -> Iterator[bytes]:
    """Yield an entry's bytes in chunks, refusing to go past cap whatever the header says."""
    total = 0
    try:
        with zf.open(zip_name) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    return
                total += len(chunk)
                if total > cap:
                    _reject("archive", f"entry {_show(rel)} unpacks to more than {cap} bytes ({cap_reason}; zip bomb?)")
                yield chunk
    except RejectedError:
        raise
    except _READ_ERRORS as exc:
        _reject("archive", f"entry {_show(rel)} is corrupt ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})")


class _Budget:
    """Bytes still allowed across the whole archive, counted on real data."""

    def __init__(self, limits: PackageLimits):
        self.limits = limits
        self.left = limits.max_total_bytes

    def cap(self) -> tuple[int, str]:
        if self.left < self.limits.max_file_bytes:
            return self.left, f"the archive total limit is {self.limits.max_total_bytes}"
        return self.limits.max_file_bytes, f"the per-file limit is {self.limits.max_file_bytes}"

    def spend(self, n: int) -> None:
        self.left -= n


def _check_actual_ratio(rel: str, size: int, compressed: int, limits: PackageLimits) -> None:
    if size > limits.ratio_min_bytes and size / max(compressed, 1) > limits.max_compression_ratio:
        _reject("archive", f"entry {_show(rel)} has compression ratio {size / max(compressed, 1):.0f}:1, over the limit (zip bomb?)")


def scan_archive(zip_path, limits: Optional[PackageLimits] = None) -> ArchiveScan:
    """All 'archive' checks: zip structure, names, types, counts, and every byte streamed.

    Streaming every entry verifies CRCs and real sizes, so a damaged or lying
    archive is refused here rather than half-way through an extraction.
    """
    limits = limits or PackageLimits()
    with _open_zip(zip_path, limits) as zf:
        scan = _list_entries(zf, limits)
        budget = _Budget(limits)
        total = 0
        for rel, (zip_name, _) in list(scan.files.items()):
            cap, reason = budget.cap()
            size = sum(len(chunk) for chunk in _stream(zf, zip_name, rel, cap, reason))
            budget.spend(size)
            _check_actual_ratio(rel, size, zf.getinfo(zip_name).compress_size, limits)
            scan.files[rel] = (zip_name, size)
            total += size
        scan.total_bytes = total
    return scan


def read_member(zip_path, scan: ArchiveScan, rel: str, cap: int, check: str) -> bytes:
    """The bytes of one package file, at most cap of them (else RejectedError(check))."""
    zip_name, size = scan.files[rel]
    if size > cap:
        _reject(check, f"{rel} is {size} bytes, the limit is {cap}")
    with _open_zip(zip_path, scan.limits) as zf:
        return b"".join(_stream(zf, zip_name, rel, cap, f"the limit for {rel} is {cap}"))


def _read_text(zip_path, scan: ArchiveScan, rel: str, cap: int, check: str) -> str:
    data = read_member(zip_path, scan, rel, cap, check)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        _reject(check, f"{rel} is not UTF-8 text")


def read_manifest(zip_path, scan: ArchiveScan, limits: Optional[PackageLimits] = None) -> Manifest:
    """The 'manifest' check: learnware.yaml valid, __init__.py and the RKME file present."""
    limits = limits or PackageLimits()
    where = f" under {scan.root!r}" if scan.root else " at the package root"
    if not scan.has(MANIFEST_FILE):
        _reject("manifest", f"{MANIFEST_FILE} not found{where}")
    manifest = parse_manifest(load_manifest_yaml(_read_text(zip_path, scan, MANIFEST_FILE, limits.max_text_bytes, "manifest")))
    if not scan.has(MODULE_FILE):
        _reject("manifest", f"{MODULE_FILE} (the model code) not found{where}")
    if not scan.has(manifest.spec_file):
        _reject("manifest", f"spec file {manifest.spec_file!r} named in {MANIFEST_FILE} is not in the package")
    return manifest


def read_any_manifest(zip_path, scan: ArchiveScan, limits: Optional[PackageLimits] = None):
    """The 'manifest' check for either kind of learnware: a Python one (``Manifest``: a model class in
    __init__.py) or an ONNX one (``onnx_kind.OnnxManifest``: ``model: {kind: onnx, file: ...}``, no code)."""
    from learnware_cli.market import onnx_kind

    limits = limits or PackageLimits()
    if not scan.has(MANIFEST_FILE):
        return read_manifest(zip_path, scan, limits)  # its message
    raw = load_manifest_yaml(_read_text(zip_path, scan, MANIFEST_FILE, limits.max_text_bytes, "manifest"))
    if onnx_kind.model_kind(raw) == "onnx":
        return onnx_kind.read_onnx_manifest(zip_path, scan, limits)
    return read_manifest(zip_path, scan, limits)


def read_spec(zip_path, scan: ArchiveScan, manifest: Manifest, limits: Optional[PackageLimits] = None):
    """Parse the spec JSON into a Specification by its "type" (the 'spec' check's parse step)."""
    from learnware_cli.errors import SpecError
    from learnware_cli.specs import load_spec

    limits = limits or PackageLimits()
    text = _read_text(zip_path, scan, manifest.spec_file, limits.max_spec_bytes, "spec")
    try:
        obj = parse_json(text, manifest.spec_file)
    except JSONProblem as exc:
        _reject("spec", str(exc))
    try:
        return load_spec(obj, source=manifest.spec_file)
    except SpecError as exc:
        _reject("spec", exc.message)


@dataclass(frozen=True)
class _SpecFile:
    spec_file: str  # all that read_spec reads of a manifest


def read_package_spec(zip_path, rel: Optional[str] = None, limits: Optional[PackageLimits] = None) -> tuple[object, str]:
    """(specification, its file in the package) of a stored package, read as the checks read it.

    rel: the spec file as learnware.yaml names it (relative to the package
    root), e.g. a version record's ``spec_file``; None reads learnware.yaml to
    find it. Only the directory, the manifest (when needed) and that one file
    are read, each under its cap (the zip size and entry count, max_text_bytes,
    max_spec_bytes), with the same data-only parsers as the checks. Any
    problem is a RejectedError (check "archive", "manifest" or "spec").
    """
    limits = limits or PackageLimits()
    with _open_zip(zip_path, limits) as zf:
        scan = _list_entries(zf, limits)  # header-level checks; read_member streams under its own cap
    if rel is None:
        rel = read_any_manifest(zip_path, scan, limits).spec_file
    if not scan.has(rel):
        _reject("spec", f"spec file {_show(rel)} is not in the package")
    return read_spec(zip_path, scan, _SpecFile(rel), limits), rel


def read_semantic_raw(zip_path, scan: ArchiveScan, limits: Optional[PackageLimits] = None) -> Optional[dict]:
    """semantic_specification.json parsed (not yet validated), or None when absent."""
    limits = limits or PackageLimits()
    if not scan.has(SEMANTIC_FILE):
        return None
    text = _read_text(zip_path, scan, SEMANTIC_FILE, limits.max_text_bytes, "semantic")
    try:
        obj = parse_json(text, SEMANTIC_FILE)
    except JSONProblem as exc:
        _reject("semantic", str(exc))
    if not isinstance(obj, dict):
        _reject("semantic", f"{SEMANTIC_FILE} must hold a JSON object")
    return obj


def read_requirements(zip_path, scan: ArchiveScan, limits: Optional[PackageLimits] = None) -> tuple[Optional[str], Optional[str]]:
    """(file name, text) of the dependency list, recorded for users and never installed."""
    limits = limits or PackageLimits()
    for name in REQUIREMENT_FILES:
        if scan.has(name):
            data = read_member(zip_path, scan, name, limits.max_text_bytes, "manifest")
            return name, data.decode("utf-8", errors="replace")
    return None, None


def inspect_package(zip_path, limits: Optional[PackageLimits] = None, check_semantic: bool = True) -> PackageInfo:
    """Archive safety, manifest, RKME parse and (unless check_semantic=False) semantic spec.

    check_semantic=False leaves a zip's semantic_specification.json
    unvalidated (it is still parsed), for callers that supply their own.
    """
    from learnware_cli.market.semantic import validate_semantic

    limits = limits or PackageLimits()
    scan = scan_archive(zip_path, limits)
    manifest = read_manifest(zip_path, scan, limits)
    spec = read_spec(zip_path, scan, manifest, limits)
    semantic_raw = read_semantic_raw(zip_path, scan, limits)
    semantic = validate_semantic(semantic_raw) if (semantic_raw is not None and check_semantic) else None
    req_file, req_text = read_requirements(zip_path, scan, limits)
    warnings = [] if req_file else ["no requirements.txt or environment.yaml: dependencies unknown"]
    return PackageInfo(
        zip_path=Path(zip_path),
        scan=scan,
        manifest=manifest,
        spec=spec,
        semantic=semantic,
        semantic_raw=semantic_raw,
        requirements_file=req_file,
        requirements=req_text,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- staging


def _open_regular(path: Path) -> int:
    """A read descriptor on path, which must be a regular file (O_NONBLOCK: a fifo cannot hang us)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        _reject("archive", f"{path}: no such file")
    except OSError as exc:
        _reject("archive", f"{path}: cannot read ({exc.strerror or exc})")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        _reject("archive", f"{path} is not a regular file")
    return fd


def stage_zip(src, dest, limits: Optional[PackageLimits] = None) -> tuple[str, int]:
    """Copy a submitted zip into dest (created fresh, 0600) in one read, hashing it -> (sha256 hex, bytes).

    Checks then read only the copy and the market stores it, so the bytes
    stored are the bytes checked even if the submitter's file is replaced
    meanwhile. The size cap is enforced on the bytes actually read, not only
    on fstat (the file may grow while it is copied), so a huge file is
    refused without reading it all. On failure dest is removed.
    """
    limits = limits or PackageLimits()
    dest = Path(dest)
    digest, total = hashlib.sha256(), 0
    with os.fdopen(_open_regular(Path(src)), "rb") as fin:
        size = os.fstat(fin.fileno()).st_size
        if size > limits.max_total_bytes:
            _reject("archive", _too_big(size, limits))
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(out, "wb") as fout:
                while chunk := fin.read(_CHUNK):
                    total += len(chunk)
                    if total > limits.max_total_bytes:
                        _reject("archive", _too_big(total, limits))
                    digest.update(chunk)
                    fout.write(chunk)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
    return digest.hexdigest(), total


# --------------------------------------------------------------------------- extraction


def _prepare_dest(dest: Path) -> bool:
    """Create dest (True) or accept an existing empty folder (False); refuse anything else."""
    if dest.is_symlink():
        _reject("archive", f"destination {dest} is a symbolic link")
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            _reject("archive", f"destination {dest} exists and is not an empty folder")
        return False
    dest.mkdir(parents=True)
    return True


def _write_entry(zf, zip_name: str, rel: str, dest_real: str, budget: _Budget, limits: PackageLimits) -> None:
    target = os.path.realpath(os.path.join(dest_real, *rel.split("/")))
    if not target.startswith(dest_real + os.sep):
        _reject("archive", f"entry {_show(rel)} would land outside the destination")
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    cap, reason = budget.cap()
    written = 0
    # O_EXCL: never follow or overwrite something already there.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        for chunk in _stream(zf, zip_name, rel, cap, reason):
            out.write(chunk)
            written += len(chunk)
    budget.spend(written)
    _check_actual_ratio(rel, written, zf.getinfo(zip_name).compress_size, limits)


def _remove_partial(dest: Path, created: bool) -> None:
    """Undo a failed extraction: the folder if we made it, else what we put in it."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def extract_package(zip_path, dest_dir, limits: Optional[PackageLimits] = None) -> Path:
    """Extract the package's files (root folder stripped) into dest_dir, safely.

    Same entry checks as scan_archive; bytes are streamed with per-file and
    total caps; files are created fresh (0644, never following links) and no
    permission bits, symlinks or timestamps from the zip are kept. On any
    failure a dest_dir created here is removed again. Returns dest_dir.
    """
    limits = limits or PackageLimits()
    dest = Path(dest_dir)
    created = _prepare_dest(dest)
    try:
        with _open_zip(zip_path, limits) as zf:
            scan = _list_entries(zf, limits)
            dest_real = os.path.realpath(dest)
            budget = _Budget(limits)
            for rel, (zip_name, _) in scan.files.items():
                _write_entry(zf, zip_name, rel, dest_real, budget, limits)
    except BaseException:
        _remove_partial(dest, created)
        raise
    return dest
