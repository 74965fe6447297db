"""Random-feature sketches of RKMEs: the cheap first stage of a two-stage market search.

The market kernel is k(x, y) = exp(-gamma ||x - y||^2) (``rkme.kernels``), whose
spectral measure is N(0, 2 gamma I_d): k(x, y) = E_omega cos(omega . (x - y)).
With D' frequencies omega_j (``frequencies``) the feature map

    phi(x) = sqrt(1/D') [cos(omega_1 . x), ..., cos(omega_D' . x),
                         sin(omega_1 . x), ..., sin(omega_D' . x)]      (D = 2 D' features)

gives phi(x) . phi(y) = (1/D') sum_j cos(omega_j . (x - y)), an unbiased
estimate of k(x, y) (and exactly 1 = k(x, x) on the diagonal). The sketch of an
RKME (z (K, d), beta (K,)) is s = sum_i beta_i phi(z_i) in R^D, so

    s_u . s_l          estimates <u, l> = beta_u^T k(z_u, z_l) beta_l,
    ||s_u - s_l||^2    estimates MMD^2(u, l) = (1/D') sum_j |psi_u(omega_j) - psi_l(omega_j)|^2,

psi(omega) = sum_i beta_i exp(i omega . z_i) being the RKME's characteristic
function. The estimate is unbiased; measured over 30 frequency draws (K = 100,
d = 20), its relative rms error is about 1.6 / sqrt(D) (0.05 at D = 1024,
0.10 at D = 256), from near-identical to disjoint pairs. The cos/sin pair and
sqrt(2/D) cos(omega . x + b) with random phases b measured the same within
+-7 % at equal D; the pair is kept because phi(x) . phi(x) = 1 exactly and
there are no phases to store.

Frequencies are i.i.d. Gaussian by default. Orthogonal random features
(``orthogonal=True``: blocks of d orthogonal directions with chi(d)-distributed
lengths, Yu et al. 2016) halve the MMD^2 error on standardised-scale,
overlapping specs but not on bench-like separated ones; in recall@5 of
``candidates`` they were slightly better on the "close" market (M = 10^5,
D = 1024, n = 50: 1.000 vs 0.990) and slightly worse for ``nearest`` alone
(n = 300: 0.947 vs 0.983), differences of a few users in 60, so the simpler
i.i.d. draw stays the default.

The two-stage search: ``candidates`` ranks every learnware by its sketch
distance (``nearest``: one matrix-vector product over the (M, D) sketches,
blockwise so a memmapped array of any M works), keeps the best n, adds the
n_self learnwares of smallest self product <S, S> (why: see ``candidates``),
and only those are re-scored exactly. With D = DEFAULT_FEATURES = 1024,
n = DEFAULT_CANDIDATES = 300 and n_self = DEFAULT_SELF_CANDIDATES = 64 the
exact top 5 was among the candidates for every one of 40-100 users on each
synthetic market of bench_sketch at M = 10^4 and 10^5 (recall@5 = 1.000;
n = 100 already gave >= 0.997).

Every function here is pure NumPy (no JAX): NumPy in, NumPy out.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

DEFAULT_FEATURES = 1024  # D, the sketch length (D' = 512 frequencies)
DEFAULT_CANDIDATES = 300  # n, the candidates re-scored exactly
DEFAULT_SELF_CANDIDATES = 64  # plus the learnwares with the smallest self products <S, S> (see candidates())
DEFAULT_SEED = 0
SKETCH_BLOCK = 32  # specs per block when sketching a stack
NEAREST_BLOCK = 65536  # sketch rows per block in nearest()


def frequencies(dim: int, gamma: float, n_features: int = DEFAULT_FEATURES, seed: int = DEFAULT_SEED, orthogonal: bool = False) -> np.ndarray:
    """The D' = n_features / 2 random frequencies omega (D', d) float64 of the kernel exp(-gamma ||x - y||^2).

    omega_j ~ N(0, 2 gamma I_d) i.i.d.; or, with ``orthogonal``, blocks of
    min(d, rows left) mutually orthogonal directions (a random orthogonal
    matrix from the QR decomposition of a Gaussian one, signs fixed by R's
    diagonal) each scaled by an independent chi(d) length times sqrt(2 gamma),
    so that each row is still N(0, 2 gamma I_d) distributed.

    Deterministic for (dim, n_features, seed, orthogonal): the standard
    Gaussian draws come from a PCG64 stream seeded by those four numbers and
    gamma only scales them (omega = sqrt(2 gamma) g), so every market of one
    dimension shares its directions. n_features (D) must be even and positive.
    """
    if dim < 1:
        raise ValueError(f"dimension must be at least 1, got {dim}")
    if n_features < 2 or n_features % 2:
        raise ValueError(f"n_features (the sketch length D = 2 D') must be a positive even number, got {n_features}")
    if not (gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be a positive number, got {gamma}")
    half = n_features // 2
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(dim), int(n_features), int(orthogonal)])))
    if not orthogonal:
        g = rng.standard_normal((half, dim))
    else:
        blocks = []
        for start in range(0, half, dim):
            rows = min(dim, half - start)
            q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
            q = q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]  # Haar-distributed
            lengths = np.sqrt(rng.chisquare(dim, size=rows))
            blocks.append(q.T[:rows] * lengths[:, None])
        g = np.concatenate(blocks)
    return math.sqrt(2.0 * gamma) * g


def sketch_one(z, beta, omega: np.ndarray) -> np.ndarray:
    """The sketch s = sum_i beta_i phi(z_i) of one RKME, z (K, d), beta (K,), omega (D', d) -> (D,) float64.

    s = sqrt(1/D') [beta^T cos(z omega^T), beta^T sin(z omega^T)], computed in float64 with NumPy.
    """
    z = np.asarray(z, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    omega = np.asarray(omega, dtype=np.float64)
    phase = z @ omega.T  # (K, D')
    scale = 1.0 / math.sqrt(omega.shape[0])
    return np.concatenate([beta @ np.cos(phase), beta @ np.sin(phase)]) * scale


def sketch_stack(zs, betas, omega: np.ndarray, block: int = SKETCH_BLOCK, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Sketches of a stack of RKMEs: zs (M, K, d), betas (M, K) (zero weights are padding) -> (M, D) float32.

    Row m is sketch_one(zs[m], betas[m], omega) to float32 rounding (measured
    <= 1e-6 of the sketch's largest entry). Each spec is first centred on its
    weighted mean mu_m = sum_i beta_i z_i, so the float32 phases
    omega . (z_i - mu_m) stay small whatever the data's offset; the rotation
    exp(i omega . mu_m) is applied afterwards in float64:
        psi(omega) = exp(i omega . mu) sum_i beta_i exp(i omega . (z_i - mu)).
    The trigonometric functions run in NumPy (SIMD, ~2 ns per sin + cos;
    XLA's CPU sin/cos measured 7x slower), one block of ``block`` specs at a
    time, so memory stays at about block * K * D' floats whatever M is and
    zs, betas may be np.memmap arrays. ``out``: an (M, D) array to write
    into (e.g. a float32 memmap, for sketches of 10^6 specs); returned.
    Cost: M * K * D' sines and cosines (about 0.7 ms per spec at K = 100,
    D = 1024 on one core).
    """
    m, k, d = zs.shape
    omega = np.asarray(omega, dtype=np.float64)
    if omega.ndim != 2 or omega.shape[1] != d:
        raise ValueError(f"frequencies of shape {omega.shape} do not fit a stack of dimension {d}")
    half = omega.shape[0]
    omega32_t = np.ascontiguousarray(omega.T, dtype=np.float32)
    if out is None:
        out = np.empty((m, 2 * half), dtype=np.float32)
    elif out.shape != (m, 2 * half):
        raise ValueError(f"out has shape {out.shape}, expected {(m, 2 * half)}")
    scale = 1.0 / math.sqrt(half)
    block = max(1, min(int(block), m)) if m else 1
    for start in range(0, m, block):
        zb = np.asarray(zs[start : start + block], dtype=np.float64)
        bb = np.asarray(betas[start : start + block], dtype=np.float64)
        b = zb.shape[0]
        mu = np.einsum("bk,bkd->bd", bb, zb) / np.maximum(bb.sum(axis=1), 1e-300)[:, None]  # (b, d)
        phase = ((zb - mu[:, None, :]).astype(np.float32).reshape(b * k, d) @ omega32_t).reshape(b, k, half)
        weights = bb.astype(np.float32)[:, None, :]  # (b, 1, K)
        cos_sum = np.matmul(weights, np.cos(phase))[:, 0, :].astype(np.float64)  # (b, D')
        sin_sum = np.matmul(weights, np.sin(phase, out=phase))[:, 0, :].astype(np.float64)
        rotation = mu @ omega.T  # (b, D') float64
        rc, rs = np.cos(rotation), np.sin(rotation)
        out[start : start + b, :half] = (rc * cos_sum - rs * sin_sum) * scale
        out[start : start + b, half:] = (rs * cos_sum + rc * sin_sum) * scale
    return out


def squared_norms(sketches, block: int = NEAREST_BLOCK) -> np.ndarray:
    """||s_m||^2 for sketches (M, D) -> float64 (M,), blockwise (memmap friendly)."""
    m = sketches.shape[0]
    norms = np.empty(m, dtype=np.float64)
    for start in range(0, m, block):
        rows = np.asarray(sketches[start : start + block], dtype=np.float32)
        norms[start : start + block] = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
    return norms


def nearest(
    sketches,
    user: np.ndarray,
    n: int = DEFAULT_CANDIDATES,
    rows: Optional[np.ndarray] = None,
    sq_norms: Optional[np.ndarray] = None,
    block: int = NEAREST_BLOCK,
) -> np.ndarray:
    """Indices of the n rows of sketches (M, D) nearest to user (D,), nearest first -> int64 (min(n, M'),).

    Distance: ||s_m - u||^2 = ||s_m||^2 - 2 s_m . u + ||u||^2 (the last term
    is the same for every row and left out). sq_norms (M,): ||s_m||^2 if
    precomputed (``squared_norms``); computed blockwise here otherwise. Passing
    the exact self products <S_m, S_m> instead ranks by the lower-noise
    estimate <S_m,S_m> - 2 s_m . u of the same MMD^2 when learnwares are far
    apart, but a noisier one when they are close: the default ||s_m||^2 is
    what the recommended (D, n) were measured with.

    rows: restrict the search to these row indices (e.g. a semantic filter's
    survivors); the result indexes the full array either way. The sketches
    are read ``block`` rows at a time (an np.memmap works, memory stays at
    block * D floats plus the candidates) and each block's best n are merged
    with the running best n by argpartition. Ties are broken by row index,
    so the result is deterministic.
    """
    user32 = np.asarray(user, dtype=np.float32).reshape(-1)
    total = sketches.shape[0] if rows is None else len(rows)
    if sketches.ndim != 2 or sketches.shape[1] != user32.shape[0]:
        raise ValueError(f"sketches of shape {sketches.shape} and a user sketch of length {user32.shape[0]}")
    if n < 1 or total == 0:
        return np.zeros(0, dtype=np.int64)
    best_idx = np.zeros(0, dtype=np.int64)
    best_dist = np.zeros(0, dtype=np.float64)
    for start in range(0, total, block):
        if rows is None:
            idx = np.arange(start, min(start + block, total), dtype=np.int64)
            chunk = np.asarray(sketches[start : start + block], dtype=np.float32)
        else:
            idx = np.asarray(rows[start : start + block], dtype=np.int64)
            chunk = np.asarray(sketches[idx], dtype=np.float32)
        if sq_norms is None:
            norms = np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64)
        else:
            norms = np.asarray(sq_norms[idx], dtype=np.float64)
        dist = norms - 2.0 * (chunk @ user32).astype(np.float64)
        idx = np.concatenate([best_idx, idx])
        dist = np.concatenate([best_dist, dist])
        if dist.shape[0] > n:
            keep = np.argpartition(dist, n - 1)[:n]
            idx, dist = idx[keep], dist[keep]
        best_idx, best_dist = idx, dist
    order = np.lexsort((best_idx, best_dist))
    return best_idx[order]


def smallest(values: np.ndarray, n: int, rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of the n smallest values (M,) (among ``rows`` if given), smallest first, ties by index -> int64."""
    values = np.asarray(values)
    idx = np.arange(values.shape[0], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if n < 1 or idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    v = values[idx]
    if idx.size > n:
        keep = np.argpartition(v, n - 1)[:n]
        idx, v = idx[keep], v[keep]
    return idx[np.lexsort((idx, v))]


def merge_candidates(near: np.ndarray, self_products: np.ndarray, n_self: int = DEFAULT_SELF_CANDIDATES, rows: Optional[np.ndarray] = None) -> np.ndarray:
    """near (the sketch's candidates, nearest first), then the n_self rows of smallest self_products not among them -> int64."""
    extra = smallest(self_products, n_self, rows)
    return np.concatenate([near, extra[~np.isin(extra, near)]]).astype(np.int64)


def candidates(
    sketches,
    user: np.ndarray,
    self_products: np.ndarray,
    n: int = DEFAULT_CANDIDATES,
    n_self: int = DEFAULT_SELF_CANDIDATES,
    rows: Optional[np.ndarray] = None,
    sq_norms: Optional[np.ndarray] = None,
    block: int = NEAREST_BLOCK,
) -> np.ndarray:
    """The rows to re-score exactly: nearest(sketches, user, n) and the n_self rows with the smallest <S, S>.

    sketches (M, D), user (D,), self_products (M,) = <S_m, S_m> (the exact
    values a SpecStack and the search cache hold) -> int64 (<= n + n_self,)
    row indices, the sketch's nearest first, no repeats.

    Why the second list: MMD^2(u, S) = <u,u> + <S,S> - 2 <u,S> with <u,S> >= 0.
    A learnware whose data do not overlap the user's has <u,S> ~ 0, so among
    those the exact ranking is the ranking of <S,S> alone, decided by
    differences (~1e-4 on bench-like specs) far below the sketch's noise on
    ||s||^2. Such learnwares fill the exact top 5 whenever fewer than 5
    learnwares resemble the user (bench.py's markets: all but the first,
    with scores ~0); without the list, recall@5 there was 0.83 at D = 1024,
    n = 300 (M = 10^4), with it 1.0. The list is user-independent (``smallest``
    of the stored self products, restricted to ``rows``).

    The market's search (search.engine._sketch_candidates) refines both lists
    with what a market stores beside the sketches: the sketch list is scored
    by the exact <S,S> - 2 s_u . s_l, and the self list is the n_self of a
    larger pool of smallest <S,S> whose <u,S> is computed exactly.
    """
    near = nearest(sketches, user, n, rows=rows, sq_norms=sq_norms, block=block)
    return merge_candidates(near, self_products, n_self, rows)


def recall_at_k(exact_top, approx_top, k: int = 5) -> float:
    """|exact_top[:k] & approx_top[:k]| / k: the share of the true k best that the approximate search returns.

    For a two-stage search (candidates re-scored exactly), pass the
    re-ranked result, or pass the whole candidate list with k = len(exact)
    semantics via ``candidate_recall``.
    """
    exact = set(np.asarray(exact_top).reshape(-1)[:k].tolist())
    if not exact:
        return 1.0
    return len(exact & set(np.asarray(approx_top).reshape(-1)[:k].tolist())) / len(exact)


def candidate_recall(exact_top, candidates, k: int = 5) -> float:
    """|exact_top[:k] & candidates| / k: what an exact re-rank of the candidates recovers of the true top k."""
    exact = set(np.asarray(exact_top).reshape(-1)[:k].tolist())
    if not exact:
        return 1.0
    return len(exact & set(np.asarray(candidates).reshape(-1).tolist())) / len(exact)
