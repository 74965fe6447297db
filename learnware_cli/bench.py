"""`make bench`: speed figures for lw, as a table (median of several runs).

    python -m learnware_cli.bench [--only fit,spec-cold,mmd,submit,search] [--quick] [--json]

Reference figures (the `learnware` package on this machine class, 2 cores,
from the issues): fit 0.12 s / 0.32 s / 1.34 s at (1000,10) / (5000,20) /
(20000,50), K = 100; search 0.31 s at 1 000 learnwares, linear in M.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from learnware_cli._threads import prefer_single_threaded_blas

prefer_single_threaded_blas()  # as the CLI does, before NumPy loads

import numpy as np  # noqa: E402

REFERENCE_FIT_S = {(1000, 10): 0.12, (5000, 20): 0.32, (20000, 50): 1.34}
ROWS: list[dict] = []


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def record(section: str, case: str, seconds: float, note: str = "", target: str = "") -> None:
    ROWS.append({"section": section, "case": case, "seconds": seconds, "note": note, "target": target})
    if not ARGS.json:
        print(f"  {section:<10} {case:<34} {seconds:9.4f} s  {note}", file=sys.stderr, flush=True)


def synthetic_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, d)) * 3
    return centers[rng.integers(0, 8, size=n)] + rng.normal(size=(n, d))


def bench_fit() -> None:
    from learnware_cli.rkme import approximation_error, fit_rkme

    sizes = [(1000, 10), (5000, 20), (20000, 50)] + ([] if ARGS.quick else [(100000, 50)])
    for n, d in sizes:
        x = synthetic_rows(n, d)
        fit_rkme(x, k=100)  # compile (or load from the persistent cache)
        seconds = median_time(lambda: fit_rkme(x, k=100), 3 if n > 20000 else 5)
        ref = REFERENCE_FIT_S.get((n, d))
        note = f"{ref / seconds:.1f}x faster than reference {ref} s" if ref else ""
        if n <= 5000:
            err = approximation_error(fit_rkme(x, k=100), x)
            note += f"; error {err:.2e}"
        record("fit", f"warm fit {n}x{d}, K=100", seconds, note, "5x reference" if ref else "")


def bench_fit_quality() -> None:
    """Our error / the reference's at the same K and gamma, on shared/reference/fit_quality.json."""
    from learnware_cli.rkme import approximation_error, fit_rkme

    path = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "fit_quality.json"
    if not path.exists():
        return
    for case in json.loads(path.read_text())["fits"]:
        x = np.array(case["X"])
        started = time.perf_counter()
        spec = fit_rkme(x, k=case["K"], gamma=case["gamma"])
        seconds = time.perf_counter() - started
        ratio = approximation_error(spec, x) / case["reference_error"]
        record("quality", f"fit {x.shape[0]}x{x.shape[1]}, K={case['K']} (incl. compile)", seconds, f"error = {ratio:.3f} x reference", "<= 1.05")


def bench_spec_cold() -> None:
    x = synthetic_rows(1000, 10)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.csv"
        np.savetxt(data, x, delimiter=",")
        cmd = [sys.executable, "-m", "learnware_cli", "spec", str(data), "--out", str(Path(tmp) / "s.json"), "--json"]
        subprocess.run(cmd, check=True, capture_output=True)  # fills the persistent compile cache
        seconds = median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), 3)
    record("cli", "cold `lw spec` 1000x10 (process)", seconds, "includes Python + JAX start-up")


def bench_mmd() -> None:
    from learnware_cli.rkme.spec import RKMESpec, SpecStack, mmd2_to_many

    rng = np.random.default_rng(0)
    user = RKMESpec(z=rng.normal(size=(100, 20)), beta=np.full(100, 0.01), gamma=0.1)
    for m in [1000, 10000] + ([] if ARGS.quick else [100000]):
        zs = rng.normal(size=(m, 100, 20)).astype(np.float32)
        betas = rng.uniform(size=(m, 100)).astype(np.float32)
        betas /= betas.sum(axis=1, keepdims=True)
        started = time.perf_counter()
        stack = SpecStack.from_arrays(zs, betas, 0.1)
        build = time.perf_counter() - started
        mmd2_to_many(user, stack)
        seconds = median_time(lambda s=stack: mmd2_to_many(user, s), 5)
        mem = (stack.zs.nbytes + stack.betas.nbytes + stack.sq_norms.nbytes + stack.self_products.nbytes) / m
        target = "< 1 s" if m == 100000 else ""
        record("mmd", f"MMD^2 to {m} specs (K=100, d=20)", seconds, f"stack {mem / 1024:.1f} KiB/spec, built in {build:.1f} s", target)
        del stack, zs, betas


REFERENCE_HERD_S = {50: 0.07, 100: 0.26, 200: 3.3, 600: 600.0}


def bench_herd() -> None:
    """Herding T rows from a K=100, d=7 spec (the reference recomputes every step: T^3)."""
    from learnware_cli.rkme import fit_rkme, herd

    spec = fit_rkme(synthetic_rows(5000, 7), k=100)
    for t in (50, 100, 200, 600, 1000):
        herd(spec, t)
        seconds = median_time(lambda: herd(spec, t), 3)
        ref = REFERENCE_HERD_S.get(t)
        note = (f"reference {ref} s" if ref < 600 else "reference over 10 min") if ref else "the job selector's default"
        record("herd", f"herd {t} rows (K=100, d=7)", seconds, note)


def _random_specs(m: int, k: int, d: int, rng):
    from learnware_cli.rkme.spec import RKMESpec

    centers = rng.normal(size=(m, d)) * 3
    specs = []
    for i in range(m):
        beta = rng.uniform(size=k)
        specs.append(RKMESpec(z=centers[i] + rng.normal(size=(k, d)), beta=beta / beta.sum(), gamma=0.1, num_points=1000))
    return specs


def bench_search() -> None:
    """Search latency on markets of M spec-only learnwares (K=100, d=20), warm and cold."""
    from learnware_cli.experiment.synthetic import spec_only_semantic, write_spec_only_learnwares
    from learnware_cli.market.store import Market
    from learnware_cli.rkme.spec import RKMESpec
    from learnware_cli.search.engine import search

    rng = np.random.default_rng(0)
    d = 20
    sizes = [1000, 10000] + ([] if ARGS.quick else [100000])
    with tempfile.TemporaryDirectory() as tmp:
        user = RKMESpec(z=rng.normal(size=(100, d)) * 3, beta=np.full(100, 0.01), gamma=0.1)
        user_path = Path(tmp) / "user.json"
        user.save(user_path)
        for m in sizes:
            market = Market.create(Path(tmp) / f"m{m}")
            started = time.perf_counter()
            for start in range(0, m, 5000):
                count = min(5000, m - start)
                write_spec_only_learnwares(market, _random_specs(count, 100, d, rng), [spec_only_semantic(f"lw {start + i}", d) for i in range(count)])
            filled = time.perf_counter() - started
            started = time.perf_counter()
            search(market, user, k=5)  # builds the cache file, compiles
            first = time.perf_counter() - started
            seconds = median_time(lambda: search(market, user, k=5), 5)
            single = median_time(lambda: search(market, user, k=5, mixture=False), 5)
            cache_bytes = sum(p.stat().st_size for p in (market.root / "cache").glob("*.npz"))
            target = {10000: "<= 0.1 s", 100000: "<= 1 s"}.get(m, "")
            record("search", f"warm search, {m} learnwares", seconds, f"single only {single:.3f} s; cache {cache_bytes / m / 1024:.1f} KiB/learnware; first search (cache build) {first:.1f} s; market filled in {filled:.0f} s", target)
            cmd = [sys.executable, "-m", "learnware_cli", "search", "--market", str(market.root), "--spec", str(user_path), "-k", "5", "--json"]
            cold = median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), 3)
            record("search", f"cold `lw search`, {m} learnwares", cold, "whole process", "<= 2 s" if m == 10000 else "")
            shutil.rmtree(market.root)


def bench_cross() -> None:
    """Cross-island search (shared market features, masked batched MMD) against same-island search, 10 000 learnwares.

    Same-island: every learnware on one 20-column set, the user on it too.
    Cross-island: learnwares on three 20-column sets drawn from 40 features
    (A = 0-19, B = 10-29, C = 20-39); users on the union of A and B (covers
    A and B fully), a subset (10 columns of A: partial coverage, so <s,s>_S is
    computed per learnware), and the same-island user through the features path.
    """
    from learnware_cli.experiment.synthetic import spec_only_semantic, write_spec_only_learnwares
    from learnware_cli.market.store import Market
    from learnware_cli.rkme.spec import RKMESpec
    from learnware_cli.search.engine import search

    rng = np.random.default_rng(1)
    d, m = 20, (2000 if ARGS.quick else 10000)
    sets = {"A": list(range(0, 20)), "B": list(range(10, 30)), "C": list(range(20, 40))}

    def semantic(name: str, columns: list) -> dict:
        doc = spec_only_semantic(name, len(columns))
        doc["Input"]["Description"] = {str(i): f"feature {c}" for i, c in enumerate(columns)}
        return doc

    def user(columns: list) -> tuple:
        spec = RKMESpec(z=rng.normal(size=(100, len(columns))) * 3, beta=np.full(100, 0.01), gamma=0.1)
        return spec, {"Input": {"Dimension": len(columns), "Description": {str(i): f"feature {c}" for i, c in enumerate(columns)}}}

    with tempfile.TemporaryDirectory() as tmp:
        same = Market.create(Path(tmp) / "same")
        write_spec_only_learnwares(same, _random_specs(m, 100, d, rng), [semantic(f"lw {i}", sets["A"]) for i in range(m)])
        cross = Market.create(Path(tmp) / "cross")
        names = [list(sets)[i % 3] for i in range(m)]
        write_spec_only_learnwares(cross, _random_specs(m, 100, d, rng), [semantic(f"lw {i}", sets[n]) for i, n in enumerate(names)])
        island_user, island_columns = user(sets["A"])
        cases = [
            ("same-island search (match island)", same, island_user, None, "island"),
            ("same market, match features", same, island_user, island_columns, "features"),
            ("cross-island, user on A+B (30 columns)", cross, *user(list(range(0, 30))), "features"),
            ("cross-island, user on 10 columns of A", cross, *user(list(range(0, 10))), "features"),
        ]
        baseline = None
        for case, market, spec, columns, match in cases:
            def run(market=market, spec=spec, columns=columns, match=match):
                return search(market, spec, k=5, user_semantic=columns, match=match)

            started = time.perf_counter()
            run()  # builds the caches, compiles
            first = time.perf_counter() - started
            seconds = median_time(run, 5)
            baseline = baseline or seconds
            target = "<= 2x same-island" if "cross" in case else ""
            record("cross", f"{case}, {m}", seconds, f"{seconds / baseline:.2f}x same-island; first search {first:.1f} s", target)


def bench_submit() -> None:
    """Accepted packages per second: small scikit-learn models, every check included.

    The same batch with model workers forked from the zygote (pool.py) and
    started cold (LW_WORKER_POOL=0), in one run, median of several batches.
    "steady" batches find the zygote running (a long batch, or a process that
    submitted before); "with zygote start" batches stop it first, so they pay
    its start once, as one `lw submit` of that many packages does.
    """
    import joblib
    from sklearn.linear_model import Ridge

    from learnware_cli.market import pool
    from learnware_cli.market.pack import pack_sklearn
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.market.store import Market
    from learnware_cli.market.submit import submit_packages
    from learnware_cli.rkme import fit_rkme

    count = 8 if ARGS.quick else 32
    repeats = 3 if ARGS.quick else 5
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        zips = []
        for i in range(count):
            x = rng.normal(size=(500, 8)) + i
            y = x @ rng.normal(size=8)
            joblib.dump(Ridge().fit(x, y), Path(tmp) / f"m{i}.joblib")
            fit_rkme(x, k=50).save(Path(tmp) / f"s{i}.json")
            semantic = build_semantic(f"bench {i}", "", "Table", "Regression", "Scikit-learn", ["Business"], "MIT", 8, 1)
            zips.append(pack_sklearn(Path(tmp) / f"m{i}.joblib", Path(tmp) / f"s{i}.json", semantic, Path(tmp) / f"p{i}.zip"))
        markets = iter(range(10_000))

        def batch(jobs: int, mode: str, fresh_zygote: bool = False) -> float:
            market = Market.create(Path(tmp) / f"market{next(markets)}", k=50)
            previous = os.environ.get(pool.ENV_SWITCH)
            os.environ[pool.ENV_SWITCH] = "1" if mode == "pool" else "0"
            try:
                if fresh_zygote:
                    pool.shutdown()
                started = time.perf_counter()
                outcomes = submit_packages(market, zips, jobs=jobs)
                seconds = time.perf_counter() - started
            finally:
                if previous is None:
                    os.environ.pop(pool.ENV_SWITCH)
                else:
                    os.environ[pool.ENV_SWITCH] = previous
            assert all(o.accepted for o in outcomes), [o.reason for o in outcomes if not o.accepted]
            return seconds

        def rate(case: str, seconds: list, note: str = "", target: str = "") -> None:
            median = statistics.median(seconds)
            record("submit", case, median, f"{count / median:.2f} packages/s{note}", target)

        batch(2, "pool")  # warm up: JAX compiles, file cache, the zygote starts
        cold = [batch(2, "cold") for _ in range(1 if ARGS.quick else 2)]
        rate(f"{count} packages, 2 jobs, cold workers", cold, " (LW_WORKER_POOL=0)")
        for jobs in (1, 2, 4):
            steady = [batch(jobs, "pool") for _ in range(repeats)]
            rate(f"{count} packages, {jobs} job(s), pooled", steady, ", steady", ">= 10/s" if jobs == 2 else "")
        fresh = [batch(2, "pool", fresh_zygote=True) for _ in range(repeats)]
        state = pool.status()
        rate(f"{count} packages, 2 jobs, pooled", fresh, f", zygote start included ({state['start_seconds'] or 0:.2f} s of imports)")
        market = Market.create(Path(tmp) / "market-cli", k=50)
        cmd = lambda i: [sys.executable, "-m", "learnware_cli", "submit", str(zips[i]), "--market", str(market.root), "--json"]
        times = []
        for i in range(3):
            started = time.perf_counter()
            subprocess.run(cmd(i), check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        record("submit", "cold `lw submit` of 1 package", statistics.median(times), "whole process, checks included")


def bench_onnx() -> None:
    """The same scikit-learn models as Python and as ONNX packages: submit throughput, reuse latency, agreement."""
    import joblib
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge

    from learnware_cli.market.onnx_kind import pack_estimator_onnx
    from learnware_cli.market.pack import pack_sklearn
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.market.store import Market
    from learnware_cli.market.submit import submit_packages
    from learnware_cli.reuse.market_models import open_learnwares
    from learnware_cli.rkme import fit_rkme

    count = 6 if ARGS.quick else 12
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        zips = {"python": [], "onnx": []}
        for i in range(count):
            x = rng.normal(size=(500, 8)) + i
            y = x @ rng.normal(size=8) + np.sin(x[:, 0])
            model = (Ridge() if i % 2 else GradientBoostingRegressor(n_estimators=50, random_state=0)).fit(x, y)
            joblib.dump(model, Path(tmp) / f"m{i}.joblib")
            fit_rkme(x, k=50).save(Path(tmp) / f"s{i}.json")
            semantic = build_semantic(f"bench {i}", "", "Table", "Regression", "Scikit-learn", ["Business"], "MIT", 8, 1)
            zips["python"].append(pack_sklearn(Path(tmp) / f"m{i}.joblib", Path(tmp) / f"s{i}.json", semantic, Path(tmp) / f"p{i}.zip"))
            zips["onnx"].append(pack_estimator_onnx(model, Path(tmp) / f"s{i}.json", semantic, Path(tmp) / f"o{i}.zip"))
        x_user = rng.normal(size=(1000, 8))
        predictions = {}
        for kind, packages in zips.items():
            market = Market.create(Path(tmp) / f"market-{kind}", k=50)
            started = time.perf_counter()
            outcomes = submit_packages(market, packages, jobs=2)
            seconds = time.perf_counter() - started
            assert all(o.accepted for o in outcomes)
            record("onnx", f"submit {count} packages as {kind}, 2 jobs", seconds, f"{count / seconds:.2f} packages/s")
            refs = [(o.id, None, 1.0) for o in outcomes]
            started = time.perf_counter()
            with open_learnwares(market, refs) as loaded:
                opened = time.perf_counter() - started
                predictions[kind] = np.stack([lw.model.predict(x_user) for lw in loaded])
            total = time.perf_counter() - started
            record("onnx", f"reuse {count} {kind} learnwares on 1000 rows", total, f"start {opened:.2f} s, then predict")
        gap = float(np.max(np.abs(predictions["onnx"] - predictions["python"])))
        record("onnx", "ONNX and Python predictions agree", 0.0, f"largest difference {gap:.1e} (target <= 1e-5)")


def bench_sandbox() -> None:
    """What the sandbox costs per model worker: its own setup, and a whole worker start with and without it."""
    previous = os.environ.get("LW_WORKER_POOL")
    os.environ["LW_WORKER_POOL"] = "0"  # cold workers both ways: the pool's fork is measured by the submit section
    try:
        _bench_sandbox_cold()
    finally:
        if previous is None:
            os.environ.pop("LW_WORKER_POOL", None)
        else:
            os.environ["LW_WORKER_POOL"] = previous


def _bench_sandbox_cold() -> None:
    import joblib
    from sklearn.linear_model import Ridge

    from learnware_cli.market.pack import pack_sklearn
    from learnware_cli.market.package import extract_package
    from learnware_cli.market.sandbox import unavailable_reason
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.market.worker import ModelWorker
    from learnware_cli.rkme import fit_rkme

    reason = unavailable_reason()
    if reason:
        record("sandbox", "unavailable on this machine", 0.0, reason)
        return
    repeats = 4 if ARGS.quick else 10
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        x = rng.normal(size=(200, 8))
        joblib.dump(Ridge().fit(x, x @ rng.normal(size=8)), Path(tmp) / "m.joblib")
        fit_rkme(x, k=20).save(Path(tmp) / "s.json")
        semantic = build_semantic("bench", "", "Table", "Regression", "Scikit-learn", ["Business"], "MIT", 8, 1)
        package = extract_package(pack_sklearn(Path(tmp) / "m.joblib", Path(tmp) / "s.json", semantic, Path(tmp) / "p.zip"), Path(tmp) / "pkg")
        setups = []

        def start(mode: str) -> None:
            with ModelWorker(package, timeout=60, sandbox=mode) as worker:
                worker.predict(x[:4])
                if mode == "required":
                    setups.append(worker.info()["sandbox"]["setup_seconds"])

        for mode in ("off", "required"):
            start(mode)  # warm the file cache
        plain = median_time(lambda: start("off"), repeats)
        boxed = median_time(lambda: start("required"), repeats)
        record("sandbox", "setup (namespaces, Landlock, seccomp)", statistics.median(setups), "inside the worker, per start")
        record("sandbox", "worker start + predict, no sandbox", plain, "Ridge model, scikit-learn import included")
        record("sandbox", "worker start + predict, sandboxed", boxed, f"{(boxed - plain) * 1000:+.0f} ms ({boxed / plain - 1:+.0%})")


def bench_scale() -> None:
    from learnware_cli.bench_scale import bench_scale as run

    run()


def bench_sketch() -> None:
    from learnware_cli.bench_sketch import bench_sketch as run

    run()


def bench_data() -> None:
    from learnware_cli.bench_data import bench_data as run

    run()


def bench_remote() -> None:
    from learnware_cli.bench_remote import bench_remote as run

    run()


SECTIONS = {
    "fit": bench_fit,
    "quality": bench_fit_quality,
    "spec-cold": bench_spec_cold,
    "mmd": bench_mmd,
    "herd": bench_herd,
    "search": bench_search,
    "cross": bench_cross,
    "submit": bench_submit,
    "sandbox": bench_sandbox,
    "onnx": bench_onnx,
    "scale": bench_scale,
    "sketch": bench_sketch,
    "data": bench_data,
    "remote": bench_remote,
}


def main(argv: list[str] | None = None) -> None:
    global ARGS
    parser = argparse.ArgumentParser(description="lw benchmarks")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="skip the largest sizes")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    ARGS = parser.parse_args(argv)
    os.environ.setdefault("LW_JAX_CACHE", str(Path.home() / ".cache" / "lw" / "jax"))
    import jax

    for name in ARGS.only.split(","):
        SECTIONS[name.strip()]()
    if ARGS.json:
        print(json.dumps({"device": str(jax.devices()[0]), "rows": ROWS}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lw bench on {jax.devices()[0].platform} ({os.cpu_count()} cores)")
    for column in ("section", "case", "median s", "target", "note"):
        table.add_column(column)
    for row in ROWS:
        table.add_row(row["section"], row["case"], f"{row['seconds']:.4f}", row["target"], row["note"])
    Console(width=200).print(table)


ARGS = argparse.Namespace(json=False, quick=False)

if __name__ == "__main__":
    # run as the imported module: sections in other modules import ARGS and ROWS from learnware_cli.bench
    from learnware_cli.bench import main as imported_main

    imported_main()
