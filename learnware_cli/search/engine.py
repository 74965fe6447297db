"""Search a market: semantic filters first, then statistical ranking within the user's island.

The island of a user's RKME (its ``island_key()``: kind, input dimension,
gamma) is the learnwares with the same data type (table), the same input
dimension and the market's gamma; only those can be compared by MMD. The
result's ``to_dict`` is what `lw search --json` prints and what `lw reuse
--from` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from learnware_cli.errors import SpecError
from learnware_cli.market.store import Market
from learnware_cli.rkme.spec import TABLE_KIND, RKMESpec
from learnware_cli.search import cache
from learnware_cli.search.semantic import semantic_search, values_of
from learnware_cli.specs import IslandKey, same_island



@dataclass
class SearchResult:
    market: str
    single: list[dict] = field(default_factory=list)
    mixture: Optional[dict] = None
    mode: str = "semantic"
    user: dict = field(default_factory=dict)
    considered: int = 0

    def to_dict(self) -> dict:
        return {
            "ok": True,
            "market": self.market,
            "mode": self.mode,
            "user": self.user,
            "considered": self.considered,
            "single": self.single,
            "mixture": self.mixture,
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
) -> SearchResult:
    """Find learnwares for a user: see the module docstring for the rules.

    mixture_method: "closest" (the closest mixture of the pool, see
    statistical.closest_mixture_arrays) or "greedy" (the earlier greedy
    search, kept to compare the two on the same users).
    """
    index = market.read_index()
    result = SearchResult(market=str(market.root))
    filtered = bool(tags) or bool(text)
    ranked = semantic_search(list(index["learnwares"].values()), tags or {}, text, market.vocabulary) if filtered or user_spec is None else []
    if user_spec is None:
        result.considered = len(ranked)
        result.single = [{**_describe(e, e["versions"][-1]), "score": round(s, 4)} for e, s in ranked[:k]]
        return result

    island = user_spec.island_key()
    if island.kind != TABLE_KIND:  # the cache stacks table RKMEs only (one stack per input dimension)
        raise SpecError(f"search compares table specifications only; yours is a {user_spec.type_name}")
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
    if filtered:
        allowed = {e["id"] for e, _ in ranked}
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
        result.mixture = {
            "learnwares": [
                {**_describe(members[pool[p]][1], members[pool[p]][2]), "weight": round(float(w), 6)}
                for p, w in zip(found.members, found.weights)
            ],
            "mmd2": found.mmd2,
            "score": round(found.score, 4),
        }
    return result


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
