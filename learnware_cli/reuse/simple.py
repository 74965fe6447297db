"""Label-free reuse by a single learnware or by averaging several."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from learnware_cli.reuse.base import (
    DEFAULT_BATCH_SIZE,
    BaseReuser,
    Progress,
    ReusableLearnware,
    as_inputs,
    squeeze_outputs,
)
from learnware_cli.reuse.combine import average_outputs


class SingleReuser(BaseReuser):
    """The top-ranked learnware applied directly.

    If it fails, the next one in rank order answers instead (the failure is in
    ``failures_``), so a flaky worker costs a fallback rather than the result.
    A learnware of weight 0 is never used (see ``ReusableLearnware.weight``).

    Attributes
    ----------
    used_ids_ : list of str
        One id: after fit, the top-ranked learnware of positive weight; after
        predict, the one that answered.
    failures_, task_, n_classes_ : see ``BaseReuser``.
    """

    def __init__(
        self,
        learnwares: Sequence[ReusableLearnware] = (),
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[Progress] = None,
    ):
        self.learnwares = learnwares
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X=None, y=None) -> "SingleReuser":
        """Nothing to learn (X and y are not used); validates the learnwares and resets ``failures_``."""
        self._begin()
        self._set_used(self._alive()[:1])
        return self

    def predict(self, X) -> np.ndarray:
        """X (n, d) -> labels (n,) or outputs (n,) / (n, t) of the first learnware that works."""
        self._check_fitted()
        X = as_inputs(X)  # tables, images or texts: the models take them as they are
        for i in self._alive():
            outputs = self._collect(X, [i], want_proba=False)
            if i in outputs:
                self._set_used([i])
                return squeeze_outputs(outputs[i].values)
        raise self._nothing_left("predict with")


class AveragingReuser(BaseReuser):
    """Every learnware answers; the answers are averaged.

    Regression: the mean output. Classification: the argmax of the mean class
    probabilities when every model has ``predict_proba`` with n_classes
    columns, otherwise a majority vote of labels; classifiers that declare
    different numbers of classes are refused (InputError at fit), since
    adding their scores by position would mix their classes. A learnware of
    weight 0 takes no part; with ``use_weights`` the others count by their
    search mixture ``weight`` (off by default, as in the reference
    AveragingReuser: equal shares).

    Attributes
    ----------
    used_ids_ : list of str
        The learnwares averaged (after predict: those that answered).
    failures_, task_, n_classes_ : see ``BaseReuser``.
    """

    def __init__(
        self,
        learnwares: Sequence[ReusableLearnware] = (),
        use_weights: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[Progress] = None,
    ):
        self.learnwares = learnwares
        self.use_weights = use_weights
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X=None, y=None) -> "AveragingReuser":
        """Nothing to learn (X and y are not used); validates the learnwares and resets ``failures_``."""
        self._begin()
        self._check_one_label_space(self._alive(), "average")
        self._set_used(self._alive())
        return self

    def predict(self, X) -> np.ndarray:
        """X (n, d) -> labels (n,) or outputs (n,) / (n, t)."""
        self._check_fitted()
        X = as_inputs(X)  # tables, images or texts: the models take them as they are
        outputs = self._collect(X, self._alive(self._used), want_proba=True)
        if not outputs:
            raise self._nothing_left("average")
        self._check_widths(outputs)
        used = sorted(outputs)
        self._set_used(used)
        weights = [self._lws[i].weight for i in used] if self.use_weights else None
        return average_outputs(self.task_, [outputs[i] for i in used], weights)
