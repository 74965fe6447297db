"""`make bench --only scale`: a market of 10^4, 10^5 (and, with LW_BENCH_HUGE=1, 10^6) learnwares, built with the
bulk path (``experiment.synthetic.write_spec_only_learnwares``: spec-only entries, K = 100, d = 20).

For each size: build time and bytes on disk per learnware (all of it, as file sizes and as the disk blocks
they take, and the index: catalog + search segments; a version folder keeps its spec once, in its
package.zip), cold `lw search` as a whole process (median of 3, with its peak RSS), warm search in-process
(two-stage and exact), recall@5 of the two-stage search against the exact one over 40 users, cold
`lw list --limit 20`, `lw --help`, and the time to add 1 000 learnwares and one learnware to the market
(beside one learnware into an empty market).

LW_BENCH_SCALE_MARKET=PATH measures a market built before with this module's generator (``build_market``)
instead of building one: a 10^6 market takes an hour to build, its searches a few minutes. It is left in
place (the added learnwares stay in it).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = (10_000, 100_000)
HUGE = 1_000_000
K, DIM = 100, 20


def _specs(count: int, rng, centers=None):
    from learnware_cli.rkme.spec import RKMESpec

    centers = rng.normal(size=(count, DIM)) * 3 if centers is None else centers
    out = []
    for i in range(count):
        beta = rng.uniform(size=K)
        out.append(RKMESpec(z=centers[i] + rng.normal(size=(K, DIM)), beta=beta / beta.sum(), gamma=0.1, num_points=1000))
    return out


def build_market(root: Path, count: int, seed: int = 0):
    """A bench market of count spec-only learnwares at root (for LW_BENCH_SCALE_MARKET) -> (Market, seconds)."""
    from learnware_cli.market.store import Market

    market = Market.create(root)
    started = time.perf_counter()
    _fill(market, count, np.random.default_rng(seed))
    return market, time.perf_counter() - started


def _fill(market, count: int, rng, chunk: int = 5000) -> None:
    from learnware_cli.experiment.synthetic import spec_only_semantic, write_spec_only_learnwares

    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        write_spec_only_learnwares(market, _specs(n, rng), [spec_only_semantic(f"lw {start + i}", DIM) for i in range(n)], chunk=chunk)


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _disk_usage(root: Path) -> tuple[int, int]:
    """(bytes in the files under root, bytes of the disk blocks under root, folders included: what `du` counts;
    small files round up to a block) in one walk."""
    total = blocks = 0
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        total += info.st_size if stat.S_ISREG(info.st_mode) else 0
        blocks += info.st_blocks * 512
    return total, blocks


def _process(cmd: list) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one whole process."""
    wrapper = "import resource, subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, capture_output=True); " \
              "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    out = subprocess.run([sys.executable, "-c", wrapper, *map(str, cmd)], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def _median_process(cmd: list, repeats: int = 3) -> tuple[float, float]:
    runs = [_process(cmd) for _ in range(repeats)]
    return float(np.median([r[0] for r in runs])), max(r[1] for r in runs)


def _lw() -> list:
    return [sys.executable, "-m", "learnware_cli"]


def _packages(folder: Path, count: int) -> list:
    """count real packages (a Ridge model on DIM columns, its RKME, a semantic spec) for `lw submit`."""
    import joblib
    from sklearn.linear_model import Ridge

    from learnware_cli.market.pack import pack_sklearn
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.rkme import fit_rkme

    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        x = rng.normal(size=(500, DIM)) * 3 + rng.normal(size=DIM) * 3
        joblib.dump(Ridge().fit(x, x @ rng.normal(size=DIM)), folder / f"model{i}.joblib")
        fit_rkme(x, k=K, gamma=0.1).save(folder / f"spec{i}.json")
        semantic = build_semantic(f"scale bench {i}", "", "Table", "Regression", "Scikit-learn", ["Business"], "MIT", DIM, 1)
        out.append(pack_sklearn(folder / f"model{i}.joblib", folder / f"spec{i}.json", semantic, folder / f"package{i}.zip"))
    return out


def _submit_seconds(market_root: Path, packages: list) -> float:
    """Median seconds of one whole `lw submit PACKAGE` process (every check), one package per run."""
    return float(np.median([_process(_lw() + ["submit", package, "--market", market_root, "--json"])[0] for package in packages]))


def bench_scale() -> None:
    from learnware_cli.bench import ARGS, median_time, record
    from learnware_cli.market.store import Market
    from learnware_cli.search import engine
    from learnware_cli.search.engine import search

    sizes = (10_000,) if ARGS.quick else SIZES + ((HUGE,) if os.environ.get("LW_BENCH_HUGE") == "1" else ())
    if os.environ.get("LW_BENCH_SCALE_SIZES"):  # e.g. "1000000": only those sizes
        sizes = tuple(int(size) for size in os.environ["LW_BENCH_SCALE_SIZES"].split(","))
    seconds, _ = _median_process(_lw() + ["--help"], 5)
    record("scale", "`lw --help`", seconds, "whole process", "<= 0.3 s")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=os.environ.get("LW_BENCH_DIR")) as tmp:
        tmp = Path(tmp)
        empty = Market.create(tmp / "empty")
        started = time.perf_counter()
        _fill(empty, 1, rng)
        one_empty = time.perf_counter() - started
        (tmp / "packages").mkdir()
        packages = _packages(tmp / "packages", 6)
        submit_empty = _submit_seconds(Market.create(tmp / "empty-submit").root, packages[:3])
        given = os.environ.get("LW_BENCH_SCALE_MARKET")
        if given:
            market = Market.open(Path(given))
            sizes = (market.count(),)
        for m in sizes:
            if not given:
                market, built = build_market(tmp / f"m{m}", m, seed=int(rng.integers(2**31)))
            total, blocks = _disk_usage(market.root)
            index_bytes = (market.root / "index.sqlite").stat().st_size + _disk_bytes(market.root / "segments")
            record("scale", f"{'built before' if given else 'build'} {m} learnwares (bulk path)", 0.0 if given else built,
                   f"{total / m / 1024:.1f} KiB/learnware on disk ({blocks / m / 1024:.1f} KiB in disk blocks), "
                   f"index (catalog + segments) {index_bytes / m / 1024:.1f} KiB/learnware = {index_bytes / 2**30:.2f} GiB")

            # users: near a market learnware (a real best match) and anywhere
            per_kind = 20 if m < HUGE else 10  # an exact search of 10^6 takes ~100 s: fewer users there
            near = [market.version_spec(f"{i:08d}", 1) for i in rng.integers(1, m + 1, size=per_kind)]
            users = [type(s)(z=np.asarray(s.z) + rng.normal(size=np.shape(s.z)) * 0.3, beta=s.beta, gamma=s.gamma) for s in near] + _specs(per_kind, rng)
            user_path = tmp / "user.json"
            users[0].save(user_path)

            cold, rss = _median_process(_lw() + ["search", "--market", market.root, "--spec", user_path, "-k", "5", "--json"])
            target = {100_000: "<= 1 s, <= 2 GB", HUGE: "<= 1.5 s, <= 2 GB"}.get(m, "")
            record("scale", f"cold `lw search`, {m}", cold, f"whole process, peak RSS {rss:.0f} MB", target)
            listed, _ = _median_process(_lw() + ["list", "--market", market.root, "--limit", "20", "--json"])
            record("scale", f"cold `lw list --limit 20`, {m}", listed, "whole process", "<= 0.5 s" if m == HUGE else "")

            warm = median_time(lambda: search(market, users[0], k=5), 5)
            warm_exact = median_time(lambda: search(market, users[0], k=5, exact=True), 3 if m < HUGE else 1)
            stage = search(market, users[0], k=5).user.get("stage", {}).get("method")
            record("scale", f"warm search, {m}", warm, f"{stage}; exact (--exact) {warm_exact:.3f} s", "<= 0.2 s" if m == HUGE else "")

            saved = engine.TWO_STAGE_FROM
            engine.TWO_STAGE_FROM = 0  # the sketch stage at every size, to measure its recall
            try:
                staged = [[r["id"] for r in search(market, u, k=5, mixture=False).single] for u in users]
            finally:
                engine.TWO_STAGE_FROM = saved
            exact = [[r["id"] for r in search(market, u, k=5, mixture=False, exact=True).single] for u in users]
            recall = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact, staged)]))
            record("scale", f"recall@5 two-stage vs exact, {m}", recall, f"{len(users)} users ({per_kind} near a learnware, {per_kind} anywhere); a ratio, not seconds", ">= 0.99")

            started = time.perf_counter()
            _fill(market, 1000, rng, chunk=1000)
            thousand = time.perf_counter() - started
            record("scale", f"add 1 000 learnwares to {m}", thousand, "one bulk transaction")
            started = time.perf_counter()
            _fill(market, 1, rng)
            one = time.perf_counter() - started
            record("scale", f"add 1 learnware to {m}", one, f"bulk path; into an empty market {one_empty:.3f} s")
            submitted = _submit_seconds(market.root, packages[3:])
            record("scale", f"one `lw submit` into {m}", submitted, f"whole process, every check, median of 3; into an empty market {submit_empty:.2f} s", "no slower than empty")
            if not given:
                shutil.rmtree(market.root)
