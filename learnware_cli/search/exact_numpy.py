"""Float64 MMD^2 and the closest mixture in NumPy: the two-stage search without JAX.

The two-stage search of a large island (search.engine._search_island) scores
a few hundred candidates exactly and picks a mixture among the best 32. Those
are small float64 computations, a few tens of milliseconds in NumPy, while
importing JAX and loading its compiled programs costs over a second per
process. So that branch uses these functions and a cold `lw search` never
imports JAX. They are ports of the JAX programs that serve the exact branch
(rkme.kernels, search.statistical), formula for formula, and are tested to
agree with them (tests/test_exact_numpy.py).

Notation: a user RKME (z_u (K, d), beta_u (K,)); specs zs (n, K2, d), betas
(n, K2), where zero weights mark padding (padded points contribute nothing);
the Gaussian kernel k(x, y) = exp(-gamma ||x - y||^2), and
<S, T> = beta_S^T k(z_S, z_T) beta_T, so that MMD^2(u, S) = <u,u> - 2<u,S> + <S,S>.

Every function is pure (arrays in, arrays out) and float64 (cross_products may compute its kernels in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

MIXTURE_POOL = 32  # the mixture is chosen among this many best single matches
GREEDY_POOL = 16  # the greedy search's pool, as it was
MIN_IMPROVEMENT = 0.05  # a member stays only if it lowers the mixture MMD^2 by at least 5 %
MIN_WEIGHT = 1e-3  # members below this weight are dropped and the rest re-weighted
MIXTURE_METHODS = ("closest", "greedy")

SPEC_BLOCK = 64  # specs per block in mmd2_to_specs: K * 64 * K2 kernel entries (5 MB at K = K2 = 100)


def similarity(mmd2, own, selfs):
    """1 - MMD^2 / (<u,u> + <s,s>), clipped to [0, 1] (elementwise).

    Since a Gaussian kernel with nonnegative weights gives <u,s> >= 0, MMD^2
    never exceeds <u,u> + <s,s>: 1 for identical embeddings, 0 for
    distributions that do not overlap at all.
    """
    return np.clip(1.0 - np.asarray(mmd2) / (own + np.asarray(selfs)), 0.0, 1.0)


# --------------------------------------------------------------------------- kernel products


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """||x_i - y_j||^2 = |x_i|^2 - 2 x_i.y_j + |y_j|^2 for x (n, d), y (m, d) -> (n, m), clipped at 0."""
    sq = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * (x @ y.T) + np.einsum("ij,ij->i", y, y)[None, :]
    return np.maximum(sq, 0.0, out=sq)


def gaussian_kernel(x: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    """k(x_i, y_j) = exp(-gamma ||x_i - y_j||^2) for x (n, d), y (m, d) -> (n, m)."""
    sq = squared_distances(x, y)
    sq *= -gamma
    return np.exp(sq, out=sq)


def inner_product(z1: np.ndarray, beta1: np.ndarray, z2: np.ndarray, beta2: np.ndarray, gamma: float) -> float:
    """<RKME1, RKME2> = beta1^T k(z1, z2) beta2 for z1 (K1, d), z2 (K2, d) -> float."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    return float(np.asarray(beta1, np.float64) @ gaussian_kernel(z1, z2, gamma) @ np.asarray(beta2, np.float64))


def cross_products(z: np.ndarray, beta: np.ndarray, zs: np.ndarray, betas: np.ndarray, gamma: float, block: int = SPEC_BLOCK, dtype=np.float64) -> np.ndarray:
    """<u, S_m> = beta^T k(z, zs_m) betas_m for one RKME z (K, d), beta (K,) and specs zs (n, K2, d), betas (n, K2) -> (n,).

    The kernels are computed in ``dtype`` (float32 halves the time of the
    sketch stage's self pool, see search.engine) and summed in float64;
    ``block`` specs at a time (K * block * K2 kernel entries).
    """
    z = np.asarray(z, dtype)
    beta = np.asarray(beta, dtype)
    n, k2, d = np.shape(zs)
    cross = np.empty(n)
    for start in range(0, n, block):
        zb, bb = np.asarray(zs[start : start + block], dtype), np.asarray(betas[start : start + block], np.float64)
        m = zb.shape[0]
        cross[start : start + m] = ((beta @ gaussian_kernel(z, zb.reshape(m * k2, d), gamma)).reshape(m, k2) * bb).sum(axis=1)
    return cross


def mmd2_to_specs(z: np.ndarray, beta: np.ndarray, zs: np.ndarray, betas: np.ndarray, gamma: float, block: int = SPEC_BLOCK):
    """Float64 MMD^2 from one RKME z (K, d), beta (K,) to each spec of zs (n, K2, d), betas (n, K2).

    -> (mmd2 (n,), selfs (n,)) with
        own     = beta^T k(z, z) beta                       (scalar)
        cross_m = beta^T k(z, zs_m) betas_m                  (n,)  (cross_products)
        selfs_m = betas_m^T k(zs_m, zs_m) betas_m            (n,)
        mmd2_m  = own - 2 cross_m + selfs_m
    Zero-weight padding is inert. ``block`` specs at a time, so memory stays
    at block * K2 * max(K, K2) kernel entries whatever n is. The NumPy twin of
    kernels.mmd2_to_specs (statistical.exact_mmd2).
    """
    z = np.asarray(z, np.float64)
    beta = np.asarray(beta, np.float64)
    zs = np.asarray(zs, np.float64)
    betas = np.asarray(betas, np.float64)
    n = zs.shape[0]
    own = float(beta @ gaussian_kernel(z, z, gamma) @ beta)
    cross = cross_products(z, beta, zs, betas, gamma, block)
    selfs = np.empty(n)
    for start in range(0, n, block):
        zb, bb = zs[start : start + block], betas[start : start + block]
        m = zb.shape[0]
        norms = np.einsum("mkd,mkd->mk", zb, zb)
        sq = norms[:, :, None] - 2.0 * np.matmul(zb, zb.transpose(0, 2, 1)) + norms[:, None, :]  # (m, K2, K2)
        np.maximum(sq, 0.0, out=sq)
        sq *= -gamma
        kernel = np.exp(sq, out=sq)
        selfs[start : start + m] = np.einsum("mj,mjk,mk->m", bb, kernel, bb)
    return own - 2.0 * cross + selfs, selfs


def gram_and_cross(user_z: np.ndarray, user_beta: np.ndarray, zs: np.ndarray, betas: np.ndarray, gamma: float):
    """Products among a few specs and with a user's: G (P, P), G_pq = <S_p, S_q>, and c (P,), c_p = <S_p, u>.

    zs (P, K, d), betas (P, K) (zero weights are padding), user (K_u, d), (K_u,).
    G_pq = betas_p^T k(zs_p, zs_q) betas_q is computed one row p at a time
    against the specs q >= p (G is symmetric: the lower triangle is copied),
    so memory is K * P * K entries; this is for the few dozen specs a mixture
    is chosen from. The NumPy twin of kernels.gram_and_cross.
    """
    zs = np.asarray(zs, np.float64)
    betas = np.asarray(betas, np.float64)
    p, k, d = zs.shape
    points = zs.reshape(p * k, d)
    weights = betas.reshape(p * k)
    gram = np.zeros((p, p))
    for row in range(p):
        rest = slice(row * k, p * k)
        products = ((betas[row] @ gaussian_kernel(zs[row], points[rest], gamma)) * weights[rest]).reshape(p - row, k).sum(axis=1)
        gram[row, row:] = products
        gram[row:, row] = products
    cross = (weights * (gaussian_kernel(points, np.asarray(user_z, np.float64), gamma) @ np.asarray(user_beta, np.float64))).reshape(p, k).sum(axis=1)
    return gram, cross


def mixture_mmd2(own: float, gram: np.ndarray, cross: np.ndarray, w: np.ndarray) -> float:
    """MMD^2 from u to the mixture sum_p w_p S_p: <u,u> - 2 c^T w + w^T G w (gram G (P, P), cross c (P,), w (P,))."""
    return float(own - 2.0 * (cross @ w) + w @ gram @ w)


# --------------------------------------------------------------------------- the simplex QP


def solve_simplex_qp(q: np.ndarray, c: np.ndarray, max_iter: int = 60, tol: float = 1e-13) -> np.ndarray:
    """Solve min_w 1/2 w^T q w - c^T w  s.t.  w >= 0, sum(w) = 1.

    q (K, K) symmetric PSD, c (K,) -> w (K,). Mehrotra predictor-corrector
    interior point on the KKT system
        q w - c - nu 1 - s = 0,  1^T w = 1,  w * s = mu,  w, s > 0,
    eliminating s and nu so each step is one Cholesky factorisation of
    q + diag(s / w), shared by the predictor and the corrector; it stops when
    max(|dual residual|, |1^T w - 1|) + w.s / K <= tol (on q and c scaled by
    max |q|) or after max_iter steps, then zeroes weights below 1e-12 and
    renormalises. The step-for-step NumPy port of kernels.solve_simplex_qp.
    """
    q = np.asarray(q, np.float64)
    c = np.asarray(c, np.float64)
    k = q.shape[0]
    ones = np.ones(k)
    scale = max(float(np.max(np.abs(q))), 1e-300)
    qn, cn = q / scale, c / scale
    eye = np.eye(k)

    def solve(chol, rhs):
        """(L L^T)^-1 rhs."""
        return np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))

    def newton(chol, h_one, w, s, nu, r_comp):
        r_dual = qn @ w - cn - nu - s
        r_prim = np.sum(w) - 1.0
        h_rhs = solve(chol, -r_dual - r_comp / w)
        dnu = (-r_prim - np.sum(h_rhs)) / np.sum(h_one)
        dw = h_rhs + dnu * h_one
        ds = (-r_comp - s * dw) / w
        return dw, ds, dnu

    def max_step(v, dv):
        negative = dv < 0
        return min(1.0, float(np.min(-v[negative] / dv[negative]))) if negative.any() else 1.0

    def residual(w, s, nu):
        r_dual = qn @ w - cn - nu - s
        return max(float(np.max(np.abs(r_dual))), abs(float(np.sum(w)) - 1.0)) + float(w @ s) / k

    w, s, nu = ones / k, ones.copy(), 0.0
    for _ in range(max_iter):
        if not residual(w, s, nu) > tol:  # (a NaN stops, as the JAX loop's condition does)
            break
        mu = float(w @ s) / k
        try:
            chol = np.linalg.cholesky(qn + np.diag(s / w) + 1e-14 * eye)
        except np.linalg.LinAlgError:
            break  # not positive definite in floating point: keep the last iterate
        h_one = solve(chol, ones)
        dw_a, ds_a, _ = newton(chol, h_one, w, s, nu, w * s)
        alpha_a = min(max_step(w, dw_a), max_step(s, ds_a))
        mu_aff = float((w + alpha_a * dw_a) @ (s + alpha_a * ds_a)) / k
        sigma = (mu_aff / mu) ** 3
        dw, ds, dnu = newton(chol, h_one, w, s, nu, w * s + dw_a * ds_a - sigma * mu)
        alpha = 0.99 * min(max_step(w, dw), max_step(s, ds))
        w = np.maximum(w + alpha * dw, 1e-300)
        s = np.maximum(s + alpha * ds, 1e-300)
        nu = nu + alpha * dnu
    w = np.where(w < 1e-12, 0.0, w)
    return w / np.sum(w)


def solve_simplex_qp_masked(q: np.ndarray, c: np.ndarray, active: np.ndarray) -> np.ndarray:
    """The simplex QP over the active variables only; the others get weight 0.

    q (K, K), c (K,), active (K,) bool with at least one True -> w (K,),
    w >= 0, sum(w) = 1, w = 0 off active. Solves the active sub-problem
    q[A, A], c[A] directly (kernels.solve_simplex_qp_masked reaches the same
    optimum with fixed shapes, for jit, by pushing the inactive variables to 0).
    """
    active = np.asarray(active, dtype=bool)
    index = np.flatnonzero(active)
    w = np.zeros(active.shape[0])
    w[index] = solve_simplex_qp(np.asarray(q)[np.ix_(index, index)], np.asarray(c)[index])
    return w


# --------------------------------------------------------------------------- mixture selection


def closest_mixture(gram: np.ndarray, cross: np.ndarray, own: float, max_size: int,
                    min_improvement: float = MIN_IMPROVEMENT, min_weight: float = MIN_WEIGHT):
    """The closest mixture of a pool, pruned to members that earn their place.

    gram (P, P) = <S_p, S_q>, cross (P,) = <S_p, u>, own = <u, u>; every
    pool member may be chosen. Returns (active (P,) bool, w (P,) (0 off
    active, sum 1), mixture MMD^2). The rule of
    statistical.closest_mixture_arrays, step for step:

    1. w = argmin_w ||u - sum_p w_p S_p||^2 over the simplex of the whole pool
       (one convex QP, whose solution is sparse). Then, re-solving after each
       change, drop the members with w_p < min_weight, and if more than
       max_size are left, keep the max_size heaviest.
    2. Backward elimination on those: the member whose removal (with
       re-solved weights) raises the MMD^2 least goes if it lowers the MMD^2
       by less than min_improvement, relative to the MMD^2 without it;
       members that fall below min_weight go first. Ends when no member may go.
    """
    gram = np.asarray(gram, np.float64)
    cross = np.asarray(cross, np.float64)
    p = gram.shape[0]

    def solve(active):
        w = solve_simplex_qp_masked(gram, cross, active)
        return w, mixture_mmd2(own, gram, cross, w)

    # 1. the whole pool, narrowed to at most max_size members of real weight
    active = np.ones(p, dtype=bool)
    w, _ = solve(active)
    while np.any(active & (w < min_weight)) or active.sum() > max_size:
        tiny = active & (w < min_weight)
        if tiny.any():
            active = active & ~tiny
        else:
            heaviest = np.zeros(p, dtype=bool)
            heaviest[np.argsort(-np.where(active, w, -1.0), kind="stable")[:max_size]] = True
            active = active & heaviest
        w, _ = solve(active)

    # 2. backward elimination
    w, current = solve(active)
    while True:
        if np.any(active & (w < min_weight)):
            active = active & (w >= min_weight)
        else:
            members = np.flatnonzero(active)
            if members.size <= 1:
                break
            without = np.full(p, np.inf)
            for j in members:
                mask = active.copy()
                mask[j] = False
                without[j] = solve(mask)[1]
            j = int(np.argmin(without))
            if not without[j] - current < min_improvement * without[j]:
                break
            active = active.copy()
            active[j] = False
        w, current = solve(active)
    return active, w, current


def greedy_mixture(gram: np.ndarray, cross: np.ndarray, own: float, max_size: int, min_improvement: float = MIN_IMPROVEMENT):
    """Greedy mixture selection on a pool (the search before the closest mixture; kept for comparison).

    gram (P, P), cross (P,), own as in closest_mixture; the pool is ordered
    best single first. Returns (active (P,) bool, w (P,), mixture MMD^2).
    The rule of statistical.greedy_mixture_arrays: start from the best
    single and never drop a member. Step i scores every unselected p by the
    best two-point blend (1 - t) m + t S_p of the current mixture m (closed
    form in t), re-solves the simplex QP over the members plus the winner, and
    keeps it if the mixture MMD^2 drops by at least min_improvement
    (relative); otherwise it stops adding.
    """
    gram = np.asarray(gram, np.float64)
    cross = np.asarray(cross, np.float64)
    p = gram.shape[0]
    selected = [0]
    weights = np.ones(1)
    current = own - 2.0 * cross[0] + gram[0, 0]
    us, ss = cross, np.diag(gram)
    for _ in range(1, max_size):
        sel = np.array(selected)
        mm = weights @ gram[np.ix_(sel, sel)] @ weights  # <m, m>
        ms = weights @ gram[sel, :]  # <m, S_p> (P,)
        um = weights @ cross[sel]  # <u, m>
        curvature = np.maximum(mm - 2.0 * ms + ss, 1e-300)  # ||m - S_p||^2
        t = np.clip((mm - ms - um + us) / curvature, 0.0, 1.0)
        blend = own - 2.0 * ((1 - t) * um + t * us) + ((1 - t) ** 2 * mm + 2 * t * (1 - t) * ms + t**2 * ss)
        blend[sel] = np.inf
        best = int(np.argmin(blend))
        if not np.isfinite(blend[best]):
            break
        trial = np.append(sel, best)
        trial_gram, trial_cross = gram[np.ix_(trial, trial)], cross[trial]
        trial_weights = solve_simplex_qp(trial_gram, trial_cross)
        candidate = mixture_mmd2(own, trial_gram, trial_cross, trial_weights)
        if not current - candidate >= min_improvement * current:
            break
        selected, weights, current = list(trial), trial_weights, candidate
    active = np.zeros(p, dtype=bool)
    w = np.zeros(p)
    active[selected] = True
    np.add.at(w, selected, weights)
    return active, w, current


@dataclass
class Mixture:
    members: list[int]  # pool positions, heaviest first
    weights: np.ndarray  # (len(members),), each >= min_weight, summing to 1
    mmd2: float
    score: float


def find_mixture(
    user_z: np.ndarray,
    user_beta: np.ndarray,
    zs: np.ndarray,
    betas: np.ndarray,
    gamma: float,
    max_size: int,
    method: str = "closest",
    min_improvement: float = MIN_IMPROVEMENT,
    min_weight: float = MIN_WEIGHT,
    own: Optional[float] = None,
) -> Mixture:
    """The mixture of pool specs zs (P, K, d), betas (P, K) (ordered best single first) closest to the user.

    The rule of statistical.find_mixture, in float64 throughout: the pool's
    products G (P, P), c (P,) (gram_and_cross) and own = <u, u>; the members
    chosen by closest_mixture ("closest") or greedy_mixture ("greedy", on
    the first GREEDY_POOL specs), at most max_size of them; then their
    weights re-solved (the simplex QP on G and c restricted to the members)
    and members below min_weight dropped, re-solving over the rest, until
    none is left. Mixture.members are pool positions, heaviest first; mmd2
    = <u,u> - 2 c^T w + w^T G w (>= 0), score = similarity(mmd2, <u,u>, w^T G w).
    (The JAX path steers its choice with float32 products and re-solves in
    float64; here the float64 products serve both.)
    """
    if method not in MIXTURE_METHODS:
        raise ValueError(f"unknown mixture method {method!r} (expected one of {', '.join(MIXTURE_METHODS)})")
    if method == "greedy":
        zs, betas = zs[:GREEDY_POOL], betas[:GREEDY_POOL]
    p = zs.shape[0]
    size = max(1, min(max_size, p))
    gram, cross = gram_and_cross(user_z, user_beta, zs, betas, gamma)
    if own is None:
        own = inner_product(user_z, user_beta, user_z, user_beta, gamma)
    if method == "closest":
        active, _, _ = closest_mixture(gram, cross, own, size, min_improvement, min_weight)
    else:
        active, _, _ = greedy_mixture(gram, cross, own, size, min_improvement)
    members = np.flatnonzero(active)
    while True:
        g, c = gram[np.ix_(members, members)], cross[members]
        w = solve_simplex_qp(g, c)
        keep = w >= min_weight
        if keep.all():
            break
        members = members[keep]
    order = np.argsort(-w, kind="stable")
    mmd = mixture_mmd2(own, g, c, w)
    score = float(similarity(mmd, own, float(w @ g @ w)))
    return Mixture(members=[int(m) for m in members[order]], weights=w[order], mmd2=max(mmd, 0.0), score=score)
