"""Random-feature sketches (search.sketch): accuracy, determinism, nearest(), memmaps, and recall of the two-stage search."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learnware_cli.search import sketch


def _spec(rng, center, k=60, spread=1.0):
    beta = rng.uniform(size=k)
    return center + spread * rng.normal(size=(k, center.shape[0])), beta / beta.sum()


def _kernel(a, b, gamma):
    return np.exp(-gamma * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _mmd2(u, s, gamma):
    (zu, bu), (zs, bs) = u, s
    return bu @ _kernel(zu, zu, gamma) @ bu - 2 * bu @ _kernel(zu, zs, gamma) @ bs + bs @ _kernel(zs, zs, gamma) @ bs


def test_frequencies_are_deterministic_and_scaled_by_gamma():
    a = sketch.frequencies(7, 0.1, 64, seed=3)
    assert a.shape == (32, 7) and a.dtype == np.float64
    assert np.array_equal(a, sketch.frequencies(7, 0.1, 64, seed=3))
    assert not np.array_equal(a, sketch.frequencies(7, 0.1, 64, seed=4))
    np.testing.assert_allclose(sketch.frequencies(7, 0.4, 64, seed=3), 2.0 * a, rtol=1e-15)  # sqrt(2 gamma) scaling
    orth = sketch.frequencies(7, 0.5, 64, seed=3, orthogonal=True)  # gamma 0.5: rows are g with |g| ~ chi(7)
    assert np.array_equal(orth, sketch.frequencies(7, 0.5, 64, seed=3, orthogonal=True))
    block = orth[:7] / np.linalg.norm(orth[:7], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(7), atol=1e-12)  # each block of d rows is orthogonal
    for bad in (0, 63):
        with pytest.raises(ValueError):
            sketch.frequencies(7, 0.1, bad)
    with pytest.raises(ValueError):
        sketch.frequencies(7, 0.0, 64)


@pytest.mark.parametrize("n_features", [256, 1024])
def test_sketch_distance_estimates_mmd2(n_features):
    """||s_u - s_l||^2 estimates MMD^2 with relative error ~ 1.6 / sqrt(D) (rms; measured over 30 seeds at d = 20).

    Checked with a fixed seed on 12 pairs, from near-identical to disjoint:
    rms relative error <= 3 / sqrt(D), every pair <= 6 / sqrt(D), and the
    inner product s_u . s_l within 6 / sqrt(D) * sqrt(<u,u> <l,l>) of <u,l>.
    """
    rng = np.random.default_rng(0)
    d, gamma = 20, 0.1
    omega = sketch.frequencies(d, gamma, n_features, seed=0)
    errors = []
    for i in range(12):
        center = rng.normal(size=d) * 3
        u = _spec(rng, center)
        other = _spec(rng, center + rng.normal(size=d) * 0.5 * (i % 4))
        su, sl = sketch.sketch_one(*u, omega), sketch.sketch_one(*other, omega)
        exact = _mmd2(u, other, gamma)
        errors.append(abs(float(((su - sl) ** 2).sum()) - exact) / exact)
        uu, ll = u[1] @ _kernel(u[0], u[0], gamma) @ u[1], other[1] @ _kernel(other[0], other[0], gamma) @ other[1]
        cross = u[1] @ _kernel(u[0], other[0], gamma) @ other[1]
        assert abs(float(su @ sl) - cross) <= 6 / math.sqrt(n_features) * math.sqrt(uu * ll)
        assert float(su @ su) == pytest.approx(uu, rel=6 / math.sqrt(n_features))
    assert math.sqrt(np.mean(np.square(errors))) <= 3 / math.sqrt(n_features)
    assert max(errors) <= 6 / math.sqrt(n_features)


def test_sketch_of_a_point_has_unit_norm_and_the_stack_matches_sketch_one():
    rng = np.random.default_rng(1)
    omega = sketch.frequencies(5, 0.2, 128)
    point = sketch.sketch_one(rng.normal(size=(1, 5)), np.ones(1), omega)
    assert float(point @ point) == pytest.approx(1.0, abs=1e-12)  # cos^2 + sin^2: k(x, x) = 1 exactly
    zs = rng.normal(size=(70, 9, 5)) + 1e4  # a large offset: float32 phases would lose it without centring
    betas = rng.uniform(size=(70, 9))
    betas[:, 7:] = 0.0  # padding
    betas /= betas.sum(axis=1, keepdims=True)
    zs32 = zs.astype(np.float32)
    stacked = sketch.sketch_stack(zs32, betas.astype(np.float32), omega, block=16)
    assert stacked.shape == (70, 128) and stacked.dtype == np.float32
    single = np.stack([sketch.sketch_one(zs32[m].astype(np.float64), betas[m].astype(np.float32), omega) for m in range(70)])
    assert np.max(np.abs(stacked - single)) <= 1e-6 * np.max(np.abs(single)) * 10
    padded = sketch.sketch_one(zs32[0, :7].astype(np.float64), betas[0, :7].astype(np.float32), omega)
    np.testing.assert_allclose(single[0], padded, atol=1e-12)


def test_nearest_equals_brute_force():
    rng = np.random.default_rng(2)
    sketches = rng.normal(size=(500, 16)).astype(np.float32)
    user = rng.normal(size=16)
    brute = np.argsort(((sketches.astype(np.float64) - user.astype(np.float32)) ** 2).sum(axis=1), kind="stable")
    for block in (37, 500, 4096):
        np.testing.assert_array_equal(sketch.nearest(sketches, user, 10, block=block), brute[:10])
    norms = sketch.squared_norms(sketches, block=64)
    np.testing.assert_array_equal(sketch.nearest(sketches, user, 25, sq_norms=norms, block=50), brute[:25])
    rows = np.sort(rng.choice(500, size=120, replace=False))
    in_rows = [r for r in brute if r in set(rows.tolist())]
    np.testing.assert_array_equal(sketch.nearest(sketches, user, 7, rows=rows, block=33), in_rows[:7])
    assert len(sketch.nearest(sketches, user, 1000)) == 500
    assert sketch.nearest(sketches, user, 5, rows=np.zeros(0, dtype=int)).size == 0


def test_candidates_add_the_smallest_self_products():
    rng = np.random.default_rng(3)
    sketches = rng.normal(size=(300, 8)).astype(np.float32)
    selfs = rng.uniform(size=300)
    user = rng.normal(size=8)
    found = sketch.candidates(sketches, user, selfs, n=20, n_self=30)
    near = sketch.nearest(sketches, user, 20)
    np.testing.assert_array_equal(found[:20], near)
    assert len(set(found.tolist())) == len(found)
    assert set(np.argsort(selfs)[:30].tolist()) <= set(found.tolist())
    rows = np.arange(0, 300, 3)
    restricted = sketch.candidates(sketches, user, selfs, n=10, n_self=10, rows=rows)
    assert set(restricted.tolist()) <= set(rows.tolist())
    assert set(rows[np.argsort(selfs[rows])[:10]].tolist()) <= set(restricted.tolist())
    np.testing.assert_array_equal(sketch.smallest(np.array([3.0, 1.0, 2.0, 1.0]), 3), [1, 3, 2])


def test_recall_helpers():
    assert sketch.recall_at_k([1, 2, 3, 4, 5], [5, 4, 3, 9, 8], 5) == pytest.approx(0.6)
    assert sketch.candidate_recall([1, 2, 3, 4, 5, 6], [9, 1, 2, 3, 4, 5], 5) == 1.0
    assert sketch.candidate_recall([1, 2], [2], 5) == 0.5


def test_memmapped_inputs(tmp_path):
    rng = np.random.default_rng(4)
    m, k, d = 300, 12, 6
    zs = np.lib.format.open_memmap(tmp_path / "zs.npy", mode="w+", dtype=np.float32, shape=(m, k, d))
    zs[:] = rng.normal(size=(m, k, d))
    betas = np.lib.format.open_memmap(tmp_path / "betas.npy", mode="w+", dtype=np.float32, shape=(m, k))
    betas[:] = 1.0 / k
    zs.flush(), betas.flush()
    zs, betas = np.load(tmp_path / "zs.npy", mmap_mode="r"), np.load(tmp_path / "betas.npy", mmap_mode="r")
    omega = sketch.frequencies(d, 0.3, 64)
    out = np.lib.format.open_memmap(tmp_path / "sk.npy", mode="w+", dtype=np.float32, shape=(m, 64))
    sketch.sketch_stack(zs, betas, omega, block=50, out=out)
    out.flush()
    mapped = np.load(tmp_path / "sk.npy", mmap_mode="r")
    in_memory = sketch.sketch_stack(np.asarray(zs), np.asarray(betas), omega)
    np.testing.assert_array_equal(np.asarray(mapped), in_memory)
    user = sketch.sketch_one(rng.normal(size=(k, d)), np.full(k, 1.0 / k), omega)
    np.testing.assert_array_equal(sketch.nearest(mapped, user, 12, block=64), sketch.nearest(in_memory, user, 12))
    np.testing.assert_allclose(sketch.squared_norms(mapped, block=7), (in_memory.astype(np.float64) ** 2).sum(axis=1), rtol=1e-6)


@pytest.mark.parametrize("kind", ["close", "separated"])
def test_two_stage_recall_at_5_with_the_defaults(kind):
    """candidates() with the default D and n recovers the exact top 5 on 2 000-learnware markets (bench_sketch's)."""
    from learnware_cli.bench_sketch import SyntheticMarket, measure_recall

    found = measure_recall(SyntheticMarket(kind, 2000, seed=5), 40, features=(sketch.DEFAULT_FEATURES,), candidates=(sketch.DEFAULT_CANDIDATES,))
    recall, _ = found["recall"][("sketch+selfs", sketch.DEFAULT_FEATURES, sketch.DEFAULT_CANDIDATES, 5)]
    assert recall >= 0.99
