"""Label-free reuse by a single learnware or by averaging several."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from learnware_cli.reuse.base import (
    DEFAULT_BATCH_SIZE,
    BaseReuser,
    Progress,
    ReusableLearnware,
    as_matrix,
    squeeze_outputs,
)
from learnware_cli.reuse.combine import average_outputs


class SingleReuser(BaseReuser):
    """The top-ranked learnware applied directly.

    If it fails, the next one in rank order answers instead (the failure is in
    ``failures_``), so a flaky worker costs a fallback rather than the result.
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
        """Nothing to learn; validates the learnwares and resets ``failures_``."""
        self._begin()
        return self

    def predict(self, X) -> np.ndarray:
        """X (n, d) -> labels (n,) or outputs (n,) / (n, t) of the first learnware that works."""
        self._ensure_begun()
        X = as_matrix(X)
        for i in self._alive():
            outputs = self._collect(X, [i], want_proba=False)
            if i in outputs:
                self.used_ = self._lws[i].id
                return squeeze_outputs(outputs[i].values)
        raise self._nothing_left("predict with")


class AveragingReuser(BaseReuser):
    """Every learnware answers; the answers are averaged.

    Regression: the mean output. Classification: the argmax of the mean class
    probabilities when every model has ``predict_proba`` with n_classes
    columns, otherwise a majority vote of labels. With ``use_weights`` each
    learnware counts by its search mixture ``weight`` (off by default, as in
    the reference AveragingReuser).
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
        """Nothing to learn; validates the learnwares and resets ``failures_``."""
        self._begin()
        return self

    def predict(self, X) -> np.ndarray:
        """X (n, d) -> labels (n,) or outputs (n,) / (n, t)."""
        self._ensure_begun()
        X = as_matrix(X)
        outputs = self._collect(X, self._alive(), want_proba=True)
        if not outputs:
            raise self._nothing_left("average")
        self._check_widths(outputs)
        used = sorted(outputs)
        self.used_ = [self._lws[i].id for i in used]
        weights = [self._lws[i].weight for i in used] if self.use_weights else None
        return average_outputs(self.task_, [outputs[i] for i in used], weights)
