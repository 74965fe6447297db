"""The paper's "Top-k + user model": a model on the user's labels joins the top learnwares."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.model_selection import KFold, StratifiedKFold

from learnware_cli.errors import InputError
from learnware_cli.reuse.base import (
    DEFAULT_BATCH_SIZE,
    BaseReuser,
    ModelOutput,
    Progress,
    ReusableLearnware,
    as_matrix,
    squeeze_outputs,
)
from learnware_cli.reuse.combine import best_simplex_weights, class_scores, class_space

SMALL_DATA_ROWS = 5000


def default_user_model(classification: bool, n_rows: int, random_state: int):
    """Random forest for small data, histogram gradient boosting for large.

    A forest is robust with tens to thousands of rows (no tuning, no early-
    stopping split to starve it, handles non-linear targets); beyond
    SMALL_DATA_ROWS boosting is both faster and usually more accurate.
    """
    if n_rows <= SMALL_DATA_ROWS:
        cls = RandomForestClassifier if classification else RandomForestRegressor
        return cls(n_estimators=100, min_samples_leaf=2, random_state=random_state, n_jobs=1)
    cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
    return cls(random_state=random_state)


class UserEnsembleReuser(BaseReuser):
    """Average the top ``n_learnwares`` learnwares with a model trained on the user's labeled rows.

    Components are combined as probabilities (one-hot labels for a learnware
    without them) or outputs, with simplex weights minimising the squared
    error (Brier score / MSE) of out-of-fold user-model predictions together
    with the learnwares' predictions on the labeled rows. With fewer than
    ``min_cv_rows`` rows (or a class too rare to split) the weights are equal.
    A top learnware that fails during fit is replaced by the next-ranked one;
    one that fails at predict time is dropped and the remaining weights
    renormalised. Learnwares of weight 0 take no part; classifiers that
    declare different numbers of classes are refused (InputError), since
    their scores would be added by position.

    Attributes
    ----------
    used_ids_ : list of str
        The learnwares in the ensemble, in rank order (the user model is not listed).
    weights_ : ndarray (len(used_ids_) + 1,)
        Their weights, then the user model's; they sum to 1.
    user_model_ : estimator
        The user model, fitted on all labeled rows.
    classes_ : ndarray (classification only)
        The classes scores and predictions range over.
    failures_, task_, n_classes_ : see ``BaseReuser``.
    """

    needs_labels = True
    uses_labels = True

    def __init__(
        self,
        learnwares: Sequence[ReusableLearnware] = (),
        n_learnwares: int = 2,
        user_model=None,
        cv: int = 5,
        min_cv_rows: int = 20,
        random_state: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[Progress] = None,
    ):
        self.learnwares = learnwares
        self.n_learnwares = n_learnwares
        self.user_model = user_model
        self.cv = cv
        self.min_cv_rows = min_cv_rows
        self.random_state = random_state
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X, y) -> "UserEnsembleReuser":
        """X (n, d) numeric, y (n,) labels / (n,) or (n, t) targets."""
        X, y = self._begin_labeled(X, y)
        if isinstance(self.n_learnwares, bool) or not isinstance(self.n_learnwares, (int, np.integer)) or self.n_learnwares < 1:
            raise InputError(f"n_learnwares must be a positive integer, got {self.n_learnwares!r}")
        outputs = self._top_outputs(X)
        components = sorted(outputs)
        self._check_one_label_space(components, "user-ensemble")
        self._check_widths(outputs, y.shape[1] if y.ndim == 2 else None)
        if self.is_classification:
            self.classes_ = class_space(self.n_classes_, y, *[o.values for o in outputs.values()])
        target = self._target_scores(y)
        lw_scores = [self._lw_scores(outputs[i]) for i in components]
        user_oof = self._user_out_of_fold(X, y)
        if user_oof is None:
            self.weights_ = np.full(len(lw_scores) + 1, 1.0 / (len(lw_scores) + 1))
        else:
            self.weights_ = best_simplex_weights(lw_scores + [user_oof], target)
        fit_y = y if self.is_classification else squeeze_outputs(y)
        self.user_model_ = clone(self._base_user_model(len(X))).fit(X, fit_y)
        self._n_features = X.shape[1]
        self._set_used(components)
        return self

    def predict(self, X) -> np.ndarray:
        """X (n, d) -> labels (n,) or outputs (n,) / (n, t)."""
        self._check_fitted()
        X = as_matrix(X, numeric=True)
        if X.shape[1] != self._n_features:
            raise InputError(f"data has {X.shape[1]} columns, the labeled rows had {self._n_features}")
        outputs = self._collect(X, self._used, want_proba=True)
        if not outputs:
            raise self._nothing_left("ensemble with the user model")
        if len(outputs) < len(self._used):  # renormalise over the survivors, from now on
            keep = [k for k, i in enumerate(self._used) if i in outputs]
            weights = np.append(self.weights_[keep], self.weights_[-1])
            total = weights.sum()
            self.weights_ = weights / total if total > 0 else np.full(len(weights), 1.0 / len(weights))
            self._set_used([self._used[k] for k in keep])
        weights = self.weights_
        scores = [self._lw_scores(outputs[i]) for i in self._used]
        scores.append(self._user_scores(self.user_model_, X))
        combined = np.einsum("k,knc->nc", weights, np.stack(scores))
        if self.is_classification:
            return self.classes_[np.argmax(combined, axis=1)]
        return squeeze_outputs(combined)

    # -- components --------------------------------------------------------

    def _top_outputs(self, X: np.ndarray) -> dict[int, ModelOutput]:
        """Outputs of the best-ranked ``n_learnwares`` learnwares that work, walking down the ranking."""
        wanted = int(self.n_learnwares)
        outputs: dict[int, ModelOutput] = {}
        pending = self._alive()
        while len(outputs) < wanted and pending:
            take, pending = pending[: wanted - len(outputs)], pending[wanted - len(outputs) :]
            outputs.update(self._collect(X, take, want_proba=True))
        if not outputs:
            raise self._nothing_left("ensemble with the user model")
        return outputs

    def _base_user_model(self, n_rows: int):
        if self.user_model is not None:
            return self.user_model
        return default_user_model(self.is_classification, n_rows, self.random_state)

    def _lw_scores(self, output: ModelOutput) -> np.ndarray:
        """(n, C) class scores or (n, t) outputs."""
        return class_scores(output, self.classes_) if self.is_classification else output.values

    def _user_scores(self, model, X: np.ndarray) -> np.ndarray:
        """The user model's (n, C) probabilities over ``classes_`` or (n, t) outputs."""
        if not self.is_classification:
            return np.asarray(model.predict(X), dtype=np.float64).reshape(len(X), -1)
        return _place(model.predict_proba(X), model.classes_, self.classes_)

    def _target_scores(self, y: np.ndarray) -> np.ndarray:
        """What combined scores should equal: one-hot labels (n, C) or targets (n, t)."""
        if self.is_classification:
            return class_scores(ModelOutput(values=y), self.classes_)
        return y

    def _user_out_of_fold(self, X: np.ndarray, y: np.ndarray) -> Optional[np.ndarray]:
        """Out-of-fold user-model scores on the labeled rows, or None when there are too few rows to split."""
        splitter = self._splitter(y)
        if splitter is None:
            return None
        fit_y = y if self.is_classification else squeeze_outputs(y)
        oof = np.zeros(self._target_scores(y).shape)
        for train, test in splitter.split(X, fit_y):
            model = clone(self._base_user_model(len(train))).fit(X[train], fit_y[train])
            oof[test] = self._user_scores(model, X[test])
        return oof

    def _splitter(self, y: np.ndarray):
        n = len(y)
        folds = min(int(self.cv), n // 4)
        if n < self.min_cv_rows or folds < 2:
            return None
        if not self.is_classification:
            return KFold(folds, shuffle=True, random_state=self.random_state)
        _, counts = np.unique(y, return_counts=True)
        if len(counts) < 2 or counts.min() < 2:
            return None
        if counts.min() >= folds:
            return StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        return KFold(folds, shuffle=True, random_state=self.random_state)


def _place(proba: np.ndarray, model_classes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Columns of proba (n, len(model_classes)) moved to their place among ``classes`` -> (n, C)."""
    out = np.zeros((proba.shape[0], len(classes)))
    out[:, np.searchsorted(classes, model_classes)] = proba
    return out
