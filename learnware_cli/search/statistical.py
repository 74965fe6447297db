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

MIXTURE_POOL = 32
MIN_IMPROVEMENT = 0.05


def similarity(mmd2, own, selfs):
    """1 - MMD^2 / (<u,u> + <s,s>), clipped to [0, 1] (elementwise)."""
    return np.clip(1.0 - np.asarray(mmd2) / (own + np.asarray(selfs)), 0.0, 1.0)


def _pool_products(user_z, user_beta, zs, betas, gamma):
    """Gram G (P, P) = <S_p, S_q>, cross c (P,) = <S_p, u> for a small pool, float64."""
    pair = lambda z1, b1, z2, b2: kernels.inner_product(z1, b1, z2, b2, gamma)
    gram = jax.vmap(lambda z1, b1: jax.vmap(lambda z2, b2: pair(z1, b1, z2, b2))(zs, betas))(zs, betas)
    cross = jax.vmap(lambda z, b: pair(z, b, user_z, user_beta))(zs, betas)
    return gram, cross


_pool_products_jit = jax.jit(_pool_products)


def _extension_objectives(gram, cross, selected):
    """QP objective and weights of (selected + [c]) for every pool member c.

    gram (P, P), cross (P,), selected (s,) int -> objectives (P,), weights (P, s + 1).
    Objective of weights w on a set: 1/2 w^T G w - c^T w (mixture MMD^2 = <u,u> + 2 objective).
    """
    p = gram.shape[0]

    def trial(candidate):
        idx = jnp.concatenate([selected, candidate[None]])
        q = gram[idx][:, idx]
        c = cross[idx]
        w = kernels.solve_simplex_qp(q, c)
        return 0.5 * w @ q @ w - c @ w, w

    return jax.vmap(trial)(jnp.arange(p))


_extension_objectives_jit = jax.jit(_extension_objectives)


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
    """
    gram, cross = _pool_products_jit(user.z, user.beta, jnp.asarray(zs, jnp.float64), jnp.asarray(betas, jnp.float64), user.gamma)
    gram, cross = np.asarray(gram), np.asarray(cross)
    own = self_product(user)
    p = gram.shape[0]
    selected = [0]
    weights = np.ones(1)
    current = own - 2 * cross[0] + gram[0, 0]
    while len(selected) < min(max_size, p):
        objectives, trial_weights = _extension_objectives_jit(gram, cross, jnp.asarray(selected))
        objectives = np.array(objectives)
        objectives[selected] = np.inf
        best = int(np.argmin(objectives))
        candidate_mmd = own + 2.0 * float(objectives[best])
        if current - candidate_mmd < min_improvement * current:
            break
        selected.append(best)
        weights = np.asarray(trial_weights[best])
        current = candidate_mmd
    weights = weights / weights.sum()
    sub = gram[np.ix_(selected, selected)]
    score = float(similarity(current, own, weights @ sub @ weights))
    return Mixture(members=selected, weights=weights, mmd2=max(float(current), 0.0), score=score)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


def self_product(spec: RKMESpec) -> float:
    """<s, s> in float64."""
    return float(spec.beta @ np.exp(-spec.gamma * _sqdist(spec.z, spec.z)) @ spec.beta)


def exact_mmd2(user: RKMESpec, z: np.ndarray, beta: np.ndarray) -> tuple[float, float]:
    """Float64 MMD^2 and <s,s> between user and one stored spec (zero-weight padding allowed)."""
    z = np.asarray(z, np.float64)
    beta = np.asarray(beta, np.float64)
    g = user.gamma
    own = self_product(user)
    cross = user.beta @ np.exp(-g * _sqdist(user.z, z)) @ beta
    selfs = beta @ np.exp(-g * _sqdist(z, z)) @ beta
    return float(own - 2 * cross + selfs), float(selfs)
