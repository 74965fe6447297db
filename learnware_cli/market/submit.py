"""Submitting: check packages, then store the accepted ones in one market transaction.

Checks run before the market is touched (they need no lock and write nothing
inside it), so a rejected package leaves the market byte-identical, and a
slow model check never holds the lock that other submitters wait on.
"""

from __future__ import annotations

import json
import tempfile
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from learnware_cli.errors import InputError, RejectedError
from learnware_cli.market.store import Market, NewVersion


DEFAULT_JOBS = min(4, os.cpu_count() or 1)


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


def limits_for(market: Market):
    from learnware_cli.market.package import PackageLimits

    limits = market.limits
    defaults = PackageLimits()
    return PackageLimits(
        max_entries=int(limits.get("max_package_entries", defaults.max_entries)),
        max_total_bytes=int(limits.get("max_package_bytes", defaults.max_total_bytes)),
    )


def check_for_market(market: Market, zip_path: Path, semantic_override: Optional[dict] = None, timeout: Optional[float] = None):
    """Run every submission check with the market's kernel and limits -> CheckReport (or RejectedError)."""
    from learnware_cli.market.checks import check_package

    limits = market.limits
    return check_package(
        zip_path,
        gamma=market.gamma,
        k=market.k,
        limits=limits_for(market),
        timeout=float(timeout if timeout is not None else market.model_timeout_s),
        memory_mb=market.model_memory_mb,
        semantic_override=semantic_override,
        n_rows=int(limits.get("check_rows", 64)),
    )


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
) -> list[SubmitOutcome]:
    """Check every package (``jobs`` at a time), then store all accepted ones at once.

    One outcome per package, in order.
    """
    if update_id is not None:
        if len(zip_paths) != 1:
            raise InputError("--update takes exactly one package")
        market.entry(update_id)  # fail fast if the id is unknown
    zip_paths = [Path(p) for p in zip_paths]
    for zip_path in zip_paths:
        if not zip_path.is_file():
            raise InputError(f"{zip_path}: no such file")
    jobs = max(1, min(jobs or DEFAULT_JOBS, len(zip_paths)))

    def check(zip_path: Path):
        try:
            return check_for_market(market, zip_path, semantic_override, timeout)
        except RejectedError as exc:
            return exc

    outcomes: list[SubmitOutcome] = []
    accepted: list[tuple[SubmitOutcome, NewVersion]] = []
    with tempfile.TemporaryDirectory(prefix="lw-submit-") as tmp, ThreadPoolExecutor(jobs) as pool:
        # checks wait on model worker processes, so threads overlap them well
        for number, (zip_path, report) in enumerate(zip(zip_paths, pool.map(check, zip_paths))):
            if progress:
                progress(number + 1, len(zip_paths), zip_path.name)
            if isinstance(report, RejectedError):
                outcomes.append(SubmitOutcome(str(zip_path), False, check=report.check, reason=report.reason))
                continue
            staged = Path(tmp) / str(number)
            staged.mkdir()
            report.rkme.save(staged / "rkme.json")
            report_dict = report.to_dict()
            (staged / "report.json").write_text(json.dumps(report_dict, indent=1))
            semantic = report.semantic
            record_fields = {
                "input_dim": report.rkme.dim,
                "output_dim": (semantic.get("Output") or {}).get("Dimension"),
                "task": (semantic.get("Task") or {}).get("Values", [""])[0],
                "K": report.rkme.size,
                "package_bytes": zip_path.stat().st_size,
            }
            if price is not None:
                record_fields["price"] = price
            if notes:
                record_fields["notes"] = notes
            outcome = SubmitOutcome(str(zip_path), True, name=semantic.get("Name", {}).get("Values", ""), report=report_dict)
            files = {"package.zip": zip_path, "rkme.json": staged / "rkme.json", "report.json": staged / "report.json"}
            accepted.append((outcome, NewVersion(files, semantic, record_fields, update_id)))
            outcomes.append(outcome)
        if progress:
            progress(len(zip_paths), len(zip_paths), "storing")
        if accepted:
            stored = market.add_versions([item for _, item in accepted])
            for (outcome, _), (entry, record) in zip(accepted, stored):
                outcome.id, outcome.version, outcome.record = entry["id"], record["version"], record
    return outcomes
