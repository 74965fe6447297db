"""Pure JAX kernels behind the image RKME specification (``RKMEImageSpecification``).

The kernel is the one the reference package scores image specifications
with: the NNGP (infinite-width Gaussian-process) kernel of a ConvNet of
``depth`` blocks [3x3 conv (weight variance sqrt(2), bias variance 0.1,
zero "same" padding) -> ReLU -> 2x2 average pool], read out by the mean over
the last feature map (Garriga-Alonso et al., ICLR 2019). For images x, y of
shape (C, S, S) (S = 32) it propagates three maps of shape (S, S): the
cross covariance c = <x, y>, and the variances v1 = <x, x>, v2 = <y, y>:

    start:  c = mean_ch(x * y),  v1 = mean_ch(x * x),  v2 = mean_ch(y * y)
    conv:   m -> (sqrt(2) / 9) * box3x3(m) + 0.1           (for c, v1, v2)
    ReLU:   c -> (sqrt(v1 v2 - c^2) + (pi - theta) c) / (2 pi),
            theta = arccos(c / sqrt(v1 v2));   v -> v / 2
    pool:   m -> mean of each 2x2 block                     (S -> S / 2)
    k(x, y) = mean over the last (S / 2^depth)^2 map of c

An RKME (z, beta) stands for sum_j beta_j k(z_j, .); inner products and
MMD^2 follow as for the table kernel. Shapes: images (K, C, S, S); a stack
of specifications stores them flattened, (M, K, C * S * S).

Every function takes and returns arrays, keeps no state and is safe to
``jax.jit``; ``depth`` and ``channels`` are static. Kernels compute in the
dtype of the images: float32, with the reference's operation order
(cos theta = c * (1 / sqrt(v1 v2))), reproduces its figures to ~5e-8, also
for identical images where float32 arccos near 1 is coarse; float64 gives
the exact kernel (within ~1e-6 of the reference's float32 there). Gradients are finite
everywhere (the ReLU covariance has a hand-written JVP: its automatic one is
inf - inf at c^2 = v1 v2, e.g. on the diagonal of a Gram matrix).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from learnware_cli.rkme import _jax_setup  # noqa: F401  (float64 and the compile cache, configured once)
from learnware_cli.rkme.kernels import mmd2_from_products

IMAGE_SIZE = 32
DEFAULT_DEPTH = 3
CONV_WEIGHT = math.sqrt(2.0) / 9.0  # the reference's var_weight = sqrt(2), spread over the 3x3 taps
CONV_BIAS = 0.1
F32_TINY = 1.1754943508222875e-38  # the reference adds float32's smallest normal to v1 v2


def _box3(m):
    """Sum over each 3x3 neighbourhood with zero padding: (..., S, S) -> (..., S, S)."""
    p = jnp.pad(m, [(0, 0)] * (m.ndim - 2) + [(1, 1), (1, 1)])
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return rows[..., :, :-2] + rows[..., :, 1:-1] + rows[..., :, 2:]


def _conv(m):
    """The NNGP's 3x3 conv layer on a covariance map: (sqrt(2)/9) box3x3(m) + 0.1."""
    return CONV_WEIGHT * _box3(m) + CONV_BIAS


def _pool(m):
    """2x2 average pooling, stride 2: (..., S, S) -> (..., S/2, S/2)."""
    s = m.shape[-1]
    return m.reshape(m.shape[:-2] + (s // 2, 2, s // 2, 2)).mean(axis=(-3, -1))


def arccos(x):
    """arccos(x) for x in [-1, 1]; in float32 a vectorisable polynomial (XLA's CPU arccos is ~20x slower).

    float32: arcsin(t) = t + t^3 P(t^2) on |t| <= 1/2 (Cephes' asinf, ~1 ulp),
    with arccos(x) = pi/2 - arcsin(x) for |x| <= 1/2 and 2 arcsin(sqrt((1 - |x|) / 2))
    (reflected for x < 0) beyond, which keeps full relative accuracy near
    x = 1, where the reference's float32 rounding shows. Other dtypes: jnp.arccos.
    """
    if x.dtype != jnp.float32:
        return jnp.arccos(x)
    ax = jnp.abs(x)
    big = ax > 0.5
    zz = jnp.where(big, 0.5 * (1.0 - ax), x * x)
    t = jnp.where(big, jnp.sqrt(zz), ax)
    p = ((((4.2163199048e-2 * zz + 2.4181311049e-2) * zz + 4.5470025998e-2) * zz + 7.4953002686e-2) * zz + 1.6666752422e-1)
    asin_t = t + t * zz * p
    half_pi = jnp.float32(jnp.pi / 2)
    small_branch = half_pi - jnp.sign(x) * asin_t
    big_branch = jnp.where(x > 0, 2.0 * asin_t, jnp.float32(jnp.pi) - 2.0 * asin_t)
    return jnp.where(big, big_branch, small_branch).astype(jnp.float32)


def _reciprocal_sqrt(x):
    """1 / sqrt(x) rounded twice (sqrt, then the division), as the reference's torch.rsqrt on CPU.

    The barrier keeps XLA from fusing it into its own rsqrt, whose different
    rounding moves c / sqrt(v1 v2) off 1 for identical images more often.
    """
    return 1.0 / jax.lax.optimization_barrier(jnp.sqrt(x))


@jax.custom_jvp
def relu_covariance(c, v1, v2):
    """E[relu(u) relu(w)] for (u, w) Gaussian with covariance c and variances v1, v2 (same shapes).

    = (sqrt(v1 v2 - c^2) + (pi - theta) c) / (2 pi), theta = arccos(c / sqrt(v1 v2)),
    with the reference's clamps (cos theta in [-1, 1], the root's argument >= 0).
    """
    prod = v1 * v2 + F32_TINY
    cos = jnp.clip(c * _reciprocal_sqrt(prod), -1.0, 1.0)
    sin = jnp.sqrt(jnp.maximum(prod - c * c, 0.0))
    return (sin + (jnp.pi - arccos(cos)) * c) / (2.0 * jnp.pi)


@relu_covariance.defjvp
def _relu_covariance_jvp(primals, tangents):
    """d/dc = (pi - theta) / 2pi, d/dv1 = sqrt(v1 v2 - c^2) / (4 pi v1), d/dv2 likewise: all finite."""
    c, v1, v2 = primals
    dc, dv1, dv2 = tangents
    prod = v1 * v2 + F32_TINY
    cos = jnp.clip(c * _reciprocal_sqrt(prod), -1.0, 1.0)
    sin = jnp.sqrt(jnp.maximum(prod - c * c, 0.0))
    theta = arccos(cos)
    out = (sin + (jnp.pi - theta) * c) / (2.0 * jnp.pi)
    tangent = ((jnp.pi - theta) * dc + sin * (dv1 / (2.0 * v1) + dv2 / (2.0 * v2))) / (2.0 * jnp.pi)
    return out, tangent


def _variance_maps(x, depth):
    """Per-image variance maps at each ReLU's input: x (K, C, S, S) -> list of depth arrays (K, S_l, S_l)."""
    v = jnp.mean(x * x, axis=1)
    maps = []
    for _ in range(depth):
        v = _conv(v)
        maps.append(v)
        v = _pool(v / 2.0)
    return maps


def nngp_kernel(x1, x2, depth=DEFAULT_DEPTH, same=False):
    """The ConvNet NNGP kernel matrix k(x1_i, x2_j): x1 (K1, C, S, S), x2 (K2, C, S, S) -> (K1, K2).

    same=True (x1 is x2) sets each ReLU's diagonal to v / 2 exactly, as the
    reference does for a Gram matrix (arccos near 1 loses half the digits).
    Memory: a few K1 * K2 * S^2 entries; block larger products (see below).
    """
    v1s = _variance_maps(x1, depth)
    v2s = v1s if same else _variance_maps(x2, depth)
    c = jnp.einsum("ichw,jchw->ijhw", x1, x2) / x1.shape[1]
    for layer in range(depth):
        c = _conv(c)
        v1, v2 = v1s[layer], v2s[layer]
        c = relu_covariance(*jnp.broadcast_arrays(c, v1[:, None], v2[None, :]))
        if same:
            eye = jnp.eye(c.shape[0], dtype=bool)[:, :, None, None]
            c = jnp.where(eye, (v1 / 2.0)[:, None], c)
        c = _pool(c)
    return jnp.mean(c, axis=(-2, -1))


def unflatten(z, channels):
    """(..., C * S * S) -> (..., C, S, S), S = IMAGE_SIZE."""
    return z.reshape(z.shape[:-1] + (channels, IMAGE_SIZE, IMAGE_SIZE))


def inner_product(z1, beta1, z2, beta2, depth=DEFAULT_DEPTH, same=False):
    """<RKME1, RKME2> = beta1^T k(z1, z2) beta2 for z1 (K1, C, S, S), z2 (K2, C, S, S) -> scalar.

    The kernel is computed in the dtype of z (float32 reproduces the
    reference, which computes it in float32), the sums in the dtype of beta.
    """
    return beta1 @ nngp_kernel(z1, z2, depth, same).astype(beta1.dtype) @ beta2


def self_inner_product(z, beta, depth=DEFAULT_DEPTH):
    """<RKME, RKME> = beta^T k(z, z) beta (the Gram matrix computed as the reference does) -> scalar."""
    return inner_product(z, beta, z, beta, depth, same=True)


def mmd2(z1, beta1, z2, beta2, depth=DEFAULT_DEPTH):
    """MMD^2 = <1,1> - 2<1,2> + <2,2> between two image RKMEs -> scalar."""
    return mmd2_from_products(
        self_inner_product(z1, beta1, depth),
        inner_product(z1, beta1, z2, beta2, depth),
        self_inner_product(z2, beta2, depth),
    )


def stack_self_products(zs, betas, channels, depth=DEFAULT_DEPTH, batch_size=8):
    """<S_m, S_m> for a stack zs (M, K, C*S*S), betas (M, K) -> (M,). Zero-weight padding is inert.

    Mapped batch_size specifications at a time (memory batch_size * K^2 * S^2 entries).
    """

    def one(args):
        zm, bm = args
        return self_inner_product(unflatten(zm, channels), bm, depth)

    return jax.lax.map(one, (zs, betas), batch_size=batch_size)


def stack_cross_products(z, beta, zs, betas, channels, depth=DEFAULT_DEPTH, block=8):
    """<user, S_m> for one RKME z (K, C, S, S), beta (K,) against a stack zs (M, K2, C*S*S) -> (M,).

    block specifications share one kernel call (K * block * K2 image pairs);
    M must be a multiple of block (pad with zero-weight specifications).
    """
    m, k2, d = zs.shape
    blocks = (zs.reshape(m // block, block * k2, d), betas.reshape(m // block, block, k2))

    def one_block(args):
        zb, bb = args
        kernel = nngp_kernel(z, unflatten(zb, channels), depth)  # (K, block * K2)
        return jnp.sum((beta @ kernel.astype(beta.dtype)).reshape(block, k2) * bb, axis=1)

    return jax.lax.map(one_block, blocks).reshape(m)


def mmd2_to_stack(z, beta, zs, betas, selfs, channels, depth=DEFAULT_DEPTH, block=8):
    """MMD^2 from one RKME z (K, C, S, S), beta (K,) to each spec of a stack -> (M,).

    zs (M, K2, C*S*S), betas (M, K2) zero-padded, selfs (M,) = <S_m, S_m>
    (stack_self_products, computed once per stack).
    """
    own = self_inner_product(z, beta, depth)
    cross = stack_cross_products(z, beta, zs, betas, channels, depth, block)
    return mmd2_from_products(own, cross, selfs)


def data_mean_embedding(z, x, x_weights, depth=DEFAULT_DEPTH, block=64):
    """c_i = sum_j a_j k(z_i, x_j) for z (K, C, S, S), x (n, C, S, S), a (n,) -> (K,).

    x is processed block images at a time (n a multiple of block); each
    block is rematerialised under differentiation, so memory stays at a few
    K * block * S^2 entries whatever n is, also for the gradient in z.
    """
    n = x.shape[0]
    blocks = (x.reshape((n // block, block) + x.shape[1:]), x_weights.reshape(n // block, block))

    @jax.checkpoint
    def one_block(args):
        xb, ab = args
        return nngp_kernel(z, xb, depth).astype(ab.dtype) @ ab

    return jnp.sum(jax.lax.map(one_block, blocks), axis=0)


def fit_objective(z, beta, x, x_weights, depth=DEFAULT_DEPTH, block=64):
    """||RKME - empirical KME||^2 less the data's own term: b^T k(z,z) b - 2 b^T k(z,x) a -> scalar."""
    return mmd2_from_products(
        self_inner_product(z, beta, depth), beta @ data_mean_embedding(z, x, x_weights, depth, block), 0.0
    )


def data_self_product(x, x_weights, depth=DEFAULT_DEPTH, block=64):
    """a^T k(x, x) a for x (n, C, S, S), a (n,), n a multiple of block -> scalar (n^2 image pairs)."""
    n = x.shape[0]
    blocks = (x.reshape((n // block, block) + x.shape[1:]), x_weights.reshape(n // block, block))
    return jnp.sum(jax.lax.map(lambda args: args[1] @ data_mean_embedding(args[0], x, x_weights, depth, block), blocks))


def approximation_error(z, beta, x, x_weights, depth=DEFAULT_DEPTH, block=64):
    """||sum_j beta_j k(z_j, .) - sum_i a_i k(x_i, .)||^2, the fit's objective, in full -> scalar."""
    return fit_objective(z, beta, x, x_weights, depth, block) + data_self_product(x, x_weights, depth, block)


def herd(key, z, beta, n_samples, n_candidates, spread, depth=DEFAULT_DEPTH):
    """Kernel herding under the NNGP kernel: n_samples images whose mean embedding tracks (z, beta).

    Candidates (n_candidates, C, S, S) are z_j + spread * N(0, I) with j drawn
    by beta; step t picks the candidate x maximising
    (t + 1) f(x) - sum_{s < t} k(x_s, x), f(x) = sum_j beta_j k(z_j, x),
    updating the running sum with one kernel row per step
    (n_samples * n_candidates image pairs in all). -> (n_samples, C, S, S)
    """
    k = z.shape[0]
    key_assign, key_noise = jax.random.split(key)
    weights = jnp.maximum(beta, 0.0)
    assign = jax.random.choice(key_assign, k, shape=(n_candidates,), p=weights / jnp.sum(weights))
    candidates = z[assign] + spread * jax.random.normal(key_noise, (n_candidates,) + z.shape[1:], dtype=z.dtype)
    f = weights @ nngp_kernel(z, candidates, depth).astype(weights.dtype)

    def body(t, state):
        samples, running = state
        chosen = candidates[jnp.argmax((t + 1) * f - running)]
        running = running + nngp_kernel(chosen[None], candidates, depth)[0].astype(running.dtype)
        return samples.at[t].set(chosen), running

    samples = jnp.zeros((n_samples,) + z.shape[1:], dtype=z.dtype)
    samples, _ = jax.lax.fori_loop(0, n_samples, body, (samples, jnp.zeros(n_candidates, dtype=f.dtype)))
    return samples
