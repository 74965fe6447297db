"""Choosing the reuse method for the user: every candidate is scored by cross-validation on their labeled rows.

The market's models are the expensive part (each runs in its own worker), so
each learnware answers the labeled rows once; every candidate method then
runs, unchanged, on ``ReplayModel`` stand-ins that serve those answers from
memory. Cross-validation therefore costs model fits of the user-side
estimators only (feature augmentation's, the user ensemble's), never a worker call.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from learnware_cli.errors import InputError
from learnware_cli.reuse.base import (
    DEFAULT_BATCH_SIZE,
    BaseReuser,
    ModelOutput,
    Progress,
    ReusableLearnware,
)
from learnware_cli.reuse.combine import evaluate
from learnware_cli.reuse.feature_augment import FeatureAugmentReuser
from learnware_cli.reuse.job_selector import JobSelectorReuser
from learnware_cli.reuse.pruning import EnsemblePruningReuser
from learnware_cli.reuse.simple import AveragingReuser, SingleReuser
from learnware_cli.reuse.user_ensemble import UserEnsembleReuser

# Simplest first: on a tie the simpler method wins.
CANDIDATES: dict[str, type[BaseReuser]] = {
    "single": SingleReuser,
    "average": AveragingReuser,
    "job-selector": JobSelectorReuser,
    "ensemble-pruning": EnsemblePruningReuser,
    "feature-augment": FeatureAugmentReuser,
    "user-ensemble": UserEnsembleReuser,
}
MIN_LABELED_ROWS = 10
SEVERAL = ("average", "job-selector", "ensemble-pruning")  # the same as single with one learnware
TABLE_ONLY = ("job-selector", "feature-augment", "user-ensemble")  # compute on the rows' columns


class RowIndex:
    """Position of each distinct item of X: a table row, an image (exact float64 bytes) or a text."""

    def __init__(self, X):
        X = self._items(X)
        self._shape = X.shape[1:]
        self._index: dict = {}
        for i, item in enumerate(X):
            self._index.setdefault(self._key(item), i)  # identical items have identical answers

    @staticmethod
    def _items(X) -> np.ndarray:
        X = np.asarray(X)
        return X if X.dtype.kind == "U" else np.ascontiguousarray(X, dtype=np.float64)

    @staticmethod
    def _key(item):
        return str(item) if isinstance(item, str) or getattr(item, "dtype", None) is not None and item.dtype.kind == "U" else item.tobytes()

    def find(self, X) -> Optional[np.ndarray]:
        """Positions (b,) of the items of X, or None unless every item is known."""
        try:
            X = self._items(X)
        except (TypeError, ValueError):
            return None
        if X.ndim < 1 or X.shape[1:] != self._shape:
            return None
        positions = np.empty(len(X), dtype=np.intp)
        for j, item in enumerate(X):
            position = self._index.get(self._key(item))
            if position is None:
                return None
            positions[j] = position
        return positions


class ReplayModel:
    """A model whose answers on some rows are known: a batch of those rows is answered
    from memory, any other batch by the model itself.

    ``output`` is what the reuser collected on the rows of ``index`` (labels,
    or argmax of probabilities, and the probabilities when the model gave
    usable ones); ``has_predict_proba`` says whether it did.
    """

    def __init__(self, model, index: RowIndex, output: ModelOutput):
        self.model = model
        self._index = index
        self._output = output
        self.has_predict_proba = output.proba is not None

    def predict(self, X):
        rows = self._index.find(X)
        return self.model.predict(X) if rows is None else self._output.values[rows]

    def predict_proba(self, X):
        if self._output.proba is None:
            raise AttributeError("no usable predict_proba")
        rows = self._index.find(X)
        return self.model.predict_proba(X) if rows is None else self._output.proba[rows]


class AutoReuser(BaseReuser):
    """Score every applicable reuse method on the labeled rows (X, y) and reuse with the best.

    Candidates (``methods``, default all): single, average, job-selector,
    ensemble-pruning (those three need two or more learnwares),
    feature-augment and user-ensemble. Each learnware answers the labeled
    rows once; the candidates then run on those answers (``ReplayModel``).
    Methods that learn from labels are scored by ``cv``-fold cross-validation
    (stratified when every class allows it; out-of-fold predictions pooled);
    label-free ones learn nothing from y, so every labeled row is already
    held out for them and they are scored on all rows. Score: MSE for
    regression (lowest wins), accuracy for classification (highest wins); a
    tie goes to the simpler method (the order above). A candidate that
    cannot run here (InputError: classifiers with different numbers of
    classes, a single class in a fold) is listed in ``skipped_``. The
    chosen method is then fitted on all labeled rows (again from memory)
    and answers new rows with the learnwares themselves.

    With fewer than ``min_labeled_rows`` labeled rows (or none: ``fit()``)
    a comparison would be noise, so nothing is scored: the job selector is
    used when there are several learnwares with specifications, else single.

    Attributes
    ----------
    used_ids_ : list of str
        As for the chosen reuser (see ``BaseReuser``).
    chosen_ : str
        The method used.
    reason_ : str
        Why, in one line.
    cv_scores_ : dict of str to float
        Each scored candidate's cross-validated score (empty when nothing was scored).
    metric_ : str
        "mse" or "accuracy".
    n_folds_ : int
        Folds used for the methods that learn from labels (0 when nothing was scored).
    n_labeled_ : int
        Labeled rows given.
    skipped_ : dict of str to str
        Candidates that could not run, with the reason.
    reuser_ : BaseReuser
        The fitted reuser of the chosen method; ``predict`` delegates to it.
    failures_, task_, n_classes_ : see ``BaseReuser``.
    """

    uses_labels = True

    def __init__(
        self,
        learnwares: Sequence[ReusableLearnware] = (),
        methods: Optional[Sequence[str]] = None,
        cv: int = 5,
        min_labeled_rows: int = MIN_LABELED_ROWS,
        user_spec=None,
        random_state: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[Progress] = None,
    ):
        self.learnwares = learnwares
        self.methods = methods
        self.cv = cv
        self.min_labeled_rows = min_labeled_rows
        self.user_spec = user_spec
        self.random_state = random_state
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X=None, y=None) -> "AutoReuser":
        """X (n, d), y (n,) / (n, t): the labeled rows; none (fit()) chooses without scoring."""
        for stale in ("reuser_", "used_ids_"):
            self.__dict__.pop(stale, None)
        methods = self._allowed_methods()
        for name, value, least in (("cv", self.cv, 2), ("min_labeled_rows", self.min_labeled_rows, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise InputError(f"{name} must be an integer >= {least}, got {value!r}")
        if X is None and y is None:
            self._begin()
        elif X is None:
            raise InputError("labels (y) were given without their rows (X)")
        else:
            X, y = self._begin_labeled(X, y, numeric=False)  # images and texts too; table methods check below
        self.metric_ = "accuracy" if self.is_classification else "mse"
        self.n_labeled_ = 0 if X is None else len(X)
        self.cv_scores_: dict[str, float] = {}
        self.skipped_: dict[str, str] = {}
        self.n_folds_ = 0
        candidates = self._applicable(methods, [self._lws[i] for i in self._alive()], X)
        folds = min(int(self.cv), self.n_labeled_ // 2)
        if self.n_labeled_ < max(int(self.min_labeled_rows), 4) or folds < 2:
            self._fall_back(candidates, X, y)
        else:
            self._compare(candidates, X, y, folds)
        self._own_failures = list(self.failures_)
        self._sync()
        return self

    def predict(self, X) -> np.ndarray:
        """X (n, d) -> the chosen reuser's predictions."""
        self._check_fitted()
        self.reuser_.progress = self.progress
        try:
            return self.reuser_.predict(X)
        finally:
            self._sync()

    # -- choosing ----------------------------------------------------------

    def _allowed_methods(self) -> list[str]:
        if self.methods is None:
            return list(CANDIDATES)
        names = [self.methods] if isinstance(self.methods, str) else list(self.methods)
        unknown = [m for m in names if m not in CANDIDATES]
        if unknown or not names:
            raise InputError(f"methods must be among {', '.join(CANDIDATES)}, got {names!r}")
        return [m for m in CANDIDATES if m in names]

    def _applicable(self, methods: list[str], learnwares: list[ReusableLearnware], X=None) -> list[str]:
        """The methods that make sense for these learnwares and rows (the others go to ``skipped_``)."""
        with_spec = sum(lw.spec is not None for lw in learnwares)
        tabular = X is None or (np.ndim(X) == 2 and np.asarray(X).dtype.kind in "biuf")
        out = []
        for m in methods:
            if m in TABLE_ONLY and not tabular:
                self.skipped_[m] = "works on table rows (it learns from or herds columns); these are images or texts"
            elif m in SEVERAL and len(learnwares) < 2:
                self.skipped_[m] = "needs two or more learnwares"
            elif m == "job-selector" and with_spec < 2:
                self.skipped_[m] = "needs two or more learnwares with specifications"
            else:
                out.append(m)
        return out

    def _make(self, method: str, learnwares: list[ReusableLearnware]) -> BaseReuser:
        cls = CANDIDATES[method]
        params = {"learnwares": learnwares, "batch_size": self.batch_size}
        if method == "job-selector":
            params.update(user_spec=self.user_spec, random_state=self.random_state)
        if method == "user-ensemble":
            params.update(random_state=self.random_state)
        return cls(**params)

    def _fall_back(self, candidates: list[str], X, y) -> None:
        """Too few labels to compare: the label-free default (job selector for several learnwares, else single)."""
        pick = next((m for m in ("job-selector", "single") if m in candidates), None) or (candidates or [None])[0]
        if pick is None:
            raise InputError("no reuse method applies to these learnwares")
        if CANDIDATES[pick].needs_labels and X is None:
            raise InputError(f"{pick} needs labeled rows")
        few = "no labeled rows" if not self.n_labeled_ else f"only {self.n_labeled_} labeled rows (fewer than {max(int(self.min_labeled_rows), 4)})"
        self.chosen_ = pick
        self.reason_ = f"{few}: too few to compare methods, so the default {pick}"
        reuser = self._make(pick, self._lws)
        reuser.progress = self.progress
        self.reuser_ = reuser.fit(X, y) if reuser.needs_labels else reuser.fit()

    def _compare(self, candidates: list[str], X: np.ndarray, y: np.ndarray, folds: int) -> None:
        """Answers on X once, every candidate scored on them, the best refitted on all rows."""
        outputs = self._collect(X, self._alive(), want_proba=True)
        if not outputs:
            raise self._nothing_left("score the reuse methods with")
        index = RowIndex(X)
        replayed = [
            ReusableLearnware(lw.id, ReplayModel(lw.model, index, outputs[i]), lw.spec, lw.task, lw.n_classes, lw.weight)
            for i, lw in enumerate(self._lws)
            if i in outputs
        ]
        candidates = self._applicable(candidates, replayed)  # some may have failed
        splits = list(self._splitter(y, folds).split(X, y if self.is_classification else None))
        self.n_folds_ = len(splits)
        fitted: dict[str, BaseReuser] = {}
        for method in candidates:
            try:
                if CANDIDATES[method].needs_labels:
                    pred = self._out_of_fold(method, replayed, X, y, splits)
                else:  # learns nothing from y: every labeled row is held out already
                    fitted[method] = self._make(method, replayed).fit()
                    pred = fitted[method].predict(X)
            except InputError as exc:
                self.skipped_[method] = exc.message
                continue
            self.cv_scores_[method] = float(evaluate(self.task_, y, pred)[1])
        if not self.cv_scores_:
            raise InputError("no reuse method could be scored: " + "; ".join(f"{m}: {why}" for m, why in self.skipped_.items()))
        sign = -1.0 if self.metric_ == "mse" else 1.0
        self.chosen_ = max(self.cv_scores_, key=lambda m: sign * self.cv_scores_[m])  # first of equals: the simpler
        best = "lowest cross-validated MSE" if self.metric_ == "mse" else "highest cross-validated accuracy"
        self.reason_ = f"{best} on your {self.n_labeled_} labeled rows ({self.n_folds_} folds)"
        if self.chosen_ in fitted:
            self.reuser_ = fitted[self.chosen_]
        else:
            self.reuser_ = self._make(self.chosen_, replayed).fit(X, y)

    def _splitter(self, y: np.ndarray, folds: int):
        if self.is_classification:
            _, counts = np.unique(y, return_counts=True)
            if counts.min() >= folds:
                return StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        return KFold(folds, shuffle=True, random_state=self.random_state)

    def _out_of_fold(self, method: str, learnwares, X: np.ndarray, y: np.ndarray, splits) -> np.ndarray:
        """Predictions (n, ...) for every labeled row by a reuser fitted on the other folds."""
        parts, rows = [], []
        for train, test in splits:
            reuser = self._make(method, learnwares).fit(X[train], y[train])
            parts.append(np.asarray(reuser.predict(X[test])))
            rows.append(test)
        order = np.argsort(np.concatenate(rows), kind="stable")
        return np.concatenate(parts)[order]

    def _sync(self) -> None:
        """Take used_ids_ and the failures from the chosen reuser."""
        reuser = self.reuser_
        self.failures_ = self._own_failures + [f for f in reuser.failures_ if f not in self._own_failures]
        self.used_ids_ = list(reuser.used_ids_)
