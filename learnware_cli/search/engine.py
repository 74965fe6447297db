"""Search a market: semantic filters first, then statistical ranking.

Two ways to compare a user's RKME with the learnwares (``match``):

- "island": within the user's island (its ``island_key()``: kind, input
  dimension, gamma): learnwares of table data with the same input dimension
  and the market's gamma, by MMD^2 under the market's kernel.
- "features": when the user's columns are described (``user_semantic``, the
  Input block of a semantic spec), on the market features each learnware
  shares with her, whatever its input width (``search.crossmatch``): ranked
  by marginal similarity x coverage.
- "auto" (default): "features" when at least one of her columns is a market
  feature, else "island".

The result's ``to_dict`` is what `lw search --json` prints and what `lw reuse
--from` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from learnware_cli.errors import InputError, SpecError
from learnware_cli.market.store import Market
from learnware_cli.rkme.spec import TABLE_KIND, RKMESpec
from learnware_cli.search import cache
from learnware_cli.search.semantic import semantic_search, values_of
from learnware_cli.specs import IslandKey, load_spec, same_island


MATCH_MODES = ("auto", "island", "features")


@dataclass
class SearchResult:
    market: str
    single: list[dict] = field(default_factory=list)
    mixture: Optional[dict] = None
    mode: str = "semantic"
    user: dict = field(default_factory=dict)
    considered: int = 0
    match: str = "island"
    islands: list = field(default_factory=list)  # "features" match: the best learnware of each island reached

    def to_dict(self) -> dict:
        return {
            "ok": True,
            "market": self.market,
            "mode": self.mode,
            "match": self.match if self.mode == "statistical" else None,
            "user": self.user,
            "considered": self.considered,
            "single": self.single,
            "mixture": self.mixture,
            "islands": self.islands,
        }


def _describe(entry: dict, record: dict) -> dict:
    task = values_of(entry.get("semantic", {}), "Task")
    return {
        "id": entry["id"],
        "version": record["version"],
        "name": entry.get("name", ""),
        "task": task[0] if task else "",
        "input_dim": record.get("input_dim"),
        "output_dim": record.get("output_dim"),
    }


def search(
    market: Market,
    user_spec: Optional[RKMESpec] = None,
    tags: Optional[dict] = None,
    text: Optional[str] = None,
    k: int = 5,
    all_versions: bool = False,
    mixture: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
    mixture_method: str = "closest",
    user_semantic: Optional[dict] = None,
    match: str = "auto",
) -> SearchResult:
    """Find learnwares for a user: see the module docstring for the rules.

    mixture_method: "closest" (the closest mixture of the pool, see
    statistical.closest_mixture_arrays) or "greedy" (the earlier greedy
    search, kept to compare the two on the same users).
    user_semantic: a semantic spec whose Input block describes the user's
    columns (Description, optionally Features), for match "features"/"auto".
    """
    if match not in MATCH_MODES:
        raise InputError(f"unknown match {match!r} (expected one of {', '.join(MATCH_MODES)})")
    index = market.read_index()
    result = SearchResult(market=str(market.root))
    filtered = bool(tags) or bool(text)
    ranked = semantic_search(list(index["learnwares"].values()), tags or {}, text, market.vocabulary) if filtered or user_spec is None else []
    if user_spec is None:
        result.considered = len(ranked)
        result.single = [{**_describe(e, e["versions"][-1]), "score": round(s, 4)} for e, s in ranked[:k]]
        return result
    allowed = {e["id"] for e, _ in ranked} if filtered else None
    island = user_spec.island_key()
    if island.kind != TABLE_KIND:  # images, texts: their own islands, their own kernels
        if match == "features":
            raise InputError(f"--match features compares table columns; yours is a {user_spec.type_name}")
        return _search_kind(market, index, user_spec, allowed, k, all_versions, progress, result, mixture)
    if match != "island":
        user_features = _user_features(index, user_spec, user_semantic)
        if any(f is not None for f in user_features):
            if all_versions:
                raise InputError("--all-versions ranks within the user's island only (add --match island)")
            return _search_features(market, index, user_spec, user_features, allowed, k, mixture, mixture_method, progress, result)
        if match == "features":
            raise InputError("none of your columns is a market feature: describe them (a CSV header, --columns) as the learnwares do (`lw features`)")

    if not same_island(island, IslandKey(TABLE_KIND, island.dim, market.gamma)):
        raise SpecError(
            f"your specification uses gamma {island.gamma:g} but this market uses {market.gamma:g}; "
            f"fit it with `lw spec DATA --market {market.root}`"
        )
    result.mode = "statistical"
    result.user = {"dim": user_spec.dim, "K": user_spec.size, "gamma": user_spec.gamma}
    stack, members = cache.current(market, index, island.dim, all_versions=all_versions, progress=progress)
    if stack is None:
        return result
    if allowed is not None:
        rows = np.array([i for i, (_, entry, _) in enumerate(members) if entry["id"] in allowed], dtype=int)
    else:
        rows = np.arange(len(members))
    result.considered = int(rows.size)
    if rows.size == 0:
        return result

    from learnware_cli.search.statistical import MIXTURE_POOL, exact_mmd2, find_mixture, self_product, similarity

    distances = user_spec.mmd2_to_stack(_device_stack(market, stack, island.dim, all_versions))[rows]
    order = rows[np.argsort(distances, kind="stable")]
    top = order[:k]
    mmd, selfs = exact_mmd2(user_spec, stack.zs[top], stack.betas[top])
    scores = similarity(mmd, self_product(user_spec), selfs)
    for row, row_mmd, score in zip(top, mmd, scores):
        _, entry, record = members[row]
        result.single.append({**_describe(entry, record), "mmd2": max(float(row_mmd), 0.0), "score": round(float(score), 4)})

    if mixture and k > 1:
        pool = order[:MIXTURE_POOL]
        found = find_mixture(user_spec, stack.zs[pool], stack.betas[pool], max_size=k, method=mixture_method)
        result.mixture = _mixture_doc(found, [members[row] for row in pool])
    return result


def _mixture_doc(found, pool_members: list) -> dict:
    """A search's "mixture": its members (described, with weights, heaviest first), MMD^2 and score.

    pool_members: (key, entry, record) of each pool position the mixture's members index.
    """
    return {
        "learnwares": [
            {**_describe(pool_members[p][1], pool_members[p][2]), "weight": round(float(w), 6)}
            for p, w in zip(found.members, found.weights)
        ],
        "mmd2": found.mmd2,
        "score": round(found.score, 4),
    }


_DEVICE_STACKS: dict = {}


def _device_stack(market: Market, stack: cache.CachedStack, dim: int, all_versions: bool):
    """The stack as device arrays, kept per process so repeated searches skip the copy."""
    from learnware_cli.rkme.spec import SpecStack

    key = (str(market.root.resolve()), dim, stack.generation, all_versions, stack.count)
    if key not in _DEVICE_STACKS:
        _DEVICE_STACKS.clear()  # one market at a time: keep memory bounded
        _DEVICE_STACKS[key] = SpecStack.from_arrays(
            stack.zs, stack.betas, stack.gamma, self_products=stack.self_products, count=stack.count
        )
    return _DEVICE_STACKS[key]


KIND_MIXTURE_POOL = 16  # image inner products cost ~5 ms each: the pool's P(P+1)/2 stay under a second


def _search_kind(market, index, user_spec, allowed, k, all_versions, progress, result, mixture: bool = True) -> SearchResult:
    """Single ranking within the island of a non-table specification (image, text of one embedder).

    The kind's own stack (``make_stack``) and kernel (``mmd2_to_stack``); the
    top k re-scored with ``mmd2`` on the stored specs; the mixture is solved from
    the kind's ``inner_product`` among the KIND_MIXTURE_POOL best
    (statistical.mixture_from_products).
    """
    island = user_spec.island_key()
    if island.gamma > 0 and not same_island(island, IslandKey(island.kind, island.dim, market.gamma)):
        raise SpecError(
            f"your specification uses gamma {island.gamma:g} but this market uses {market.gamma:g}; "
            f"fit it with `lw spec DATA --market {market.root}`"
        )
    result.mode = "statistical"
    result.user = {"kind": island.kind, "type": user_spec.type_name, "dim": island.dim, "K": len(user_spec.stack_arrays().beta)}
    stack, members = cache.current(market, index, island.dim, all_versions=all_versions, progress=progress, kind=island.kind)
    if stack is None:
        return result
    rows = np.array([i for i, (_, entry, _) in enumerate(members) if allowed is None or entry["id"] in allowed], dtype=int)
    result.considered = int(rows.size)
    if rows.size == 0:
        return result
    cls = type(user_spec)
    key = (str(market.root.resolve()), island.kind, island.dim, stack.generation, all_versions, stack.count)
    if key not in _DEVICE_STACKS:
        _DEVICE_STACKS.clear()
        _DEVICE_STACKS[key] = cls.make_stack(stack.zs[: stack.count], stack.betas[: stack.count], gamma=stack.gamma)
    distances = np.asarray(user_spec.mmd2_to_stack(_DEVICE_STACKS[key]), dtype=np.float64)[: stack.count][rows]
    order = rows[np.argsort(distances, kind="stable")]
    own_arrays = user_spec.stack_arrays()
    own_z = np.asarray(own_arrays.z, dtype=np.float64).reshape(len(own_arrays.beta), -1)
    own = float(cls.make_stack(own_z[None], np.asarray(own_arrays.beta, dtype=np.float64)[None], gamma=island.gamma).self_products[0])
    from learnware_cli.search.statistical import similarity

    for row in order[:k]:
        _, entry, record = members[row]
        exact = max(float(user_spec.mmd2(_stored_spec(market, entry["id"], record["version"]))), 0.0)
        score = float(similarity(exact, own, float(stack.self_products[row])))
        result.single.append({**_describe(entry, record), "mmd2": exact, "score": round(score, 4)})
    if mixture and k > 1 and order.size > 1:
        from learnware_cli.search.statistical import mixture_from_products

        pool = order[:KIND_MIXTURE_POOL]
        specs = [_stored_spec(market, members[row][1]["id"], members[row][2]["version"]) for row in pool]
        gram = np.array([[a.inner_product(b) if j >= i else 0.0 for j, b in enumerate(specs)] for i, a in enumerate(specs)])
        gram = np.triu(gram) + np.triu(gram, 1).T
        cross = np.array([user_spec.inner_product(s) for s in specs])
        found = mixture_from_products(gram, cross, own, max_size=k)
        result.mixture = _mixture_doc(found, [members[row] for row in pool])
    return result


def _user_features(index: dict, user_spec, user_semantic: Optional[dict]) -> list:
    """The market feature of each of the user's columns (None: undescribed or unknown to the market)."""
    if not user_semantic:
        return []
    from learnware_cli.market.features import features_of

    semantic = dict(user_semantic)
    inputs = dict(semantic.get("Input") or {})
    inputs.setdefault("Dimension", user_spec.dim)
    if inputs["Dimension"] != user_spec.dim:
        raise InputError(f"your columns are described for {inputs['Dimension']} column(s) but your RKME has {user_spec.dim}")
    semantic["Input"] = inputs
    return features_of(semantic, _vocabulary(index))


_VOCABULARIES: dict = {}


def _vocabulary(index: dict):
    """The feature vocabulary of this index (kept while the same parsed index is in use)."""
    from learnware_cli.market.features import build_vocabulary

    if _VOCABULARIES.get("index") is not index:
        _VOCABULARIES.clear()
        _VOCABULARIES.update(index=index, vocabulary=build_vocabulary(index["learnwares"].values()))
    return _VOCABULARIES["vocabulary"]


def _islands(index: dict):
    """The islands of this index (kept while the same parsed index is in use, like the vocabulary)."""
    from learnware_cli.market.islands import compute_islands

    if _VOCABULARIES.get("islands_of") is not index:
        _VOCABULARIES.update(islands_of=index, islands=compute_islands(index["learnwares"].values(), _vocabulary(index)))
    return _VOCABULARIES["islands"]


_SPECS: dict = {}
_SPECS_KEPT = 256


def _stored_spec(market: Market, learnware_id: str, version: int):
    """A stored version's RKME in float64, kept per process (a stored version never changes)."""
    key = (str(market.root.resolve()), market.config.get("created", ""), learnware_id, version)  # a market re-made at the same path is another market
    if key not in _SPECS:
        if len(_SPECS) >= _SPECS_KEPT:
            _SPECS.pop(next(iter(_SPECS)))
        _SPECS[key] = load_spec(market.version_dir(learnware_id, version) / "rkme.json")
    return _SPECS[key]


def _search_features(market, index, user_spec, user_features, allowed, k, mixture, mixture_method, progress, result) -> SearchResult:
    """The "features" match: see search.crossmatch."""
    from learnware_cli.search import crossmatch
    from learnware_cli.search.statistical import MIXTURE_POOL, find_mixture, self_product, similarity

    result.mode, result.match = "statistical", "features"
    stack = crossmatch.current(market, index, _vocabulary(index), progress=progress)
    result.user = {"dim": user_spec.dim, "K": user_spec.size, "gamma": user_spec.gamma, "columns": user_features}
    if stack is None:
        return result
    found = crossmatch.match(user_spec.z, user_spec.beta, user_features, stack)
    result.user["matched_columns"] = found.user_columns
    result.user["unmatched_columns"] = found.unmatched
    order = found.ranking()
    if allowed is not None:
        order = np.array([row for row in order if stack.members[row][1]["id"] in allowed], dtype=int)
    result.considered = int(order.size)
    restricted = {}
    islands = _islands(index)

    def on_shared(row):
        if row not in restricted:
            _, entry, record = stack.members[row]
            own = _stored_spec(market, entry["id"], record["version"])
            restricted[row] = crossmatch.restricted_specs(user_spec.z, user_spec.beta, user_features, stack, row, own)
        return restricted[row]

    for row in order[:k]:
        _, entry, record = stack.members[row]
        user_on_s, own_on_s, shared = on_shared(row)
        exact = max(own_on_s.mmd2(user_on_s), 0.0)
        own_products = self_product(user_on_s), self_product(own_on_s)
        close = float(similarity(exact, *own_products))
        needed = [f for f in _vocabulary(index).of(entry["id"]) if f not in shared]
        result.single.append({
            **_describe(entry, record),
            "mmd2": exact,
            "similarity": round(close, 4),
            "coverage": round(float(found.coverage[row]), 4),
            "score": round(close * float(found.coverage[row]), 4),
            "shared": shared,
            "missing": [f if f is not None else "(undescribed)" for f in needed],
            "island": _island_id(islands, entry["id"]),
        })
    result.islands = _best_per_island(stack, found, order, islands)

    if mixture and k > 1 and order.size > 1:
        # one kernel for the whole mixture: the pool members that share exactly the top match's features
        top_shared = on_shared(order[0])[2]
        pool = [row for row in order[:MIXTURE_POOL] if set(_shared_ids(stack, found, row)) == set(top_shared)]
        if len(pool) > 1:
            specs = [on_shared(row) for row in pool]
            user_on_s = specs[0][0]
            k_max = max(s[1].size for s in specs)
            zs = np.zeros((len(pool), k_max, user_on_s.dim))
            betas = np.zeros((len(pool), k_max))
            for i, (_, own_on_s, _) in enumerate(specs):
                zs[i, : own_on_s.size], betas[i, : own_on_s.size] = own_on_s.z, own_on_s.beta
            chosen = find_mixture(user_on_s, zs, betas, max_size=k, method=mixture_method)
            result.mixture = {**_mixture_doc(chosen, [stack.members[row] for row in pool]), "shared": top_shared}
    return result


def _island_id(islands, learnware_id: str) -> Optional[str]:
    island = islands.of(learnware_id)
    return island.id if island is not None else None


def _best_per_island(stack, found, order, islands) -> list:
    """For each island the ranking reaches, its best learnware: what a user on the union of islands reuses together."""
    key = ("islands", id(islands))
    if key not in stack.memo:  # the stack lives as long as its index, and so do these islands
        labels = [_island_id(islands, entry["id"]) for _, entry, _ in stack.members]
        codes = {label: i for i, label in enumerate(dict.fromkeys(labels))}
        stack.memo[key] = (labels, np.array([codes[label] for label in labels], dtype=int))
    labels, island_of_row = stack.memo[key]
    _, first = np.unique(island_of_row[order], return_index=True)  # first = best, the order being best first
    best = []
    for row in order[np.sort(first)]:
        _, entry, record = stack.members[row]
        best.append({
            "island": labels[row],
            "id": entry["id"],
            "version": record["version"],
            "name": entry.get("name", ""),
            "coverage": round(float(found.coverage[row]), 4),
            "score": round(float(found.score[row]), 4),
            "shared": _shared_ids(stack, found, row),
        })
    return best


def _shared_ids(stack, found, row) -> list:
    """The market features a stack row shares with the user (from the match's column map)."""
    return [stack.feature_ids[f] for f, c in zip(stack.features[row], found.columns[row]) if c >= 0]


def search_by_anchor_scores(market: Market, doc: dict, tags: Optional[dict] = None, text: Optional[str] = None, k: int = 5, progress=None) -> SearchResult:
    """Rank the scored island's learnwares by the anchors' scores alone (market.anchors.rank_by_scores).

    doc: a checked scores file (market.anchors.read_scores). Each result gives
    its predicted loss (implied loss + misfit), whether it was an anchor and
    its measured score if so; ``user["indicator"]`` says whether the market
    has anything much better than the user's mean (see market.anchors).
    """
    from learnware_cli.market import anchors

    index = market.read_index()
    result = SearchResult(market=str(market.root), mode="anchors")
    allowed = None
    if tags or text:
        allowed = {e["id"] for e, _ in semantic_search(list(index["learnwares"].values()), tags or {}, text, market.vocabulary)}
    found, order, implied, residual, indicator = anchors.search_by_scores(market, doc, allowed=allowed)
    result.considered = len(found.members)
    result.user = {"task": doc["task"], "dim": doc["input_dim"], "anchors_scored": len(doc["scores"]), "metric": doc.get("metric"),
                   "baseline": doc.get("baseline"), "indicator": None if indicator is None else round(indicator, 4)}
    for row in order[:k]:
        key, entry, record = found.members[row]
        predicted = float(implied[row] + np.sqrt(residual[row]))
        result.single.append({
            **_describe(entry, record),
            "predicted_loss": predicted,
            "implied_loss": float(implied[row]),
            "misfit": float(np.sqrt(residual[row])),
            "anchor_score": doc["scores"].get(key),
            "score": round(-predicted, 6),  # higher is better, as in every search result
        })
    return result
