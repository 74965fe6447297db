"""The search stack of an island as one dense array set, assembled from the market's segments.

An island here is (specification kind, dimension): table RKMEs of width d
(the kind "table"), image RKMEs, text RKMEs of one embedder, ... A version's
kind is its record's ``spec_kind`` (records written before kinds existed are
tables).

The arrays live in the market's append-only search segments
(``market.segments``), written by the submit that stored each version, so
nothing here parses rkme.json files. ``current`` gives the dense stack of the
live rows in the order of the index's members, for the paths that need every
row at once (the exact search of a small island, cross-feature matching,
images and texts, anchors); it is kept per process while the market's
generation is unchanged. The two-stage search of a large island reads the
segments directly (``search.engine``).

A CachedStack holds keys (M,) "ID@VERSION", zs (M, K_max, d) float32,
betas (M, K_max) float32, self_products (M,) float64 (computed from the
float64 spec by its kind's kernel), generation, gamma.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from learnware_cli.errors import MarketError
from learnware_cli.market.segments import TABLE, island_name, spec_kind, split_island
from learnware_cli.market.store import Market


@dataclass
class CachedStack:
    """One island's stacked specs."""

    keys: np.ndarray  # (M,) str "ID@VERSION"
    zs: np.ndarray  # (M, K_max, d) float32
    betas: np.ndarray  # (M, K_max) float32
    self_products: np.ndarray  # (M,) float64
    generation: int
    gamma: float

    @property
    def count(self) -> int:
        return int(self.keys.shape[0])


def version_key(learnware_id: str, version: int) -> str:
    return f"{learnware_id}@{version}"


_GROUPS: dict = {}


def searchable_versions(index: dict, all_versions: bool = False, kind: str = TABLE) -> dict[int, list[tuple[str, dict, dict]]]:
    """Group the versions of one specification kind a search considers by dimension: {dim: [(key, entry, record)]}.

    Table specs count only for learnwares whose Data is Table (as before).
    Computed once per parsed index (the index object is shared while the market is unchanged).
    """
    memo = _GROUPS.get(all_versions)
    if memo is None or memo[0] is not index:
        memo = (index, _group(index, all_versions))
        _GROUPS[all_versions] = memo
    return memo[1].get(kind, {})


def kinds(index: dict) -> list[str]:
    """The specification kinds a market's latest versions use."""
    searchable_versions(index)
    return sorted(_GROUPS[False][1])


def _group(index: dict, all_versions: bool) -> dict[str, dict[int, list]]:
    groups: dict[str, dict[int, list]] = {}
    for entry in index["learnwares"].values():
        data_types = entry.get("semantic", {}).get("Data", {}).get("Values", ["Table"])
        records = entry["versions"] if all_versions else entry["versions"][-1:]
        for record in records:
            dim, kind = record.get("input_dim"), spec_kind(record)
            if dim is None or (kind == TABLE and "Table" not in data_types):
                continue
            groups.setdefault(kind, {}).setdefault(int(dim), []).append((version_key(entry["id"], record["version"]), entry, record))
    return groups


_STACKS: dict = {}


def current(
    market: Market, index: dict, dim: int, all_versions: bool = False, progress: Optional[Callable[[int, int], None]] = None, kind: str = TABLE
) -> tuple[Optional[CachedStack], list[tuple[str, dict, dict]]]:
    """The stack of one island (kind, dim) and its members (key, entry, record), in stack order.

    Members are the index's searchable versions that the segments hold (every
    latest version must be there: a missing one means damaged segments).
    """
    members = searchable_versions(index, all_versions, kind).get(dim, [])
    if not members:
        return None, []
    generation = int(index.get("generation", 0))
    key = (str(market.root.resolve()), market.config.get("created", ""), generation, kind, dim, all_versions)
    if key in _STACKS:
        return _STACKS[key]
    view = market.island_view(island_name(kind, dim), all_versions)
    ids, versions = view.keys()
    position = {(int(i), int(v)): p for p, (i, v) in enumerate(zip(ids.tolist(), versions.tolist()))}
    kept, rows = [], []
    for member in members:
        _, entry, record = member
        row = position.get((int(entry["id"]), int(record["version"])))
        if row is None:
            if record is entry["versions"][-1]:
                raise MarketError(f"{market.root}: the search segments lack {member[0]}; run `lw reindex --rebuild`")
            continue
        kept.append(member)
        rows.append(row)
    zs, betas, selfs = view.dense()
    take = np.asarray(rows, dtype=int)
    stack = CachedStack(
        keys=np.array([k for k, _, _ in kept], dtype=str),
        zs=np.ascontiguousarray(zs[take]),
        betas=np.ascontiguousarray(betas[take]),
        self_products=np.asarray(selfs[take], dtype=np.float64),
        generation=generation,
        gamma=market.gamma,
    )
    _STACKS.clear()  # one island at a time: stacks are big
    _STACKS[key] = (stack, kept)
    return stack, kept


def rebuild_all(market: Market, progress: Optional[Callable[[int, int], None]] = None) -> dict[str, int]:
    """`lw reindex`: merge each island's segments into one (dropping dead rows) -> {"dim" or "kind/dim": live rows}."""
    counts = {}
    for island in market.islands():
        market.compact(island, everything=True)
        kind, dim = split_island(island)
        view = market.island_view(island)
        if view.count:
            counts[str(dim) if kind == TABLE else f"{kind}/{dim}"] = view.count
    return counts
