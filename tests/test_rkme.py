"""RKME numerics against the reference package's figures and an independent NumPy float64 computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from learnware_cli.errors import InputError, SpecError
from learnware_cli.rkme import (
    RKMESpec,
    SpecStack,
    approximation_error,
    clean_data,
    fit_rkme,
    herd,
    inner_product,
    mixture_weights,
    mmd2,
    mmd2_to_many,
)


def np_kernel(a, b, gamma):
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-gamma * d)


def np_inner(a: RKMESpec, b: RKMESpec) -> float:
    return float(a.beta @ np_kernel(a.z, b.z, a.gamma) @ b.beta)


def np_error(spec: RKMESpec, x) -> float:
    n = len(x)
    a = np.full(n, 1.0 / n)
    g = spec.gamma
    return float(spec.beta @ np_kernel(spec.z, spec.z, g) @ spec.beta - 2 * spec.beta @ np_kernel(spec.z, x, g) @ a + a @ np_kernel(x, x, g) @ a)


def random_spec(rng, k, d, gamma=0.1, shift=0.0):
    beta = rng.uniform(0.1, 1.0, size=k)
    return RKMESpec(z=rng.normal(size=(k, d)) + shift, beta=beta / beta.sum(), gamma=gamma)


def test_mmd_and_inner_products_match_reference(reference):
    for pair in reference("mmd.json")["pairs"]:
        a, b = RKMESpec.from_json_dict(pair["a"]), RKMESpec.from_json_dict(pair["b"])
        assert mmd2(a, b) == pytest.approx(pair["dist"], abs=1e-6)
        assert inner_product(a, b) == pytest.approx(pair["inner_prod_ab"], abs=1e-6)
        assert inner_product(a, a) == pytest.approx(pair["inner_prod_aa"], abs=1e-6)
        assert inner_product(b, b) == pytest.approx(pair["inner_prod_bb"], abs=1e-6)


def test_fit_reaches_reference_error(reference):
    for case in reference("fit_quality.json")["fits"]:
        x = np.array(case["X"])
        spec = fit_rkme(x, k=case["K"], gamma=case["gamma"], seed=0)
        ours = np_error(spec, x)
        assert ours <= 1.05 * case["reference_error"], (x.shape, ours, case["reference_error"])
        # the JAX error and the NumPy float64 one agree
        assert approximation_error(spec, x) == pytest.approx(ours, abs=1e-9)


def test_mixture_weights_match_reference(reference):
    case = reference("mixture.json")
    user = RKMESpec.from_json_dict(case["user"])
    candidates = [RKMESpec.from_json_dict(c) for c in case["candidates"]]
    weights, objective, mixture_mmd = mixture_weights(user, candidates)
    np.testing.assert_allclose(weights, case["weights"], atol=1e-3)
    assert objective == pytest.approx(case["objective"], abs=1e-6)
    assert mixture_mmd == pytest.approx(case["mixture_mmd"], abs=1e-6)


def test_simplex_qp_is_optimal_by_kkt():
    """Independent check: at the optimum, gradient components on the support are equal and minimal."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4))
    z = rng.normal(size=(30, 4))
    from learnware_cli.rkme.spec import _qp

    q = np_kernel(z, z, 0.2)
    c = np_kernel(z, x, 0.2).mean(axis=1)
    w = np.asarray(_qp(q, c))
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)
    grad = q @ w - c
    support = w > 1e-8
    nu = grad[support].mean()
    assert np.allclose(grad[support], nu, atol=1e-7)
    assert np.all(grad[~support] >= nu - 1e-7)


def test_batched_mmd_matches_pairwise_with_mixed_sizes():
    rng = np.random.default_rng(1)
    user = random_spec(rng, 12, 5)
    specs = [random_spec(rng, k, 5, shift=rng.normal()) for k in (3, 7, 12, 20, 1) * 60]  # 300 specs, ragged K
    want = [np_inner(user, user) - 2 * np_inner(user, s) + np_inner(s, s) for s in specs]
    exact = mmd2_to_many(user, SpecStack.from_specs(specs, dtype="float64"))
    assert exact.shape == (300,)
    np.testing.assert_allclose(exact, want, atol=1e-10)
    # the float32 search stack ranks with an error far below the gaps between specs
    fast = mmd2_to_many(user, SpecStack.from_specs(specs, dtype="float32"))
    np.testing.assert_allclose(fast, want, atol=1e-5)


def test_few_spec_products_and_exact_rescoring_match_numpy():
    """gram_and_cross (mixtures) and exact_mmd2 (reported singles) against NumPy float64, with zero-weight padding."""
    from learnware_cli.rkme import kernels
    from learnware_cli.search.statistical import exact_mmd2

    rng = np.random.default_rng(7)
    user = random_spec(rng, 9, 4)
    specs = [random_spec(rng, k, 4, shift=rng.normal()) for k in (5, 8, 3)]
    zs, betas = np.zeros((3, 8, 4)), np.zeros((3, 8))
    for i, s in enumerate(specs):
        zs[i, : s.size], betas[i, : s.size] = s.z, s.beta
    gram, cross = kernels.gram_and_cross(user.z, user.beta, zs, betas, user.gamma)
    np.testing.assert_allclose(gram, [[np_inner(a, b) for b in specs] for a in specs], atol=1e-12)
    np.testing.assert_allclose(cross, [np_inner(s, user) for s in specs], atol=1e-12)
    mmd, selfs = exact_mmd2(user, zs, betas)
    want = [np_inner(user, user) - 2 * np_inner(user, s) + np_inner(s, s) for s in specs]
    np.testing.assert_allclose(mmd, want, atol=1e-12)
    np.testing.assert_allclose(selfs, [np_inner(s, s) for s in specs], atol=1e-12)
    # the mixture's MMD^2 from the products is that of the mixture written out as one spec
    w = np.array([0.5, 0.2, 0.3])
    mixed = RKMESpec(z=np.concatenate([s.z for s in specs]), beta=np.concatenate([wi * s.beta for wi, s in zip(w, specs)]), gamma=user.gamma)
    assert float(kernels.mixture_mmd2(np_inner(user, user), gram, cross, w)) == pytest.approx(mmd2(user, mixed), abs=1e-12)


def test_masked_qp_solves_the_subproblem():
    from learnware_cli.rkme import kernels
    from learnware_cli.rkme.spec import _qp

    rng = np.random.default_rng(8)
    z = rng.normal(size=(12, 3))
    q = np_kernel(z, z, 0.3)
    c = np_kernel(z, rng.normal(size=(200, 3)), 0.3).mean(axis=1)
    active = np.zeros(12, dtype=bool)
    active[[1, 4, 5, 9]] = True
    w = np.asarray(kernels.solve_simplex_qp_masked(q, c, active))
    assert np.all(w[~active] == 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(w[active], np.asarray(_qp(q[np.ix_(active, active)], c[active])), atol=1e-8)


def test_fit_is_deterministic_and_valid():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 3))
    a, b = fit_rkme(x, k=25, seed=5), fit_rkme(x, k=25, seed=5)
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.beta, b.beta)
    assert a.z.shape == (25, 3) and a.num_points == 700
    assert a.beta.min() >= 0 and a.beta.sum() == pytest.approx(1.0)


def test_fit_with_k_at_least_n_is_exact():
    x = np.arange(12, dtype=float).reshape(6, 2)
    spec = fit_rkme(x, k=10)
    assert spec.size == 6
    assert np_error(spec, x) == pytest.approx(0.0, abs=1e-12)


def test_non_finite_cells_become_column_means():
    x = np.array([[1.0, np.nan], [3.0, 4.0], [np.inf, 6.0]])
    cleaned = clean_data(x)
    np.testing.assert_allclose(cleaned, [[1, 5], [3, 4], [2, 6]])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 3)), "empty"),
        (np.zeros(5), "2-D"),
        (np.array([[1.0, np.nan], [2.0, np.nan]]), "column 1 has no finite value"),
        ([["a", "b"]], "numeric"),
    ],
)
def test_bad_data_is_a_clear_error(bad, message):
    with pytest.raises(InputError, match=message):
        fit_rkme(bad, k=5)


def test_json_round_trip_in_reference_layout(tmp_path):
    rng = np.random.default_rng(2)
    spec = random_spec(rng, 8, 3)
    spec.num_points = 99
    path = tmp_path / "rkme.json"
    spec.save(path)
    raw = json.loads(path.read_text())
    # the keys RKMETableSpecification.load reads, including cuda_idx which it requires
    assert raw["type"] == "RKMETableSpecification" and raw["cuda_idx"] == -1
    assert set(raw) >= {"gamma", "num_points", "z", "beta"}
    back = RKMESpec.load(path)
    np.testing.assert_array_equal(back.z, spec.z)
    assert back.num_points == 99 and back.gamma == spec.gamma


def test_loads_spec_written_by_reference(reference):
    raw = reference("mmd.json")["pairs"][0]["a"]
    as_reference_writes = {**raw, "type": "RKMETableSpecification", "num_points": 500, "cuda_idx": -1, "device": "cpu"}
    spec = RKMESpec.from_json_dict(as_reference_writes)
    assert spec.size == len(raw["beta"]) and spec.dim == len(raw["z"][0])


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"z": [[1.0, 2.0]], "beta": [0.5, 0.5]}, "beta has 2 weights"),
        ({"z": [[float("nan"), 2.0]], "beta": [1.0]}, "finite"),
        ({"z": [[1.0]], "beta": [1.0], "gamma": -1}, "gamma"),
        ({"beta": [1.0]}, "missing field 'z'"),
        ({"type": "Other", "z": [[1.0]], "beta": [1.0]}, "unsupported"),
    ],
)
def test_malformed_spec_json_is_rejected(raw, message):
    with pytest.raises(SpecError, match=message):
        RKMESpec.from_json_dict(raw)


def test_herded_rows_follow_the_spec():
    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 0.0], [6.0, 6.0]])
    x = np.concatenate([rng.normal(size=(400, 2)) * 0.5 + centres[0], rng.normal(size=(200, 2)) * 0.5 + centres[1]])
    spec = fit_rkme(x, k=20, gamma=0.5)
    rows = herd(spec, 90, seed=1)
    assert rows.shape == (90, 2)
    near_second = np.mean(np.linalg.norm(rows - centres[1], axis=1) < 2.5)
    assert near_second == pytest.approx(1 / 3, abs=0.1)
    herded = RKMESpec(z=rows, beta=np.full(90, 1 / 90), gamma=0.5)
    unrelated = RKMESpec(z=rng.normal(size=(90, 2)) * 3 + 3, beta=np.full(90, 1 / 90), gamma=0.5)
    assert mmd2(spec, herded) < 0.1 * mmd2(spec, unrelated)


FIXTURES = Path(__file__).parent / "fixtures"


def test_spec_file_written_by_the_reference_package_loads():
    """rkme_written_by_learnware_0.4.json was saved by learnware 0.4.0.post1's
    RKMETableSpecification.save (K=30, d=6); rkme_written_by_lw.json by lw. The
    expected figures were computed by the reference package on these two files."""
    theirs = RKMESpec.load(FIXTURES / "rkme_written_by_learnware_0.4.json")
    ours = RKMESpec.load(FIXTURES / "rkme_written_by_lw.json")
    assert (theirs.size, theirs.dim, theirs.gamma) == (30, 6, 0.1)
    assert inner_product(theirs, theirs) == pytest.approx(0.4159830968520558, abs=1e-9)
    assert mmd2(theirs, ours) == pytest.approx(0.009242925034238625, abs=1e-9)
