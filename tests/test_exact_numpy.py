"""search.exact_numpy: the NumPy float64 port of the exact re-scoring and the closest mixture.

The two-stage search of a large island scores its candidates and picks its
mixture with these functions so that a cold `lw search` never imports JAX.
They must give what the JAX programs give: MMD^2 and products to rounding,
the simplex QP's weights, and the same mixture members with weights within
1e-6, on random pools and on the hub market of tests/test_mixture.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from learnware_cli.search import exact_numpy

# --------------------------------------------------------------------------- helpers


def _spec_arrays(rng, count, k, d, centers, spread=1.0, pad=True):
    """zs (count, k, d), betas (count, k): clusters around centers, some with zero-weight padding."""
    zs = centers[:, None, :] + spread * rng.normal(size=(count, k, d))
    betas = rng.uniform(0.1, 1.0, size=(count, k))
    if pad:
        for i in range(count):
            used = int(rng.integers(max(1, k // 2), k + 1))
            betas[i, used:] = 0.0
            zs[i, used:] = 0.0
    return zs, betas / betas.sum(axis=1, keepdims=True)


POOL_SHAPES = ((24, 5),)  # (K, d): one shape, since each shape is 8 more JAX programs to trace for the comparison


def _random_pool(seed):
    """A pool ordered best single first and a user that mixes a few of its members, as a search hands to find_mixture.

    K and d come from POOL_SHAPES; the pool size P (3 to 32), gamma, the spread, the
    zero-weight padding and the user's mixture vary with the seed.
    """
    rng = np.random.default_rng(seed)
    k, d = POOL_SHAPES[seed % len(POOL_SHAPES)]
    p = int(rng.integers(3, 33))
    gamma = float(rng.choice([0.05, 0.1, 0.3]))
    centers = rng.normal(size=(p, d)) * float(rng.uniform(1.0, 3.0))
    zs, betas = _spec_arrays(rng, p, k, d, centers)
    parts = rng.choice(p, size=min(p, int(rng.integers(1, 4))), replace=False)
    share = rng.dirichlet(np.ones(len(parts)))
    counts = np.maximum(1, np.round(share * k)).astype(int)
    user_z = np.concatenate([centers[j] + rng.normal(size=(c, d)) for j, c in zip(parts, counts)])
    user_beta = rng.uniform(0.5, 1.0, size=len(user_z))
    user_beta /= user_beta.sum()
    mmd, _ = exact_numpy.mmd2_to_specs(user_z, user_beta, zs, betas, gamma)
    order = np.argsort(mmd, kind="stable")
    return user_z, user_beta, zs[order], betas[order], gamma


def _jax_mixture(user_z, user_beta, zs, betas, gamma, max_size, method):
    from learnware_cli.rkme.spec import RKMESpec
    from learnware_cli.search.statistical import find_mixture

    return find_mixture(RKMESpec(z=user_z, beta=user_beta, gamma=gamma), zs, betas, max_size=max_size, method=method)


def _numpy_mixture(user_z, user_beta, zs, betas, gamma, max_size, method):
    return exact_numpy.find_mixture(user_z, user_beta, zs, betas, gamma, max_size=max_size, method=method)


def _assert_same_mixture(a, b, label):
    assert a.members == b.members, (label, a.members, b.members, a.weights, b.weights)
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-6, err_msg=str(label))
    assert a.mmd2 == pytest.approx(b.mmd2, rel=1e-6, abs=1e-12), label
    assert a.score == pytest.approx(b.score, abs=1e-6), label


# --------------------------------------------------------------------------- products


def test_mmd2_to_specs_matches_the_jax_program_with_padding_and_blocks():
    from learnware_cli.rkme import kernels

    rng = np.random.default_rng(0)
    d, k = 6, 20
    zs, betas = _spec_arrays(rng, 150, k, d, rng.normal(size=(150, d)) * 2)
    user_z = rng.normal(size=(13, d))
    user_beta = rng.dirichlet(np.ones(13))
    expected_mmd, expected_selfs = (np.asarray(a) for a in kernels.mmd2_to_specs(user_z, user_beta, zs, betas, 0.2))
    for block in (1, 7, 64, 1000):
        mmd, selfs = exact_numpy.mmd2_to_specs(user_z, user_beta, zs, betas, 0.2, block=block)
        np.testing.assert_allclose(mmd, expected_mmd, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(selfs, expected_selfs, rtol=1e-10, atol=1e-13)
    own = exact_numpy.inner_product(user_z, user_beta, user_z, user_beta, 0.2)
    assert own == pytest.approx(float(kernels.inner_product(user_z, user_beta, user_z, user_beta, 0.2)), rel=1e-12)
    assert np.all(mmd >= -1e-12)


def test_gram_and_cross_match_the_jax_program():
    from learnware_cli.rkme import kernels

    rng = np.random.default_rng(1)
    d, k = 4, 15
    zs, betas = _spec_arrays(rng, 11, k, d, rng.normal(size=(11, d)))
    user_z, user_beta = rng.normal(size=(9, d)), rng.dirichlet(np.ones(9))
    gram, cross = exact_numpy.gram_and_cross(user_z, user_beta, zs, betas, 0.3)
    expected_gram, expected_cross = (np.asarray(a) for a in kernels.gram_and_cross(user_z, user_beta, zs, betas, 0.3))
    np.testing.assert_allclose(gram, expected_gram, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(cross, expected_cross, rtol=1e-10, atol=1e-14)
    assert np.array_equal(gram, gram.T)
    w = rng.dirichlet(np.ones(11))
    own = exact_numpy.inner_product(user_z, user_beta, user_z, user_beta, 0.3)
    assert exact_numpy.mixture_mmd2(own, gram, cross, w) == pytest.approx(float(kernels.mixture_mmd2(own, expected_gram, expected_cross, w)), rel=1e-10)


# --------------------------------------------------------------------------- the simplex QP


@pytest.mark.parametrize("seed", range(12))
def test_simplex_qp_matches_the_jax_solver_and_is_optimal(seed):
    from learnware_cli.rkme import kernels

    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 33)), int(rng.integers(2, 6))
    z = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0)
    gamma = float(rng.uniform(0.05, 0.5))
    q = exact_numpy.gaussian_kernel(z, z, gamma)
    c = exact_numpy.gaussian_kernel(z, rng.normal(size=(100, d)), gamma).mean(axis=1)
    w = exact_numpy.solve_simplex_qp(q, c)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(w, np.asarray(kernels.solve_simplex_qp(q, c)), atol=1e-7)
    grad = q @ w - c  # KKT: equal and minimal on the support
    support = w > 1e-8
    assert np.allclose(grad[support], grad[support].mean(), atol=1e-7)
    assert grad.min() >= grad[support].mean() - 1e-7
    active = rng.random(n) < 0.6
    active[int(rng.integers(n))] = True
    masked = exact_numpy.solve_simplex_qp_masked(q, c, active)
    assert np.all(masked[~active] == 0.0)
    np.testing.assert_allclose(masked, np.asarray(kernels.solve_simplex_qp_masked(q, c, active)), atol=1e-7)


# --------------------------------------------------------------------------- the mixture: the same members, the same weights


@pytest.mark.parametrize("method", ["closest", "greedy"])
def test_mixture_matches_the_jax_path_on_random_pools(method):
    agree, worst = 0, 0.0
    seeds = range(60)
    for seed in seeds:
        pool = _random_pool(seed)
        for max_size in (2, 5):
            jax_found = _jax_mixture(*pool, max_size, method)
            numpy_found = _numpy_mixture(*pool, max_size, method)
            _assert_same_mixture(jax_found, numpy_found, (seed, max_size))
            worst = max(worst, float(np.max(np.abs(jax_found.weights - numpy_found.weights))))
            agree += 1
    assert agree == 2 * len(seeds) and worst < 1e-6


def test_mixture_matches_the_jax_path_on_the_hub_market():
    """The synthetic market of tests/test_mixture.py (regions plus hubs trained on 4 regions each), its users' pools."""
    from learnware_cli.experiment.synthetic import make_regions, sample_mixture
    from learnware_cli.rkme import fit_rkme

    dim, k, gamma, n_regions, n_hubs = 5, 30, 0.1, 16, 12
    regions = make_regions(n_regions, dim, seed=7, spread=2.0)
    rng = np.random.default_rng(0)
    specs = [fit_rkme(r.sample(600, rng), k=k, gamma=gamma, seed=i) for i, r in enumerate(regions)]
    for j in range(n_hubs):
        covered = rng.choice(n_regions, size=4, replace=False)
        x, _, _ = sample_mixture([regions[i] for i in covered], np.ones(4), 1200, rng)
        specs.append(fit_rkme(x, k=k, gamma=gamma, seed=100 + j))
    zs = np.stack([s.z for s in specs])
    betas = np.stack([s.beta for s in specs])
    for t in range(12):
        a, b = (int(v) for v in rng.choice(n_regions, 2, replace=False))
        x, _, _ = sample_mixture([regions[a], regions[b]], [0.6, 0.4], 1000, rng)
        user = fit_rkme(x, k=k, gamma=gamma, seed=t)
        mmd, _ = exact_numpy.mmd2_to_specs(user.z, user.beta, zs, betas, gamma)
        order = np.argsort(mmd, kind="stable")
        for method in ("closest", "greedy"):
            pool = (user.z, user.beta, zs[order], betas[order], gamma)
            jax_found = _jax_mixture(*pool, 5, method)
            numpy_found = _numpy_mixture(*pool, 5, method)
            _assert_same_mixture(jax_found, numpy_found, (t, method))
            if method == "closest":  # the two groups, as test_mixture checks of the JAX path
                chosen = {int(order[m]) for m in numpy_found.members}
                assert {a, b} <= chosen, (t, a, b, chosen)


def test_mixture_of_one_spec_and_unknown_method():
    rng = np.random.default_rng(5)
    zs, betas = _spec_arrays(rng, 1, 10, 3, np.zeros((1, 3)), pad=False)
    found = exact_numpy.find_mixture(zs[0], betas[0], zs, betas, 0.1, max_size=5)
    assert found.members == [0] and found.weights.tolist() == [1.0] and found.mmd2 == pytest.approx(0.0, abs=1e-12)
    assert found.score == pytest.approx(1.0)
    with pytest.raises(ValueError):
        exact_numpy.find_mixture(zs[0], betas[0], zs, betas, 0.1, max_size=5, method="best")


# --------------------------------------------------------------------------- the two-stage `lw search` never imports JAX


WRAPPER = textwrap.dedent(
    """
    import sys
    from learnware_cli.cli.app import main
    code = main(sys.argv[1:])
    sys.stderr.write("\\nLW-JAX-IMPORTED=%s\\n" % ("jax" in sys.modules))
    sys.exit(code)
    """
)


@pytest.fixture(scope="module")
def two_thousand(tmp_path_factory):
    """A market of 2 000 spec-only learnwares (K = 20, d = 8) and a user near learnware 42."""
    from learnware_cli.experiment.synthetic import spec_only_semantic, write_spec_only_learnwares
    from learnware_cli.market.store import Market
    from learnware_cli.rkme.spec import RKMESpec

    root = tmp_path_factory.mktemp("two_stage")
    market = Market.create(root / "market", gamma=0.1, k=20)
    rng = np.random.default_rng(3)
    count, k, d = 2000, 20, 8
    centers = rng.normal(size=(count, d)) * 2.5
    specs = []
    for i in range(count):
        beta = rng.uniform(size=k)
        specs.append(RKMESpec(z=centers[i] + rng.normal(size=(k, d)), beta=beta / beta.sum(), gamma=0.1, num_points=500))
    write_spec_only_learnwares(market, specs, [spec_only_semantic(f"lw {i}", d) for i in range(count)])
    near = specs[41]
    user = RKMESpec(z=near.z + rng.normal(size=near.z.shape) * 0.3, beta=near.beta, gamma=0.1)
    user_path = root / "user.json"
    user.save(user_path)
    return market.root, user_path


def test_two_stage_search_never_imports_jax_and_matches_the_exact_search(two_thousand, tmp_path, lw_json, monkeypatch):
    from learnware_cli.search import engine

    monkeypatch.setattr(engine, "NUMPY_EXACT_MAX", 0)  # the exact search below runs on the device, with JAX
    root, user_path = two_thousand
    staged = _cold_search_without_jax(tmp_path, root, user_path, {**os.environ, "LW_TWO_STAGE_FROM": "500"})
    assert staged["user"]["stage"]["method"] == "sketch"

    code, exact = lw_json("search", "--market", root, "--spec", user_path, "-k", "5", "--exact")
    assert code == 0 and exact["user"]["stage"]["method"] == "exact"
    assert [r["id"] for r in staged["single"]] == [r["id"] for r in exact["single"]]
    assert staged["single"][0]["id"] == "00000042"
    for a, b in zip(staged["single"], exact["single"]):
        assert a["mmd2"] == pytest.approx(b["mmd2"], rel=1e-9, abs=1e-12)
        assert a["score"] == b["score"]
    members = [(m["id"], m["weight"]) for m in staged["mixture"]["learnwares"]]
    expected = [(m["id"], m["weight"]) for m in exact["mixture"]["learnwares"]]
    assert [m for m, _ in members] == [m for m, _ in expected]
    np.testing.assert_allclose([w for _, w in members], [w for _, w in expected], atol=2e-6)
    assert staged["mixture"]["mmd2"] == pytest.approx(exact["mixture"]["mmd2"], rel=1e-6)


def _cold_search_without_jax(tmp_path, root, user_path, env: dict) -> dict:
    """`lw search --json` of root in a fresh process (env): asserts it succeeded without importing JAX, returns its JSON."""
    wrapper = tmp_path / "run_lw.py"
    wrapper.write_text(WRAPPER)
    done = subprocess.run(
        [sys.executable, str(wrapper), "search", "--market", str(root), "--spec", str(user_path), "-k", "5", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "LW-JAX-IMPORTED=False" in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_a_small_market_is_searched_exactly_without_jax(two_thousand, tmp_path, lw_json, monkeypatch):
    """Up to NUMPY_EXACT_MAX learnwares every MMD^2 is computed in NumPy float64: a cold `lw search` never starts
    JAX, and finds what the device's exact search finds."""
    from learnware_cli.search import engine

    root, user_path = two_thousand
    small = _cold_search_without_jax(tmp_path, root, user_path, {k: v for k, v in os.environ.items() if k != "LW_TWO_STAGE_FROM"})
    assert small["user"]["stage"]["method"] == "exact"
    monkeypatch.setattr(engine, "NUMPY_EXACT_MAX", 0)
    code, device = lw_json("search", "--market", root, "--spec", user_path, "-k", "5", "--exact")
    assert code == 0
    assert [r["id"] for r in small["single"]] == [r["id"] for r in device["single"]]
    for a, b in zip(small["single"], device["single"]):
        assert a["mmd2"] == pytest.approx(b["mmd2"], rel=1e-9, abs=1e-12)
    assert [m["id"] for m in small["mixture"]["learnwares"]] == [m["id"] for m in device["mixture"]["learnwares"]]


def test_two_stage_from_reads_the_environment():
    code = "from learnware_cli.search import engine; print(engine.TWO_STAGE_FROM)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "LW_TWO_STAGE_FROM": "123"}, check=True)
    assert out.stdout.strip() == "123"
    env = {k: v for k, v in os.environ.items() if k != "LW_TWO_STAGE_FROM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "3000"


def test_importing_the_table_spec_does_not_import_jax(tmp_path):
    """RKMESpec parses, saves and keys specs without JAX; the jitted programs load on first use and stay importable."""
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from learnware_cli.rkme.spec import STACK_BLOCK, TABLE_KIND, RKMESpec, SpecStack, fit_rkme, mmd2_to_many
        from learnware_cli.specs import load_spec
        spec = RKMESpec(z=np.arange(6.0).reshape(3, 2), beta=np.full(3, 1 / 3), gamma=0.5)
        spec.save({str(tmp_path / 's.json')!r})
        again = load_spec({str(tmp_path / 's.json')!r})
        assert again.island_key() == spec.island_key() and again.stack_arrays().z.shape == (3, 2)
        import learnware_cli.search.engine
        assert "jax" not in sys.modules, "jax imported"
        from learnware_cli.rkme.spec import _qp
        assert abs(spec.mmd2(again)) < 1e-12
        import jax
        assert jax.config.jax_enable_x64
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
