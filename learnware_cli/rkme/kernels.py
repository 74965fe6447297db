"""Pure JAX kernels behind the RKME specification.

Every function here takes and returns arrays, keeps no state, and is safe to
``jax.jit`` / ``jax.vmap``. Shapes use K for reduced-set sizes, d for the data
dimension, n for rows and M for a stack of specifications.

Kernel: k(x, y) = exp(-gamma * ||x - y||^2).
An RKME (z, beta) stands for the function sum_j beta_j k(z_j, .).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from learnware_cli.rkme import _jax_setup  # noqa: F401  (float64 and the compile cache, configured once)


def squared_distances(x, y):
    """||x_i - y_j||^2 for x (n, d), y (m, d) -> (n, m), clipped at 0."""
    sq = jnp.sum(x * x, axis=1)[:, None] - 2.0 * x @ y.T + jnp.sum(y * y, axis=1)[None, :]
    return jnp.maximum(sq, 0.0)


def gaussian_kernel(x, y, gamma):
    """k(x_i, y_j) = exp(-gamma ||x_i - y_j||^2) for x (n, d), y (m, d) -> (n, m)."""
    return jnp.exp(-gamma * squared_distances(x, y))


def inner_product(z1, beta1, z2, beta2, gamma):
    """<RKME1, RKME2> = beta1^T k(z1, z2) beta2 for z1 (K1, d), z2 (K2, d) -> scalar."""
    return beta1 @ gaussian_kernel(z1, z2, gamma) @ beta2


def mmd2_from_products(own, cross, selfs):
    """MMD^2 from inner products: ||u - s||^2 = <u,u> - 2<u,s> + <s,s>.

    own = <u,u>, cross = <u,s>, selfs = <s,s>: scalars or arrays of one
    broadcastable shape (e.g. own scalar, cross and selfs (M,) -> (M,)).
    Plain arithmetic, so it serves JAX and NumPy arrays, float32 and float64
    alike: every MMD^2 in lw is this one formula.
    """
    return own - 2.0 * cross + selfs


def mmd2(z1, beta1, z2, beta2, gamma):
    """MMD^2 = <1,1> - 2<1,2> + <2,2> between two RKMEs z1 (K1, d), z2 (K2, d) -> scalar."""
    return mmd2_from_products(
        inner_product(z1, beta1, z1, beta1, gamma),
        inner_product(z1, beta1, z2, beta2, gamma),
        inner_product(z2, beta2, z2, beta2, gamma),
    )


def mmd2_to_specs(z, beta, zs, betas, gamma):
    """MMD^2 from one RKME z (K, d), beta (K,) to each of a few specs zs (M, K2, d), betas (M, K2).

    -> (mmd2 (M,), selfs (M,) = <S_m, S_m>). Zero-weight padding is inert. For
    re-scoring a handful of results exactly (in float64): memory is
    M * K2 * max(K, K2) kernel entries; a whole market goes through
    cross_inner_products instead.
    """
    own = inner_product(z, beta, z, beta, gamma)
    cross = jax.vmap(lambda zm, bm: inner_product(z, beta, zm, bm, gamma))(zs, betas)
    selfs = jax.vmap(lambda zm, bm: inner_product(zm, bm, zm, bm, gamma))(zs, betas)
    return mmd2_from_products(own, cross, selfs), selfs


def mixture_mmd2(own, gram, cross, w):
    """MMD^2 from u to the mixture sum_m w_m S_m: <u,u> - 2 c^T w + w^T G w.

    own = <u,u> scalar, gram G (M, M) = <S_m, S_n>, cross c (M,) = <S_m, u>,
    w (M,) -> scalar. Equals <u,u> + 2 (1/2 w^T G w - c^T w), twice the
    simplex QP's objective plus <u,u>.
    """
    return mmd2_from_products(own, cross @ w, w @ gram @ w)


def self_inner_products(zs, betas, gamma, batch_size=64):
    """<S_m, S_m> for a stack zs (M, K, d), betas (M, K) -> (M,). Zero-weight padding is inert.

    Mapped in batches so memory stays at batch_size * K^2 entries.
    """
    return jax.lax.map(lambda zb: inner_product(zb[0], zb[1], zb[0], zb[1], gamma), (zs, betas), batch_size=batch_size)


def cross_inner_products(z, beta, zs, sq_norms, betas, gamma, block=128):
    """<user, S_m> for one RKME (K, d) against a stack zs (M, K2, d) -> (M,).

    sq_norms (M, K2) = ||zs||^2, precomputed with the stack, so each kernel
    entry costs one matmul term plus one fused exponent:
        k(u, z) = exp(min(2 gamma u.z - gamma ||z||^2 - gamma ||u||^2, 0))
    (the clamp removes rounding above the true maximum of 0). The stack is
    processed in blocks of ``block`` specs so memory stays at K * block * K2
    entries whatever M is, and each block's kernel matrix stays in cache.
    M must be a multiple of block (pad with zero-weight specs). Computes in
    the dtype of zs.
    """
    m, k2, d = zs.shape
    z = z.astype(zs.dtype)
    beta = beta.astype(zs.dtype)
    user_term = gamma * jnp.sum(z * z, axis=1)[:, None]
    blocks = (zs.reshape(m // block, block * k2, d), sq_norms.reshape(m // block, block * k2), betas.reshape(m // block, block, k2))

    def one_block(args):
        zb, nb, bb = args
        kernel = jnp.exp(jnp.minimum((2.0 * gamma) * (z @ zb.T) - gamma * nb[None, :] - user_term, 0.0))
        return jnp.sum((beta @ kernel).reshape(block, k2) * bb, axis=1)

    return jax.lax.map(one_block, blocks).reshape(m)


def gram_and_cross(user_z, user_beta, zs, betas, gamma):
    """Products among a few specs and with a user's: G (M, M) = <S_m, S_n>, c (M,) = <S_m, u>.

    zs (M, K, d), betas (M, K) (zero weights are padding), user (K_u, d), (K_u,).
    G_mn = beta_m^T k(z_m, z_n) beta_n, computed one row m at a time against
    all M*K points (one matmul and one exp per row), so memory is K * M * K
    entries and each row's kernel block stays in cache: this is for the few
    dozen specs a mixture is chosen from. Computes in the dtype of the inputs.
    """
    m, k, d = zs.shape
    points = zs.reshape(m * k, d)
    weights = betas.reshape(m * k)

    def row(args):
        z_row, beta_row = args
        return ((beta_row @ gaussian_kernel(z_row, points, gamma)) * weights).reshape(m, k).sum(axis=1)

    gram = jax.lax.map(row, (zs, betas))
    cross = (weights * (gaussian_kernel(points, user_z, gamma) @ user_beta)).reshape(m, k).sum(axis=1)
    return gram, cross


def solve_simplex_qp(q, c, max_iter=60, tol=1e-13):
    """Solve min_w 1/2 w^T q w - c^T w  s.t.  w >= 0, sum(w) = 1.

    q (K, K) symmetric PSD, c (K,) -> w (K,). Mehrotra predictor-corrector
    interior point on the KKT system
        q w - c - nu 1 - s = 0,  1^T w = 1,  w * s = mu,  w, s > 0,
    eliminating s and nu so each step is one Cholesky factorisation of
    q + diag(s / w), shared by the predictor and the corrector.
    Accurate to ~1e-10 in w for well-posed problems; runs a fixed maximum of
    iterations so it jits and vmaps.
    """
    k = q.shape[0]
    ones = jnp.ones(k, dtype=q.dtype)
    scale = jnp.maximum(jnp.max(jnp.abs(q)), 1e-300)
    qn, cn = q / scale, c / scale
    eye = jnp.eye(k, dtype=q.dtype)

    def factor(w, s):
        """Cholesky factor of q + diag(s / w), shared by the predictor and corrector solves."""
        return jnp.linalg.cholesky(qn + jnp.diag(s / w) + 1e-14 * eye)

    def solve(chol, rhs):
        """(L L^T)^-1 rhs for rhs (k, m)."""
        y = jax.lax.linalg.triangular_solve(chol, rhs, left_side=True, lower=True)
        return jax.lax.linalg.triangular_solve(chol, y, left_side=True, lower=True, transpose_a=True)

    def newton(chol, h_one, w, s, nu, r_comp):
        r_dual = qn @ w - cn - nu - s
        r_prim = jnp.sum(w) - 1.0
        h_rhs = solve(chol, (-r_dual - r_comp / w)[:, None])[:, 0]
        dnu = (-r_prim - jnp.sum(h_rhs)) / jnp.sum(h_one)
        dw = h_rhs + dnu * h_one
        ds = (-r_comp - s * dw) / w
        return dw, ds, dnu

    def max_step(v, dv):
        ratios = jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
        return jnp.minimum(1.0, jnp.min(ratios))

    def residual(state):
        w, s, nu, _ = state
        r_dual = qn @ w - cn - nu - s
        return jnp.maximum(jnp.max(jnp.abs(r_dual)), jnp.abs(jnp.sum(w) - 1.0)) + jnp.dot(w, s) / k

    def cond(state):
        return (state[3] < max_iter) & (residual(state) > tol)

    def body(state):
        w, s, nu, it = state
        mu = jnp.dot(w, s) / k
        chol = factor(w, s)
        h_one = solve(chol, ones[:, None])[:, 0]
        dw_a, ds_a, _ = newton(chol, h_one, w, s, nu, w * s)
        alpha_a = jnp.minimum(max_step(w, dw_a), max_step(s, ds_a))
        mu_aff = jnp.dot(w + alpha_a * dw_a, s + alpha_a * ds_a) / k
        sigma = (mu_aff / mu) ** 3
        dw, ds, dnu = newton(chol, h_one, w, s, nu, w * s + dw_a * ds_a - sigma * mu)
        alpha = 0.99 * jnp.minimum(max_step(w, dw), max_step(s, ds))
        w = jnp.maximum(w + alpha * dw, 1e-300)
        s = jnp.maximum(s + alpha * ds, 1e-300)
        return w, s, nu + alpha * dnu, it + 1

    w0 = ones / k
    s0 = ones
    nu0 = jnp.asarray(0.0, dtype=q.dtype)
    w, _, _, _ = jax.lax.while_loop(cond, body, (w0, s0, nu0, 0))
    w = jnp.where(w < 1e-12, 0.0, w)
    return w / jnp.sum(w)


def solve_simplex_qp_masked(q, c, active):
    """The simplex QP of solve_simplex_qp over the active variables only; the others get weight 0.

    q (K, K), c (K,), active (K,) bool with at least one True -> w (K,),
    w >= 0, sum(w) = 1, w = 0 off active. Fixed shapes, so a program can
    re-solve over changing subsets without recompiling: inactive rows become
    an identity block scaled like q with a large negative linear term, which
    drives them to the boundary without disturbing the active block's scale.
    """
    both = active[:, None] & active[None, :]
    scale = jnp.maximum(jnp.max(jnp.abs(jnp.where(both, q, 0.0))), 1e-300)
    q_masked = jnp.where(both, q, jnp.eye(q.shape[0], dtype=q.dtype) * scale)
    c_masked = jnp.where(active, c, -1e3 * scale)
    w = jnp.where(active, solve_simplex_qp(q_masked, c_masked), 0.0)
    return w / jnp.sum(w)


def optimal_weights(z, x, x_weights, gamma):
    """beta minimising ||sum_j beta_j k(z_j,.) - sum_i a_i k(x_i,.)||^2 on the simplex.

    z (K, d), x (n, d), x_weights a (n,) summing to 1 -> beta (K,).
    QP with q = k(z, z), c = k(z, x) a.
    """
    q = gaussian_kernel(z, z, gamma)
    c = gaussian_kernel(z, x, gamma) @ x_weights
    return solve_simplex_qp(q, c)


def blocked_self_product(x, x_weights, gamma, block):
    """a^T k(x, x) a for x (n, d), computed ``block`` rows at a time -> scalar.

    Memory stays at block * n kernel entries (the full n x n matrix would be
    80 GB at n = 100 000). n must be a multiple of block.
    """
    n, d = x.shape
    rows = (x.reshape(n // block, block, d), x_weights.reshape(n // block, block))
    return jnp.sum(jax.lax.map(lambda xb_ab: xb_ab[1] @ gaussian_kernel(xb_ab[0], x, gamma) @ x_weights, rows))


def approximation_error(z, beta, x, x_weights, gamma, block):
    """||sum_j beta_j k(z_j,.) - sum_i a_i k(x_i,.)||^2 (the RKME fit objective) -> scalar.

    The data's own term is summed ``block`` rows at a time (see blocked_self_product).
    """
    return mmd2_from_products(
        inner_product(z, beta, z, beta, gamma),
        inner_product(z, beta, x, x_weights, gamma),
        blocked_self_product(x, x_weights, gamma, block),
    )


def fit_objective(z, beta, x, x_weights, gamma):
    """The part of approximation_error that depends on (z, beta): b^T k(z,z) b - 2 b^T k(z,x) a.

    z (K, d), x (n, d) -> scalar: the MMD^2 less the data's own term, a^T k(x,x) a.
    """
    return mmd2_from_products(inner_product(z, beta, z, beta, gamma), inner_product(z, beta, x, x_weights, gamma), 0.0)


def kmeans_plus_plus(key, x, x_weights, k):
    """k-means++ seeding: k rows of x (n, d) chosen with probability a_i * D_i^2 -> (k, d)."""
    n, d = x.shape
    first = jax.random.choice(key, n, p=x_weights)
    centers = jnp.zeros((k, d), dtype=x.dtype).at[0].set(x[first])
    closest = jnp.sum((x - x[first]) ** 2, axis=1)

    def body(i, state):
        centers, closest, key = state
        key, sub = jax.random.split(key)
        p = x_weights * closest
        total = jnp.sum(p)
        p = jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), x_weights)
        idx = jax.random.choice(sub, n, p=p)
        centers = centers.at[i].set(x[idx])
        closest = jnp.minimum(closest, jnp.sum((x - x[idx]) ** 2, axis=1))
        return centers, closest, key

    centers, _, _ = jax.lax.fori_loop(1, k, body, (centers, closest, key))
    return centers


def lloyd_step(centers, x, x_weights):
    """One weighted Lloyd iteration: centers (k, d) -> (k, d); empty clusters keep their center."""
    k = centers.shape[0]
    labels = jnp.argmin(squared_distances(x, centers), axis=1)
    mass = jax.ops.segment_sum(x_weights, labels, num_segments=k)
    sums = jax.ops.segment_sum(x * x_weights[:, None], labels, num_segments=k)
    return jnp.where(mass[:, None] > 0, sums / jnp.where(mass > 0, mass, 1.0)[:, None], centers)


def kmeans(key, x, x_weights, k, iterations=25, tol=1e-6):
    """Weighted k-means (k-means++ seeding, then Lloyd) -> centers (k, d).

    Lloyd stops after ``iterations`` steps or once no center moves by more than
    tol (relative to the data's spread), whichever comes first.
    """
    centers = kmeans_plus_plus(key, x, x_weights, k)
    scale = jnp.sum(x_weights * jnp.sum((x - x_weights @ x) ** 2, axis=1))

    def cond(state):
        it, _, shift = state
        return (it < iterations) & (shift > tol * scale)

    def body(state):
        it, c, _ = state
        new = lloyd_step(c, x, x_weights)
        return it + 1, new, jnp.max(jnp.sum((new - c) ** 2, axis=1))

    _, centers, _ = jax.lax.while_loop(cond, body, (0, centers, jnp.asarray(jnp.inf, x.dtype)))
    return centers


def refine_points(z, beta, x, x_weights, gamma, step_size):
    """One descent step on z for fixed beta, with backtracking.

    The gradient of fit_objective w.r.t. z_i carries a factor beta_i, which is
    ~1/K; dividing it out (a diagonal preconditioner) gives every point a
    step of comparable length. Steps that raise the objective are halved, up to
    8 times; if none helps, z is kept.
    """
    grad = jax.grad(fit_objective)(z, beta, x, x_weights, gamma)
    direction = grad / jnp.maximum(beta, 1e-12)[:, None] / (4.0 * gamma)
    start = fit_objective(z, beta, x, x_weights, gamma)

    def cond(state):
        step, candidate, value, tries = state
        return (value >= start) & (tries < 8)

    def body(state):
        step, _, _, tries = state
        step = step * 0.5
        candidate = z - step * direction
        return step, candidate, fit_objective(candidate, beta, x, x_weights, gamma), tries + 1

    first = z - step_size * direction
    _, candidate, value, _ = jax.lax.while_loop(
        cond, body, (jnp.asarray(step_size, z.dtype), first, fit_objective(first, beta, x, x_weights, gamma), 0)
    )
    return jnp.where(value < start, candidate, z)


def herd(key, z, beta, gamma, n_samples, n_candidates, spread):
    """Kernel herding: n_samples rows whose empirical KME tracks the RKME (z, beta).

    Candidates (n_candidates, d) are drawn from the Gaussian mixture
    sum_j beta_j N(z_j, spread^2 I); then step t picks the candidate x maximising
    (t + 1) f(x) - sum_{s < t} k(s, x) with f(x) = sum_j beta_j k(z_j, x).
    The running sum is updated incrementally, so the cost is
    O(n_samples * n_candidates * d) rather than the cubic recomputation.
    -> (n_samples, d)
    """
    k, d = z.shape
    key_assign, key_noise = jax.random.split(key)
    weights = jnp.maximum(beta, 0.0)
    assign = jax.random.choice(key_assign, k, shape=(n_candidates,), p=weights / jnp.sum(weights))
    candidates = z[assign] + spread * jax.random.normal(key_noise, (n_candidates, d), dtype=z.dtype)
    f = weights @ gaussian_kernel(z, candidates, gamma)

    def body(t, state):
        samples, running = state
        idx = jnp.argmax((t + 1) * f - running)
        chosen = candidates[idx]
        samples = samples.at[t].set(chosen)
        running = running + jnp.exp(-gamma * jnp.sum((candidates - chosen) ** 2, axis=1))
        return samples, running

    samples = jnp.zeros((n_samples, d), dtype=z.dtype)
    samples, _ = jax.lax.fori_loop(0, n_samples, body, (samples, jnp.zeros(n_candidates, dtype=z.dtype)))
    return samples
