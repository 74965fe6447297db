"""Combining model outputs, and the metrics reusers optimise and report.

Pure NumPy on ``ModelOutput`` lists, so selection loops (ensemble pruning,
weight search) can re-combine cached outputs without calling models again.
"""

from __future__ import annotations

from itertools import combinations
from typing import Optional, Sequence

import numpy as np

from learnware_cli.errors import InputError
from learnware_cli.reuse.base import CLASSIFICATION, REGRESSION, ModelOutput, normalize_task, squeeze_outputs


def normalized_weights(weights: Optional[Sequence[float]], count: int) -> np.ndarray:
    """Non-negative weights summing to 1 (count,); None, or all zero, means equal weights."""
    if weights is None:
        return np.full(count, 1.0 / count)
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    w[~np.isfinite(w)] = 0.0
    total = w.sum()
    return w / total if total > 0 else np.full(count, 1.0 / count)


def weighted_vote(labels: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted majority vote over M label vectors (n,) -> (n,); ties go to the smallest label."""
    stacked = np.stack([np.asarray(lab) for lab in labels])  # (M, n)
    classes, inverse = np.unique(stacked, return_inverse=True)
    inverse = inverse.reshape(stacked.shape)
    scores = np.zeros((stacked.shape[1], len(classes)))
    rows = np.arange(stacked.shape[1])
    for m, w in enumerate(weights):
        np.add.at(scores, (rows, inverse[m]), w)
    return classes[np.argmax(scores, axis=1)]


def average_outputs(task: str, outputs: Sequence[ModelOutput], weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """The (weighted) average prediction of several models.

    Regression: mean of outputs -> (n,) or (n, t). Classification: argmax of
    the mean probabilities when every model gave probabilities of one width
    (soft voting keeps their confidence), else a weighted majority vote of
    labels -> (n,).
    """
    if not outputs:
        raise ValueError("nothing to average")
    w = normalized_weights(weights, len(outputs))
    if task == REGRESSION:
        return squeeze_outputs(np.einsum("m,mnt->nt", w, np.stack([o.values for o in outputs])))
    probas = [o.proba for o in outputs]
    if all(p is not None for p in probas) and len({p.shape[1] for p in probas}) == 1:
        return np.argmax(np.einsum("m,mnc->nc", w, np.stack(probas)), axis=1).astype(np.int64)
    return weighted_vote([o.values for o in outputs], w)


def class_scores(output: ModelOutput, classes: np.ndarray) -> np.ndarray:
    """A classifier's answer as scores over ``classes`` (n, len(classes)).

    Probabilities when it gave them (column j is class j), else one-hot of its
    labels; a label outside ``classes`` scores zero everywhere.
    """
    n = len(output.values)
    scores = np.zeros((n, len(classes)))
    if output.proba is not None:
        cols = _positions(np.arange(output.proba.shape[1]), classes)
        keep = cols >= 0
        scores[:, cols[keep]] = output.proba[:, keep]
        return scores
    cols = _positions(output.values, classes)
    hit = cols >= 0
    scores[np.flatnonzero(hit), cols[hit]] = 1.0
    return scores


def _positions(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Index of each label in the sorted ``classes``, -1 where absent."""
    labels = np.asarray(labels)
    pos = np.searchsorted(classes, labels)
    pos = np.clip(pos, 0, len(classes) - 1)
    return np.where(classes[pos] == labels, pos, -1)


def class_space(n_classes: Optional[int], *label_sets) -> np.ndarray:
    """Sorted classes: 0..n_classes-1 (when known) together with every label seen."""
    parts = [np.arange(n_classes)] if n_classes else []
    parts += [np.unique(np.asarray(labels)) for labels in label_sets if len(labels)]
    return np.unique(np.concatenate(parts)) if parts else np.arange(0)


def prediction_loss(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lower is better: error rate for classification, mean squared error for regression."""
    if task == CLASSIFICATION:
        return float(np.mean(np.asarray(y_true).reshape(-1) != np.asarray(y_pred).reshape(-1)))
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return float(np.mean((y_true.reshape(len(y_true), -1) - y_pred.reshape(len(y_pred), -1)) ** 2))


def evaluate(task: str, y_true, y_pred) -> tuple[str, float]:
    """("accuracy", share right) for classification, ("mse", mean squared error) for regression."""
    task = normalize_task(task)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise InputError(f"{len(y_true)} true values but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise InputError("nothing to evaluate (no rows)")
    if task == CLASSIFICATION:
        return "accuracy", 1.0 - prediction_loss(task, y_true, y_pred)
    return "mse", prediction_loss(task, y_true, y_pred)


def simplex_grid(parts: int, max_points: int = 5000) -> np.ndarray:
    """All weight vectors with entries in {0, 1/r, ..., 1} summing to 1 -> (G, parts).

    r is the finest resolution (at most 20) that keeps G <= max_points, so the
    grid stays cheap however many components there are.
    """
    if parts == 1:
        return np.ones((1, 1))
    for r in range(20, 0, -1):
        if _n_compositions(r, parts) <= max_points:
            break
    rows = []
    for bars in combinations(range(r + parts - 1), parts - 1):
        edges = np.array((-1, *bars, r + parts - 1))
        rows.append((np.diff(edges) - 1) / r)
    return np.array(rows)


def _n_compositions(r: int, parts: int) -> int:
    from math import comb

    return comb(r + parts - 1, parts - 1)


def best_simplex_weights(components: Sequence[np.ndarray], target: np.ndarray) -> np.ndarray:
    """Simplex weights w minimising mean ||sum_k w_k S_k - Y||^2 over a grid.

    components: K score matrices (n, c) (probabilities or outputs); target Y
    (n, c) (one-hot labels or values). Squared loss is quadratic in w, so the
    Gram matrix is formed once and every grid point costs O(K^2). Equal
    weights win unless a grid point is strictly better (robust on few rows).
    """
    S = np.stack([np.asarray(c, dtype=np.float64) for c in components])  # (K, n, c)
    n = S.shape[1]
    gram = np.einsum("knc,lnc->kl", S, S) / n
    cross = np.einsum("knc,nc->k", S, target) / n
    grid = simplex_grid(len(components))
    losses = np.einsum("gk,kl,gl->g", grid, gram, grid) - 2.0 * grid @ cross
    equal = np.full(len(components), 1.0 / len(components))
    equal_loss = equal @ gram @ equal - 2.0 * equal @ cross
    best = int(np.argmin(losses))
    return grid[best] if losses[best] < equal_loss - 1e-12 * max(1.0, abs(equal_loss)) else equal
