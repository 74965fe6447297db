"""Pure JAX kernels for comparing RKMEs on a shared subset of features.

The kernel on a set S of features, with per-feature widths sigma_f:

    k_S(x, y) = exp(-sum_{f in S} w_f (x_f - y_f)^2 / sigma_f^2),   w_f = 1 / |S|

i.e. a Gaussian kernel on standardised coordinates whose width grows with the
number of features (scikit-learn's ``gamma='scale'`` rule, 1 / (d Var), per
feature). A product of one-dimensional Gaussian kernels, so the kernel mean of
a distribution under k_S is the kernel mean of its marginal on S: a weighted
point set (an RKME) restricted to the columns in S is an RKME of the marginal.

Here the points arrive already divided by sigma (``scaled``), and the choice of
S per learnware arrives as weights w (0 off S, 1 / |S| on S) over its own
columns. Shapes: L learnwares in a stack, K points each, d columns each (the
widest learnware's; narrower ones are zero-padded with weight 0); the user has
K_u points on D_u columns; ``columns`` (L, d) gives, for each learnware column,
the user column of the same market feature (-1 when the user lacks it).
Everything is safe to jit; zero beta marks padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from learnware_cli.rkme import _jax_setup  # noqa: F401  (float64 and the compile cache, configured once)


def user_pair_terms(x):
    """(x_if - x_jf)^2 for the user's scaled points x (K_u, D_u) -> (K_u, K_u, D_u)."""
    return (x[:, None, :] - x[None, :, :]) ** 2


def user_self_products(pair_terms, beta, user_weights):
    """<u, u>_S for each weight pattern: beta^T exp(-sum_f W_pf P_ijf) beta.

    pair_terms P (K_u, K_u, D_u) from user_pair_terms, beta (K_u,),
    user_weights W (P, D_u): the weight each user column gets under one
    learnware's S (a learnware reading a user column twice weighs it twice).
    -> (P,).
    """
    exponent = jnp.einsum("ijf,pf->pij", pair_terms, user_weights)
    return jnp.einsum("i,pij,j->p", beta, jnp.exp(-exponent), beta)


def learnware_self_products(scaled, betas, weights):
    """<s, s>_S for each learnware: beta^T exp(-sum_c w_c (y_kc - y_mc)^2) beta.

    scaled (L, K, d), betas (L, K), weights (L, d) -> (L,).
    Mapped one learnware at a time, so memory is K^2 entries whatever L is.
    """

    def one(args):
        y, beta, w = args
        norms = (y * y) @ w
        gram = (y * w) @ y.T
        d2 = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
        return beta @ jnp.exp(-d2) @ beta

    return jax.lax.map(one, (scaled, betas, weights), batch_size=64)


def cross_products(x, beta, scaled, betas, scale, columns, kind, block=128):
    """<u, s_l>_S for every learnware of a stack, in blocks of ``block`` learnwares.

    x (K_u, D_u), beta (K_u,): the user's scaled points and weights; scaled
    (L, K, d), betas (L, K); scale (L,) = 1 / |S_l|; columns (L, d): the user
    column of each learnware column (-1: she lacks it); kind (L / block,) int:
    0 when no learnware of the block shares a feature with her (skipped: 0),
    1 when every learnware of the block reads the same features (the stack is
    sorted so that almost every block does), 2 otherwise. L must be a
    multiple of block.

    The user's points are carried into the learnwares' columns (her column
    c for their column c, 0 where she lacks it), so the cross term needs no
    mask: x_c y_c vanishes off S. The squared distance expands as
        |S|^-1 (sum_{c in S} y_c^2 + sum_c x_c^2 - 2 sum_c x_c y_c).
    A uniform block carries the user's points once and makes one
    (K_u, d) x (d, block K) matmul and one exp, exactly a same-island block;
    a mixed block (at the border of two column sets) carries them per
    learnware and uses a batched matmul. -> (L,).
    """
    m, k, d = scaled.shape
    x = x.astype(scaled.dtype)
    beta = beta.astype(scaled.dtype)
    padded_x = jnp.concatenate([x, jnp.zeros((x.shape[0], 1), x.dtype)], axis=1)  # column -1 reads zeros
    gather = jnp.where(columns >= 0, columns, x.shape[1])
    blocks = (
        scaled.reshape(m // block, block, k, d),
        betas.reshape(m // block, block, k),
        scale.reshape(m // block, block),
        gather.reshape(m // block, block, d),
        kind,
    )

    def uniform_block(args):
        yb, bb, wb, gb = args
        w = wb[0]
        points = yb.reshape(block * k, d)
        carried = jnp.take(padded_x, gb[0], axis=1)  # (K_u, d)
        own_norms = (points * points) @ ((gb[0] < x.shape[1]).astype(yb.dtype) * w)
        user_norms = w * jnp.sum(carried * carried, axis=1)
        kernel = jnp.exp(jnp.minimum((2.0 * w) * (carried @ points.T) - own_norms[None, :] - user_norms[:, None], 0.0))
        return jnp.sum((beta @ kernel).reshape(block, k) * bb, axis=1)

    def mixed_block(args):
        yb, bb, wb, gb = args
        carried = jnp.transpose(jnp.take(padded_x, gb, axis=1), (1, 0, 2))  # (block, K_u, d)
        user_norms = jnp.sum(carried * carried, axis=2)
        own_norms = jnp.einsum("bkc,bc->bk", yb * yb, (gb < x.shape[1]).astype(yb.dtype))
        products = jnp.einsum("bic,bkc->bik", carried, yb)
        exponent = (2.0 * products - own_norms[:, None, :] - user_norms[:, :, None]) * wb[:, None, None]
        return jnp.einsum("i,bik,bk->b", beta, jnp.exp(jnp.minimum(exponent, 0.0)), bb)

    def unrelated_block(args):
        return jnp.zeros(block, scaled.dtype)

    def one_block(args):
        *arrays, block_kind = args
        return jax.lax.switch(block_kind, (unrelated_block, uniform_block, mixed_block), arrays)

    return jax.lax.map(one_block, blocks).reshape(m)
