"""`make bench` section "data": whole-process `lw spec` on a big table, time and peak memory.

Issue 15 ("data in at the speed of the disk"): on 10^6 x 50 (400 MB of
float64), `lw spec` must take <= 8 s and peak at <= 1.5x the data's size
(RSS), from CSV, .npy and Parquet alike. With --quick the table has 10^5 rows
(figures only: at that size the process's own ~0.3 GB dominates).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL_ROWS = 1_000_000
QUICK_ROWS = 100_000
COLUMNS = 50
TARGET_SECONDS = 8.0
TARGET_MEMORY = 1.5  # peak RSS / the table's float64 size


def _write_files(folder: Path, n: int, d: int) -> dict:
    """The same synthetic rows as .csv (with a header, full precision), .npy and .parquet."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from learnware_cli.bench import synthetic_rows

    x = synthetic_rows(n, d)
    files = {"npy": folder / "x.npy", "csv": folder / "x.csv", "parquet": folder / "x.parquet"}
    np.save(files["npy"], x)
    table = pa.table({f"c{j}": x[:, j] for j in range(d)})
    del x
    pacsv.write_csv(table, files["csv"])
    pq.write_table(table, files["parquet"])
    return files


# Linux carries a process's peak RSS across exec, so a child forked straight from this (big)
# process would report this process's size: a small launcher forks the measured command instead.
_LAUNCHER = """
import os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
if code:
    sys.stderr.write(proc.stderr.read().decode(errors="replace")[-500:])
    sys.exit(code)
print(seconds, usage.ru_maxrss)
"""


def _run(cmd: list) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one process, measured by wait4 on that process alone."""
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, cmd)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}): {done.stderr.strip()}")
    seconds, kib = done.stdout.split()
    return float(seconds), int(kib) * 1024  # ru_maxrss is in KiB on Linux


def bench_data() -> None:
    from learnware_cli.bench import ARGS, record

    n = QUICK_ROWS if ARGS.quick else FULL_ROWS
    d = COLUMNS
    data_bytes = n * d * 8
    repeats = 3 if ARGS.quick else 2
    with tempfile.TemporaryDirectory(prefix="lw-bench-data-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        files = _write_files(folder, n, d)
        written = time.perf_counter() - started
        out = folder / "spec.json"

        def command(path: Path) -> list:
            return [sys.executable, "-m", "learnware_cli", "spec", str(path), "--out", str(out), "--json"]

        _run(command(files["npy"]))  # fills the persistent compile cache: the rows below are warm processes
        for kind in ("csv", "npy", "parquet"):
            path = files[kind]
            runs = [_run(command(path)) for _ in range(repeats)]
            seconds = statistics.median(s for s, _ in runs)
            peak = max(rss for _, rss in runs)
            ratio = peak / data_bytes
            size = path.stat().st_size
            note = (
                f"peak RSS {peak / 1e6:.0f} MB = {ratio:.2f}x the data's {data_bytes / 1e6:.0f} MB; "
                f"file {size / 1e6:.0f} MB" + (f" (files written in {written:.0f} s)" if kind == "csv" else "")
            )
            target = f"<= {TARGET_SECONDS:g} s, <= {TARGET_MEMORY:g}x data" if n == FULL_ROWS else ""
            record("data", f"`lw spec` {n}x{d} .{kind} (process)", seconds, note, target)


if __name__ == "__main__":  # python -m learnware_cli.bench_data [--quick]
    from learnware_cli import bench

    bench.ARGS.quick = "--quick" in sys.argv[1:]
    os.environ.setdefault("LW_JAX_CACHE", str(Path.home() / ".cache" / "lw" / "jax"))
    bench_data()
