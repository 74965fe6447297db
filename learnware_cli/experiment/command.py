"""The command line both experiments share: --out, --quick, --jobs, --seeds, one line for known errors."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional


def run_from_command_line(argv: Optional[list], doc: str, default_out: str, quick, full, run: Callable, quick_help: str) -> None:
    """Parse the experiment's flags and run it: run(out, config, quick=...) with the quick or full config
    (its jobs and seeds overridden when given); an LwError ends in one line and its exit code."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(default_out))
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--jobs", type=int, default=None, help="processes for the label-using methods")
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = quick if args.quick else full
    if args.jobs is not None:
        cfg = replace(cfg, jobs=max(1, args.jobs))
    if args.seeds is not None:
        cfg = replace(cfg, seeds=max(1, args.seeds))
    try:
        run(args.out, cfg, quick=args.quick)
    except Exception as exc:  # noqa: BLE001 - one line for known errors
        from learnware_cli.errors import LwError

        if isinstance(exc, LwError):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        raise


class Laps:
    """Seconds per stage of an experiment: ``lap("market")`` closes the stage that just ended;
    ``timings`` maps stage -> seconds, and ``finish()`` adds the total."""

    def __init__(self):
        import time

        self._clock = time.monotonic
        self.timings: dict = {}
        self.started = self.last = self._clock()

    def __call__(self, name: str) -> None:
        now = self._clock()
        self.timings[name] = now - self.last
        self.last = now

    def finish(self) -> dict:
        self.timings["total"] = self._clock() - self.started
        return self.timings


def fresh_out(out) -> Path:
    """The experiment's output folder, without the market, packages and work of an earlier run."""
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("market", "packages", "work"):
        shutil.rmtree(out / sub, ignore_errors=True)
    return out
