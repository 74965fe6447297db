"""A market's stack over every JAX device present: MMD^2 and sketch distances sharded along M.

The stack's rows (learnwares) are split over a one-axis ``jax.sharding.Mesh``
of all devices (axis "m"; ``NamedSharding(mesh, P("m"))``): each device
computes its share of a block of rows, the user's RKME or sketch is
replicated. The host array (an np.memmap works) is streamed ``block`` rows at
a time, each block padded to a fixed size that is a multiple of the device
count (one compiled program for every M; padded rows have zero weight and
are dropped), and at most two blocks are in flight, so host memory stays at a
few blocks whatever M is: the (M, K, d) stack is never copied whole.

On one device this is the same computation as the single-device search;
with XLA_FLAGS=--xla_force_host_platform_device_count=N a CPU shows N
devices, which is how tests/test_sharding.py checks it.

Formulas (kernel k(x, y) = exp(-gamma ||x - y||^2), as in ``kernels``):

    <u, S_m>  = sum_{a, j} beta_u[a] betas[m, j] exp(min(2 gamma u_a . z_mj - gamma |u_a|^2 - gamma |z_mj|^2, 0))
    MMD^2_m   = <u, u> - 2 <u, S_m> + <S_m, S_m>                (kernels.mmd2_from_products)
    sketch distance_m = ||s_m - u||^2 = |s_m|^2 - 2 s_m . u + |u|^2   (search.sketch)

Accuracy: with dtype="float64" (the default) every result equals a NumPy
float64 evaluation of the same formula to ~1e-12 absolute (MMD^2 values are
O(1); tests/test_sharding.py checks 1e-12 on 4 devices); dtype="float32" is
the search stack's precision (within 1e-5 there, ~1e-7 typical), for speed
on CPUs, where XLA's float64 exp is several times slower.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from learnware_cli.rkme import _jax_setup  # noqa: F401  (float64 and the compile cache, configured once)
from learnware_cli.rkme import kernels

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "m"
MMD_BLOCK = 1024  # specs per streamed block (rounded up to a multiple of the device count)
SKETCH_BLOCK = 65536  # sketch rows per streamed block


def row_mesh(devices=None) -> Mesh:
    """A one-axis mesh ("m") over ``devices`` (default: every device of the default backend)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (AXIS,))


def _block_rows(block: int, mesh: Mesh) -> int:
    """block rounded up to a positive multiple of the mesh's device count."""
    n_dev = mesh.devices.size
    return max(n_dev, int(math.ceil(max(int(block), 1) / n_dev)) * n_dev)


def _cross_block(zb, bb, user_z, user_beta, gamma):
    """<u, S_b> for one block: user (Ku, d), (Ku,); zb (B, K, d), bb (B, K) -> (B,)."""
    user_term = gamma * jnp.sum(user_z * user_z, axis=1)  # (Ku,)
    own_term = gamma * jnp.sum(zb * zb, axis=2)  # (B, K)
    exponent = (2.0 * gamma) * jnp.einsum("ad,bkd->bak", user_z, zb) - user_term[None, :, None] - own_term[:, None, :]
    return jnp.einsum("a,bak,bk->b", user_beta, jnp.exp(jnp.minimum(exponent, 0.0)), bb)


def _self_block(zb, bb, gamma):
    """<S_b, S_b> for one block: zb (B, K, d), bb (B, K) -> (B,)."""
    norms = gamma * jnp.sum(zb * zb, axis=2)  # (B, K)
    exponent = (2.0 * gamma) * jnp.einsum("bjd,bkd->bjk", zb, zb) - norms[:, :, None] - norms[:, None, :]
    return jnp.einsum("bj,bjk,bk->b", bb, jnp.exp(jnp.minimum(exponent, 0.0)), bb)


def _sketch_block(sb, norms, user, user_norm):
    """||s_b - u||^2 for one block: sb (B, D), norms (B,) = |s_b|^2, user (D,) -> (B,)."""
    return norms - 2.0 * (sb @ user) + user_norm


_CROSS = jax.jit(_cross_block)
_SELF = jax.jit(_self_block)
_SKETCH = jax.jit(_sketch_block)


def _stream(mesh: Mesh, program, m: int, block: int, host_blocks, replicated_args=(), out_dtype=np.float64) -> np.ndarray:
    """Run program(*row_args, *replicated_args) over blocks of rows -> (m,) results.

    host_blocks(start, stop, rows) -> tuple of host arrays with ``rows`` leading
    rows (zero-padded past stop - start). At most two blocks are in flight.
    """
    rows_sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    replicated = NamedSharding(mesh, PartitionSpec())
    fixed = tuple(jax.device_put(a, replicated) for a in replicated_args)
    out = np.empty(m, dtype=out_dtype)
    pending = None
    for start in range(0, m, block):
        stop = min(start + block, m)
        args = tuple(jax.device_put(a, rows_sharding) for a in host_blocks(start, stop, block))
        result = program(*args, *fixed)
        if pending is not None:
            p_start, p_stop, p_result = pending
            out[p_start:p_stop] = np.asarray(p_result)[: p_stop - p_start]
        pending = (start, stop, result)
    if pending is not None:
        p_start, p_stop, p_result = pending
        out[p_start:p_stop] = np.asarray(p_result)[: p_stop - p_start]
    return out


def _stack_blocks(zs, betas, dtype):
    """host_blocks for a stack zs (M, K, d), betas (M, K): copies of one block only, zero-padded."""

    def blocks(start, stop, rows):
        zb = np.zeros((rows,) + tuple(zs.shape[1:]), dtype=dtype)
        bb = np.zeros((rows, betas.shape[1]), dtype=dtype)
        zb[: stop - start] = zs[start:stop]
        bb[: stop - start] = betas[start:stop]
        return zb, bb

    return blocks


def self_products_sharded(zs, betas, gamma: float, block: int = MMD_BLOCK, dtype: str = "float64", mesh: Optional[Mesh] = None) -> np.ndarray:
    """<S_m, S_m> = betas[m]^T k(zs[m], zs[m]) betas[m] for a stack zs (M, K, d), betas (M, K) -> float64 (M,), sharded."""
    mesh = row_mesh() if mesh is None else mesh
    rows = _block_rows(block, mesh)
    gamma_arg = np.asarray(gamma, dtype=dtype)
    return _stream(mesh, _SELF, zs.shape[0], rows, _stack_blocks(zs, betas, dtype), replicated_args=(gamma_arg,))


def mmd2_to_stack_sharded(
    user_z,
    user_beta,
    gamma: float,
    zs,
    betas,
    self_products=None,
    block: int = MMD_BLOCK,
    dtype: str = "float64",
    mesh: Optional[Mesh] = None,
) -> np.ndarray:
    """MMD^2 from one RKME user_z (Ku, d), user_beta (Ku,) to every spec of zs (M, K, d), betas (M, K) -> float64 (M,).

    zs, betas: host arrays (np.memmap welcome; zero weights are padding),
    streamed ``block`` specs at a time and split over the mesh's devices
    (default: all of them). self_products (M,) = <S_m, S_m> as the search
    cache stores them (float64); None computes them here too (sharded, in
    ``dtype``). <u, u> is computed in float64. MMD^2 =
    kernels.mmd2_from_products(<u,u>, <u,S_m>, <S_m,S_m>), not clipped at 0.
    """
    mesh = row_mesh() if mesh is None else mesh
    m = zs.shape[0]
    user_z = np.asarray(user_z, dtype=np.float64)
    user_beta = np.asarray(user_beta, dtype=np.float64)
    if user_z.ndim != 2 or zs.ndim != 3 or user_z.shape[1] != zs.shape[2]:
        raise ValueError(f"user z of shape {user_z.shape} does not fit a stack of shape {zs.shape}")
    rows = _block_rows(block, mesh)
    cross = _stream(
        mesh,
        _CROSS,
        m,
        rows,
        _stack_blocks(zs, betas, dtype),
        replicated_args=(user_z.astype(dtype), user_beta.astype(dtype), np.asarray(gamma, dtype=dtype)),
    )
    if self_products is None:
        self_products = self_products_sharded(zs, betas, gamma, block=block, dtype=dtype, mesh=mesh)
    own = float(jax.jit(kernels.inner_product)(user_z, user_beta, user_z, user_beta, gamma))
    return kernels.mmd2_from_products(own, cross, np.asarray(self_products, dtype=np.float64))


def sketch_distances_sharded(
    sketches,
    user,
    sq_norms=None,
    block: int = SKETCH_BLOCK,
    dtype: str = "float32",
    mesh: Optional[Mesh] = None,
) -> np.ndarray:
    """||s_m - u||^2 for sketches (M, D) (a host array or memmap, split along M over the mesh) and user (D,) -> float64 (M,).

    sq_norms (M,) = |s_m|^2 if precomputed (search.sketch.squared_norms),
    else computed from each block in float64 on the host. dtype: the
    precision of the matrix product (float32: the sketches' own precision,
    |error| <= ~1e-6 |s_m| |u|; float64: equal to NumPy float64 to ~1e-15).
    Pick the n nearest with search.sketch.smallest(distances, n, rows).
    """
    mesh = row_mesh() if mesh is None else mesh
    m, d = sketches.shape
    user = np.asarray(user, dtype=np.float64).reshape(-1)
    if user.shape[0] != d:
        raise ValueError(f"sketches of length {d} and a user sketch of length {user.shape[0]}")
    rows = _block_rows(block, mesh)

    def blocks(start, stop, count):
        sb = np.zeros((count, d), dtype=dtype)
        sb[: stop - start] = sketches[start:stop]
        norms = np.zeros(count, dtype=np.float64)
        if sq_norms is None:
            norms[: stop - start] = np.einsum("ij,ij->i", sb[: stop - start], sb[: stop - start], dtype=np.float64)
        else:
            norms[: stop - start] = sq_norms[start:stop]
        return sb, norms

    user_arg = user.astype(dtype)
    return _stream(mesh, _SKETCH, m, rows, blocks, replicated_args=(user_arg, np.asarray(float(user @ user))))
