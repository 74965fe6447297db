"""Anchor learnwares (market.anchors, `lw anchors`): functional distances, anchor choice, ranking by scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learnware_cli.market import anchors as A


def linear_world(n_learnwares: int, dim: int, seed: int = 0):
    """Learnwares f_l(x) = x . W_l, their signatures on a standard normal bank, and the distances."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(n_learnwares, dim))
    bank = rng.normal(size=(256, dim))
    signatures = (bank @ weights.T).T[:, :, None]
    return weights, A.functional_distances(signatures, signatures)


def test_functional_distance_is_the_mean_squared_output_gap():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 50, 2)), rng.normal(size=(3, 50, 2))
    expected = np.array([[np.mean(((a[i] - b[j]) ** 2).sum(axis=1)) for j in range(3)] for i in range(4)])
    assert np.allclose(A.functional_distances(a, b), expected, atol=1e-10)


def test_anchors_are_distinct_deterministic_medoids():
    _, distances = linear_world(40, 5)
    chosen = A.choose_anchors(distances, 8)
    assert len(set(chosen)) == 8 and chosen == A.choose_anchors(distances, 8)
    cost = distances[:, chosen].min(axis=1).sum()
    # no single swap improves the k-medoids cost any more
    for position in range(8):
        for candidate in set(range(40)) - set(chosen):
            trial = chosen[:position] + [candidate] + chosen[position + 1:]
            assert distances[:, trial].min(axis=1).sum() >= cost - 1e-9
    assert A.choose_anchors(distances[:3, :3], 8) == A.choose_anchors(distances[:3, :3], 3)  # never more than there are


def test_a_users_own_learnware_is_found_in_the_top_3_from_8_anchor_scores():
    """30 learnwares of one island, a user whose labels come from one of them (noise 0.3, 20 labeled rows)."""
    weights, distances = linear_world(30, 4)
    anchors = A.choose_anchors(distances, 8)
    rng = np.random.default_rng(1)
    hits, trials = 0, 300
    for trial in range(trials):
        own = trial % 30
        X = rng.normal(size=(20, 4))
        y = X @ weights[own] + 0.3 * rng.normal(size=20)
        losses = np.array([np.mean((X @ weights[a] - y) ** 2) for a in anchors])
        order, implied, _ = A.rank_by_scores(distances[:, anchors], losses)
        hits += own in order[:3]
    assert hits / trials >= 0.9


def test_the_indicator_says_when_the_market_has_nothing_for_the_user():
    """(s + sqrt(r)) / baseline of the best learnware: small when a learnware made her labels (median of 10
    users), near 1 for noise (every one of 10)."""
    weights, distances = linear_world(30, 4)
    anchors = A.choose_anchors(distances, 8)
    rng = np.random.default_rng(2)

    def indicator(X, labels):
        losses = np.array([A.losses_of("Regression", labels, X @ weights[a]) for a in anchors])
        order, implied, residual = A.rank_by_scores(distances[:, anchors], losses)
        return (implied[order[0]] + np.sqrt(residual[order[0]])) / A.baseline_loss("Regression", labels)

    own, noise = [], []
    for trial in range(10):
        X = rng.normal(size=(50, 4))
        own.append(indicator(X, X @ weights[trial] + 0.1 * rng.normal(size=50)))
        noise.append(indicator(X, 3.0 * rng.normal(size=50)))
    # a signal, not a verdict: a learnware's own labels can look noisy when its anchors are far
    assert np.median(own) < 0.4 and np.median(noise) > 0.6 and min(noise) > 0.6, (own, noise)


def test_brier_loss_and_baseline_for_classification():
    y = np.array([0, 1, 1, 2])
    perfect = np.eye(3)[y]
    assert A.losses_of("Classification", y, perfect) == 0.0
    assert A.baseline_loss("Classification", y) == pytest.approx(A.losses_of("Classification", y, np.tile([0.25, 0.5, 0.25], (4, 1))))


def test_a_scores_file_is_checked(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(Exception, match="not an anchor scores file"):
        A.read_scores(path)
    path.write_text(json.dumps({"format": A.SCORES_FORMAT, "task": "Regression", "input_dim": 3, "scores": {"00000001@1": -1}}))
    with pytest.raises(Exception, match="finite losses"):
        A.read_scores(path)
