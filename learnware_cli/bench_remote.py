"""`make bench --only remote`: a market on object storage (moto's S3 server on 127.0.0.1) beside a market folder.

Whole-process latencies of `lw submit` and `lw search` on each, the search cold
(a new machine: an empty replica) and warm (nothing changed since the last
command), and the S3 requests each command sends (counted in-process). Needs
the test extra (moto[server], s3fs). The server is local, so these are the
protocol's costs (requests, replay, downloads), not a real bucket's latency:
multiply the request counts by a real round trip (10-30 ms in-region) for that.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from learnware_cli.experiment.local_s3 import local_s3


def _packages(folder: Path, count: int, dim: int = 8) -> tuple[list[Path], Path]:
    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge

    from learnware_cli.market.pack import pack_sklearn
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.rkme import fit_rkme

    rng = np.random.default_rng(0)
    zips = []
    for i in range(count):
        x = rng.normal(size=(300, dim)) + i
        joblib.dump(Ridge().fit(x, x @ rng.normal(size=dim)), folder / f"m{i}.joblib")
        fit_rkme(x, k=50).save(folder / f"s{i}.json")
        semantic = build_semantic(f"bench {i}", "", "Table", "Regression", "Scikit-learn", ["Business"], "MIT", dim, 1)
        zips.append(pack_sklearn(folder / f"m{i}.joblib", folder / f"s{i}.json", semantic, folder / f"p{i}.zip"))
    user = folder / "user.csv"
    np.savetxt(user, rng.normal(size=(200, dim)) + 3, delimiter=",")
    return zips, user


def bench_remote() -> None:
    from learnware_cli.bench import ARGS, record
    from learnware_cli.cli.app import main as lw
    from learnware_cli.market import objstore
    from learnware_cli.market.store import Market

    count = 6 if ARGS.quick else 16
    repeats = 3 if ARGS.quick else 5
    with tempfile.TemporaryDirectory(prefix="lw-bench-remote-") as tmp, local_s3() as endpoint:
        import boto3

        tmp = Path(tmp)
        zips, user = _packages(tmp, count + repeats)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        url = f"s3://{bucket}/market"
        folder = tmp / "market"
        Market.create(folder, k=50)
        quiet = ["--json"]

        def in_process(*args) -> dict:
            objstore.REQUESTS.clear()
            with open(os.devnull, "w") as null:
                saved, sys.stdout = sys.stdout, null
                try:
                    code = lw([str(a) for a in args] + quiet)
                finally:
                    sys.stdout = saved
            assert code == 0, args
            return dict(objstore.REQUESTS)

        os.environ["LW_CACHE"] = str(tmp / "cache-bench")
        requests = {"init": in_process("init", url, "--k", 50)}
        requests["submit (first, 1 package)"] = in_process("submit", zips[0], "--market", url)
        in_process("submit", *zips[1:count], "--market", url)
        in_process("submit", *zips[:count], "--market", folder)

        def whole(args: list, cache: Path) -> float:
            env = dict(os.environ, LW_CACHE=str(cache))
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "learnware_cli", *map(str, args), "--json"], check=True, capture_output=True, env=env)
            return time.perf_counter() - started

        search = ["search", "--data", user, "--match", "island", "-k", 3]
        for name, market in (("folder", folder), ("s3", url)):
            warm_cache = tmp / "cache-warm"
            whole([*search, "--market", market], warm_cache)  # the replica, and the JIT cache, made once
            times = [whole([*search, "--market", market], warm_cache) for _ in range(repeats)]
            record("remote", f"`lw search` {count} learnwares, {name}, warm", statistics.median(times), "whole process; nothing changed since the last command")
            if name == "s3":
                cold = [whole([*search, "--market", market], tmp / f"cache-cold-{n}") for n in range(repeats)]
                record("remote", f"`lw search` {count} learnwares, s3, cold", statistics.median(cold), "whole process; a new machine: empty replica")
            times = [whole(["submit", zips[count + n], "--market", market], warm_cache) for n in range(repeats)]
            record("remote", f"`lw submit` 1 package, {name}", statistics.median(times), "whole process, every check")
        os.environ["LW_CACHE"] = str(tmp / "cache-requests")
        requests["search (cold replica)"] = in_process(*search, "--market", url)
        requests["search (nothing changed)"] = in_process(*search, "--market", url)
        requests["list (nothing changed)"] = in_process("list", "--market", url)
        requests["show (first time)"] = in_process("show", "1", "--market", url)
        requests["submit (1 package)"] = in_process("submit", zips[0], "--market", url)
        requests["remove"] = in_process("remove", "1", "--market", url)
        for command, counts in requests.items():
            total = sum(counts.values())
            detail = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
            record("remote", f"requests: {command}", float(total), f"S3 requests ({detail})")
