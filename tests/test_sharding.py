"""The sharded exact stage (rkme.sharded) on 4 forced host devices, against NumPy float64.

Each check runs in one subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=4 and JAX_PLATFORMS=cpu
(the flag must be set before JAX starts, so it cannot run in pytest's own
process); the subprocess prints one JSON document that the tests read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    r"""
    import json, sys, tempfile, tracemalloc
    from pathlib import Path
    import numpy as np
    import jax
    from learnware_cli.rkme import sharded

    def numpy_mmd2(uz, ub, zs, betas, gamma):
        def gram(a, b):
            return np.exp(-gamma * ((a[..., :, None, :] - b[..., None, :, :]) ** 2).sum(-1))
        own = ub @ gram(uz, uz) @ ub
        cross = np.einsum("a,mak,mk->m", ub, gram(uz[None], zs), betas)
        selfs = np.einsum("mj,mjk,mk->m", betas, gram(zs, zs), betas)
        return own - 2 * cross + selfs, selfs

    out = {"devices": jax.device_count(), "platform": jax.devices()[0].platform}
    rng = np.random.default_rng(0)
    m, k, d, gamma = 4001, 12, 5, 0.3          # M not a multiple of the block nor of 4
    zs64 = rng.normal(size=(m, 1, d)) * 1.5 + rng.normal(size=(m, k, d))
    betas64 = rng.uniform(size=(m, k))
    betas64[::3, -4:] = 0.0                    # padded specs
    betas64 /= betas64.sum(axis=1, keepdims=True)
    uz, ub = rng.normal(size=(9, d)), rng.dirichlet(np.ones(9))
    reference, selfs = numpy_mmd2(uz, ub, zs64, betas64, gamma)

    tmp = Path(tempfile.mkdtemp())
    zs = np.lib.format.open_memmap(tmp / "zs.npy", mode="w+", dtype=np.float64, shape=zs64.shape)
    zs[:] = zs64
    betas = np.lib.format.open_memmap(tmp / "betas.npy", mode="w+", dtype=np.float64, shape=betas64.shape)
    betas[:] = betas64
    zs.flush(); betas.flush()
    zs, betas = np.load(tmp / "zs.npy", mmap_mode="r"), np.load(tmp / "betas.npy", mmap_mode="r")

    # the rows really are split over the 4 devices
    mesh = sharded.row_mesh()
    rows = jax.device_put(np.asarray(zs[:64]), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sharded.AXIS)))
    result = sharded._CROSS(rows, jax.device_put(np.asarray(betas[:64]), rows.sharding), uz, ub, gamma)
    out["input_shards"] = sorted(tuple(s.data.shape) for s in rows.addressable_shards)
    out["result_devices"] = len(result.sharding.device_set)
    out["result_shards"] = sorted(tuple(s.data.shape) for s in result.addressable_shards)

    sharded.mmd2_to_stack_sharded(uz, ub, gamma, zs, betas, block=64)  # compile
    tracemalloc.start()
    got = sharded.mmd2_to_stack_sharded(uz, ub, gamma, zs, betas, block=64)
    out["peak_host_bytes"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out["stack_bytes"] = int(zs64.nbytes)
    out["mmd_f64_err"] = float(np.max(np.abs(got - reference)))
    out["mmd_given_selfs_err"] = float(np.max(np.abs(sharded.mmd2_to_stack_sharded(uz, ub, gamma, zs, betas, self_products=selfs, block=100) - reference)))
    out["mmd_f32_err"] = float(np.max(np.abs(sharded.mmd2_to_stack_sharded(uz, ub, gamma, zs, betas, block=64, dtype="float32") - reference)))
    out["selfs_err"] = float(np.max(np.abs(sharded.self_products_sharded(zs, betas, gamma, block=128) - selfs)))
    out["mmd_range"] = [float(reference.min()), float(reference.max())]

    sketches = rng.normal(size=(5003, 48)).astype(np.float32) * 0.1
    user = rng.normal(size=48) * 0.1
    exact = ((sketches.astype(np.float64) - user) ** 2).sum(axis=1)
    out["sketch_f32_err"] = float(np.max(np.abs(sharded.sketch_distances_sharded(sketches, user, block=1000) - exact)))
    norms = (sketches.astype(np.float64) ** 2).sum(axis=1)
    out["sketch_f64_err"] = float(np.max(np.abs(sharded.sketch_distances_sharded(sketches, user, sq_norms=norms, block=999, dtype="float64") - exact)))
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_devices_and_rows_split_over_them(four_devices):
    assert four_devices["devices"] == 4 and four_devices["platform"] == "cpu"
    assert four_devices["input_shards"] == [[16, 12, 5]] * 4
    assert four_devices["result_devices"] == 4
    assert four_devices["result_shards"] == [[16]] * 4


def test_sharded_mmd2_equals_numpy_float64(four_devices):
    """float64: within 1e-12 of NumPy float64 (MMD^2 here is O(0.1-1)); float32: within 1e-5."""
    assert four_devices["mmd_f64_err"] <= 1e-12
    assert four_devices["mmd_given_selfs_err"] <= 1e-12
    assert four_devices["selfs_err"] <= 1e-12
    assert four_devices["mmd_f32_err"] <= 1e-5
    assert four_devices["mmd_range"][1] > 0.05


def test_streaming_keeps_host_memory_bounded(four_devices):
    """A 4001-spec memmapped stack streamed 64 specs at a time: NumPy allocations stay far below one copy of it.

    What is left is a few blocks (64 x 12 x 5 floats each) and the (M,) float64 results (cross, self products, MMD^2).
    """
    assert four_devices["peak_host_bytes"] < four_devices["stack_bytes"] / 4


def test_sharded_sketch_distances(four_devices):
    assert four_devices["sketch_f32_err"] <= 1e-6
    assert four_devices["sketch_f64_err"] <= 1e-12


def test_one_device_agrees_with_the_search_stack():
    """In pytest's own process (one device unless XLA_FLAGS says otherwise): the same numbers as SpecStack's path."""
    from learnware_cli.rkme import sharded
    from learnware_cli.rkme.spec import RKMESpec, SpecStack, mmd2_to_many

    rng = np.random.default_rng(1)
    zs = rng.normal(size=(130, 1, 4)) + rng.normal(size=(130, 10, 4))
    betas = rng.dirichlet(np.ones(10), size=130)
    user = RKMESpec(z=rng.normal(size=(7, 4)), beta=np.full(7, 1 / 7), gamma=0.25)
    stack = SpecStack.from_arrays(zs, betas, 0.25, dtype="float64")
    got = sharded.mmd2_to_stack_sharded(user.z, user.beta, 0.25, zs, betas, self_products=stack.self_products[:130], block=50)
    np.testing.assert_allclose(got, mmd2_to_many(user, stack), rtol=0, atol=1e-12)
