"""Ensemble pruning: average only the subset of learnwares that does best on the user's labels."""

from __future__ import annotations

from itertools import combinations
from typing import Optional, Sequence

import numpy as np

from learnware_cli.reuse.base import (
    DEFAULT_BATCH_SIZE,
    BaseReuser,
    ModelOutput,
    Progress,
    ReusableLearnware,
    as_inputs,
)
from learnware_cli.reuse.combine import average_outputs, prediction_loss


class EnsemblePruningReuser(BaseReuser):
    """Choose the subset whose averaged prediction has the least loss on (X, y), then average it.

    Loss: error rate (classification) or MSE (regression) of ``average_outputs``
    over the subset. Exhaustive over all 2^M - 1 subsets for M <=
    ``max_exhaustive`` learnwares, greedy forward selection beyond. Ties go
    to the smaller subset (then the better-ranked one), as the reference
    prefers small ensembles: a learnware that does not help is left out.
    Classifiers are only averaged with others that declare the same number
    of classes (a subset never mixes label spaces); learnwares of weight 0
    take no part.

    Learnware outputs on the labeled rows are kept, so when a selected
    learnware fails at predict time the subset is chosen again among the
    survivors without calling any model on the labeled rows.

    Attributes
    ----------
    used_ids_ : list of str
        The selected subset, in rank order.
    validation_loss_ : float
        Its loss on the labeled rows (error rate or MSE).
    failures_, task_, n_classes_ : see ``BaseReuser``.
    """

    needs_labels = True
    uses_labels = True

    def __init__(
        self,
        learnwares: Sequence[ReusableLearnware] = (),
        max_exhaustive: int = 10,
        use_weights: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[Progress] = None,
    ):
        self.learnwares = learnwares
        self.max_exhaustive = max_exhaustive
        self.use_weights = use_weights
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X, y) -> "EnsemblePruningReuser":
        """Score the learnwares on the labeled rows X (n, d), y (n,) and pick the subset."""
        X, self._y = self._begin_labeled(X, y, numeric=False)
        self._train_outputs = self._collect(X, self._alive(), want_proba=True)
        if not self._train_outputs:
            raise self._nothing_left("prune")
        self._check_widths(self._train_outputs, self._y.shape[1] if self._y.ndim == 2 else None)
        self._select(sorted(self._train_outputs))
        return self

    def predict(self, X) -> np.ndarray:
        """X (n, d) -> the selected subset's averaged prediction (n,) / (n, t)."""
        self._check_fitted()
        X = as_inputs(X)  # tables, images or texts: the models take them as they are
        outputs: dict[int, ModelOutput] = {}
        while True:
            missing = [i for i in self._used if i not in outputs]
            outputs.update(self._collect(X, missing, want_proba=True))
            if all(i in outputs for i in self._used):
                return self._average([outputs[i] for i in self._used], self._used)
            survivors = self._alive(sorted(self._train_outputs))
            if not survivors:
                raise self._nothing_left("predict with")
            self._select(survivors)

    # -- selection ---------------------------------------------------------

    def _select(self, candidates: list[int]) -> None:
        """Set ``used_ids_`` (and the indices behind it) and ``validation_loss_`` from candidates."""
        search = self._exhaustive if len(candidates) <= self.max_exhaustive else self._greedy
        subset, loss = search(candidates)
        self.validation_loss_ = loss
        self._set_used(subset)

    def _compatible(self, subset: Sequence[int]) -> bool:
        """Whether the subset shares one label space (always, for regression or undeclared counts)."""
        counts = {self._lws[i].n_classes for i in subset if self._lws[i].n_classes is not None}
        return len(counts) <= 1

    def _subset_loss(self, subset: Sequence[int]) -> float:
        pred = self._average([self._train_outputs[i] for i in subset], subset)
        return prediction_loss(self.task_, self._y, pred)

    def _exhaustive(self, candidates: list[int]) -> tuple[tuple[int, ...], float]:
        best, best_loss = None, np.inf
        for size in range(1, len(candidates) + 1):
            for subset in combinations(candidates, size):
                if not self._compatible(subset):
                    continue
                loss = self._subset_loss(subset)
                if loss < best_loss - 1e-12:
                    best, best_loss = subset, loss
        return best, best_loss

    def _greedy(self, candidates: list[int]) -> tuple[tuple[int, ...], float]:
        """Forward selection: add the learnware that lowers the loss most, stop when none does."""
        chosen: list[int] = []
        best_loss = np.inf
        while len(chosen) < len(candidates):
            trials = [
                (self._subset_loss(chosen + [c]), c)
                for c in candidates
                if c not in chosen and self._compatible(chosen + [c])
            ]
            if not trials:
                break
            loss, pick = min(trials, key=lambda t: t[0])
            if loss >= best_loss - 1e-12:
                break
            chosen.append(pick)
            best_loss = loss
        return tuple(sorted(chosen)), best_loss

    def _average(self, outputs: list[ModelOutput], subset: Sequence[int]) -> np.ndarray:
        weights = [self._lws[i].weight for i in subset] if self.use_weights else None
        return average_outputs(self.task_, outputs, weights)
