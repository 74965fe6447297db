"""Statistical search: rank specs by MMD^2 to the user's RKME, and find the closest mixture.

Score in [0, 1]: 1 - MMD^2 / (<u,u> + <s,s>) = 2<u,s> / (<u,u> + <s,s>). Since a
Gaussian kernel with nonnegative weights gives <u,s> >= 0, MMD^2 never exceeds
<u,u> + <s,s>: the score is 1 for identical embeddings and 0 for distributions
that do not overlap at all, whatever gamma or the dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from learnware_cli.rkme import kernels
from learnware_cli.rkme.spec import RKMESpec

MIXTURE_POOL = 16
MIN_IMPROVEMENT = 0.05


def similarity(mmd2, own, selfs):
    """1 - MMD^2 / (<u,u> + <s,s>), clipped to [0, 1] (elementwise)."""
    return np.clip(1.0 - np.asarray(mmd2) / (own + np.asarray(selfs)), 0.0, 1.0)


def _masked_qp(q, c, active):
    """Simplex QP over the active variables only; inactive ones get weight exactly 0.

    Inactive rows become an identity block with a large negative linear term,
    so the interior point drives them to the boundary without disturbing the
    scale of the active block. -> (weights, objective 1/2 w^T q w - c^T w).
    """
    both = active[:, None] & active[None, :]
    scale = jnp.maximum(jnp.max(jnp.abs(jnp.where(both, q, 0.0))), 1e-300)
    q_masked = jnp.where(both, q, jnp.eye(q.shape[0], dtype=q.dtype) * scale)
    c_masked = jnp.where(active, c, -1e3 * scale)
    w = jnp.where(active, kernels.solve_simplex_qp(q_masked, c_masked), 0.0)
    w = w / jnp.sum(w)
    return w, 0.5 * w @ q @ w - c @ w


def greedy_mixture_arrays(gram, cross, own, n_valid, max_size, min_improvement):
    """Greedy mixture selection on a pool, as one jitted program.

    gram (P, P) = <S_p, S_q>, cross (P,) = <S_p, u>, own = <u, u>; the pool is
    ordered best single first, and members from n_valid on are padding that is
    never chosen. Returns selected (max_size,) pool positions,
    weights (max_size,), count (members actually used), mixture MMD^2.
    Step i scores every unselected p by the best two-point blend
    (1 - t) * mixture + t * S_p (closed form in t, so the scan is O(P * i)),
    re-solves the simplex QP over the members plus the winner, and keeps it if
    the mixture MMD^2 drops by at least min_improvement (relative); otherwise
    it stops adding.
    """
    p = gram.shape[0]
    slots = jnp.arange(max_size)
    candidates = jnp.arange(p)
    selected = jnp.zeros(max_size, dtype=jnp.int32)
    weights = jnp.zeros(max_size, dtype=gram.dtype).at[0].set(1.0)
    current = own - 2.0 * cross[0] + gram[0, 0]

    def step(i, state):
        selected, weights, count, current, done = state
        w = jnp.where(slots < i, weights, 0.0)
        mm = w @ gram[selected][:, selected] @ w  # <m, m>
        ms = w @ gram[selected, :]  # <m, S_p> (P,)
        um = w @ cross[selected]  # <u, m>
        us, ss = cross, jnp.diag(gram)
        curvature = jnp.maximum(mm - 2.0 * ms + ss, 1e-300)
        t = jnp.clip((mm - ms - um + us) / curvature, 0.0, 1.0)
        blend = own - 2 * (1 - t) * um - 2 * t * us + (1 - t) ** 2 * mm + 2 * t * (1 - t) * ms + t**2 * ss
        taken = jnp.any((selected[None, :] == candidates[:, None]) & (slots[None, :] < i), axis=1)
        blend = jnp.where(taken | (candidates >= n_valid), jnp.inf, blend)
        best = jnp.argmin(blend).astype(jnp.int32)
        trial = selected.at[i].set(best)
        trial_weights, objective = _masked_qp(gram[trial][:, trial], cross[trial], slots <= i)
        candidate_mmd = own + 2.0 * objective
        accept = (~done) & (current - candidate_mmd >= min_improvement * current)
        selected = jnp.where(accept, trial, selected)
        weights = jnp.where(accept, trial_weights, weights)
        count = jnp.where(accept, i + 1, count)
        current = jnp.where(accept, candidate_mmd, current)
        return selected, weights, count, current, done | ~accept

    state = (selected, weights, jnp.int32(1), current, jnp.asarray(False))
    selected, weights, count, current, _ = jax.lax.fori_loop(1, max_size, step, state)
    return selected, weights, count, current


def _mixture_program(user_z, user_beta, zs, betas, gamma, n_valid, max_size, min_improvement):
    """Greedy selection on float32 kernel products (exp is ~10x cheaper than in float64 on CPU).

    The products only steer the choice and the weights; the caller re-scores
    the chosen mixture in float64.
    """
    f32 = jnp.float32
    gram, cross = kernels.gram_and_cross(user_z.astype(f32), user_beta.astype(f32), zs.astype(f32), betas.astype(f32), gamma)
    own = kernels.inner_product(user_z, user_beta, user_z, user_beta, gamma)
    gram, cross = gram.astype(own.dtype), cross.astype(own.dtype)
    selected, weights, count, _ = greedy_mixture_arrays(gram, cross, own, n_valid, max_size, min_improvement)
    return selected, weights, count


_mixture_jit = jax.jit(_mixture_program, static_argnames=("max_size",))


@dataclass
class Mixture:
    members: list[int]  # pool positions, in the order they were added
    weights: np.ndarray  # (len(members),)
    mmd2: float
    score: float


def greedy_mixture(user: RKMESpec, zs: np.ndarray, betas: np.ndarray, max_size: int, min_improvement: float = MIN_IMPROVEMENT) -> Mixture:
    """Greedy mixture over a pool zs (P, K, d), betas (P, K), ordered best single first.

    Start from the pool's first spec; at each step add the spec whose addition
    (with re-solved simplex weights) lowers the mixture MMD^2 most; stop when
    the relative improvement is below min_improvement or at max_size members.
    The pool is padded to a multiple of 8 specs (masked out, never chosen) to
    limit recompilation.
    """
    p = zs.shape[0]
    p_pad = -(-p // 8) * 8
    zs64 = np.zeros((p_pad,) + zs.shape[1:])
    betas64 = np.zeros((p_pad, betas.shape[1]))
    zs64[:p], betas64[:p] = zs, betas
    size = max(1, min(max_size, p))
    selected, weights, count = _mixture_jit(
        user.z, user.beta, jnp.asarray(zs64), jnp.asarray(betas64), user.gamma, p, max_size=size, min_improvement=min_improvement
    )
    count = int(count)
    members = [int(v) for v in np.asarray(selected)[:count]]
    w = np.asarray(weights)[:count]
    w = w / w.sum()
    own = self_product(user)
    mmd, mixture_self = exact_mmd2(user, own, zs[members].reshape(-1, zs.shape[2]), (w[:, None] * betas[members]).reshape(-1))
    score = float(similarity(mmd, own, mixture_self))
    return Mixture(members=members, weights=w, mmd2=max(mmd, 0.0), score=score)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


def self_product(spec: RKMESpec) -> float:
    """<s, s> in float64."""
    return float(spec.beta @ np.exp(-spec.gamma * _sqdist(spec.z, spec.z)) @ spec.beta)


def exact_mmd2(user: RKMESpec, own: float, z: np.ndarray, beta: np.ndarray) -> tuple[float, float]:
    """Float64 MMD^2 and <s,s> between user (with own = <u,u>, computed once by the caller)
    and one stored spec z (K, d), beta (K,) (zero-weight padding allowed)."""
    z = np.asarray(z, np.float64)
    beta = np.asarray(beta, np.float64)
    g = user.gamma
    cross = user.beta @ np.exp(-g * _sqdist(user.z, z)) @ beta
    selfs = beta @ np.exp(-g * _sqdist(z, z)) @ beta
    return float(own - 2 * cross + selfs), float(selfs)
