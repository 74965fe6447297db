"""Anchor learnwares: identifying learnwares for a user with labels but no RKME to share (the paper's §3.3).

1. **Function signatures.** The learnwares of one island (table data, one
   input width, one task) are compared by what they *do*: each is run, in its
   sandboxed worker, on one common probe bank (rows herded from every
   specification of the island, ``BANK_ROWS_PER_SPEC`` each, at most
   ``BANK_MAX_ROWS``), and its outputs are its signature. The bank and the
   signatures are kept in ``MARKET/anchors/`` and only learnwares without a
   signature on the current bank are run again (``refresh`` rebuilds the bank
   from the specs of the day, e.g. after the market has grown into new regions).
2. **Functional distance** D(l, m) = mean over bank rows of ||f_l(x) - f_m(x)||^2
   (regression outputs; class probabilities for classification, so it is the
   Brier distance between the two models), ``functional_distances``.
3. **Anchors** = k-medoids of D (farthest-point start from the medoid of the
   island, then swaps while the total distance to the nearest anchor drops),
   ``choose_anchors``: n learnwares spread over the functional space.
4. **Scores, not data.** The user runs the anchors on her labeled rows on her
   machine and shares only their losses (``evaluate_anchors``; MSE, or the
   Brier score for classification) plus the loss of the constant predictor of
   her labels (``baseline``), one number each; no row leaves her machine.
5. **Ranking by multilateration** (``rank_by_scores``). If her labels were
   y = f_l(x) + noise of variance s_l, an anchor a would score
   loss_a ~ s_l + D(l, a) (bias-variance, with D measured on the bank instead
   of her rows). So each learnware l is scored by how well its distances to the
   anchors explain the anchors' losses: s_l = max(0, mean_a(loss_a - D(l,a)))
   and residual r_l = mean_a (loss_a - s_l - D(l,a))^2, both weighted by the
   anchors' inverse loss variances (``rank_by_scores``); learnwares rank by
   r_l + s_l^2 (misfit plus the implied loss of the learnware itself), and
   the *indicator* is (s_l + sqrt(r_l)) / baseline for the best l: its implied
   loss plus how badly the anchors' scores fit it, against the loss of
   predicting her labels' mean. Near 0: a learnware explains her labels; near
   1: the market has nothing much better than her mean. A signal, not a
   verdict: on a synthetic island (30 linear learnwares, 8 anchors, 50 rows)
   labels made by a market learnware gave a median of 0.3 (but 1.5 and 1.7
   in 2 of 10 users whose anchors were all far), pure noise 0.75–0.87.
   Finally (``trust_measured``), the best-scoring anchor goes first when its
   measured loss is no worse than the top pick's predicted loss.
   Chosen over a kernel regression of the scores (which can only interpolate
   between anchors and ranks the best anchor's neighbours by proximity alone)
   because it uses every anchor's score as a distance constraint, so a
   learnware far from all anchors can still be found when the distances
   "triangulate" to it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from learnware_cli.errors import InputError

ANCHORS_DIR = "anchors"
BANK_ROWS_PER_SPEC = 8
BANK_MAX_ROWS = 512
SCORES_FORMAT = "lw-anchor-scores/1"


# --------------------------------------------------------------------------- numerics


def functional_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """D[i, j] = mean over bank rows r of ||a_i(r) - b_j(r)||^2.

    a (L, R, t), b (M, R, t): outputs of L and M models on the same R rows,
    t outputs each (regression columns, or class probabilities). -> (L, M).
    Expanded as |a|^2 + |b|^2 - 2 a.b over the flattened (R t) axis.
    """
    rows = a.shape[1]
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(squared, 0.0) / max(rows, 1)


def choose_anchors(distances: np.ndarray, n: int, max_swaps: int = 100) -> list[int]:
    """n medoids of a distance matrix (L, L): farthest-point start, then k-medoids swaps.

    Start: the island's medoid (least total distance), then repeatedly the
    point farthest from the chosen ones. Swaps: replace an anchor by a
    non-anchor while that lowers sum_l min_a D(l, a), best swap first.
    Deterministic (ties: lowest index). -> anchor indices, in choice order.
    """
    count = distances.shape[0]
    n = min(n, count)
    chosen = [int(np.argmin(distances.sum(axis=1)))]
    nearest = distances[:, chosen[0]].copy()
    while len(chosen) < n:
        far = int(np.argmax(np.where(np.isin(np.arange(count), chosen), -np.inf, nearest)))
        chosen.append(far)
        nearest = np.minimum(nearest, distances[:, far])

    def cost(anchors):
        return float(distances[:, anchors].min(axis=1).sum())

    current = cost(chosen)
    for _ in range(max_swaps):
        best = (current, None, None)
        for position in range(n):
            for candidate in range(count):
                if candidate in chosen:
                    continue
                trial = chosen[:position] + [candidate] + chosen[position + 1 :]
                value = cost(trial)
                if value < best[0] - 1e-12:
                    best = (value, position, candidate)
        if best[1] is None:
            break
        current, position, candidate = best
        chosen[position] = candidate
    return chosen


def rank_by_scores(to_anchors: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multilateration of the user's function from the anchors' losses (see the module docstring).

    to_anchors (L, A) = D(l, a); losses (A,) = the anchors' losses on her rows.
    Each loss is an average over her n rows, so its standard error grows with
    its size (for Gaussian residuals var(MSE) = 2 loss^2 / n): the fit weighs
    anchor a by w_a = loss_a^-2 / sum(loss^-2), its inverse variance, so the
    anchors that fit her well (small, sure losses) count most:
        s_l = max(0, sum_a w_a (loss_a - D(l, a))),   r_l = sum_a w_a (loss_a - s_l - D(l, a))^2,
    ranked by r_l + s_l^2. (Unweighted, the top-3 rate on a 30-learnware,
    8-anchor synthetic market was 0.87; weighted 0.95.)
    -> (order (L,) best first, implied loss s (L,), residual r (L,)).
    """
    weights = 1.0 / np.maximum(losses, 1e-12) ** 2
    weights = weights / weights.sum()
    gap = losses[None, :] - to_anchors
    implied = np.maximum(gap @ weights, 0.0)
    residual = ((gap - implied[:, None]) ** 2) @ weights
    order = np.lexsort((np.arange(len(implied)), residual + implied**2))
    return order, implied, residual


def trust_measured(order: np.ndarray, implied: np.ndarray, residual: np.ndarray, anchor_rows, losses: np.ndarray) -> np.ndarray:
    """The ranking with the best-scoring anchor first when its *measured* loss is no worse than the
    top pick's *predicted* loss (s + sqrt(r)): a measurement beats an extrapolation.

    anchor_rows: the island rows of the scored anchors, losses their scores. On the flights market
    (make experiment-anchors, 8 anchors, 50 labels) this took the top-1's MSE from 2.0x the oracle's
    to 1.3x, and own-group top-3 from 39 % to 47 %.
    """
    anchor_rows = np.asarray(anchor_rows)
    top = order[0]
    best_anchor = int(anchor_rows[int(np.argmin(losses))])
    if best_anchor == top or losses.min() > implied[top] + np.sqrt(residual[top]):
        return order
    return np.concatenate([[best_anchor], order[order != best_anchor]])


def losses_of(task: str, y: np.ndarray, outputs: np.ndarray) -> float:
    """The loss an anchor's outputs get on labeled rows: MSE (regression), Brier score (classification:
    outputs are class probabilities (n, C), y class indices)."""
    if task == "Classification":
        onehot = np.zeros_like(outputs)
        onehot[np.arange(len(y)), y.astype(int)] = 1.0
        return float(((outputs - onehot) ** 2).sum(axis=1).mean())
    return float(((outputs.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2).sum(axis=1).mean())


def baseline_loss(task: str, y: np.ndarray, n_classes: Optional[int] = None) -> float:
    """The loss of the constant predictor that knows only her labels' mean (class frequencies)."""
    if task == "Classification":
        width = int(n_classes or (int(y.max()) + 1))
        freq = np.bincount(y.astype(int), minlength=width) / len(y)
        return losses_of(task, y, np.tile(freq, (len(y), 1)))
    return losses_of(task, y, np.tile(y.reshape(len(y), -1).mean(axis=0), (len(y), 1)))


# --------------------------------------------------------------------------- the market side


@dataclass
class Island:
    """The learnwares one anchor set covers: table data of one width, one task; signatures on one bank."""

    dim: int
    task: str
    members: list  # (key "ID@V", entry, record), in index order
    bank: np.ndarray  # (R, dim)
    signatures: np.ndarray  # (L, R, t)
    distances: np.ndarray  # (L, L)

    def keys(self) -> list:
        return [key for key, _, _ in self.members]


def _folder(market) -> Path:
    return market.root / ANCHORS_DIR


def _members(market, index: dict, dim: int, task: str, allowed: Optional[set]) -> list:
    from learnware_cli.search import cache

    group = cache.searchable_versions(index).get(dim, [])
    return [m for m in group if m[2].get("task") == task and (allowed is None or m[1]["id"] in allowed)]


def _bank(market, members: list, refresh: bool) -> np.ndarray:
    """The island's probe bank (see the module docstring), built once and kept."""
    from learnware_cli.rkme.spec import herd

    dim = int(members[0][2]["input_dim"])
    path = _folder(market) / f"bank-d{dim}.npy"
    if path.is_file() and not refresh:
        return np.load(path, allow_pickle=False)
    per_spec = max(1, min(BANK_ROWS_PER_SPEC, BANK_MAX_ROWS // len(members)))
    rows = []
    for number, (_, entry, record) in enumerate(members[: BANK_MAX_ROWS // per_spec]):
        spec = market.version_spec(entry["id"], record["version"], record)
        rows.append(herd(spec, per_spec, seed=number))
    bank = np.concatenate(rows)
    _save(path, bank)
    return bank


def _save(path: Path, array: np.ndarray, **more) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz" if more else f".{path.stem}.{os.getpid()}.tmp.npy")
    if more:
        np.savez(tmp, **more)
    else:
        np.save(tmp, array, allow_pickle=False)
    os.replace(tmp, path)


def signature_of(model, task: str, bank: np.ndarray, n_classes: Optional[int]) -> np.ndarray:
    """A model's outputs on the bank: (R, t) regression outputs, or class probabilities."""
    if task == "Classification":
        if getattr(model, "has_predict_proba", False):
            return np.asarray(model.predict_proba(bank), dtype=np.float64)
        labels = np.asarray(model.predict(bank)).astype(int).reshape(-1)
        onehot = np.zeros((len(bank), int(n_classes or labels.max() + 1)))
        onehot[np.arange(len(bank)), labels] = 1.0
        return onehot
    out = np.asarray(model.predict(bank), dtype=np.float64)
    return out.reshape(len(bank), -1)


def island(market, dim: int, task: str, allowed: Optional[set] = None, refresh: bool = False, timeout: Optional[float] = None) -> Island:
    """The island's bank, signatures and functional distances, running only learnwares not yet signed."""
    from learnware_cli.reuse.market_models import open_learnwares

    index = market.read_index()
    members = _members(market, index, dim, task, allowed)
    if not members:
        raise InputError(f"no {task} learnware of input dimension {dim} in this market")
    bank = _bank(market, members, refresh)
    digest = hashlib.sha256(bank.tobytes()).hexdigest()[:16]
    store = _folder(market) / f"signatures-d{dim}.npz"
    known: dict = {}
    if store.is_file():
        with np.load(store, allow_pickle=False) as data:
            if str(data["bank"]) == digest:
                known = {str(k): data[f"s{i}"] for i, k in enumerate(data["keys"])}
    missing = [m for m in members if m[0] not in known]
    if missing:
        refs = [(entry["id"], record["version"], 1.0) for _, entry, record in missing]
        with open_learnwares(market, refs, timeout=timeout, input_dim=dim) as loaded:
            started = {lw.id: lw for lw in loaded}
            for key, entry, record in missing:
                lw = started.get(entry["id"])
                if lw is not None:
                    known[key] = signature_of(lw.model, task, bank, record.get("output_dim"))
        kept = sorted(known)
        _save(store, None, bank=np.array(digest), keys=np.array(kept, dtype=str), **{f"s{i}": known[k] for i, k in enumerate(kept)})
    members = [m for m in members if m[0] in known]  # a model that would not start has no signature
    width = max(known[m[0]].shape[1] for m in members)
    signatures = np.zeros((len(members), len(bank), width))
    for i, (key, _, _) in enumerate(members):
        signatures[i, :, : known[key].shape[1]] = known[key]
    return Island(dim, task, members, bank, signatures, functional_distances(signatures, signatures))


def anchors_of(found: Island, n: int) -> list:
    """The island's n anchors as (key, entry, record)."""
    return [found.members[i] for i in choose_anchors(found.distances, n)]


# --------------------------------------------------------------------------- the scores file


def scores_document(market, task: str, dim: int, scores: dict, baseline: float, n_rows: int) -> dict:
    """What the user shares: per-anchor losses and the baseline loss; no rows, no labels."""
    return {
        "format": SCORES_FORMAT,
        "market": str(market.config.get("name", "")),
        "task": task,
        "input_dim": dim,
        "metric": "brier" if task == "Classification" else "mse",
        "labeled_rows": int(n_rows),
        "baseline": float(baseline),
        "scores": {key: float(value) for key, value in scores.items()},
    }


def read_scores(path) -> dict:
    """A scores file, checked: one-line InputError for anything else."""
    from learnware_cli.data_io import read_json_file

    doc = read_json_file(path, "an anchor scores file")
    if not isinstance(doc, dict) or doc.get("format") != SCORES_FORMAT:
        raise InputError(f"{path}: not an anchor scores file (expected format {SCORES_FORMAT!r}; make it with `lw anchors --evaluate`)")
    scores = doc.get("scores")
    if not isinstance(scores, dict) or not scores or not all(isinstance(v, (int, float)) and np.isfinite(v) and v >= 0 for v in scores.values()):
        raise InputError(f"{path}: 'scores' must map anchors (ID@VERSION) to finite losses >= 0")
    if not isinstance(doc.get("input_dim"), int) or doc.get("task") not in ("Classification", "Regression"):
        raise InputError(f"{path}: needs 'input_dim' (an integer) and 'task' (Classification or Regression)")
    return doc


def search_by_scores(market, doc: dict, allowed: Optional[set] = None, timeout: Optional[float] = None):
    """Rank the island's learnwares by the scores' multilateration -> (island, order, implied, residual, indicator)."""
    found = island(market, doc["input_dim"], doc["task"], allowed=allowed, timeout=timeout)
    keys = found.keys()
    anchors = [key for key in doc["scores"] if key in keys]
    if not anchors:
        raise InputError("none of the scored anchors is in this market's island any more: run `lw anchors` again")
    columns = [keys.index(key) for key in anchors]
    losses = np.array([doc["scores"][key] for key in anchors])
    order, implied, residual = rank_by_scores(found.distances[:, columns], losses)
    order = trust_measured(order, implied, residual, columns, losses)
    baseline = float(doc.get("baseline") or 0.0)
    best = order[0]
    indicator = float((implied[best] + np.sqrt(residual[best])) / baseline) if baseline > 0 else None
    return found, order, implied, residual, indicator
