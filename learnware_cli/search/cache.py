"""The search cache: every searchable RKME of a market stacked into arrays, one file per dimension.

It is derived from index.json and the stored rkme.json files, so it can always
be deleted and rebuilt. Each file records the index generation it was built
from; a search that finds it stale rebuilds it, reusing the rows of versions
it already holds (a learnware's stored version never changes), so an update
after one submit parses one JSON file, not the whole market.

File: MARKET/cache/stack-d{dim}.npz with
    keys (M,) "ID@VERSION", zs (M, K_max, d) float32, betas (M, K_max) float32,
    self_products (M,) float64 (computed from the float64 spec), generation, gamma.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from learnware_cli.market.store import Market

CACHE_DIR = "cache"
CACHE_FORMAT = 1


@dataclass
class CachedStack:
    """One dimension's stacked specs, as stored."""

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


def searchable_versions(index: dict, all_versions: bool = False) -> dict[int, list[tuple[str, dict, dict]]]:
    """Group the table-data versions a search considers by input dimension: {dim: [(key, entry, record)]}.

    Computed once per parsed index (the index object is shared while index.json is unchanged).
    """
    memo = _GROUPS.get(all_versions)
    if memo is not None and memo[0] is index:
        return memo[1]
    groups: dict[int, list[tuple[str, dict, dict]]] = {}
    for entry in index["learnwares"].values():
        data_types = entry.get("semantic", {}).get("Data", {}).get("Values", ["Table"])
        if "Table" not in data_types:
            continue
        records = entry["versions"] if all_versions else entry["versions"][-1:]
        for record in records:
            dim = record.get("input_dim")
            if dim is None:
                continue
            groups.setdefault(int(dim), []).append((version_key(entry["id"], record["version"]), entry, record))
    _GROUPS[all_versions] = (index, groups)
    return groups


def _path(market: Market, dim: int) -> Path:
    return market.root / CACHE_DIR / f"stack-d{dim}.npz"


_LOADED: dict = {}


def load(market: Market, dim: int) -> Optional[CachedStack]:
    """The stored stack, or None if absent or unreadable. Kept per process while the file is unchanged."""
    path = _path(market, dim)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if key not in _LOADED:
        stack = _read(path)
        if stack is None:
            return None
        _LOADED.clear()
        _LOADED[key] = stack
    return _LOADED[key]


def _read(path: Path) -> Optional[CachedStack]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != CACHE_FORMAT:
                return None
            return CachedStack(
                keys=data["keys"],
                zs=data["zs"],
                betas=data["betas"],
                self_products=data["self_products"],
                generation=int(data["generation"]),
                gamma=float(data["gamma"]),
            )
    except (OSError, ValueError, KeyError):
        return None  # unreadable: rebuilt by the caller


def _save(market: Market, dim: int, stack: CachedStack) -> None:
    folder = market.root / CACHE_DIR
    folder.mkdir(exist_ok=True)
    tmp = folder / f".stack-d{dim}.{os.getpid()}.{uuid.uuid4().hex[:8]}.npz"
    try:
        np.savez(
            tmp,
            format=CACHE_FORMAT,
            keys=stack.keys,
            zs=stack.zs,
            betas=stack.betas,
            self_products=stack.self_products,
            generation=stack.generation,
            gamma=stack.gamma,
        )
        os.replace(tmp, _path(market, dim))
    finally:
        if tmp.exists():
            tmp.unlink()


def build(
    market: Market,
    dim: int,
    members: list[tuple[str, dict, dict]],
    generation: int,
    previous: Optional[CachedStack] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> CachedStack:
    """Stack the specs of members, reusing rows of previous where the key matches."""
    from learnware_cli.rkme.spec import STACK_BLOCK, RKMESpec, SpecStack

    reuse = {}
    if previous is not None and np.isclose(previous.gamma, market.gamma):
        reuse = {str(k): i for i, k in enumerate(previous.keys)}
    fresh: list[tuple[int, RKMESpec]] = []
    for position, (key, _, record) in enumerate(members):
        if key not in reuse:
            raw = json.loads((market.path(record["path"]) / "rkme.json").read_text())
            fresh.append((position, RKMESpec.from_json_dict(raw, source=key)))
            if progress and len(fresh) % 200 == 0:
                progress(len(fresh), len(members))
    k_max = max([s.size for _, s in fresh] + ([previous.zs.shape[1]] if reuse else [1]))
    # rows beyond len(members) are zero-weight padding up to a block multiple, stored as such
    # so that loading the stack onto the device needs no copy to pad it
    m = -(-len(members) // STACK_BLOCK) * STACK_BLOCK
    zs = np.zeros((m, k_max, dim), dtype=np.float32)
    betas = np.zeros((m, k_max), dtype=np.float32)
    selfs = np.zeros(m)
    for position, (key, _, _) in enumerate(members):
        if key in reuse:
            row = reuse[key]
            k_prev = min(previous.zs.shape[1], k_max)
            zs[position, :k_prev] = previous.zs[row, :k_prev]
            betas[position, :k_prev] = previous.betas[row, :k_prev]
            selfs[position] = previous.self_products[row]
    if fresh:
        fresh_stack = SpecStack.from_specs([s for _, s in fresh], dtype="float64")
        fresh_selfs = fresh_stack.self_products[: len(fresh)]
        for (position, spec), own in zip(fresh, fresh_selfs):
            zs[position, : spec.size] = spec.z
            betas[position, : spec.size] = spec.beta
            selfs[position] = own
    keys = np.array([key for key, _, _ in members], dtype=str)
    return CachedStack(keys=keys, zs=zs, betas=betas, self_products=selfs, generation=generation, gamma=market.gamma)


def current(
    market: Market, index: dict, dim: int, all_versions: bool = False, progress: Optional[Callable[[int, int], None]] = None
) -> tuple[Optional[CachedStack], list[tuple[str, dict, dict]]]:
    """The up-to-date stack for dim (rebuilt if stale) and its members, in stack order."""
    members = searchable_versions(index, all_versions).get(dim, [])
    if not members:
        return None, []
    generation = int(index.get("generation", 0))
    cached = load(market, dim)
    if cached is not None and cached.generation == generation and cached.count == len(members):
        # same generation, same index: the same members; check the ends as a cheap guard
        if str(cached.keys[0]) == members[0][0] and str(cached.keys[-1]) == members[-1][0]:
            return cached, members
    stack = build(market, dim, members, generation, previous=cached, progress=progress)
    if not all_versions:  # the all-versions view is rare and stays in memory
        _save(market, dim, stack)
    return stack, members


def rebuild_all(market: Market, progress: Optional[Callable[[int, int], None]] = None) -> dict[int, int]:
    """`lw reindex`: drop every cache file and rebuild from the index -> {dim: count}."""
    folder = market.root / CACHE_DIR
    if folder.exists():
        for path in folder.glob("*.npz"):
            path.unlink()
    index = market.read_index()
    counts = {}
    for dim, members in searchable_versions(index).items():
        _save(market, dim, build(market, dim, members, int(index.get("generation", 0)), progress=progress))
        counts[dim] = len(members)
    return counts
