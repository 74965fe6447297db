"""What every reuser shares: the learnware protocol, failure bookkeeping and batched model calls.

In the product each learnware's model lives in its own worker process, so any
call may fail (a crash, a timeout). Reusers therefore never let one model's
exception escape: ``BaseReuser`` records it in ``failures_`` as (id, message),
leaves that learnware out for the rest of the estimator's life (``fit``
starts afresh) and raises ``ReuseError`` only when no learnware is left.

Conventions (shapes): X is (n, d); a regression model returns (n,) or (n, t),
kept internally as (n, t); a classifier returns labels (n,) that are the class
indices 0..n_classes-1 (or one score column per class, read as its argmax), and
``predict_proba`` columns (n, n_classes) in that class order (scikit-learn's
order for integer labels).

This module imports no JAX: only the job selector needs the RKME code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from learnware_cli.data_io import as_inputs, as_matrix  # noqa: F401  (re-exported: the reusers import them from here)
from learnware_cli.errors import EXIT_USAGE, InputError, LwError

if TYPE_CHECKING:  # pragma: no cover - typing only; importing rkme would load JAX
    from learnware_cli.rkme import RKMESpec

CLASSIFICATION = "Classification"
REGRESSION = "Regression"
TASKS = (CLASSIFICATION, REGRESSION)
DEFAULT_BATCH_SIZE = 4096

Progress = Callable[[int, int], None]


class ReuseError(LwError):
    """No learnware could be used: every candidate failed; the message names each failure."""

    exit_code = EXIT_USAGE
    kind = "reuse"

    def __init__(self, message: str, failures: Sequence[tuple[str, str]] = ()):
        self.failures = list(failures)
        if self.failures:
            message = f"{message}: " + "; ".join(f"{lw_id}: {why}" for lw_id, why in self.failures)
        super().__init__(message)


def failure_reason(exc: BaseException) -> str:
    """Why a learnware was left out, in one line: our own errors say it themselves
    (their message is written for people); anything else is named by its type."""
    own = isinstance(exc, LwError)
    lines = [line.strip() for line in str(exc.message if own else exc).splitlines() if line.strip()]
    if own:
        return lines[0] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def normalize_task(task: str) -> str:
    """'classification' / 'REGRESSION' ... -> the canonical spelling; anything else is an InputError."""
    for canonical in TASKS:
        if isinstance(task, str) and task.strip().lower() == canonical.lower():
            return canonical
    raise InputError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")


@dataclass
class ReusableLearnware:
    """One learnware as a reuser sees it.

    model: anything with ``predict(X)`` and, optionally, ``predict_proba(X)``
    (it may lack it, or raise AttributeError / NotImplementedError).
    spec: its RKME specification (only the job selector needs one).
    weight: its mixture weight from the search, finite and >= 0. A learnware
    of weight 0 is not part of the mixture: every reuser leaves it out (unless
    every weight is 0, which says nothing); the averaging reusers weigh the
    rest by it when asked (``use_weights``) and the job selector herds rows
    in proportion to it.
    """

    id: str
    model: Any = field(repr=False)
    spec: Optional["RKMESpec"] = field(default=None, repr=False)
    task: str = CLASSIFICATION
    n_classes: Optional[int] = None
    weight: float = 1.0

    def __post_init__(self):
        self.task = normalize_task(self.task)
        if self.n_classes is not None:
            self.n_classes = int(self.n_classes)
            if self.n_classes < 1:
                raise InputError(f"learnware {self.id}: n_classes must be positive, got {self.n_classes}")
        try:
            self.weight = float(self.weight)
        except (TypeError, ValueError):
            raise InputError(f"learnware {self.id}: weight must be a number, got {self.weight!r}") from None
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise InputError(f"learnware {self.id}: weight must be finite and >= 0, got {self.weight}")


@dataclass
class ModelOutput:
    """One model's answer on some rows.

    values: labels (n,) for classification, outputs (n, t) for regression.
    proba: (n, C) class probabilities, or None when the model gave none.
    """

    values: np.ndarray
    proba: Optional[np.ndarray] = None

    @staticmethod
    def concat(parts: Sequence["ModelOutput"]) -> "ModelOutput":
        values = np.concatenate([p.values for p in parts])
        probas = [p.proba for p in parts]
        proba = None if any(p is None for p in probas) else np.concatenate(probas)
        return ModelOutput(values=values, proba=proba)

    def take(self, rows: np.ndarray) -> "ModelOutput":
        return ModelOutput(self.values[rows], None if self.proba is None else self.proba[rows])


def integral_labels(labels) -> np.ndarray:
    """Labels (n,) as int64 when they are whole numbers (0.0 -> 0), else unchanged."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "biu":
        return labels.astype(np.int64)
    if labels.dtype.kind in "fO":
        try:
            as_float = labels.astype(np.float64)
        except (TypeError, ValueError):
            return labels
        if np.all(np.isfinite(as_float)) and np.all(as_float == np.round(as_float)):
            return as_float.astype(np.int64)
        if labels.dtype.kind == "O":
            return np.asarray(labels.tolist())
    return labels


def check_targets(task: str, X: np.ndarray, y) -> np.ndarray:
    """Labels for X: (n,) class labels for classification, (n, t) floats for regression."""
    if y is None:
        raise InputError("this reuse method needs labels (y) for the user's rows")
    y = np.asarray(y)
    if y.shape[0] != X.shape[0]:
        raise InputError(f"{X.shape[0]} rows but {y.shape[0]} labels")
    if task == REGRESSION:
        try:
            y = y.astype(np.float64).reshape(X.shape[0], -1)
        except (TypeError, ValueError):
            raise InputError("regression targets must be numbers") from None
        if not np.all(np.isfinite(y)):
            raise InputError("regression targets must be finite (found NaN or Inf)")
        return y
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"class labels must be one column, got shape {y.shape}")
    return integral_labels(y)


def squeeze_outputs(values: np.ndarray) -> np.ndarray:
    """Regression outputs (n, t) -> (n,) when t == 1, as the user expects."""
    return values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values


class BaseReuser(BaseEstimator):
    """scikit-learn-style base: subclasses take ``learnwares``, ``batch_size``, ``progress`` in __init__.

    ``learnwares`` is ranked (best first), as the search returns them.
    ``progress(done_rows, total_rows)`` is called after each batch of a pass
    over the data (a reuser that falls back to another learnware starts a new pass).
    ``fit`` must come first: ``predict`` before it raises scikit-learn's
    ``NotFittedError`` (label-free reusers learn nothing, but fit validates the
    learnwares and, for the job selector, trains the router).

    Attributes (every reuser, set by fit)
    ----------
    used_ids_ : list of str
        Ids of the learnwares the predictions come from, in rank order. After
        ``fit``: those the reuser will answer with; after ``predict``: those
        whose answers the predictions hold (a learnware that failed is no
        longer listed, except by the job selector when it had already
        answered some rows, which keep its answers).
    failures_ : list of (str, str)
        (id, one-line reason) of every learnware left out because it failed.
    task_ : str
        "Classification" or "Regression", shared by all learnwares.
    n_classes_ : int or None
        The widest declared class count (classification), else None.
    """

    needs_labels: ClassVar[bool] = False  # fit(X, y) requires labeled rows
    uses_labels: ClassVar[bool] = False  # fit(X, y) learns from labeled rows when given

    # -- set-up ---------------------------------------------------------

    def _begin(self) -> None:
        """Validate the learnware list and reset the fitted state (start of fit).

        Learnwares of weight 0 are not offered to the reuser (unless every
        weight is 0): ``_alive`` never returns them.
        """
        self.__dict__.pop("used_ids_", None)  # a fit that fails leaves the reuser unfitted
        lws = list(self.learnwares or [])
        if not lws:
            raise InputError("no learnwares to reuse")
        for lw in lws:
            if not isinstance(lw, ReusableLearnware):
                raise InputError(f"expected ReusableLearnware objects, got {type(lw).__name__}")
        tasks = sorted({lw.task for lw in lws})
        if len(tasks) > 1:
            raise InputError(f"learnwares mix tasks ({', '.join(tasks)}); reuse needs one task")
        batch = getattr(self, "batch_size", DEFAULT_BATCH_SIZE)
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch!r}")
        counts = {lw.n_classes for lw in lws if lw.n_classes is not None}
        self._lws = lws
        self.task_ = tasks[0]
        # The widest count covers every label a learnware can give (feature
        # augmentation and the user ensemble score over it); the combiners that
        # add up class scores by position refuse learnwares that differ
        # (``_check_one_label_space``).
        self.n_classes_ = max(counts) if counts else None
        self.failures_: list[tuple[str, str]] = []
        self._dead: set[int] = set()
        weighted = {i for i, lw in enumerate(lws) if lw.weight > 0}
        self._offered: set[int] = weighted or set(range(len(lws)))
        self._proba_width: dict[int, Optional[int]] = {}  # i -> width, or None: label-only

    def _begin_labeled(self, X, y, numeric: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``_begin`` for reusers that learn from labels: -> X, y checked for the task.

        numeric: X is a float table (n, d) the reuser computes with; else any
        model inputs (tables, images, texts) that only the models read.
        """
        self._begin()
        X = as_matrix(X, numeric=True) if numeric else as_inputs(X)
        return X, check_targets(self.task_, X, y)

    def _check_fitted(self) -> None:
        """NotFittedError (scikit-learn's) unless fit has completed."""
        check_is_fitted(self, "used_ids_")

    def _set_used(self, indices: Sequence[int]) -> None:
        self._used = list(indices)
        self.used_ids_ = [self._lws[i].id for i in self._used]

    def _check_one_label_space(self, indices: Sequence[int], method: str) -> None:
        """InputError when the given classifiers declare different numbers of classes.

        Adding class scores (or votes) by position assumes label j means the
        same class in every model; a 2-class and a 3-class model do not share
        that, and averaging them silently mixes their classes.
        """
        if self.task_ != CLASSIFICATION:
            return
        declared = [(self._lws[i].id, self._lws[i].n_classes) for i in indices if self._lws[i].n_classes is not None]
        if len({count for _, count in declared}) > 1:
            listed = ", ".join(f"{lw_id}: {count}" for lw_id, count in declared)
            raise InputError(
                f"{method} cannot combine classifiers with different numbers of classes ({listed}); "
                "choose learnwares with one label space, or use single, job-selector or feature-augment"
            )

    @property
    def is_classification(self) -> bool:
        return self.task_ == CLASSIFICATION

    # -- failure bookkeeping ---------------------------------------------

    def _alive(self, indices: Optional[Sequence[int]] = None) -> list[int]:
        """Of ``indices`` (default: all, in rank order), those offered (weight > 0) that have not failed."""
        indices = range(len(self._lws)) if indices is None else indices
        return [i for i in indices if i in self._offered and i not in self._dead]

    def _fail(self, i: int, exc: BaseException) -> None:
        self._dead.add(i)
        self.failures_.append((self._lws[i].id, failure_reason(exc)))

    def _nothing_left(self, what: str) -> ReuseError:
        return ReuseError(f"no learnware left to {what}", self.failures_)

    def _check_widths(self, outputs: dict[int, ModelOutput], width: Optional[int] = None) -> None:
        """Regression outputs must share one width t (that of the labels, when given): InputError naming the odd one."""
        if self.task_ != REGRESSION or not outputs:
            return
        width = width or next(iter(outputs.values())).values.shape[1]
        for i, out in outputs.items():
            if out.values.shape[1] != width:
                raise InputError(
                    f"learnware {self._lws[i].id} gives {out.values.shape[1]} outputs per row, expected {width}"
                )

    def _report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    # -- model calls -------------------------------------------------------

    def _call(self, i: int, X: np.ndarray, want_proba: bool) -> ModelOutput:
        """One validated model call on a batch X (b, d); raises on any defect."""
        model = self._lws[i].model
        if self.task_ == REGRESSION:
            return ModelOutput(values=_regression_values(model.predict(X), len(X)))
        if want_proba and self._proba_width.get(i, 0) is not None:
            proba = self._try_proba(i, X)
            if proba is not None:
                return ModelOutput(values=np.argmax(proba, axis=1).astype(np.int64), proba=proba)
        return ModelOutput(values=_label_values(model.predict(X), len(X)))

    def _try_proba(self, i: int, X: np.ndarray) -> Optional[np.ndarray]:
        """predict_proba (b, C), or None when this model has none (decided on its first call).

        Only the first call may reveal "no probabilities"; the same symptom later
        is a failure like any other.
        """
        known = i in self._proba_width
        model = self._lws[i].model
        if not known and _declares_no_proba(model):
            self._proba_width[i] = None
            return None
        try:
            proba = np.asarray(model.predict_proba(X), dtype=np.float64)
        except (AttributeError, NotImplementedError):
            if known:
                raise
            self._proba_width[i] = None
            return None
        expected = self._proba_width.get(i) or self._lws[i].n_classes or self.n_classes_
        good_shape = proba.ndim == 2 and proba.shape[0] == len(X) and (expected is None or proba.shape[1] == expected)
        if not good_shape:
            if known:
                raise ValueError(f"predict_proba returned shape {proba.shape} for {len(X)} rows")
            self._proba_width[i] = None  # unusable columns: vote with its labels instead
            return None
        if not np.all(np.isfinite(proba)):
            raise ValueError("predict_proba returned NaN or Inf")
        self._proba_width[i] = proba.shape[1]
        return proba

    def _collect(self, X: np.ndarray, indices: Sequence[int], want_proba: bool = True) -> dict[int, ModelOutput]:
        """Outputs of the given learnwares on all rows of X, batch by batch.

        The loop is batch-outer so progress counts rows of X; a learnware that
        fails on any batch is dropped entirely (its earlier batches too), so
        every returned output covers all n rows. -> {index: ModelOutput}
        """
        n = len(X)
        parts: dict[int, list[ModelOutput]] = {i: [] for i in self._alive(indices)}
        for start in range(0, n, int(self.batch_size)):
            batch = X[start : start + int(self.batch_size)]
            for i in list(parts):
                try:
                    parts[i].append(self._call(i, batch, want_proba))
                except Exception as exc:  # noqa: BLE001 - any model failure leaves that learnware out
                    self._fail(i, exc)
                    del parts[i]
            if not parts:
                return {}
            self._report(min(start + len(batch), n), n)
        return {i: ModelOutput.concat(p) for i, p in parts.items()}


def _regression_values(pred, rows: int) -> np.ndarray:
    """Model output -> finite float (rows, t)."""
    out = np.asarray(pred, dtype=np.float64)
    if out.ndim == 0 or out.shape[0] != rows or out.ndim > 2:
        raise ValueError(f"model returned shape {out.shape} for {rows} rows")
    out = out.reshape(rows, -1)
    if not np.all(np.isfinite(out)):
        raise ValueError("model returned NaN or Inf")
    return out


def _label_values(pred, rows: int) -> np.ndarray:
    """Model labels -> (rows,), ints when whole numbers; one score column per class -> the best class."""
    out = np.asarray(pred)
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    elif out.ndim == 2 and out.shape[0] == rows and out.dtype.kind in "biuf":
        out = np.argmax(out, axis=1)  # the market's contract allows scores as predict's answer
    if out.ndim != 1 or out.shape[0] != rows:
        raise ValueError(f"model returned labels of shape {out.shape} for {rows} rows")
    return integral_labels(out)


def _declares_no_proba(model) -> bool:
    """Whether the model says up front that it has no predict_proba.

    Read from a ``has_predict_proba`` attribute (bool or method) or, for the
    market's ``ModelWorker``, ``info()["has_predict_proba"]``; the worker's
    predict_proba raises a generic WorkerError otherwise, which would read
    as a failure.
    """
    flag = getattr(model, "has_predict_proba", None)
    if callable(flag):
        flag = flag()
    if flag is None and callable(getattr(model, "info", None)):
        info = model.info()
        flag = info.get("has_predict_proba") if isinstance(info, dict) else None
    return flag is False
