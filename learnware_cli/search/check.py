"""Checking search candidates on the user's labeled rows: measured loss, its uncertainty, a re-ranking.

The specification score says how close a learnware's training data is to the
user's; a few labeled rows say how well its model actually does on her task.
``check_candidates`` runs each candidate's model on those rows in the same
sandboxed workers that `lw reuse` uses (``reuse.market_models.open_learnwares``:
verified package, one subprocess per model, outputs held to their contract),
measures its loss and ranks the candidates by it.

Loss per row (``row_losses``): the squared error (mean over the outputs) for
regression, so their mean is the MSE; 0/1 error for classification, so their
mean is the error rate 1 − accuracy.

Uncertainty (``bootstrap_means``, ``percentile_interval``, ``best_share``):
B resamples of the labeled rows, drawn with replacement and shared by all
candidates (a paired bootstrap: every candidate is scored on the same
resampled rows, so their losses can be compared resample by resample). Each
candidate gets the percentile interval of its resampled losses; the
measured-best candidate gets the share of resamples in which no other
candidate does strictly better ("best in 87 % of resamples").

Candidates that cannot be planned (another input width), that fail to start,
or that fail to predict are reported in the summary's ``failures`` and left
out of the ranking; only when none is left is that an error (ReuseError).
The numerics are plain NumPy functions, testable without any model.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import numpy as np

from learnware_cli.errors import InputError, LwError
from learnware_cli.reuse.base import CLASSIFICATION, REGRESSION, ReuseError, check_targets, failure_reason, normalize_task

DEFAULT_BOOT = 1000
DEFAULT_LEVEL = 0.90
# cells of one bootstrap block (candidates x resamples x rows): bounds the memory of bootstrap_means
MAX_BLOCK_CELLS = 4_000_000

TIE_RTOL, TIE_ATOL = 1e-9, 1e-12  # best_shares: losses this close count as a tie

LOSS_NAMES = {REGRESSION: "mse", CLASSIFICATION: "error_rate"}


class CheckedCandidates(list):
    """What check_candidates returns: the candidates that were measured, best (lowest loss) first, plus

    ``summary``: {"task", "loss", "rows", "n_boot", "level", "seed", "asked", "best", "best_share",
    "failures"} (see check_candidates).
    """

    def __init__(self, items=(), summary: Optional[dict] = None):
        super().__init__(items)
        self.summary: dict = summary or {}


# --------------------------------------------------------------------------- numerics


def row_losses(task: str, y_true, y_pred) -> np.ndarray:
    """The loss of each labeled row i, shape (n,).

    Regression: ℓ_i = (1/t) Σ_j (y_ij − ŷ_ij)² over the t outputs, so mean_i ℓ_i is the MSE.
    Classification: ℓ_i = 1[y_i ≠ ŷ_i], so mean_i ℓ_i is the error rate 1 − accuracy.
    InputError when predictions and labels do not line up (rows, or outputs per row).
    """
    task = normalize_task(task)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if len(y_pred) != n:
        raise InputError(f"{n} labels but {len(y_pred)} predictions")
    if task == CLASSIFICATION:
        return (y_true.reshape(n, -1)[:, 0] != y_pred.reshape(n, -1)[:, 0]).astype(np.float64)
    y_true = np.asarray(y_true, dtype=np.float64).reshape(n, -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(n, -1)
    if y_true.shape[1] != y_pred.shape[1]:
        raise InputError(f"the model gives {y_pred.shape[1]} output(s) per row, your targets have {y_true.shape[1]}")
    return np.mean((y_true - y_pred) ** 2, axis=1)


def bootstrap_means(losses, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> np.ndarray:
    """Paired bootstrap of mean losses: (m candidates, n rows) -> (m, B).

    Resample b draws row indices i_1..i_n uniformly with replacement (one draw,
    shared by every candidate) and gives M[c, b] = (1/n) Σ_k L[c, i_k].
    Seeded (numpy's default_rng(seed)): the same inputs give the same figures.
    Done in blocks of resamples so that memory stays near MAX_BLOCK_CELLS cells.
    """
    L = np.asarray(losses, dtype=np.float64)
    if L.ndim != 2 or L.shape[1] == 0:
        raise InputError(f"losses must be (candidates, rows) with at least one row, got shape {L.shape}")
    n_boot = _positive_int(n_boot, "n_boot")
    m, n = L.shape
    rng = np.random.default_rng(seed)
    block = max(1, MAX_BLOCK_CELLS // (m * n))
    out = np.empty((m, n_boot))
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        out[:, start : start + b] = L[:, idx].mean(axis=2)
    return out


def percentile_interval(means, level: float = DEFAULT_LEVEL) -> np.ndarray:
    """Percentile interval of each candidate's bootstrap means: (m, B) -> (m, 2).

    [q(α/2), q(1 − α/2)] of row c of M, with α = 1 − level (level 0.9: the 5th and 95th percentiles).
    """
    alpha = 1.0 - _check_level(level)
    M = np.asarray(means, dtype=np.float64)
    return np.stack([np.quantile(M, alpha / 2, axis=1), np.quantile(M, 1 - alpha / 2, axis=1)], axis=1)


def best_shares(means) -> np.ndarray:
    """For each candidate c, the share of resamples in which it is best: (m, B) -> (m,).

    share_c = (1/B) #{b : M[c, b] ≤ min_c' M[c', b] + tol_b}: a tie for the lowest
    loss counts for each tied candidate, so the shares may add up to more than 1.
    tol_b = 1e-9 · |min_c' M[c', b]| + 1e-12 absorbs rounding, so that two models
    computing the same function (summing in another order) tie instead of
    splitting the resamples by floating-point noise.
    """
    M = np.asarray(means, dtype=np.float64)
    lowest = M.min(axis=0, keepdims=True)
    return np.mean(M <= lowest + TIE_RTOL * np.abs(lowest) + TIE_ATOL, axis=1)


def _check_level(level) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise InputError(f"the interval level must lie strictly between 0 and 1, got {level}")
    return level


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- the check


def check_candidates(
    market,
    candidates: Sequence[dict],
    X,
    y,
    task: Optional[str] = None,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    timeout: Optional[float] = None,
    user_columns=None,
    level: float = DEFAULT_LEVEL,
    progress: Optional[Callable[[int, int], None]] = None,
) -> CheckedCandidates:
    """Run each candidate on the labeled rows (X, y); -> the measured ones, lowest loss first.

    candidates: dicts with "id" and "version" (as `lw search` lists them; a
    "task" field, when present, is read before any model starts), best first.
    X: (n, d) table of the user's rows (the CLI fills missing cells with
    column means first); y: (n,) labels or (n,) / (n, t) targets.
    task: "Regression" or "Classification"; None: the candidates' task (they
    must agree). A candidate of another task is reported, not run.
    user_columns: reuse.market_models.UserColumns describing X's columns, so
    that learnwares on other column sets read them by market feature.

    Each returned dict is the candidate's, plus "measured_loss" (MSE or error
    rate on all n rows), "loss_interval" [lo, hi] (the bootstrap percentile
    interval at ``level``), "loss_name" ("mse" or "error_rate"), "best_share"
    (share of resamples in which it is best) and "spec_rank" (its 1-based
    place in ``candidates``). Ties keep the candidates' order.
    ``.summary``: task, loss, rows, n_boot, level, seed, asked (how many
    candidates were given), best ({"id", "version"}), best_share, failures
    ([{"id", "version", "reason"}] of those left out).

    Flags and labels are checked before any model starts (InputError);
    ReuseError when no candidate could be measured.
    """
    from learnware_cli.data_io import as_matrix
    from learnware_cli.reuse.market_models import open_learnwares

    candidates = [_candidate(c) for c in candidates]
    if not candidates:
        raise InputError("no candidates to check")
    n_boot = _positive_int(n_boot, "n_boot")
    level = _check_level(level)
    X = as_matrix(X, numeric=True)
    task = _task_of(candidates, task)
    failures: list[tuple[int, str]] = []  # (candidate position, reason)
    if task is not None:
        y = check_targets(task, X, y)
        for i, cand in enumerate(candidates):
            stated = _stated_task(cand)
            if stated is not None and stated != task:
                failures.append((i, f"its task is {stated}, not {task}"))
    elif len(np.asarray(y)) != len(X):
        raise InputError(f"{len(X)} rows but {len(np.asarray(y))} labels")
    runnable = [i for i in range(len(candidates)) if i not in dict(failures)]
    runnable = _plannable(market, candidates, runnable, X.shape[1], user_columns, failures)

    losses: dict[int, np.ndarray] = {}
    if runnable:
        refs = [(candidates[i]["id"], candidates[i].get("version"), 1.0) for i in runnable]
        with contextlib.ExitStack() as stack:  # every worker stops when it closes
            try:
                loaded = stack.enter_context(open_learnwares(market, refs, timeout=timeout, input_dim=X.shape[1], user_columns=user_columns))
            except ReuseError as exc:  # none started: each is a failure of its own
                reasons = dict(exc.failures)
                failures += [(i, reasons.get(candidates[i]["id"], exc.message)) for i in runnable]
                loaded = []
            started = _match_started(candidates, runnable, loaded, failures)
            for done, (i, learnware) in enumerate(started):
                if task is None:  # no candidate stated its task: the first that started says it
                    task = learnware.task
                    y = check_targets(task, X, y)
                try:
                    losses[i] = _measure(learnware, task, X, y)
                except _Failed as exc:
                    failures.append((i, exc.reason))
                if progress is not None:
                    progress(done + 1, len(started))
    failures.sort()
    failed = [{"id": candidates[i]["id"], "version": candidates[i].get("version"), "reason": why} for i, why in failures]
    if not losses:
        raise ReuseError("no candidate could be checked on your labeled rows", [(f["id"], f["reason"]) for f in failed])

    order = sorted(losses, key=lambda i: (float(np.mean(losses[i])), i))
    L = np.stack([losses[i] for i in order])
    means = bootstrap_means(L, n_boot, seed)
    intervals = percentile_interval(means, level)
    shares = best_shares(means)
    loss_name = LOSS_NAMES[task]
    checked = CheckedCandidates()
    for row, i in enumerate(order):
        checked.append({
            **candidates[i],
            "measured_loss": float(np.mean(losses[i])),
            "loss_interval": [float(intervals[row, 0]), float(intervals[row, 1])],
            "loss_name": loss_name,
            "best_share": float(shares[row]),
            "spec_rank": i + 1,
        })
    checked.summary = {
        "task": task,
        "loss": loss_name,
        "rows": int(len(X)),
        "n_boot": n_boot,
        "level": float(level),
        "seed": seed,
        "asked": len(candidates),
        "best": {"id": checked[0]["id"], "version": checked[0].get("version")},
        "best_share": float(shares[0]),
        "failures": failed,
    }
    return checked


class _Failed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _candidate(item) -> dict:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise InputError(f"a candidate needs an id: {item!r}")
    version = item.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise InputError(f"candidate {item['id']} has a bad version {version!r}")
    return dict(item)


def _stated_task(candidate: dict) -> Optional[str]:
    """The candidate's task as the search listed it (canonical), None when it states none we know."""
    try:
        return normalize_task(candidate.get("task"))
    except InputError:
        return None


def _task_of(candidates: list, task: Optional[str]) -> Optional[str]:
    """The task the check measures: the one given, else the candidates' (InputError when they mix)."""
    if task is not None:
        return normalize_task(task)
    stated = sorted({t for t in map(_stated_task, candidates) if t is not None})
    if len(stated) > 1:
        raise InputError(f"the candidates mix tasks ({', '.join(stated)}): keep one, e.g. --tag Task={stated[0]}")
    return stated[0] if stated else None


def _plannable(market, candidates: list, indices: list, width: int, user_columns, failures: list) -> list:
    """Of indices, the candidates open_learnwares can plan for these columns; the others become failures.

    open_learnwares refuses the whole list for one learnware of another input
    width (its rule for `lw reuse`, where the user named them); here each is
    tried alone, with the same rule, so one such candidate is only reported.
    """
    from learnware_cli.reuse.market_models import _plan

    kept = []
    for i in indices:
        ref = (candidates[i]["id"], candidates[i].get("version"), 1.0)
        try:
            _plan(market, [ref], width, user_columns)
        except LwError as exc:
            failures.append((i, failure_reason(exc)))
            continue
        kept.append(i)
    return kept


def _match_started(candidates: list, indices: list, loaded, failures: list) -> list:
    """(candidate position, ReusableLearnware) of each that started; the others' start failures recorded.

    open_learnwares keeps ref order in both ``loaded`` and ``loaded.described``
    and lists the rest in ``loaded.failures``, also in ref order.
    """
    described = list(getattr(loaded, "described", []))
    start_failures = list(getattr(loaded, "failures", []))
    started, pos, fail_pos = [], 0, 0
    for i in indices:
        cand = candidates[i]
        if pos < len(described) and _same(cand, described[pos]):
            started.append((i, loaded[pos]))
            pos += 1
        elif fail_pos < len(start_failures):
            failures.append((i, start_failures[fail_pos]["reason"]))
            fail_pos += 1
    return started


def _same(candidate: dict, described: dict) -> bool:
    return described["id"] == candidate["id"] and (candidate.get("version") is None or described["version"] == candidate["version"])


def _measure(learnware, task: str, X: np.ndarray, y) -> np.ndarray:
    """Row losses of one started learnware on (X, y); _Failed with a one-line reason otherwise."""
    from learnware_cli.reuse import SingleReuser

    if learnware.task != task:
        raise _Failed(f"its task is {learnware.task}, not {task}")
    reuser = SingleReuser(learnwares=[learnware]).fit()
    try:
        predictions = reuser.predict(X)
    except ReuseError as exc:
        raise _Failed(reuser.failures_[0][1] if reuser.failures_ else exc.message) from None
    try:
        return row_losses(task, y, predictions)
    except InputError as exc:
        raise _Failed(exc.message) from None
