"""The bench's "sketch" section: recall and speed of the two-stage search (random-feature sketch, then exact re-rank).

    python -m learnware_cli.bench --only sketch [--quick]

Two synthetic markets (K = 100, d = 20):

- ``separated``: bench.py's ``_random_specs``: learnware m is N(c_m, I) with
  c_m ~ N(0, 9 I), gamma = 0.1, so learnwares barely overlap; users are half
  a fresh draw from one learnware's distribution, half bench.py's spread-out
  user (z ~ N(0, 9 I)).
- ``overlapping``: standardised-scale data, gamma = 1/d = 0.05: 8 clusters
  with centres ~ N(0, I) and spread 0.5; each learnware (and each user) mixes
  them with weights ~ Dirichlet(0.5), its K points drawn from its mixture.
  Every learnware overlaps many others, so the MMD^2s are small and close.

For each user the exact top 5 (float32 MMD^2 to the whole stack, its best 100
re-scored in float64: what search() does) is compared with the candidates of
``sketch.nearest`` (the exact re-rank of the candidates then returns the
exact top 5 exactly when they are among them): recall@5 = the share of the
exact top 5 among the candidates, averaged over users.
Sketches for D < 1024 are the D = 1024 sketch's first D/2 cosine and sine
columns (rescaled): frequencies drawn i.i.d., so a subset is a sketch of its own.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

GEN_BLOCK = 4096  # specs generated per block (each from its own seeded stream)
FEATURES = (256, 512, 1024)
CANDIDATES = (50, 100, 300, 1000)
TOP = 5
KINDS = ("separated", "close", "clusters", "crowded")


@dataclass
class SyntheticMarket:
    """A synthetic market of M table RKMEs (K, d), generated blockwise from a seed (see the module docstring)."""

    kind: str
    m: int
    seed: int = 0
    k: int = 100
    d: int = 20

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown synthetic market {self.kind!r}")
        rng = np.random.default_rng([self.seed, 1])
        if self.kind in ("separated", "close"):
            self.gamma = 0.1
            self.centers = rng.normal(size=(self.m, self.d)) * (3.0 if self.kind == "separated" else 1.0)
        else:
            self.gamma = 1.0 / self.d
            self.clusters = rng.normal(size=(8, self.d))
            self.concentration = 0.5 if self.kind == "clusters" else 5.0
            self.mixtures = rng.dirichlet(np.full(8, self.concentration), size=self.m)

    def _draw(self, rng, n: int, centers=None, mixtures=None, spread_user: bool = False):
        """n specs (n, K, d), (n, K): around centers (separated) or from mixtures (overlapping)."""
        k, d = self.k, self.d
        beta = rng.uniform(size=(n, k))
        beta /= beta.sum(axis=1, keepdims=True)
        if self.kind in ("separated", "close"):
            if spread_user:
                return rng.normal(size=(n, k, d)) * 3.0, np.full((n, k), 1.0 / k)
            return centers[:, None, :] + rng.normal(size=(n, k, d)), beta
        cumulative = np.cumsum(mixtures, axis=1)
        labels = np.minimum((rng.uniform(size=(n, k, 1)) > cumulative[:, None, :]).sum(axis=2), 7)
        return self.clusters[labels] + 0.5 * rng.normal(size=(n, k, d)), beta

    def blocks(self, block: int = GEN_BLOCK) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(start, zs float32 (b, K, d), betas float32 (b, K)) for consecutive blocks of the market."""
        for number, start in enumerate(range(0, self.m, block)):
            stop = min(start + block, self.m)
            rng = np.random.default_rng([self.seed, 2, number])
            if self.kind in ("separated", "close"):
                zs, betas = self._draw(rng, stop - start, centers=self.centers[start:stop])
            else:
                zs, betas = self._draw(rng, stop - start, mixtures=self.mixtures[start:stop])
            yield start, zs.astype(np.float32), betas.astype(np.float32)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        zs = np.empty((self.m, self.k, self.d), dtype=np.float32)
        betas = np.empty((self.m, self.k), dtype=np.float32)
        for start, zb, bb in self.blocks():
            zs[start : start + len(zb)], betas[start : start + len(bb)] = zb, bb
        return zs, betas

    def users(self, n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """n user RKMEs (z (K, d), beta (K,)) float64, drawn as described in the module docstring."""
        rng = np.random.default_rng([self.seed, 3, seed])
        out = []
        for i in range(n):
            if self.kind in ("separated", "close"):
                near = i % 2 == 0
                center = self.centers[rng.integers(self.m)][None] if near else None
                z, beta = self._draw(rng, 1, centers=center, spread_user=not near)
            else:
                z, beta = self._draw(rng, 1, mixtures=rng.dirichlet(np.full(8, self.concentration))[None])
            out.append((z[0], beta[0]))
        return out


def exact_order(stack, zs, betas, user, k: int = TOP, pool: Optional[int] = None) -> np.ndarray:
    """The exact best k rows for a user (z, beta): float32 MMD^2 to the SpecStack, its best ``pool`` (default 4 k + 20) re-scored in float64."""
    from learnware_cli.rkme.spec import RKMESpec, mmd2_to_many
    from learnware_cli.search.statistical import exact_mmd2

    spec = RKMESpec(z=user[0], beta=user[1], gamma=stack.gamma)
    distances = mmd2_to_many(spec, stack)
    best = np.argsort(distances, kind="stable")[: 4 * k + 20 if pool is None else pool]
    mmd, _ = exact_mmd2(spec, np.asarray(zs[best], np.float64), np.asarray(betas[best], np.float64))
    return best[np.argsort(mmd, kind="stable")[:k]]


def sub_sketch(sketches: np.ndarray, features: int) -> np.ndarray:
    """The sketch of the first features/2 frequencies of sketches (M, D) (or (D,)): columns taken and rescaled."""
    full = sketches.shape[-1] // 2
    half = features // 2
    if half == full:
        return sketches
    cols = np.r_[0:half, full : full + half]
    return np.ascontiguousarray(sketches[..., cols] * np.float32(math.sqrt(full / half)))


VARIANTS = ("sketch", "sketch+selfs")  # nearest() alone; nearest() plus the n_self smallest self products (candidates())


def measure_recall(
    market: SyntheticMarket,
    n_users: int,
    features=FEATURES,
    candidates=CANDIDATES,
    tops=(TOP,),
    orthogonal: bool = False,
    seed: int = 0,
    n_self: Optional[int] = None,
) -> dict:
    """Recall of the candidates against exact search, averaged over n_users users.

    -> {"recall": {(variant, D, n, k): (mean recall@k, users with a miss)}, "sketch_seconds": ...}.
    """
    from learnware_cli.rkme.spec import SpecStack
    from learnware_cli.search import sketch

    n_self = sketch.DEFAULT_SELF_CANDIDATES if n_self is None else n_self
    zs, betas = market.arrays()
    stack = SpecStack.from_arrays(zs, betas, market.gamma)
    selfs = stack.self_products[: market.m]
    omega = sketch.frequencies(market.d, market.gamma, max(features), seed=seed, orthogonal=orthogonal)
    started = time.perf_counter()
    full = sketch.sketch_stack(zs, betas, omega)
    sketch_seconds = time.perf_counter() - started
    users = market.users(n_users, seed=seed)
    truths = [exact_order(stack, zs, betas, u, k=max(tops)) for u in users]
    del stack
    user_sketches = [sketch.sketch_one(z, b, omega) for z, b in users]
    result = {"sketch_seconds": sketch_seconds, "recall": {}}
    for d_features in features:
        sk = sub_sketch(full, d_features)
        norms = sketch.squared_norms(sk)
        found = [sketch.nearest(sk, sub_sketch(u, d_features), max(candidates), sq_norms=norms) for u in user_sketches]
        for n in candidates:
            lists = {"sketch": [f[:n] for f in found], "sketch+selfs": [sketch.merge_candidates(f[:n], selfs, n_self) for f in found]}
            for variant, cands in lists.items():
                for k in tops:
                    recalls = [sketch.candidate_recall(t, c, k) for t, c in zip(truths, cands)]
                    result["recall"][(variant, d_features, n, k)] = (float(np.mean(recalls)), int(sum(r < 1 for r in recalls)))
        del sk
    return result


def recall_note(recall: dict, variant: str, d_features: int, k: int = TOP, candidates=CANDIDATES) -> str:
    cells = []
    for n in candidates:
        mean, misses = recall[(variant, d_features, n, k)]
        cells.append(f"n={n}: {mean:.3f}" + (f" ({misses} miss)" if misses else ""))
    return ", ".join(cells)


def bench_sketch() -> None:
    """Recall of sketch candidates + exact re-rank against exact search, and the speed of each stage."""
    from learnware_cli.bench import ARGS, median_time, record
    from learnware_cli.rkme.spec import RKMESpec, SpecStack, mmd2_to_many
    from learnware_cli.search import sketch
    from learnware_cli.search.statistical import exact_mmd2

    default_d = sketch.DEFAULT_FEATURES
    sizes = [(10_000, 100), (100_000, 40)] if not ARGS.quick else [(10_000, 40)]
    for m, n_users in sizes:
        for kind in ("separated", "close", "clusters"):
            found = measure_recall(SyntheticMarket(kind, m), n_users, tops=(5, 32))
            recall = found["recall"]
            for d_features in FEATURES:
                record("sketch", f"recall@5 {kind} M={m} D={d_features}", 0.0, f"{n_users} users; candidates(): " + recall_note(recall, "sketch+selfs", d_features))
            record("sketch", f"recall@5 {kind} M={m} D={default_d}, nearest only", 0.0, recall_note(recall, "sketch", default_d))
            record("sketch", f"recall@32 {kind} M={m} D={default_d}", 0.0, "candidates(): " + recall_note(recall, "sketch+selfs", default_d, k=32))

    # the speed of each stage at the defaults, against exact search of the whole stack
    for m in [10_000] + ([] if ARGS.quick else [100_000]):
        market = SyntheticMarket("separated", m)
        zs, betas = market.arrays()
        user = market.users(1)[0]
        spec = RKMESpec(z=user[0], beta=user[1], gamma=market.gamma)
        omega = sketch.frequencies(market.d, market.gamma, default_d)
        started = time.perf_counter()
        sketches = sketch.sketch_stack(zs, betas, omega)
        built = time.perf_counter() - started
        record("sketch", f"sketch {m} specs (K=100, d=20, D={default_d})", built, f"{built / m * 1e3:.3f} ms/spec, one core (NumPy sin/cos)")
        norms = sketch.squared_norms(sketches)
        stack = SpecStack.from_arrays(zs, betas, market.gamma)
        selfs = stack.self_products[:m]
        user_sketch = sketch.sketch_one(*user, omega)
        own = median_time(lambda: sketch.sketch_one(*user, omega), 5)
        record("sketch", f"user sketch (K=100, D={default_d})", own, "float64 NumPy")
        stage1 = median_time(lambda: sketch.candidates(sketches, user_sketch, selfs, sq_norms=norms), 5)
        rows = sketch.candidates(sketches, user_sketch, selfs, sq_norms=norms)
        record("sketch", f"candidates() {len(rows)} of {m} (D={default_d})", stage1, f"{sketches.nbytes / 2**20:.0f} MiB of sketches")
        exact_mmd2(spec, np.asarray(zs[rows], np.float64), np.asarray(betas[rows], np.float64))
        stage2 = median_time(lambda: exact_mmd2(spec, np.asarray(zs[rows], np.float64), np.asarray(betas[rows], np.float64)), 5)
        record("sketch", f"float64 re-score of {len(rows)} candidates", stage2, "statistical.exact_mmd2")
        mmd2_to_many(spec, stack)
        full = median_time(lambda: mmd2_to_many(spec, stack), 3)
        record("sketch", f"exact float32 MMD^2 to all {m}", full, f"two stages (user sketch included): {own + stage1 + stage2:.3f} s, {full / (own + stage1 + stage2):.1f}x faster")
        stack = zs = betas = sketches = None  # free before the next size

    if ARGS.quick:
        return
    # 10^6 specs, generated blockwise and sketched into a memmap: no market, no (M, K, d) array in memory
    big = SyntheticMarket("separated", 1_000_000, seed=1)
    omega = sketch.frequencies(big.d, big.gamma, default_d)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sketches.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(big.m, default_d))
        selfs = np.empty(big.m)
        started = time.perf_counter()
        for start, zb, bb in big.blocks():
            sketch.sketch_stack(zb, bb, omega, out=out[start : start + len(zb)])
        out.flush()
        built = time.perf_counter() - started
        record("sketch", f"sketch 1000000 specs into a memmap (D={default_d})", built, f"{built / big.m * 1e3:.3f} ms/spec; {out.nbytes / 2**30:.1f} GiB")
        del out
        selfs[:] = np.random.default_rng(0).uniform(0.03, 0.06, size=big.m)  # stand-ins: the list's cost, not its content
        mapped = np.load(path, mmap_mode="r")
        norms = sketch.squared_norms(mapped)
        u = sketch.sketch_one(*big.users(1)[0], omega)
        sketch.candidates(mapped, u, selfs, sq_norms=norms)
        seconds = median_time(lambda: sketch.candidates(mapped, u, selfs, sq_norms=norms), 3)
        record("sketch", f"candidates() of 1000000 (memmap, D={default_d})", seconds, "page cache warm")
        mapped = None  # closes the map before the folder goes


if __name__ == "__main__":
    import sys

    from learnware_cli import bench

    bench.SECTIONS["sketch"] = bench_sketch
    bench.main(["--only", "sketch", *sys.argv[1:]])
