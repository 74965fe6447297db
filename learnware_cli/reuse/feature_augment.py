"""Feature augmentation: learnware outputs become extra features for a simple model on the user's labels."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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
from learnware_cli.reuse.combine import class_scores, class_space

RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def default_estimator(classification: bool):
    """Standardised LogisticRegression / RidgeCV.

    Linear models suit few labels: with a learnware's output as a feature the
    target is often nearly linear in it, and a linear fit cannot overfit the
    extra columns the way a tree ensemble could. RidgeCV picks its own
    penalty by efficient leave-one-out.
    """
    if classification:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))


class FeatureAugmentReuser(BaseReuser):
    """Fit ``estimator`` on [X, outputs of every learnware] over the labeled rows.

    Learnware features: class probabilities (or one-hot labels when a model
    has none) for classification, outputs for regression. Classifiers with
    different numbers of classes are fine here: each gives its own feature
    columns and the estimator learns what they mean. The labeled rows and
    their features are kept, so a learnware that fails at predict time is
    dropped by refitting the (cheap) estimator without its columns.
    Learnwares of weight 0 take no part.

    Attributes
    ----------
    used_ids_ : list of str
        The learnwares whose outputs are features, in rank order.
    estimator_ : estimator
        The fitted estimator on [X, their features].
    classes_ : ndarray (classification only)
        The classes the feature columns and predictions range over.
    failures_, task_, n_classes_ : see ``BaseReuser``.
    """

    needs_labels = True
    uses_labels = True

    def __init__(
        self,
        learnwares: Sequence[ReusableLearnware] = (),
        estimator=None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[Progress] = None,
    ):
        self.learnwares = learnwares
        self.estimator = estimator
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X, y) -> "FeatureAugmentReuser":
        """X (n, d) numeric, y (n,) labels / (n,) or (n, t) targets."""
        X, y = self._begin_labeled(X, y)
        if self.is_classification and len(np.unique(y)) < 2:
            raise InputError("feature augmentation needs labeled rows of at least two classes")
        outputs = self._collect(X, self._alive(), want_proba=True)
        if not outputs:
            raise self._nothing_left("augment features with")
        if self.is_classification:
            self.classes_ = class_space(self.n_classes_, y, *[o.values for o in outputs.values()])
        self._train_X, self._train_y = X, (y if self.is_classification else squeeze_outputs(y))
        self._train_blocks = {i: self._features(o) for i, o in outputs.items()}
        self._refit(sorted(outputs))
        return self

    def predict(self, X) -> np.ndarray:
        """X (n, d) -> labels (n,) or outputs (n,) / (n, t)."""
        self._check_fitted()
        X = as_matrix(X, numeric=True)
        if X.shape[1] != self._train_X.shape[1]:
            raise InputError(f"data has {X.shape[1]} columns, the labeled rows had {self._train_X.shape[1]}")
        outputs = self._collect(X, self._used, want_proba=True)
        if not outputs:
            raise self._nothing_left("augment features with")
        if len(outputs) < len(self._used):
            self._refit(sorted(outputs))
        return self.estimator_.predict(self._design(X, [self._features(outputs[i]) for i in self._used]))

    def _features(self, output: ModelOutput) -> np.ndarray:
        """One learnware's feature block (n, c)."""
        if self.is_classification:
            return class_scores(output, self.classes_)
        return output.values

    @staticmethod
    def _design(X: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
        return np.hstack([X, *blocks])

    def _refit(self, used: list[int]) -> None:
        """Fit the estimator on the labeled rows with the blocks of ``used`` learnwares."""
        base = self.estimator if self.estimator is not None else default_estimator(self.is_classification)
        design = self._design(self._train_X, [self._train_blocks[i] for i in used])
        self.estimator_ = clone(base).fit(design, self._train_y)
        self._set_used(used)
