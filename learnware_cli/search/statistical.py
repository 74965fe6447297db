"""Statistical search: rank specs by MMD^2 to the user's RKME, and find the closest mixture.

Score in [0, 1]: 1 - MMD^2 / (<u,u> + <s,s>) = 2<u,s> / (<u,u> + <s,s>). Since a
Gaussian kernel with nonnegative weights gives <u,s> >= 0, MMD^2 never exceeds
<u,u> + <s,s>: the score is 1 for identical embeddings and 0 for distributions
that do not overlap at all, whatever gamma or the dimension.

Precision: choosing (the market-wide ranking, the mixture's members) runs on
float32 kernel products, since XLA's float64 exp is ~10x slower on CPU; what is
reported (the top singles' MMD^2, the mixture's weights and MMD^2) is
re-computed in float64 on the few specs chosen. Every MMD^2 is
kernels.mmd2_from_products.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from learnware_cli.rkme import kernels
from learnware_cli.rkme.spec import RKMESpec

# the rule's constants, similarity and Mixture are shared with the NumPy port (search.exact_numpy),
# which the two-stage search uses so that it never imports JAX
from learnware_cli.search.exact_numpy import (  # noqa: F401  (re-exported)
    GREEDY_POOL,
    MIN_IMPROVEMENT,
    MIN_WEIGHT,
    MIXTURE_METHODS,
    MIXTURE_POOL,
    Mixture,
    similarity,
)


# --------------------------------------------------------------------------- exact re-scoring (float64)

_own_product = jax.jit(kernels.inner_product)
_mmd2_to_specs = jax.jit(kernels.mmd2_to_specs)


def _pad_specs(zs: np.ndarray, betas: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """zs (M, K, d), betas (M, K) -> float64 (slots, K, d), (slots, K) with zero-weight specs after M."""
    padded_z = np.zeros((slots,) + zs.shape[1:])
    padded_beta = np.zeros((slots, betas.shape[1]))
    padded_z[: len(zs)], padded_beta[: len(betas)] = zs, betas
    return padded_z, padded_beta


def self_product(user: RKMESpec) -> float:
    """<u, u> in float64."""
    return float(_own_product(user.z, user.beta, user.z, user.beta, user.gamma))


def exact_mmd2(user: RKMESpec, zs: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 MMD^2 from user to each stored spec zs (M, K, d), betas (M, K) (zero-weight padding allowed).

    -> (mmd2 (M,), selfs (M,) = <S_m, S_m>). M is padded to a multiple of 8
    so that a few compiled programs serve every -k.
    """
    m = zs.shape[0]
    padded_z, padded_beta = _pad_specs(zs, betas, -(-m // 8) * 8)
    mmd, selfs = _mmd2_to_specs(user.z, user.beta, padded_z, padded_beta, user.gamma)
    return np.asarray(mmd)[:m], np.asarray(selfs)[:m]


# --------------------------------------------------------------------------- mixture search programs


def greedy_mixture_arrays(gram, cross, own, n_valid, max_size, min_improvement):
    """Greedy mixture selection on a pool (the search before the closest mixture; kept for comparison).

    gram (P, P) = <S_p, S_q>, cross (P,) = <S_p, u>, own = <u, u>; the pool is
    ordered best single first, and members from n_valid on are padding that is
    never chosen. Returns selected (max_size,) pool positions,
    weights (max_size,), count (members actually used), mixture MMD^2.
    It starts from the best single and never drops a member. Step i scores
    every unselected p by the best two-point blend (1 - t) * mixture + t * S_p
    (closed form in t, so the scan is O(P * i)), re-solves the simplex QP over
    the members plus the winner, and keeps it if the mixture MMD^2 drops by at
    least min_improvement (relative); otherwise it stops adding.
    """
    p = gram.shape[0]
    slots = jnp.arange(max_size)
    candidates = jnp.arange(p)
    selected = jnp.zeros(max_size, dtype=jnp.int32)
    weights = jnp.zeros(max_size, dtype=gram.dtype).at[0].set(1.0)
    current = kernels.mmd2_from_products(own, cross[0], gram[0, 0])

    def step(i, state):
        selected, weights, count, current, done = state
        w = jnp.where(slots < i, weights, 0.0)
        mm = w @ gram[selected][:, selected] @ w  # <m, m>
        ms = w @ gram[selected, :]  # <m, S_p> (P,)
        um = w @ cross[selected]  # <u, m>
        us, ss = cross, jnp.diag(gram)
        curvature = jnp.maximum(kernels.mmd2_from_products(mm, ms, ss), 1e-300)  # ||m - S_p||^2
        t = jnp.clip((mm - ms - um + us) / curvature, 0.0, 1.0)
        blend = kernels.mmd2_from_products(own, (1 - t) * um + t * us, (1 - t) ** 2 * mm + 2 * t * (1 - t) * ms + t**2 * ss)
        taken = jnp.any((selected[None, :] == candidates[:, None]) & (slots[None, :] < i), axis=1)
        blend = jnp.where(taken | (candidates >= n_valid), jnp.inf, blend)
        best = jnp.argmin(blend).astype(jnp.int32)
        trial = selected.at[i].set(best)
        trial_gram, trial_cross = gram[trial][:, trial], cross[trial]
        trial_weights = kernels.solve_simplex_qp_masked(trial_gram, trial_cross, slots <= i)
        candidate_mmd = kernels.mixture_mmd2(own, trial_gram, trial_cross, trial_weights)
        accept = (~done) & (current - candidate_mmd >= min_improvement * current)
        selected = jnp.where(accept, trial, selected)
        weights = jnp.where(accept, trial_weights, weights)
        count = jnp.where(accept, i + 1, count)
        current = jnp.where(accept, candidate_mmd, current)
        return selected, weights, count, current, done | ~accept

    state = (selected, weights, jnp.int32(1), current, jnp.asarray(False))
    selected, weights, count, current, _ = jax.lax.fori_loop(1, max_size, step, state)
    return selected, weights, count, current


def closest_mixture_arrays(gram, cross, own, n_valid, max_size, min_improvement, min_weight):
    """The closest mixture of a pool, pruned to members that earn their place.

    gram (P, P) = <S_p, S_q>, cross (P,) = <S_p, u>, own = <u, u>; pool
    members from n_valid on are padding and never chosen. Returns
    active (P,) bool, weights w (P,) (0 off active, sum 1), mixture MMD^2.

    1. w = argmin_w ||u - sum_p w_p S_p||^2 over the simplex of the whole pool:
       the closest mixture there is, one convex QP, whose solution is sparse
       (most candidates get weight ~0). Then, re-solving after each change,
       drop the members with w_p < min_weight, and if more than max_size
       are left, keep the max_size heaviest.
    2. Backward elimination on those (at most max_size, so every QP is
       max_size x max_size): the member whose removal (with re-solved
       weights) raises the MMD^2 least goes if it lowers the MMD^2 by less
       than min_improvement, relative to the MMD^2 without it (the greedy
       search's acceptance rule, applied in reverse); members that fall
       below min_weight go first. Ends when no member may go.
    """
    p = gram.shape[0]

    def solve(g, c, active):
        w = kernels.solve_simplex_qp_masked(g, c, active)
        return w, kernels.mixture_mmd2(own, g, c, w)

    # 1. the whole pool, narrowed to at most max_size members of real weight
    def too_many(state):
        active, w = state
        return jnp.any(active & (w < min_weight)) | (jnp.sum(active) > max_size)

    def narrow(state):
        active, w = state
        tiny = active & (w < min_weight)
        heaviest = jnp.zeros(p, dtype=bool).at[jnp.argsort(-jnp.where(active, w, -1.0))[:max_size]].set(True)
        active = jnp.where(jnp.any(tiny), active & ~tiny, active & heaviest)
        return active, solve(gram, cross, active)[0]

    active = jnp.arange(p) < n_valid
    active, _ = jax.lax.while_loop(too_many, narrow, (active, solve(gram, cross, active)[0]))

    # 2. backward elimination on the (at most max_size) members, gathered into max_size slots
    slots = jnp.argsort(~active, stable=True)[:max_size]  # the members first, then unused positions
    g, c, live = gram[slots][:, slots], cross[slots], active[slots]
    others = ~jnp.eye(max_size, dtype=bool)  # row j: every slot but j

    def prune(state):
        live, w, _ = state
        return live & (w >= min_weight), jnp.asarray(False)

    def eliminate(state):
        live, _, current = state
        _, without = jax.vmap(lambda mask: solve(g, c, mask))(live[None, :] & others)
        without = jnp.where(live, without, jnp.inf)
        j = jnp.argmin(without)
        drop = (jnp.sum(live) > 1) & (without[j] - current < min_improvement * without[j])
        return jnp.where(drop, live & (jnp.arange(max_size) != j), live), ~drop

    def step(state):
        live, w, current, _ = state
        tiny = jnp.any(live & (w < min_weight))
        live, done = jax.lax.cond(tiny, prune, eliminate, (live, w, current))
        w, current = solve(g, c, live)
        return live, w, current, done

    w, current = solve(g, c, live)
    live, w, current, _ = jax.lax.while_loop(lambda s: ~s[3], step, (live, w, current, jnp.asarray(False)))
    return jnp.zeros(p, dtype=bool).at[slots].set(live), jnp.zeros(p, dtype=w.dtype).at[slots].set(w), current


def _pool_products(user_z, user_beta, zs, betas, gamma):
    """Float32 kernel products of the pool, in float64 for the QPs -> (gram (P, P), cross (P,), own).

    The products only steer the choice; the caller re-solves and re-scores
    the chosen mixture in float64.
    """
    f32 = jnp.float32
    gram, cross = kernels.gram_and_cross(user_z.astype(f32), user_beta.astype(f32), zs.astype(f32), betas.astype(f32), gamma)
    own = kernels.inner_product(user_z, user_beta, user_z, user_beta, gamma)
    return gram.astype(own.dtype), cross.astype(own.dtype), own


def _greedy_program(user_z, user_beta, zs, betas, gamma, n_valid, max_size, min_improvement, min_weight):
    """Pool products, then the greedy search -> (active (P,), weights (P,)); min_weight is left to the caller."""
    gram, cross, own = _pool_products(user_z, user_beta, zs, betas, gamma)
    selected, weights, count, _ = greedy_mixture_arrays(gram, cross, own, n_valid, max_size, min_improvement)
    used = jnp.arange(max_size) < count
    active = jnp.zeros(zs.shape[0], dtype=jnp.int32).at[selected].add(used.astype(jnp.int32)) > 0
    return active, jnp.zeros(zs.shape[0], dtype=weights.dtype).at[selected].add(jnp.where(used, weights, 0.0))


def _closest_program(user_z, user_beta, zs, betas, gamma, n_valid, max_size, min_improvement, min_weight):
    """Pool products, then closest_mixture_arrays -> (active (P,), weights (P,))."""
    gram, cross, own = _pool_products(user_z, user_beta, zs, betas, gamma)
    active, weights, _ = closest_mixture_arrays(gram, cross, own, n_valid, max_size, min_improvement, min_weight)
    return active, weights


_PROGRAMS = {
    "closest": jax.jit(_closest_program, static_argnames=("max_size",)),
    "greedy": jax.jit(_greedy_program, static_argnames=("max_size",)),
}


def _exact_weights(user_z, user_beta, zs, betas, gamma, active):
    """Float64 simplex weights over the active specs of zs (M, K, d), betas (M, K) -> (w (M,), MMD^2, <m, m>)."""
    gram, cross = kernels.gram_and_cross(user_z, user_beta, zs, betas, gamma)
    w = kernels.solve_simplex_qp_masked(gram, cross, active)
    own = kernels.inner_product(user_z, user_beta, user_z, user_beta, gamma)
    return w, kernels.mixture_mmd2(own, gram, cross, w), w @ gram @ w


_exact_weights_jit = jax.jit(_exact_weights)


def find_mixture(
    user: RKMESpec,
    zs: np.ndarray,
    betas: np.ndarray,
    max_size: int,
    method: str = "closest",
    min_improvement: float = MIN_IMPROVEMENT,
    min_weight: float = MIN_WEIGHT,
) -> Mixture:
    """The mixture of pool specs zs (P, K, d), betas (P, K) (ordered best single first) closest to user.

    method "closest" (the default): closest_mixture_arrays; "greedy": the
    earlier greedy_mixture_arrays on the pool's first GREEDY_POOL specs, for
    comparisons. Either way the members' weights are then re-solved in
    float64 and members below min_weight are dropped (re-solving over the
    rest) until none is left, so every weight listed is >= min_weight and
    they sum to 1. The pool is padded to a multiple of 8 specs (masked out,
    never chosen) to limit recompilation.
    """
    if method not in _PROGRAMS:
        raise ValueError(f"unknown mixture method {method!r} (expected one of {', '.join(MIXTURE_METHODS)})")
    if method == "greedy":
        zs, betas = zs[:GREEDY_POOL], betas[:GREEDY_POOL]
    p = zs.shape[0]
    size = max(1, min(max_size, p))
    pool_z, pool_beta = _pad_specs(zs, betas, -(-p // 8) * 8)
    active, _ = _PROGRAMS[method](
        user.z, user.beta, jnp.asarray(pool_z), jnp.asarray(pool_beta), user.gamma, p,
        max_size=size, min_improvement=min_improvement, min_weight=min_weight,
    )
    members = np.flatnonzero(np.asarray(active))
    slots = np.arange(size)
    while True:
        member_z, member_beta = _pad_specs(zs[members], betas[members], size)
        w, mmd, mixture_self = _exact_weights_jit(user.z, user.beta, member_z, member_beta, user.gamma, slots < len(members))
        w = np.asarray(w)[: len(members)]
        keep = w >= min_weight
        if keep.all():
            break
        members = members[keep]
    order = np.argsort(-w, kind="stable")
    score = float(similarity(float(mmd), self_product(user), float(mixture_self)))
    return Mixture(members=[int(m) for m in members[order]], weights=w[order], mmd2=max(float(mmd), 0.0), score=score)


# --------------------------------------------------------------------------- mixtures of any kind, from products


def _closest_from_products(gram, cross, own, n_valid, max_size, min_improvement, min_weight):
    return closest_mixture_arrays(gram, cross, own, n_valid, max_size, min_improvement, min_weight)[0]


_closest_from_products_jit = jax.jit(_closest_from_products, static_argnames=("max_size",))
_masked_qp = jax.jit(kernels.solve_simplex_qp_masked)


def mixture_from_products(
    gram: np.ndarray, cross: np.ndarray, own: float, max_size: int, min_improvement: float = MIN_IMPROVEMENT, min_weight: float = MIN_WEIGHT
) -> Mixture:
    """The closest mixture of a pool given only its inner products, for specification kinds whose
    kernel is their own (images, texts): gram (P, P) = <S_p, S_q>, cross (P,) = <S_p, u>, own = <u, u>,
    all float64 from the kinds' ``inner_product``. The same rule as find_mixture (closest_mixture_arrays,
    then float64 weights re-solved until every member has weight >= min_weight); the pool is padded
    to a multiple of 8 with specs that are never chosen.
    """
    p = len(cross)
    slots = -(-p // 8) * 8
    padded_gram = np.eye(slots)  # padding: unit self products, no cross terms, masked out anyway
    padded_gram[:p, :p] = gram
    padded_cross = np.zeros(slots)
    padded_cross[:p] = cross
    size = max(1, min(max_size, p))
    active = np.asarray(_closest_from_products_jit(jnp.asarray(padded_gram), jnp.asarray(padded_cross), own, p, max_size=size,
                                                   min_improvement=min_improvement, min_weight=min_weight))
    members = np.flatnonzero(active[:p])
    while True:
        sub_gram, sub_cross = gram[np.ix_(members, members)], cross[members]
        w = np.asarray(_masked_qp(jnp.asarray(sub_gram), jnp.asarray(sub_cross), jnp.ones(len(members), dtype=bool)))
        keep = w >= min_weight
        if keep.all():
            break
        members = members[keep]
    mixture_self = float(w @ sub_gram @ w)
    mmd = float(kernels.mixture_mmd2(own, sub_gram, sub_cross, w))
    order = np.argsort(-w, kind="stable")
    score = float(similarity(mmd, own, mixture_self))
    return Mixture(members=[int(m) for m in members[order]], weights=w[order], mmd2=max(mmd, 0.0), score=score)
