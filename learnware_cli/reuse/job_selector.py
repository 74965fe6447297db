"""Job selection: route each user row to the learnware whose training distribution it most resembles.

As in the reference JobSelectorReuser, no labels are needed: rows are drawn
from each learnware's RKME by kernel herding, labelled with the learnware's
position, and a classifier (the selector) learns to tell them apart. Each
user row then goes to the learnware the selector predicts.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from threadpoolctl import threadpool_limits

from learnware_cli.errors import InputError
from learnware_cli.reuse.base import (
    DEFAULT_BATCH_SIZE,
    BaseReuser,
    Progress,
    ReusableLearnware,
    as_matrix,
    integral_labels,
    squeeze_outputs,
)
from learnware_cli.reuse.combine import normalized_weights

HERD_CANDIDATES = 20_000
K_PAD = 16


QUADRATIC_MAX_DIM = 20


def make_selector(selector, n_features: int, random_state: int):
    """The selector classifier.

    "auto" (default): standardised LogisticRegression on degree-2 features
    ("quadratic") up to QUADRATIC_MAX_DIM columns, on the raw features
    ("logistic") beyond, where the d(d+3)/2 quadratic terms get too many.
    Why: herded rows look like Gaussian mixtures, whose Bayes boundaries are
    quadratic, and a logistic model extrapolates smoothly to user rows in the
    tails where herded rows are sparse. Measured on herded rows (5-D, routing
    accuracy on fresh rows): three separated blobs 0.994 quadratic / 0.994
    linear / 0.988 HistGradientBoosting; a shell around a core 0.985 / 0.508 /
    0.950; two overlapping blobs 0.916 / 0.927 / 0.920. Gradient boosting
    (the reference uses LightGBM) is available as "hgb" but misroutes tail
    rows (axis-aligned steps), and each misrouted row costs the full error of
    a wrong learnware; it is also 10-50x slower to fit.
    Any scikit-learn classifier with predict_proba may be given instead.
    """
    if selector == "auto":
        selector = "quadratic" if n_features <= QUADRATIC_MAX_DIM else "logistic"
    if selector == "quadratic":
        return make_pipeline(
            StandardScaler(),
            PolynomialFeatures(2, include_bias=False),
            StandardScaler(),
            LogisticRegression(max_iter=5000),
        )
    if selector == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if selector == "hgb":
        return HistGradientBoostingClassifier(random_state=random_state)
    if isinstance(selector, str):
        raise InputError(f"unknown selector {selector!r} (expected auto, quadratic, logistic, hgb or an estimator)")
    return clone(selector)


def herd_from_spec(spec, n: int, seed: int) -> np.ndarray:
    """n rows (n, d) herded from spec, computed through shapes that JAX compiles once.

    Kernel herding is sequential, so the first n rows of a longer herd (same
    seed and candidate count) are exactly the n-row herd: n is rounded up to a
    power of two and z padded with zero-weight points (never sampled, add
    nothing to the kernel mean), so a new n or K rarely means a new compile.
    """
    from learnware_cli.rkme import RKMESpec, herd

    bucket = max(64, 1 << (n - 1).bit_length())
    k, d = spec.z.shape
    k_pad = int(math.ceil(k / K_PAD) * K_PAD)
    z = np.zeros((k_pad, d))
    z[:k] = spec.z
    beta = np.zeros(k_pad)
    beta[:k] = spec.beta
    padded = RKMESpec(z=z, beta=beta, gamma=spec.gamma)
    return herd(padded, bucket, seed=seed, n_candidates=HERD_CANDIDATES)[:n]


def herd_counts(weights: np.ndarray, total: int, minimum: int) -> np.ndarray:
    """Rows to herd per learnware: proportional to its weight, at least ``minimum`` each.

    Proportional counts make the selector's class prior the user's mixture;
    the floor keeps a low-weight learnware selectable where it is the only
    plausible one.
    """
    return np.maximum(minimum, np.round(total * normalized_weights(weights, len(weights)))).astype(int)


class JobSelectorReuser(BaseReuser):
    """Route each row to one learnware, chosen by a selector trained on herded RKME rows.

    Herded rows per learnware follow the mixture weights of ``user_spec``
    (an RKMESpec of the user's data, as the reference computes from the user's
    data) when given, else each learnware's search ``weight``; a learnware of
    weight 0 gets no rows (it is not routed to at all). A learnware
    without a specification cannot be herded and is left out (recorded in
    ``failures_``). When a routed learnware fails, its rows go to the
    selector's next choice; rows it answered in earlier batches keep their
    answers (each row's prediction comes from one model anyway).

    Attributes
    ----------
    used_ids_ : list of str
        After fit: the learnwares rows can be routed to, in rank order; after
        predict: those that received rows.
    herd_counts_ : dict of str to int
        Rows herded from each routable learnware's RKME (its share of the
        selector's training set, i.e. its prior weight in the routing).
    selector_ : classifier or None
        The fitted selector (None when there is one learnware to route to).
    failures_, task_, n_classes_ : see ``BaseReuser``.
    """

    def __init__(
        self,
        learnwares: Sequence[ReusableLearnware] = (),
        herd_rows: int = 1000,
        min_herd_rows: int = 50,
        selector="auto",
        user_spec=None,
        random_state: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[Progress] = None,
    ):
        self.learnwares = learnwares
        self.herd_rows = herd_rows
        self.min_herd_rows = min_herd_rows
        self.selector = selector
        self.user_spec = user_spec
        self.random_state = random_state
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X=None, y=None) -> "JobSelectorReuser":
        """Herd rows from the specifications and train the selector (X and y are not used)."""
        self._begin()
        routes = self._routable()
        self._routes = routes
        self._dim = self._lws[routes[0]].spec.dim
        if len(routes) == 1:  # nothing to choose: no herding, no selector
            self.selector_ = None
            self.herd_counts_ = {self._lws[routes[0]].id: 0}
            self._set_used(routes)
            return self
        counts = herd_counts(self._route_weights(routes), int(self.herd_rows), int(self.min_herd_rows))
        rows = [
            herd_from_spec(self._lws[i].spec, int(count), seed=int(self.random_state) + p)
            for p, (i, count) in enumerate(zip(routes, counts))
        ]  # each (count, d)
        labels = np.concatenate([np.full(len(r), p) for p, r in enumerate(rows)])
        selector = make_selector(self.selector, self._dim, int(self.random_state))
        # One thread: the training set is small, and OpenMP/BLAS threads fighting
        # JAX's pool (or other processes) made fits up to 30x slower.
        with threadpool_limits(1):
            self.selector_ = selector.fit(np.vstack(rows), labels)
        self.herd_counts_ = {self._lws[i].id: int(c) for i, c in zip(routes, counts)}
        self._set_used(routes)
        return self

    def predict(self, X) -> np.ndarray:
        """X (n, d) -> labels (n,) or outputs (n,) / (n, t), each row from its routed learnware."""
        self._check_fitted()
        X = as_matrix(X)
        if X.shape[1] != self._dim:
            raise InputError(f"data has {X.shape[1]} columns, the learnwares' specifications have {self._dim}")
        n, parts, answered = len(X), [], set()
        for start in range(0, n, int(self.batch_size)):
            batch = X[start : start + int(self.batch_size)]
            parts.append(self._predict_batch(batch, answered))
            self._report(start + len(batch), n)
        # a learnware that answered some rows and then failed still gave those rows
        self._set_used([i for i in self._routes if i in answered])
        if self.is_classification:
            return integral_labels(np.concatenate(parts))
        return squeeze_outputs(np.concatenate(parts))

    def route(self, X) -> np.ndarray:
        """The learnware index (into ``learnwares``) each row of X (n, d) goes to -> (n,)."""
        self._check_fitted()
        scores = self._route_scores(as_matrix(X))
        return np.asarray(self._routes)[np.argmax(scores, axis=1)]

    # -- internals ---------------------------------------------------------

    def _routable(self) -> list[int]:
        """Learnwares that can be routed to: alive (so of positive weight) and with a specification of one dimension."""
        routes = []
        for i in self._alive():
            if self._lws[i].spec is None:
                self._fail(i, InputError("no RKME specification to route by"))
            elif getattr(self._lws[i].spec, "data_type", "Table") != "Table":
                # routing herds rows in the models' input space: a text spec's points are embeddings, not texts
                self._fail(i, InputError(f"the job selector routes table rows; this is a {self._lws[i].spec.type_name}"))
            else:
                routes.append(i)
        if not routes:
            raise self._nothing_left("route to")
        dims = {self._lws[i].spec.dim for i in routes}
        if len(dims) > 1:
            raise InputError(f"learnwares' specifications have different dimensions ({sorted(dims)})")
        return routes

    def _route_weights(self, routes: list[int]) -> np.ndarray:
        if self.user_spec is None:
            return np.array([self._lws[i].weight for i in routes])
        from learnware_cli.rkme import mixture_weights

        weights, _, _ = mixture_weights(self.user_spec, [self._lws[i].spec for i in routes])
        return weights

    def _route_scores(self, X: np.ndarray) -> np.ndarray:
        """Selector preference (b, routes); -inf for learnwares that have failed."""
        if self.selector_ is None:
            scores = np.ones((len(X), 1))
        else:
            scores = np.full((len(X), len(self._routes)), -np.inf)
            scores[:, self.selector_.classes_.astype(int)] = _preferences(self.selector_, X)
        dead = [p for p, i in enumerate(self._routes) if i in self._dead]
        scores[:, dead] = -np.inf
        return scores

    def _predict_batch(self, X: np.ndarray, answered: set) -> np.ndarray:
        """Predictions for one batch (b, d): each routed group in one call, re-routed on failure.

        Adds to ``answered`` the learnwares that gave rows."""
        scores = self._route_scores(X)
        done_rows: list[np.ndarray] = []
        done_values: list[np.ndarray] = []
        pending = np.arange(len(X))
        while len(pending):
            if not np.isfinite(scores[pending]).any(axis=1).all():
                raise self._nothing_left("route to")
            choice = np.argmax(scores[pending], axis=1)
            retry = []
            for p in np.unique(choice):
                rows = pending[choice == p]
                i = self._routes[p]
                try:
                    done_values.append(self._call(i, X[rows], want_proba=False).values)
                    done_rows.append(rows)
                    answered.add(i)
                except Exception as exc:  # noqa: BLE001 - a failed learnware's rows go elsewhere
                    self._fail(i, exc)
                    scores[:, p] = -np.inf
                    retry.append(rows)
            pending = np.concatenate(retry) if retry else np.arange(0)
        order = np.argsort(np.concatenate(done_rows), kind="stable")
        return np.concatenate(done_values)[order]


def _preferences(selector, X: np.ndarray) -> np.ndarray:
    """Selector scores per class (b, classes): probabilities, else 1 for the predicted class and 0 elsewhere."""
    try:
        return selector.predict_proba(X)
    except AttributeError:
        chosen = np.searchsorted(selector.classes_, selector.predict(X))
        scores = np.zeros((len(X), len(selector.classes_)))
        scores[np.arange(len(X)), chosen] = 1.0
        return scores
