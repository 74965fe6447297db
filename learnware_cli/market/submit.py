"""Submitting: check packages, then store the accepted ones in one market transaction.

Checks run before the market is touched (they need no lock and write nothing
inside it), so a rejected package leaves the market byte-identical, and a
slow model check never holds the lock that other submitters wait on.

Each submitted zip is read once, into a private staging folder, while it is
hashed; every check reads that copy and the market stores that copy with its
sha256, so the bytes stored are the bytes checked even if the submitter's
file changes meanwhile. A package that breaks the checker itself (a bug) is
reported as rejected by the check 'internal'; the rest of the batch goes on.
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from learnware_cli.errors import EXIT_MARKET, InputError, LwError, MarketError, RejectedError
from learnware_cli.market.worker import MarketBusyError
from learnware_cli.market.store import SPEC_COPY, Market, NewVersion, semantic_name, stored_record_fields


DEFAULT_JOBS = min(4, os.cpu_count() or 1)
DEFAULT_CHECK_ROWS = 64
MAX_CHECK_ROWS = 10_000  # a sanity bound on market.json's check_rows (probe rows per package)


@dataclass
class SubmitOutcome:
    package: str
    accepted: bool
    id: Optional[str] = None
    version: Optional[int] = None
    name: str = ""
    check: Optional[str] = None
    reason: Optional[str] = None
    record: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"package": self.package, "accepted": self.accepted}
        if self.accepted:
            out.update(id=self.id, version=self.version, name=self.name, record=self.record)
        else:
            out.update(check=self.check, reason=self.reason)
        return out


@dataclass(frozen=True)
class _Options:
    """What every package of one submission is checked and recorded with."""

    semantic_override: Optional[dict] = None
    timeout: Optional[float] = None
    update_id: Optional[str] = None
    update_of: Optional[dict] = None  # the semantic spec of the learnware being updated
    allow_breaking: bool = False
    price: Optional[float] = None
    notes: Optional[str] = None


# --------------------------------------------------------------------------- market limits


def _market_int(market: Market, key: str, default: int, maximum: Optional[int] = None) -> int:
    """A positive integer from market.json's limits; a bad value is the market's problem (exit 5), not a package's."""
    value = market.limits.get(key, default)
    try:
        number = int(value)
        ok = not isinstance(value, (bool, str)) and number == value and number >= 1 and (maximum is None or number <= maximum)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        bound = f"1 .. {maximum}" if maximum else ">= 1"
        raise MarketError(f"{market.root / 'market.json'}: limits.{key} must be an integer {bound}, got {value!r}")
    return number


def limits_for(market: Market):
    """The archive limits of a market (PackageLimits); keys it lacks take the defaults."""
    from learnware_cli.market.package import PackageLimits

    defaults = PackageLimits()
    return PackageLimits(
        max_entries=_market_int(market, "max_package_entries", defaults.max_entries),
        max_total_bytes=_market_int(market, "max_package_bytes", defaults.max_total_bytes),
    )


def check_limits_for(market: Market):
    """The sizes the checker may allocate from (CheckLimits); keys the market lacks take the defaults."""
    from learnware_cli.market.checks import CheckLimits

    defaults = CheckLimits()
    return CheckLimits(
        max_input_dim=_market_int(market, "max_input_dim", defaults.max_input_dim),
        max_output_dim=_market_int(market, "max_output_dim", defaults.max_output_dim),
        max_probe_bytes=_market_int(market, "max_probe_bytes", defaults.max_probe_bytes),
    )


def check_for_market(
    market: Market,
    zip_path: Path,
    semantic_override: Optional[dict] = None,
    timeout: Optional[float] = None,
    update_of: Optional[dict] = None,
    allow_breaking: bool = False,
):
    """Run every submission check with the market's kernel and limits -> CheckReport (or RejectedError)."""
    from learnware_cli.market.checks import check_package
    from learnware_cli.market.worker import worker_options

    return check_package(
        zip_path,
        gamma=market.gamma,
        k=market.k,
        limits=limits_for(market),
        timeout=float(timeout if timeout is not None else market.model_timeout_s),
        memory_mb=market.model_memory_mb,
        semantic_override=semantic_override,
        n_rows=_market_int(market, "check_rows", DEFAULT_CHECK_ROWS, MAX_CHECK_ROWS),
        check_limits=check_limits_for(market),
        update_of=update_of,
        allow_breaking=allow_breaking,
        worker_options=worker_options(market.limits, str(market.root / "market.json")),
    )


# --------------------------------------------------------------------------- one package


BUSY_CHECK = "busy"  # the outcome of a package the market was too busy to judge (retry it)


def _rejected(zip_path: Path, check: str, reason: str) -> SubmitOutcome:
    return SubmitOutcome(str(zip_path), False, check=check, reason=reason)


def _internal(zip_path: Path, exc: Exception) -> SubmitOutcome:
    from learnware_cli.market.package import short_message

    return _rejected(zip_path, "internal", f"the checker failed ({type(exc).__name__}: {short_message(exc)}); this is a bug in lw, please report it")


def _record_fields(report, package_bytes: int, options: _Options) -> dict:
    fields = stored_record_fields(report.semantic, report.rkme, package_bytes)
    fields["model_kind"] = report.package.get("kind", "python")  # reuse runs an ONNX graph in-process, a Python model in a worker
    if report.update.get("breaking_changes"):
        fields["breaking"] = True
    if options.price is not None:
        fields["price"] = options.price
    if options.notes:
        fields["notes"] = options.notes
    return fields


def _accept(market: Market, zip_path: Path, folder: Path, options: _Options) -> tuple[SubmitOutcome, NewVersion]:
    """Stage the zip (read once, hashed), check the staged copy, and prepare it for storing."""
    from learnware_cli.market.package import stage_zip

    (folder / "in").mkdir(mode=0o700)
    staged = folder / "in" / zip_path.name  # the user's file name, so that messages name it
    checksum, size = stage_zip(zip_path, staged, limits_for(market))
    report = check_for_market(market, staged, options.semantic_override, options.timeout, options.update_of, options.allow_breaking)
    report.zip_path = str(zip_path)
    report.package["sha256"] = checksum
    report_dict = report.to_dict()
    (folder / "report.json").write_text(json.dumps(report_dict, indent=1))
    outcome = SubmitOutcome(str(zip_path), True, name=semantic_name(report.semantic), report=report_dict)
    files = {"package.zip": staged, "report.json": folder / "report.json"}
    fields = _record_fields(report, size, options)
    spec_file = report.package.get("spec_file")
    if isinstance(spec_file, str) and _package_holds(staged, spec_file, report.rkme, limits_for(market)):
        fields["spec_file"] = spec_file  # the market reads the spec from the package: stored once
    else:  # a spec the package does not hold as checked: the market keeps its own copy
        report.rkme.save(folder / SPEC_COPY)
        files[SPEC_COPY] = folder / SPEC_COPY
    return outcome, NewVersion(files, report.semantic, fields, options.update_id, checksum=checksum, spec=report.rkme)


def _package_holds(staged: Path, spec_file: str, spec, limits) -> bool:
    """Does the package's spec_file parse (as ``store.version_spec`` will read it) to the specification the checks passed?

    It always should (the checks read it from there); if it ever does not, the
    market stores its own rkme.json instead, as it did before.
    """
    from learnware_cli.market.package import read_package_spec

    try:
        again, _ = read_package_spec(staged, spec_file, limits)
        return _canonical(again) == _canonical(spec)
    except (LwError, TypeError, ValueError):
        return False


def _canonical(spec) -> str:
    return json.dumps({"type": spec.type_name, **spec.to_json_dict()}, sort_keys=True)


def _check_one(market: Market, zip_path: Path, folder: Path, options: _Options) -> Union[SubmitOutcome, tuple]:
    """A rejected outcome, or (outcome, NewVersion) to store. One package's failure never stops the batch,
    except a market problem (exit 5: no sandbox, bad limits), which every package would hit alike."""
    try:
        return _accept(market, zip_path, folder, options)
    except RejectedError as exc:
        return _rejected(zip_path, exc.check, exc.reason)
    except MarketBusyError as exc:  # not judged: the machine, not the package, ran out of time
        return _rejected(zip_path, BUSY_CHECK, exc.message)
    except Exception as exc:  # a bug: report it for this package, store the good ones
        if isinstance(exc, LwError) and exc.exit_code == EXIT_MARKET:
            raise
        return _internal(zip_path, exc)


def _update_target(market: Market, update_id: Optional[str], count: int, allow_breaking: bool) -> Optional[dict]:
    """The semantic spec of the learnware being updated (None for new learnwares); fails fast on bad use."""
    if update_id is None:
        if allow_breaking:
            raise InputError("--allow-breaking applies only to --update")
        return None
    if count != 1:
        raise InputError("--update takes exactly one package")
    return market.entry(update_id)["semantic"]  # NotFoundError if the id is unknown


# --------------------------------------------------------------------------- the batch


def submit_packages(
    market: Market,
    zip_paths: list[Path],
    semantic_override: Optional[dict] = None,
    update_id: Optional[str] = None,
    price: Optional[float] = None,
    notes: Optional[str] = None,
    timeout: Optional[float] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
    jobs: Optional[int] = None,
    allow_breaking: bool = False,
) -> list[SubmitOutcome]:
    """Check every package (``jobs`` at a time), then store all accepted ones at once.

    One outcome per package, in order. allow_breaking (with update_id) accepts
    a version whose Data, Task or widths differ; it is recorded as breaking.
    """
    update_of = _update_target(market, update_id, len(zip_paths), allow_breaking)
    options = _Options(
        semantic_override=semantic_override, timeout=timeout, update_id=update_id, update_of=update_of,
        allow_breaking=allow_breaking, price=price, notes=notes,
    )
    zip_paths = [Path(p) for p in zip_paths]
    for zip_path in zip_paths:
        if not zip_path.is_file():
            raise InputError(f"{zip_path}: no such file")
    jobs = max(1, min(jobs or DEFAULT_JOBS, len(zip_paths)))

    outcomes: list[SubmitOutcome] = []
    accepted: list[tuple[SubmitOutcome, NewVersion]] = []
    # mkdtemp: a fresh folder only this user can enter (0700)
    with tempfile.TemporaryDirectory(prefix="lw-submit-") as tmp, ThreadPoolExecutor(jobs) as pool:
        folders = [Path(tmp) / str(number) for number in range(len(zip_paths))]
        for folder in folders:
            folder.mkdir(mode=0o700)
        # checks wait on model worker processes, so threads overlap them well
        results = pool.map(lambda job: _check_one(market, job[0], job[1], options), zip(zip_paths, folders))
        for number, (zip_path, result) in enumerate(zip(zip_paths, results)):
            if progress:
                progress(number + 1, len(zip_paths), zip_path.name)
            if isinstance(result, SubmitOutcome):
                outcomes.append(result)
                continue
            accepted.append(result)
            outcomes.append(result[0])
        if progress:
            progress(len(zip_paths), len(zip_paths), "storing")
        if accepted:
            stored = market.add_versions([item for _, item in accepted])
            for (outcome, _), (entry, record) in zip(accepted, stored):
                outcome.id, outcome.version, outcome.record = entry["id"], record["version"], record
    return outcomes
