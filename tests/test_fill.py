"""Filling in a learnware's missing columns from its RKME (reuse.fill)."""

from __future__ import annotations

import numpy as np
import pytest

from learnware_cli.errors import InputError
from learnware_cli.reuse.fill import ColumnMap, MappedModel, conditional_mean, user_space_spec
from learnware_cli.rkme.spec import fit_rkme


def correlated_rows(rng, n: int, d: int = 6) -> np.ndarray:
    """Rows driven by two latent factors through a nonlinearity, columns on scales 0.1 .. 100."""
    latent = rng.normal(size=(n, 2))
    mixing = rng.normal(size=(2, d))
    scales = 10.0 ** rng.uniform(-1, 2, d)
    return np.tanh(latent @ mixing) * scales + 0.05 * scales * rng.normal(size=(n, d))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_filled_columns_beat_the_column_mean(seed):
    rng = np.random.default_rng(seed)
    rows = correlated_rows(rng, 2500)
    spec = fit_rkme(rows[:2000], k=100, gamma=0.1, seed=seed)
    known, missing = [0, 2, 4], [1, 3, 5]
    held_out = rows[2000:]
    filled = conditional_mean(spec.z, spec.beta, known, held_out[:, known], missing)
    column_mean = (spec.beta / spec.beta.sum()) @ spec.z[:, missing]
    mse_filled = ((filled - held_out[:, missing]) ** 2).mean(axis=0)
    mse_mean = ((column_mean - held_out[:, missing]) ** 2).mean(axis=0)
    assert (mse_filled < mse_mean).all(), (mse_filled, mse_mean)


def test_far_rows_take_the_nearest_point_not_nan():
    z = np.array([[0.0, 1.0], [10.0, 2.0]])
    beta = np.array([0.5, 0.5])
    filled = conditional_mean(z, beta, [0], np.array([[1e6], [-1e6]]), [1], h=1.0)
    assert np.array_equal(filled, np.array([[2.0], [1.0]]))


def test_column_map_lines_columns_up_by_market_feature():
    rng = np.random.default_rng(0)
    rows = correlated_rows(rng, 800, d=4)
    spec = fit_rkme(rows, k=40, gamma=0.1, seed=0)  # the learnware reads a, b, c, d
    column_map = ColumnMap(["a", "b", "c", "d"], ["x", "c", "a", None, "b"], spec)
    assert column_map.source == [2, 4, 1, -1] and column_map.missing == [3]
    user_rows = np.column_stack([rng.normal(size=50), rows[:50, 2], rows[:50, 0], rng.normal(size=50), rows[:50, 1]])
    given = column_map.transform(user_rows)
    assert np.array_equal(given[:, :3], rows[:50, :3])
    assert np.isfinite(given[:, 3]).all()

    class Echo:
        def predict(self, X):
            return X[:, 0] + X[:, 3]

    assert np.allclose(MappedModel(Echo(), column_map).predict(user_rows), given[:, 0] + given[:, 3])


def test_column_map_refuses_what_it_cannot_do():
    spec = fit_rkme(np.random.default_rng(0).normal(size=(100, 2)), k=10, gamma=0.1)
    with pytest.raises(InputError, match="shares no market feature"):
        ColumnMap(["a", "b"], ["x", "y"], spec)
    with pytest.raises(InputError, match="no specification"):
        ColumnMap(["a", "b"], ["a"], None)
    with pytest.raises(InputError, match="expected rows of 1 column"):
        ColumnMap(["a", "b"], ["a"], spec).transform(np.zeros((3, 2)))


def test_user_space_spec_keeps_shared_values_and_completes_the_rest():
    rng = np.random.default_rng(1)
    rows = correlated_rows(rng, 1000, d=4)
    own = fit_rkme(rows[:, :2], k=30, gamma=0.1, seed=0)  # learnware on a, b
    user = fit_rkme(rows, k=50, gamma=0.1, seed=0)  # user on a, b, c, d
    carried = user_space_spec(ColumnMap(["a", "b"], ["a", "b", "c", "d"], own), user)
    assert carried.z.shape == (30, 4) and np.array_equal(carried.z[:, :2], own.z)
    assert np.array_equal(carried.beta, own.beta)
    expected = conditional_mean(user.z, user.beta, [0, 1], own.z, [2, 3])
    assert np.allclose(carried.z[:, 2:], expected)
