"""Model outputs computed once (by the market's workers), served again from memory.

The experiment asks every learnware's worker for its predictions on every
user's rows once, then evaluates many reusers (budgets x seeds) on those rows.
A ``CachedModel`` stands in for the worker: ``predict(X)`` looks each row of X
up among the rows that were predicted and returns the stored output, so the
reusers run unchanged and no model is ever loaded in the experiment process.
Asking for a row that was never predicted is an error (``LookupError``), not a
silent recomputation.
"""

from __future__ import annotations

import numpy as np


class RowLookup:
    """Position of each distinct row of X (n, d), found by its exact float64 bytes."""

    def __init__(self, X: np.ndarray):
        X = np.ascontiguousarray(X, dtype=np.float64)
        self.dim = X.shape[1]
        self.n_rows = X.shape[0]
        # later duplicates map to the first copy: identical rows get identical outputs anyway
        self._index: dict[bytes, int] = {}
        for i, row in enumerate(X):
            self._index.setdefault(row.tobytes(), i)

    def rows(self, X) -> np.ndarray:
        """X (b, d) -> positions (b,) of its rows among the cached ones."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise LookupError(f"expected rows of {self.dim} columns, got shape {X.shape}")
        try:
            return np.fromiter((self._index[row.tobytes()] for row in X), dtype=np.intp, count=len(X))
        except KeyError:
            raise LookupError("a row was asked for that the learnware was never run on") from None


class CachedModel:
    """A regression model whose outputs (n,) or (n, t) on the rows of a RowLookup are known."""

    has_predict_proba = False

    def __init__(self, lookup: RowLookup, outputs: np.ndarray):
        outputs = np.asarray(outputs)
        if len(outputs) != lookup.n_rows:
            raise ValueError(f"{len(outputs)} outputs for {lookup.n_rows} cached rows")
        self.lookup = lookup
        self.outputs = outputs

    def predict(self, X) -> np.ndarray:
        return self.outputs[self.lookup.rows(X)]
