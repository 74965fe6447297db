"""Give a learnware the columns it reads from a user's table on other columns, filling in what she lacks.

A learnware reads its own columns, each a market feature (``market.features``);
a user's table has her columns. ``ColumnMap`` lines them up by market feature:
a learnware column the user has is copied from her column, one she lacks is
filled in from the learnware's own RKME, the only thing the market knows of
its training data:

    x_M(x_S) = sum_k a_k(x_S) z_kM,   a_k proportional to beta_k exp(-h sum_{f in S} (x_f - z_kf)^2 / s_f^2)

the conditional mean of the missing features M given the shared ones S under
the RKME's weighted points (Nadaraya-Watson on the reduced set; computed in
the log domain, so a row far from every point takes its nearest point's
values instead of 0/0). s_f is the weighted spread of feature f over those
points. The bandwidth h is chosen, per learnware and per S, among a grid by
weighted leave-one-out error on the points themselves (each z_k predicted from
the others), so it adapts to how much S says about M.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from learnware_cli.errors import InputError

BANDWIDTH_GRID = 2.0 ** np.arange(-3, 7)  # times 1 / |S|
MIN_SPREAD = 1e-12


def _spread(z: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Weighted standard deviation of each column of z (K, d) under weights beta (K,) -> (d,), 1 where constant."""
    b = beta / beta.sum()
    mean = b @ z
    std = np.sqrt(np.maximum(b @ (z - mean) ** 2, 0.0))
    return np.where(std > MIN_SPREAD * (1.0 + np.abs(mean)), std, 1.0)


def _log_weights(x_known: np.ndarray, z_known: np.ndarray, log_beta: np.ndarray, h: float) -> np.ndarray:
    """log a_k(x) up to a constant for rows x (n, |S|) and points z (K, |S|), both already divided by s."""
    d2 = (x_known**2).sum(1)[:, None] - 2.0 * x_known @ z_known.T + (z_known**2).sum(1)[None, :]
    return log_beta[None, :] - h * np.maximum(d2, 0.0)


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def choose_bandwidth(z: np.ndarray, beta: np.ndarray, known: Sequence[int], missing: Sequence[int]) -> float:
    """The h of the grid with the least weighted leave-one-out error predicting z[:, missing] from z[:, known].

    z (K, d) points, beta (K,) weights; errors are in units of each column's spread.
    """
    scale = _spread(z, beta)
    zs = z / scale
    known, missing = list(known), list(missing)
    log_beta = np.log(np.maximum(beta, 1e-300))
    best, best_error = BANDWIDTH_GRID[0] / max(len(known), 1), np.inf
    for factor in BANDWIDTH_GRID:
        h = factor / max(len(known), 1)
        logits = _log_weights(zs[:, known], zs[:, known], log_beta, h)
        np.fill_diagonal(logits, -np.inf)  # leave each point out of its own prediction
        predicted = _softmax_rows(logits) @ zs[:, missing]
        error = float(beta @ ((predicted - zs[:, missing]) ** 2).sum(axis=1))
        if error < best_error - 1e-12:
            best, best_error = h, error
    return best


def conditional_mean(z: np.ndarray, beta: np.ndarray, known: Sequence[int], x_known: np.ndarray, missing: Sequence[int], h: Optional[float] = None) -> np.ndarray:
    """E[x_missing | x_known] under the weighted points (z (K, d), beta (K,)) -> (n, |missing|).

    known/missing: column indices of z; x_known (n, |known|) in the same units
    as z. h: the bandwidth (default: choose_bandwidth). With nothing known,
    every row gets the weighted mean.
    """
    z = np.asarray(z, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    known, missing = list(known), list(missing)
    x_known = np.asarray(x_known, dtype=np.float64).reshape(-1, len(known))
    if not known:
        return np.tile((beta / beta.sum()) @ z[:, missing], (len(x_known), 1))
    if h is None:
        h = choose_bandwidth(z, beta, known, missing)
    scale = _spread(z, beta)
    log_beta = np.log(np.maximum(beta, 1e-300))
    weights = _softmax_rows(_log_weights(x_known / scale[known], z[:, known] / scale[known], log_beta, h))
    return weights @ z[:, missing]


@dataclass
class ColumnMap:
    """How one learnware's input columns come from a user's columns.

    learnware_features / user_features: the market feature of each column
    (None: undescribed). source[c] = the user column for learnware column c,
    or -1 when it has to be filled in from ``spec`` (an RKME on the
    learnware's columns).
    """

    learnware_features: list
    user_features: list
    spec: object = field(repr=False, default=None)
    source: list = field(default_factory=list)
    bandwidth: Optional[float] = None

    def __post_init__(self):
        position = {}
        for column, feature in enumerate(self.user_features):
            if feature is not None:
                position.setdefault(feature, column)
        self.source = [position.get(f, -1) if f is not None else -1 for f in self.learnware_features]
        if not self.shared:
            raise InputError("the learnware shares no market feature with your columns")
        if self.missing and self.spec is None:
            raise InputError("the learnware needs columns you lack and has no specification to fill them from")
        if self.missing:
            self.bandwidth = choose_bandwidth(np.asarray(self.spec.z, float), np.asarray(self.spec.beta, float), self.shared, self.missing)

    @property
    def shared(self) -> list:
        """Learnware columns the user has."""
        return [c for c, s in enumerate(self.source) if s >= 0]

    @property
    def missing(self) -> list:
        """Learnware columns to fill in."""
        return [c for c, s in enumerate(self.source) if s < 0]

    @property
    def identity(self) -> bool:
        return self.source == list(range(len(self.user_features)))

    def transform(self, X) -> np.ndarray:
        """User rows X (n, her columns) -> the learnware's input (n, its columns)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.user_features):
            raise InputError(f"expected rows of {len(self.user_features)} column(s), got shape {X.shape}")
        out = np.empty((X.shape[0], len(self.source)))
        shared = self.shared
        out[:, shared] = X[:, [self.source[c] for c in shared]]
        if self.missing:
            out[:, self.missing] = conditional_mean(self.spec.z, self.spec.beta, shared, out[:, shared], self.missing, self.bandwidth)
        return out


class MappedModel:
    """A model that reads its own columns, called with the user's rows (see ColumnMap)."""

    def __init__(self, model, column_map: ColumnMap):
        self.model = model
        self.column_map = column_map

    def predict(self, X):
        return self.model.predict(self.column_map.transform(X))

    def predict_proba(self, X):
        predict_proba = getattr(self.model, "predict_proba", None)
        if predict_proba is None:
            raise AttributeError("predict_proba")
        return predict_proba(self.column_map.transform(X))


def user_space_spec(column_map: ColumnMap, user_spec):
    """A learnware's RKME carried into the user's columns, for tools that work there (the job selector).

    Its points on the shared features keep their values; the user's columns it
    does not read are filled with their conditional mean under the user's own
    RKME (user_spec, on her columns) given the shared ones: rows typical of
    the learnware's training data, completed the way her data would complete
    them. -> an RKMESpec on the user's columns, same weights, the user's gamma.
    """
    from learnware_cli.rkme.spec import RKMESpec

    user_columns = len(column_map.user_features)
    if user_spec.dim != user_columns:
        raise InputError(f"the user's RKME has {user_spec.dim} column(s), her table {user_columns}")
    own_z = np.asarray(column_map.spec.z, dtype=np.float64)
    z = np.empty((own_z.shape[0], user_columns))
    known = sorted({column_map.source[c] for c in column_map.shared})
    for c in column_map.shared:
        z[:, column_map.source[c]] = own_z[:, c]
    rest = [j for j in range(user_columns) if j not in known]
    if rest:
        z[:, rest] = conditional_mean(user_spec.z, user_spec.beta, known, z[:, known], rest)
    return RKMESpec(z=z, beta=np.asarray(column_map.spec.beta, dtype=np.float64), gamma=user_spec.gamma)
