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


# --------------------------------------------------------------------------- through the CLI, on a real market


@pytest.fixture(scope="module")
def linear_market(tmp_path_factory):
    """8 Ridge learnwares f_j(x) = x . W_j on 3 inputs, submitted through every check."""
    import joblib
    from sklearn.linear_model import Ridge

    from learnware_cli.cli.app import main

    root = tmp_path_factory.mktemp("anchors")
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(8, 3))
    assert main(["init", str(root / "market")]) == 0
    zips = []
    for j, w in enumerate(weights):
        X = rng.normal(size=(200, 3))
        np.savetxt(root / f"X{j}.csv", X, delimiter=",")
        joblib.dump(Ridge(alpha=1e-6).fit(X, X @ w), root / f"m{j}.joblib")
        args = ["pack", "--model", root / f"m{j}.joblib", "--data", root / f"X{j}.csv", "--market", root / "market",
                "--name", f"f{j}", "--task", "Regression", "--out", root / f"p{j}.zip", "--json"]
        assert main([str(a) for a in args]) == 0
        zips.append(str(root / f"p{j}.zip"))
    assert main(["submit", *zips, "--market", str(root / "market"), "--json"]) == 0
    return root, weights


def test_lw_anchors_lists_anchors_and_keeps_the_signatures(linear_market, lw_json):
    root, _ = linear_market
    code, doc = lw_json("anchors", "--market", root / "market", "--dim", "3", "-n", "4")
    assert code == 0 and doc["island_learnwares"] == 8 and len(doc["anchors"]) == 4 and doc["task"] == "Regression"
    assert (root / "market" / "anchors" / "bank-d3.npy").is_file() and (root / "market" / "anchors" / "signatures-d3.npz").is_file()
    code, again = lw_json("anchors", "--market", root / "market", "--dim", "3", "-n", "4")
    assert again["anchors"] == doc["anchors"]  # same market, same anchors


def test_the_scores_file_holds_no_rows(linear_market, lw_json, tmp_path):
    root, weights = linear_market
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 3))
    y = X @ weights[5] + 0.05 * rng.normal(size=20)
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    np.savetxt(tmp_path / "y.csv", y)
    code, doc = lw_json("anchors", "--market", root / "market", "-n", "4", "--labeled", tmp_path / "X.csv", tmp_path / "y.csv",
                        "--evaluate", "--out", tmp_path / "scores.json")
    assert code == 0, doc
    text = (tmp_path / "scores.json").read_text()
    shared = json.loads(text)
    assert set(shared) == {"format", "market", "task", "input_dim", "metric", "labeled_rows", "baseline", "scores"}
    assert shared["labeled_rows"] == 20 and len(shared["scores"]) == 4
    for value in list(X.ravel()) + list(y):  # none of her numbers, in any usual rendering
        for rendering in (repr(float(value)), f"{value:.6g}", f"{value:.4f}"):
            assert rendering not in text


def test_search_by_anchor_scores_finds_the_users_learnware(linear_market, lw_json, tmp_path):
    """No RKME: 4 anchor scores from 20 labeled rows rank the learnware that made the labels in the top 3."""
    root, weights = linear_market
    rng = np.random.default_rng(9)
    hits = 0
    for own in (1, 5, 6):
        X = rng.normal(size=(20, 3))
        np.savetxt(tmp_path / "X.csv", X, delimiter=",")
        np.savetxt(tmp_path / "y.csv", X @ weights[own] + 0.05 * rng.normal(size=20))
        code, _ = lw_json("anchors", "--market", root / "market", "-n", "4", "--labeled", tmp_path / "X.csv", tmp_path / "y.csv",
                          "--evaluate", "--out", tmp_path / "scores.json")
        assert code == 0
        code, found = lw_json("search", "--market", root / "market", "--anchor-scores", tmp_path / "scores.json", "-k", "3")
        assert code == 0 and found["mode"] == "anchors" and found["user"]["indicator"] is not None
        hits += f"f{own}" in [r["name"] for r in found["single"]]
    assert hits >= 2
    code, doc = lw_json("search", "--market", root / "market", "--anchor-scores", tmp_path / "scores.json", "--spec", tmp_path / "scores.json")
    assert code == 2 and "leave out --spec" in doc["message"]


def test_a_measured_anchor_beats_a_worse_prediction():
    order = np.array([2, 0, 1])
    implied, residual = np.array([0.5, 0.4, 0.1]), np.array([0.0, 0.0, 0.01])  # top pick predicted 0.1 + 0.1
    assert A.trust_measured(order, implied, residual, [0, 1], np.array([0.15, 0.9])).tolist() == [0, 2, 1]
    assert A.trust_measured(order, implied, residual, [0, 1], np.array([0.35, 0.9])).tolist() == [2, 0, 1]
