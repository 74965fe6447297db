"""The search cache: every searchable specification of a market stacked into arrays, one file per island.

An island here is (specification kind, dimension): table RKMEs of width d
(the kind "table", files ``stack-d{d}.npz`` as before), image RKMEs, text
RKMEs of one embedder, ... (``stack-{kind}-d{d}.npz``). A version's kind is
its record's ``spec_kind`` (records written before kinds existed are tables).

It is derived from index.json and the stored rkme.json files, so it can always
be deleted and rebuilt. Each file records the index generation it was built
from; a search that finds it stale rebuilds it, reusing the rows of versions
it already holds (a learnware's stored version never changes), so an update
after one submit parses one JSON file, not the whole market.

File: MARKET/cache/stack-d{dim}.npz (or stack-{kind}-d{dim}.npz) with
    keys (M,) "ID@VERSION", zs (M, K_max, d) float32 (the spec's ``stack_arrays``),
    betas (M, K_max) float32, self_products (M,) float64 (computed from the
    float64 spec by its kind's ``make_stack``), generation, gamma.

A market the user cannot write (a read-only share) is still searchable: the
stack then goes to a per-user cache ($LW_SEARCH_CACHE, default
~/.cache/lw/search/MARKET-DIGEST/), and if that cannot be written either, it
lives in memory for this search.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from learnware_cli.market.store import Market

CACHE_DIR = "cache"
CACHE_FORMAT = 1
USER_CACHE_ENV = "LW_SEARCH_CACHE"


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


TABLE = "table"


def spec_kind(record: dict) -> str:
    """The island kind of a stored version's specification (records from before kinds: table)."""
    kind = record.get("spec_kind")
    return kind if isinstance(kind, str) and kind else TABLE


def searchable_versions(index: dict, all_versions: bool = False, kind: str = TABLE) -> dict[int, list[tuple[str, dict, dict]]]:
    """Group the versions of one specification kind a search considers by dimension: {dim: [(key, entry, record)]}.

    Table specs count only for learnwares whose Data is Table (as before).
    Computed once per parsed index (the index object is shared while index.json is unchanged).
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


def user_cache_dir(market: Market) -> Path:
    """This user's cache folder for one market, for stacks the market's own cache/ cannot take.

    Named by the market's resolved path and creation time, so a market
    re-created at the same path never meets the old one's stacks.
    """
    base = os.environ.get(USER_CACHE_ENV) or Path.home() / ".cache" / "lw" / "search"
    ident = f"{market.root.resolve()}\n{market.config.get('created', '')}"
    return Path(base) / hashlib.sha256(ident.encode()).hexdigest()[:16]


def _locations(market: Market, dim: int, kind: str = TABLE) -> list[Path]:
    """Where a stack may be stored, in order of preference: the market's cache/, then the user's."""
    label = "" if kind == TABLE else re.sub(r"[^A-Za-z0-9]+", "_", kind).strip("_")[:60] + "-" + hashlib.sha256(kind.encode()).hexdigest()[:8] + "-"
    name = f"stack-{label}d{dim}.npz"
    return [market.root / CACHE_DIR / name, user_cache_dir(market) / name]


_LOADED: dict = {}


def _load(path: Path) -> Optional[CachedStack]:
    """The stack stored at path, or None if absent or unreadable. Kept per process while the file is unchanged."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if _LOADED.get(path) is None or _LOADED[path][0] != key:
        stack = _read(path)
        if stack is None:
            return None
        _LOADED.pop(path, None)
        if len(_LOADED) >= 2:  # stacks are big: keep the last two (a market's and a user's)
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[path] = (key, stack)
    return _LOADED[path][1]


def _is_current(stack: CachedStack, generation: int, members: list) -> bool:
    # same generation, same index: the same members; check the ends as a cheap guard
    return (
        stack.generation == generation
        and stack.count == len(members)
        and str(stack.keys[0]) == members[0][0]
        and str(stack.keys[-1]) == members[-1][0]
    )


def _stored(market: Market, dim: int, generation: int, members: list, kind: str = TABLE) -> tuple[Optional[CachedStack], bool]:
    """(stack, is it current): the first current stored stack, else the newest one to reuse rows from."""
    newest = None
    for path in _locations(market, dim, kind):
        stack = _load(path)
        if stack is not None and _is_current(stack, generation, members):
            return stack, True
        if stack is not None and (newest is None or stack.generation > newest.generation):
            newest = stack
    return newest, False


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


def _save(market: Market, dim: int, stack: CachedStack, kind: str = TABLE) -> None:
    """Store the stack where it can be written (see the module docstring); if nowhere, it stays in memory."""
    for path in _locations(market, dim, kind):
        try:
            _write(path, stack)
            return
        except OSError:
            continue


def _write(path: Path, stack: CachedStack) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.npz")
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
        os.replace(tmp, path)
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
    from learnware_cli.specs import load_spec

    reuse = {}
    if previous is not None and np.isclose(previous.gamma, market.gamma):
        reuse = {str(k): i for i, k in enumerate(previous.keys)}
    fresh: list = []  # (position, Specification)
    for position, (key, entry, record) in enumerate(members):
        if key not in reuse:
            raw = json.loads((market.version_dir(entry["id"], record["version"]) / "rkme.json").read_text())
            fresh.append((position, load_spec(raw, source=key)))
            if progress and len(fresh) % 200 == 0:
                progress(len(fresh), len(members))
    fresh_arrays = [spec.stack_arrays() for _, spec in fresh]
    k_max = max([len(a.beta) for a in fresh_arrays] + ([previous.zs.shape[1]] if reuse else [1]))
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
        specs = [s for _, s in fresh]
        if isinstance(specs[0], RKMESpec):
            fresh_selfs = SpecStack.from_specs(specs, dtype="float64").self_products[: len(fresh)]
        else:  # another kind stacks its own way (its kernel is not the table's)
            fresh_selfs = _kind_self_products(fresh_arrays, k_max, dim, type(specs[0]), market.gamma)
        for (position, _), arrays, own in zip(fresh, fresh_arrays, fresh_selfs):
            zs[position, : len(arrays.beta)] = arrays.z
            betas[position, : len(arrays.beta)] = arrays.beta
            selfs[position] = own
    keys = np.array([key for key, _, _ in members], dtype=str)
    return CachedStack(keys=keys, zs=zs, betas=betas, self_products=selfs, generation=generation, gamma=market.gamma)


def _kind_self_products(arrays: list, k_max: int, dim: int, cls, gamma: float) -> np.ndarray:
    """<S, S> of specs of a non-table kind, through the kind's own stack (``make_stack``)."""
    zs = np.zeros((len(arrays), k_max, dim))
    betas = np.zeros((len(arrays), k_max))
    for i, a in enumerate(arrays):
        zs[i, : len(a.beta)] = np.asarray(a.z, dtype=np.float64).reshape(len(a.beta), dim)
        betas[i, : len(a.beta)] = a.beta
    return np.asarray(cls.make_stack(zs, betas, gamma=gamma).self_products, dtype=np.float64)[: len(arrays)]


def current(
    market: Market, index: dict, dim: int, all_versions: bool = False, progress: Optional[Callable[[int, int], None]] = None, kind: str = TABLE
) -> tuple[Optional[CachedStack], list[tuple[str, dict, dict]]]:
    """The up-to-date stack of one island (kind, dim) (rebuilt if stale) and its members, in stack order."""
    members = searchable_versions(index, all_versions, kind).get(dim, [])
    if not members:
        return None, []
    generation = int(index.get("generation", 0))
    cached, is_current = _stored(market, dim, generation, members, kind)
    if is_current:
        return cached, members
    stack = build(market, dim, members, generation, previous=cached, progress=progress)
    if not all_versions:  # the all-versions view is rare and stays in memory
        _save(market, dim, stack, kind)
    return stack, members


def rebuild_all(market: Market, progress: Optional[Callable[[int, int], None]] = None) -> dict[str, int]:
    """`lw reindex`: drop every cache file and rebuild from the index -> {"dim" or "kind/dim": count}."""
    folder = market.root / CACHE_DIR
    if folder.exists():
        for path in folder.glob("*.npz"):
            path.unlink()
    index = market.read_index()
    counts = {}
    for kind in kinds(index):
        for dim, members in searchable_versions(index, kind=kind).items():
            _save(market, dim, build(market, dim, members, int(index.get("generation", 0)), progress=progress), kind)
            counts[str(dim) if kind == TABLE else f"{kind}/{dim}"] = len(members)
    return counts
