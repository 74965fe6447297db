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

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from learnware_cli.errors import InputError, SpecError
from learnware_cli.market.store import Market
from learnware_cli.rkme.spec import TABLE_KIND, RKMESpec
from learnware_cli.search import cache
from learnware_cli.search.semantic import semantic_search, values_of
from learnware_cli.specs import IslandKey, same_island


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
    exact: bool = False,
) -> SearchResult:
    """Find learnwares for a user: see the module docstring for the rules.

    mixture_method: "closest" (the closest mixture of the pool, see
    statistical.closest_mixture_arrays) or "greedy" (the earlier greedy
    search, kept to compare the two on the same users).
    user_semantic: a semantic spec whose Input block describes the user's
    columns (Description, optionally Features), for match "features"/"auto".
    exact: rank a large island by every learnware's MMD^2 rather than the
    two-stage sketch search (see _search_island).
    """
    if match not in MATCH_MODES:
        raise InputError(f"unknown match {match!r} (expected one of {', '.join(MATCH_MODES)})")
    result = SearchResult(market=str(market.root))
    filtered = bool(tags) or bool(text)
    # tags and text are filtered in the catalog (ids and scores, no entries built); the whole index only where
    # every entry is needed (features, other kinds' islands): a search by RKME reads the island's segments and
    # the few entries it reports
    matches = market.semantic_matches(tags or {}, text) if filtered or user_spec is None else []
    if user_spec is None:
        result.considered = len(matches)
        for learnware_id, score in matches[:k]:
            entry = market.entry(learnware_id)
            result.single.append({**_describe(entry, entry["versions"][-1]), "score": round(score, 4)})
        return result
    index = market.read_index() if user_semantic or user_spec.island_key().kind != TABLE_KIND else None
    allowed = {learnware_id for learnware_id, _ in matches} if filtered else None
    island = user_spec.island_key()
    if island.kind != TABLE_KIND:  # images, texts: their own islands, their own kernels
        if match == "features":
            raise InputError(f"--match features compares table columns; yours is a {user_spec.type_name}")
        return _search_kind(market, index, user_spec, allowed, k, all_versions, progress, result, mixture)
    if match != "island" and user_semantic:
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
    return _search_island(market, user_spec, allowed, k, all_versions, mixture, mixture_method, exact, result)


# up to this many learnwares every row's MMD^2 is computed in NumPy float64 (~0.2 s), so a cold `lw search` of a
# small market never starts JAX (its start and program loading cost ~1.5 s); above it JAX ranks on the device
NUMPY_EXACT_MAX = 3_000
# live learnwares in an island from which the sketch stage runs: where the NumPy exact search ends, so a cold
# `lw search` never starts JAX unless --exact asks (recall@5 1.000 at 10^4 and 10^5 in `make bench --only scale`);
# $LW_TWO_STAGE_FROM overrides it (tests and benchmarks: the two-stage path on a small market)
TWO_STAGE_FROM = int(os.environ.get("LW_TWO_STAGE_FROM") or NUMPY_EXACT_MAX)


def _search_island(market: Market, user_spec: RKMESpec, allowed, k, all_versions, mixture, mixture_method, exact, result) -> SearchResult:
    """Rank the user's island (table RKMEs of her width) by MMD^2, from the market's search segments.

    Below TWO_STAGE_FROM learnwares (or with exact=True): every learnware's
    MMD^2 on the device (float32, batched), then the reported ones re-scored
    in float64. From TWO_STAGE_FROM on: the sketch stage (search.sketch: the
    random-feature distance over every learnware, plus the learnwares of
    smallest <S, S>) picks CANDIDATES, whose float64 MMD^2 decides the ranking.
    Either way the top k and the mixture pool come from float64 MMD^2.

    The two-stage branch computes in NumPy (search.exact_numpy: the
    candidates' MMD^2 and the mixture, float64), so it never imports JAX: a
    cold `lw search` of a large island skips JAX's import and program loading
    (over a second). The exact branch ranks on the device, with JAX.
    """
    from learnware_cli.market.segments import island_name
    from learnware_cli.search import exact_numpy
    from learnware_cli.search.exact_numpy import MIXTURE_POOL, similarity

    view = market.island_view(island_name(TABLE_KIND, user_spec.dim), all_versions)
    ids, versions = view.keys()
    rows = np.arange(ids.size) if allowed is None else np.flatnonzero(np.isin(ids, np.array([int(a) for a in allowed], dtype=np.int64)))
    result.considered = int(rows.size)
    if rows.size == 0:
        return result
    pool_size = max(k, MIXTURE_POOL if mixture and k > 1 else k)
    two_stage = not exact and view.sketchable and rows.size >= TWO_STAGE_FROM
    in_numpy = two_stage or rows.size <= NUMPY_EXACT_MAX
    if in_numpy:  # NumPy float64, no JAX: candidates, or every row of a small island
        candidates = _sketch_candidates(view, user_spec, rows) if two_stage else rows
        zs, betas, _ = view.gather(candidates)
        mmd, selfs = exact_numpy.mmd2_to_specs(user_spec.z, user_spec.beta, zs, betas, user_spec.gamma)
        own = exact_numpy.inner_product(user_spec.z, user_spec.beta, user_spec.z, user_spec.beta, user_spec.gamma)
        ranked = np.lexsort((candidates, mmd))
        order, order_mmd, order_selfs = candidates[ranked], mmd[ranked], selfs[ranked]
        result.user["stage"] = {"method": "sketch", "candidates": int(candidates.size)} if two_stage else {"method": "exact"}
        pool = order[:pool_size]
        pool_z, pool_beta = zs[ranked[:pool_size]], betas[ranked[:pool_size]]
        top_mmd, top_selfs = order_mmd[:k], order_selfs[:k]
    else:
        from learnware_cli.search.statistical import exact_mmd2, self_product

        if view.count > DENSE_EXACT_MAX:  # too big to hold twice (host + device): stream the segments
            distances = _streamed_mmd2(view, user_spec)[rows]
        else:
            distances = user_spec.mmd2_to_stack(_dense_stack(market, view, user_spec.dim, all_versions))[rows]
        order = rows[np.argsort(distances, kind="stable")]
        pool = order[:pool_size]
        pool_z, pool_beta, _ = view.gather(pool)
        top_mmd, top_selfs = exact_mmd2(user_spec, pool_z[:k], pool_beta[:k])
        result.user["stage"] = {"method": "exact"}
        own = self_product(user_spec)
    scores = similarity(top_mmd, own, top_selfs)
    described = _describe_rows(market, ids, versions, pool)
    for position, (row_mmd, score) in enumerate(zip(top_mmd, scores)):
        result.single.append({**described[position], "mmd2": max(float(row_mmd), 0.0), "score": round(float(score), 4)})
    if mixture and k > 1:
        if in_numpy:
            found = exact_numpy.find_mixture(user_spec.z, user_spec.beta, pool_z, pool_beta, user_spec.gamma, max_size=k, method=mixture_method, own=own)
        else:
            from learnware_cli.search.statistical import find_mixture

            found = find_mixture(user_spec, pool_z, pool_beta, max_size=k, method=mixture_method)
        result.mixture = _mixture_doc(found, described)
    return result


DENSE_EXACT_MAX = 200_000  # live learnwares up to which the exact search stacks the island in memory (1.7 GB at K=100, d=20)


def _streamed_mmd2(view, user_spec: RKMESpec) -> np.ndarray:
    """MMD^2 (float32 kernels, float64 sums) to every live row in view order, streamed from the memory-mapped
    segments block by block over every JAX device (rkme.sharded): memory stays at a few blocks whatever M is."""
    from learnware_cli.rkme.sharded import mmd2_to_stack_sharded

    parts = []
    for segment in view.segments:
        live = np.flatnonzero(segment.live)
        if live.size == segment.rows:
            zs, betas, selfs = segment.zs, segment.betas, segment.selfs
        else:
            zs, betas, selfs = segment.zs[live], segment.betas[live], np.asarray(segment.selfs)[live]
        parts.append(mmd2_to_stack_sharded(user_spec.z, user_spec.beta, user_spec.gamma, zs, betas, np.asarray(selfs), dtype="float32"))
    return np.concatenate(parts) if parts else np.zeros(0)


def _sketch_candidates(view, user_spec: RKMESpec, rows: np.ndarray) -> np.ndarray:
    """The sketch stage: view positions (among rows) to re-score exactly.

    MMD^2(u, S) = <u,u> + <S,S> - 2 <u,S>. Every segment stores the exact
    <S,S>; the sketch estimates <u,S> by s . u (search.sketch). Two lists:

    - the sketch list: the DEFAULT_CANDIDATES rows of smallest
      <S,S> - 2 s . u, scored over every live row of a segment without a
      sketch index (read in blocks) and, in a segment with one, over the
      SKETCH_REFINE rows its product quantiser puts nearest (their float32
      sketches read from the segment). It finds the learnwares whose data
      overlap the user's;
    - the self list: among the SELF_POOL rows of smallest <S,S>, the
      DEFAULT_SELF_CANDIDATES of smallest <S,S> - 2 <u,S>, <u,S> computed
      exactly (float32 kernels). Why: a learnware whose data barely touch the
      user's has <u,S> ~ 1e-4, below the sketch's noise on s . u (~3e-3 at
      D = 512), yet learnwares with small <S,S> fill the exact top 5 when few
      resemble the user (search.sketch.candidates says why <S,S> decides
      there), and with a little overlap one whose <S,S> is small but not the
      smallest can take a slot (the plain 64 smallest would miss it; on the
      10^6 bench market no such case occurred in 100 users). The pool is
      user-independent and kept per process.

    A search restricted to a small part of the island (a semantic filter)
    compares that part's sketches and selfs instead: the index's nearest
    would mostly be filtered away.
    """
    from learnware_cli.market.segments import read_rows, search_sketch_index, sketch_frequencies
    from learnware_cli.search import sketch

    segments_sketches, lives = view.sketches()
    omega = sketch_frequencies(user_spec.dim, user_spec.gamma, segments_sketches[0].shape[1])
    user = sketch.sketch_one(user_spec.z, user_spec.beta, omega).astype(np.float32)
    restricted = rows.size < view.count
    use_index = rows.size * 2 >= view.count
    positions_parts, score_parts, low_positions, low_selfs, segment_keys = [], [], [], [], []
    offset = 0
    for segment, live in zip(view.segments, lives):
        n = int(live.sum())
        segment_keys.append(_segment_key(segment, live))
        position_of = np.cumsum(live) - 1 + offset  # segment row -> view position (for live rows)
        if use_index and segment.sketch_index is not None:
            found = search_sketch_index(segment.sketch_index, user, SKETCH_REFINE, cache_key=(getattr(segment.sketch, "filename", None), segment.name))
            found = np.sort(found[live[found]])
            chunk = read_rows(segment.sketch, found).astype(np.float32, copy=False)
            positions_parts.append(position_of[found])
            score_parts.append(_sketch_scores(chunk, user, np.asarray(segment.selfs[found], dtype=np.float64)))
        else:
            scores = np.empty(n)
            position = 0
            for rows_read, chunk in _row_blocks(segment.sketch, SKETCH_READ_ROWS):
                kept = live[rows_read : rows_read + chunk.shape[0]]
                chunk = chunk[kept]
                selfs = np.asarray(segment.selfs[rows_read : rows_read + kept.size], dtype=np.float64)[kept]
                scores[position : position + chunk.shape[0]] = _sketch_scores(chunk, user, selfs)
                position += chunk.shape[0]
            positions_parts.append(np.arange(offset, offset + n))
            score_parts.append(scores)
        if restricted:
            low_positions.append(np.arange(offset, offset + n))
            low_selfs.append(np.asarray(segment.selfs)[live])
        else:  # the segment's own smallest live <S, S>: the island's smallest are among them (cached: user-independent)
            smallest_rows = _smallest_live_selfs(segment, live, SELF_POOL, segment_keys[-1])
            low_positions.append(position_of[smallest_rows])
            low_selfs.append(np.asarray(segment.selfs[smallest_rows], dtype=np.float64))
        offset += n
    positions, scores = np.concatenate(positions_parts), np.concatenate(score_parts)
    low_positions, low_selfs = np.concatenate(low_positions), np.concatenate(low_selfs)
    if restricted:
        keep = np.isin(positions, rows)
        positions, scores = positions[keep], scores[keep]
        keep = np.isin(low_positions, rows)
        low_positions, low_selfs = low_positions[keep], low_selfs[keep]
    near = positions[sketch.smallest(scores, sketch.DEFAULT_CANDIDATES)] if positions.size else np.zeros(0, np.int64)
    # ties: smallest() breaks them by index into positions, which ascend within a segment and across segments
    pool = np.lexsort((low_positions, low_selfs))[:SELF_POOL]
    low = _self_list(view, user_spec, low_positions[pool], low_selfs[pool], None if restricted else tuple(segment_keys))
    return np.concatenate([near, low[~np.isin(low, near)]]).astype(np.int64)


def _sketch_scores(chunk: np.ndarray, user: np.ndarray, selfs: np.ndarray) -> np.ndarray:
    """<S_m,S_m> - 2 s_m . u (MMD^2 less <u,u>, the cross product estimated by the sketch) for sketches chunk (m, D)
    float32, user (D,) and exact selfs (m,) -> float64 (m,)."""
    return selfs - 2.0 * (chunk @ user).astype(np.float64)


SELF_POOL = 1_024  # learnwares of smallest <S,S> whose <u,S> the sketch stage computes exactly (float32 kernels)
_SELF_POOLS: dict = {}


def _self_list(view, user_spec: RKMESpec, positions: np.ndarray, selfs: np.ndarray, key) -> np.ndarray:
    """The DEFAULT_SELF_CANDIDATES positions (of the pool positions, selfs <S,S>) of smallest <S,S> - 2 <u,S>, ties by
    position. The pool's zs and betas (8 MB at 1 024 x K = 100 x d = 20, float32) are kept per process under key
    (the view's segments and live sets: None keeps nothing)."""
    from learnware_cli.search import exact_numpy, sketch

    arrays = _SELF_POOLS.get(key) if key is not None else None
    if arrays is None:
        zs, betas, _ = view.gather(positions)
        arrays = (zs.astype(np.float32), betas.astype(np.float32))
        if key is not None:
            if len(_SELF_POOLS) >= 8:
                _SELF_POOLS.pop(next(iter(_SELF_POOLS)))
            _SELF_POOLS[key] = arrays
    cross = exact_numpy.cross_products(user_spec.z, user_spec.beta, arrays[0], arrays[1], user_spec.gamma, dtype=np.float32)
    order = np.lexsort((positions, selfs - 2.0 * cross))
    return positions[order[: sketch.DEFAULT_SELF_CANDIDATES]]


_SMALLEST_SELFS: dict = {}


def _segment_key(segment, live: np.ndarray) -> tuple:
    """What identifies a segment's live rows across searches: its file, its (unique) name and a digest of the live set."""
    import hashlib

    return (getattr(segment.selfs, "filename", None) or id(segment.selfs), segment.name, hashlib.sha1(np.packbits(live).tobytes()).hexdigest())


def _smallest_live_selfs(segment, live: np.ndarray, n: int, segment_key: tuple) -> np.ndarray:
    """Rows of a segment with the n smallest <S, S> among its live rows, ties by row (kept per segment and live set:
    a segment never changes, so a process searching again skips reading its 8 bytes per row of self products)."""
    key = (*segment_key, n)
    if key not in _SMALLEST_SELFS:
        if len(_SMALLEST_SELFS) > 4096:
            _SMALLEST_SELFS.clear()
        from learnware_cli.search.sketch import smallest

        _SMALLEST_SELFS[key] = smallest(np.asarray(segment.selfs), n, np.flatnonzero(live))
    return _SMALLEST_SELFS[key]


SKETCH_REFINE = 3_000  # rows per indexed segment whose float32 sketches are compared (the quantiser's nearest)
SKETCH_READ_ROWS = 16_384  # sketch rows read at once: 32 MB at D = 512


def _row_blocks(array, rows: int):
    """(first row, float32 block) of a 2-D array, ``rows`` at a time. A memory-mapped .npy file is read with plain
    file reads into one reused buffer, so its pages stay in the page cache, not in this process (a 10^6 market's
    sketches are 2 GB: mapped, they would all count towards the search's memory)."""
    filename = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or not filename or not array.flags.c_contiguous or array.dtype != np.float32:
        for start in range(0, array.shape[0], rows):
            yield start, np.asarray(array[start : start + rows], dtype=np.float32)
        return
    width = array.shape[1]
    buffer = np.empty((rows, width), dtype=np.float32)
    with open(filename, "rb") as fh:
        fh.seek(array.offset)
        for start in range(0, array.shape[0], rows):
            count = min(rows, array.shape[0] - start)
            view = buffer[:count]
            if fh.readinto(memoryview(view).cast("B")) != view.nbytes:
                raise OSError(f"{filename}: shorter than its header says")
            yield start, view


def _describe_rows(market: Market, ids: np.ndarray, versions: np.ndarray, positions) -> list[dict]:
    """_describe of view positions, reading only their entries."""
    out = []
    for position in positions:
        learnware_id, version = f"{int(ids[position]):08d}", int(versions[position])
        entry = market.entry(learnware_id)
        out.append(_describe(entry, market.version_record(entry, version)))
    return out


def _mixture_doc(found, described: list) -> dict:
    """A search's "mixture": its members (described, with weights, heaviest first), MMD^2 and score.

    described: the _describe of each pool position the mixture's members index.
    """
    return {
        "learnwares": [{**described[p], "weight": round(float(w), 6)} for p, w in zip(found.members, found.weights)],
        "mmd2": found.mmd2,
        "score": round(found.score, 4),
    }


def _describe_members(members: list) -> list[dict]:
    """_describe of (key, entry, record) members."""
    return [_describe(entry, record) for _, entry, record in members]


_DEVICE_STACKS: dict = {}


def _dense_stack(market: Market, view, dim: int, all_versions: bool):
    """Every live row of an island as device arrays (the exact path), kept per process while the market is unchanged."""
    from learnware_cli.rkme.spec import SpecStack

    key = (str(market.root.resolve()), market.config.get("created", ""), market.generation, dim, all_versions)
    if key not in _DEVICE_STACKS:
        _DEVICE_STACKS.clear()  # one market at a time: keep memory bounded
        zs, betas, selfs = view.dense()
        _DEVICE_STACKS[key] = SpecStack.from_arrays(zs, betas, market.gamma, self_products=selfs, count=zs.shape[0])
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
        result.mixture = _mixture_doc(found, _describe_members([members[row] for row in pool]))
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
        _SPECS[key] = market.version_spec(learnware_id, version)
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
            result.mixture = {**_mixture_doc(chosen, _describe_members([stack.members[row] for row in pool])), "shared": top_shared}
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
