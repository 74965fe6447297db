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


def cross_products(x, beta, scaled, betas, weights, columns, block=128):
    """<u, s_l>_S for every learnware of a stack, in blocks of ``block`` learnwares.

    x (K_u, D_u), beta (K_u,) the user's scaled points and weights; scaled (L, K, d),
    betas (L, K), weights (L, d), columns (L, d) as in the module docstring.
    With onehot_lcf = w_lc [columns_lc = f] (built per block), the squared
    distance for learnware l is expanded as
        sum_f W_lf x_if^2 + sum_c w_lc y_kc^2 - 2 sum_f x_if Y_kf,
    with W_l = sum_c onehot_lc (the user-column weights) and Y = y @ onehot_l
    (its points carried into the user's columns, weighted), so each block is one
    (K_u, D_u) x (D_u, block K) matmul and one exp, like a same-island search.
    L must be a multiple of block. -> (L,).
    """
    m, k, d = scaled.shape
    x = x.astype(scaled.dtype)
    beta = beta.astype(scaled.dtype)
    x_sq = x * x
    blocks = (
        scaled.reshape(m // block, block, k, d),
        betas.reshape(m // block, block, k),
        weights.reshape(m // block, block, d),
        columns.reshape(m // block, block, d),
    )
    user_columns = jnp.arange(x.shape[1])

    def one_block(args):
        yb, bb, wb, cb = args
        ob = (cb[:, :, None] == user_columns).astype(yb.dtype) * wb[:, :, None]  # (block, d, D_u)
        carried = jnp.einsum("bkc,bcf->bkf", yb, ob)  # (block, K, D_u)
        user_norms = x_sq @ jnp.sum(ob, axis=1).T  # (K_u, block)
        own_norms = jnp.einsum("bkc,bc->bk", yb * yb, wb)  # (block, K)
        products = (x @ carried.reshape(block * k, -1).T).reshape(-1, block, k)
        d2 = jnp.maximum(user_norms[:, :, None] + own_norms[None, :, :] - 2.0 * products, 0.0)
        return jnp.einsum("i,ibk,bk->b", beta, jnp.exp(-d2), bb)

    return jax.lax.map(one_block, blocks).reshape(m)
