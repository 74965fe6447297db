"""Matching across feature spaces (search.crossmatch): exact against NumPy, right learnwares first, scale-free."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from learnware_cli.rkme.spec import fit_rkme, mmd2
from learnware_cli.search import crossmatch

N_FEATURES = 12
COLUMN_SETS = {"A": list(range(0, 6)), "B": list(range(3, 9)), "C": list(range(6, 12))}
REGIONS = 4


class World:
    """Rows of REGIONS regions over N_FEATURES features on wildly different scales (1e-2 .. 1e2)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.scales = 10.0 ** self.rng.uniform(-2, 2, N_FEATURES)
        self.centers = self.rng.normal(0.0, 1.5, (REGIONS, N_FEATURES))

    def rows(self, region: int, n: int, columns) -> np.ndarray:
        x = (self.centers[region] + self.rng.normal(0.0, 1.0, (n, N_FEATURES))) * self.scales
        return x[:, columns]


def fitted_specs(world: World, column_sets=COLUMN_SETS, k: int = 40) -> dict:
    """One RKME per (column set, region), keyed by learnware ids like 'B2'."""
    return {
        f"{name}{region}": fit_rkme(world.rows(region, 400, columns), k=k, gamma=0.1, seed=region)
        for name, columns in column_sets.items()
        for region in range(REGIONS)
    }


def assemble(specs: dict, column_sets=COLUMN_SETS):
    """The FeatureStack of specs (ids' first letter names the column set)."""
    members = [(f"{i}@1", {"id": i}, {"input_dim": spec.dim}) for i, spec in specs.items()]
    parts = [(spec.z[None].astype(np.float32), spec.beta[None].astype(np.float32)) for spec in specs.values()]
    by_learnware = {i: [f"f{c}" for c in column_sets[i[0]]] for i in specs}
    vocabulary = SimpleNamespace(features={f"f{i}": None for i in range(N_FEATURES)}, of=lambda i: by_learnware[i])
    return crossmatch._assemble(members, parts, vocabulary, generation=1)


def feature_stack(world: World):
    """(stack, the spec of each stack row): rows are sorted by feature layout, not in insertion order."""
    specs = fitted_specs(world)
    stack = assemble(dict(reversed(list(specs.items()))))  # insertion order must not matter
    return stack, [specs[entry["id"]] for _, entry, _ in stack.members]


def numpy_marginal_mmd2(user_z, user_beta, user_columns, own_z, own_beta, own_columns, sigma):
    """MMD^2 under k_S in float64, straight from the definition (no expansion tricks)."""
    shared = sorted(set(user_columns) & set(own_columns))
    u = np.stack([user_z[:, user_columns.index(f)] / sigma[f] for f in shared], axis=1)
    s = np.stack([own_z[:, own_columns.index(f)] / sigma[f] for f in shared], axis=1)

    def product(a, wa, b, wb):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2) / len(shared)
        return wa @ np.exp(-d2) @ wb

    return product(u, user_beta, u, user_beta) - 2 * product(u, user_beta, s, own_beta) + product(s, own_beta, s, own_beta)


@pytest.fixture(scope="module")
def world_and_stack():
    world = World(0)
    stack, specs = feature_stack(world)
    return world, stack, specs


def test_feature_scales_are_the_pooled_variance_of_the_spec_points(world_and_stack):
    _, stack, specs = world_and_stack
    for feature in (0, 4, 11):
        means, seconds = [], []
        for (key, entry, record), spec in zip(stack.members, specs):
            columns = COLUMN_SETS[entry["id"][0]]
            if feature in columns:
                b = spec.beta / spec.beta.sum()
                z = spec.z[:, columns.index(feature)]
                means.append(b @ z)
                seconds.append(b @ z**2)
        expected = np.sqrt(np.mean(seconds) - np.mean(means) ** 2)
        assert stack.sigma[feature] == pytest.approx(expected, rel=1e-4)


def test_batched_marginal_mmd_matches_numpy_float64(world_and_stack):
    world, stack, specs = world_and_stack
    for columns in ([0, 1, 2], [2, 3, 4, 5, 6, 7], list(range(12)), [11, 5, 0]):
        user = fit_rkme(world.rows(1, 300, columns), k=30, gamma=0.1, seed=5)
        found = crossmatch.match(user.z, user.beta, [f"f{c}" for c in columns], stack)
        for row, ((_, entry, _), spec) in enumerate(zip(stack.members, specs)):
            own_columns = COLUMN_SETS[entry["id"][0]]
            shared = set(columns) & set(own_columns)
            assert found.shared[row] == len(shared)
            if not shared:
                assert found.score[row] < 0
                continue
            expected = numpy_marginal_mmd2(user.z, user.beta, columns, spec.z, spec.beta, own_columns, stack.sigma)
            assert found.mmd2[row] == pytest.approx(max(expected, 0.0), abs=2e-5)  # float32 stack
            assert found.coverage[row] == pytest.approx(len(shared) / len(own_columns))
            u, s, names = crossmatch.restricted_specs(user.z, user.beta, [f"f{c}" for c in columns], stack, row, spec)
            assert mmd2(u, s) == pytest.approx(expected, abs=1e-10)  # the exact path, float64
            assert names == [f"f{c}" for c in sorted(shared)]


USERS = {
    "subset": [0, 1, 2],  # part of A
    "superset": list(range(0, 6)) + [11],  # A plus a column of C
    "union": list(range(0, 9)),  # A and B together
}


@pytest.mark.parametrize("kind", list(USERS))
def test_the_right_learnwares_come_first(world_and_stack, kind):
    world, stack, _ = world_and_stack
    columns = USERS[kind]
    hits, trials = 0, 0
    for trial in range(10):
        region = trial % REGIONS
        user = fit_rkme(world.rows(region, 200, columns), k=30, gamma=0.1, seed=trial)
        found = crossmatch.match(user.z, user.beta, [f"f{c}" for c in columns], stack)
        top = [stack.members[row][1]["id"] for row in found.ranking()]
        expected = {"subset": {f"A{region}"}, "superset": {f"A{region}"}, "union": {f"A{region}", f"B{region}"}}[kind]
        hits += set(top[: len(expected)]) == expected
        trials += 1
    assert hits / trials >= 0.95


def test_units_do_not_matter(world_and_stack):
    """Measuring two features in other units (x1000, everyone alike) leaves every similarity unchanged."""
    world, stack, specs = world_and_stack
    columns = [0, 1, 2, 3, 4, 5]
    user = fit_rkme(world.rows(2, 200, columns), k=30, gamma=0.1, seed=1)
    before = crossmatch.match(user.z, user.beta, [f"f{c}" for c in columns], stack)
    rescaled = {}
    for (_, entry, _), spec in zip(stack.members, specs):
        z = spec.z.copy()
        for position, feature in enumerate(COLUMN_SETS[entry["id"][0]]):
            if feature in (1, 4):
                z[:, position] *= 1000.0
        rescaled[entry["id"]] = type(spec)(z=z, beta=spec.beta, gamma=spec.gamma)
    user_z = user.z.copy()
    user_z[:, [1, 4]] *= 1000.0
    after = crossmatch.match(user_z, user.beta, [f"f{c}" for c in columns], assemble(rescaled))
    assert np.allclose(before.similarity, after.similarity, atol=1e-4)
    assert list(before.ranking()) == list(after.ranking())
