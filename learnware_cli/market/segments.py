"""The search stack as append-only segments: each commit's specifications, stacked per island, memory-mapped by searches.

A search compares the user's RKME with every learnware of her island. The
arrays it needs are written once, by the submit that stores the versions, as
one segment per island the submit touched::

    MARKET/segments/NAME/
        ids.npy       (n,) int64     learnware ids (the 8-digit id as a number)
        versions.npy  (n,) int32
        zs.npy        (n, K, d) float32   the spec's ``stack_arrays`` (padded with zero weights)
        betas.npy     (n, K) float32
        selfs.npy     (n,) float64   <S, S>, computed by the kind's own kernel in float64
        sketch.npy    (n, D) float32 random Fourier sketch (Gaussian-kernel kinds; see search.sketch)
        sketch_index.npy  uint8    a FAISS product-quantisation index of the sketches (segments of
                                   SKETCH_INDEX_FROM rows and more; see ``add_sketch_index``)

A segment never changes after its commit. Which rows still count lives in the
catalog (``dead``: superseded or removed versions). Searches open the files
with ``np.load(mmap_mode="r")``: a cold search touches the pages it reads,
nothing is parsed. Small segments are merged (``compact``) by the writer that
finds too many of one size: tiered, so each row is rewritten O(log n) times,
and the merged segment drops dead rows.

The segments are derived data: `lw reindex --rebuild` rebuilds them from
the version folders' specifications.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

SEGMENTS_DIR = "segments"
TABLE = "table"
MERGE_FANOUT = 8  # this many segments of one level are merged into one of the next
SKETCH_FEATURES = 512  # D sketch values per learnware (D/2 frequencies; see search.sketch)
SKETCH_SEED = 20261125  # fixed: a sketch is an approximation re-ranked exactly, not a secret
SKETCH_INDEX_FROM = 4096  # segments of this many rows get a sketch index (smaller ones are scanned: < 8 MB each)
# 256 sub-vectors of 2 values, 16 centroids each: 128 bytes per learnware. On a 320 000-row segment of the
# 10^6 bench market the true 100 best by <S,S> - 2 s.u were 99 % among its 3 000 nearest (85 % with 128
# sub-vectors of 4, whose coarser codes cost one top-5 slot in 100 users), 2 ms per search
SKETCH_INDEX_FACTORY = "PQ256x4fs"
SKETCH_INDEX_TRAIN_ROWS = 65_536  # the codebooks are trained on at most this many of the segment's sketches


def island_name(kind: str, dim: int) -> str:
    return f"{kind}/d{int(dim)}"


def split_island(island: str) -> tuple[str, int]:
    kind, _, dim = island.rpartition("/d")
    return kind, int(dim)


def spec_kind(record: dict) -> str:
    """The island kind of a stored version's specification (records from before kinds: table)."""
    kind = record.get("spec_kind")
    return kind if isinstance(kind, str) and kind else TABLE


def island_of(record: dict, semantic: dict) -> Optional[str]:
    """The island a stored version is searched in, or None (no input dimension; a table spec of non-table data)."""
    dim, kind = record.get("input_dim"), spec_kind(record)
    if dim is None:
        return None
    if kind == TABLE:
        data = semantic.get("Data", {}) if isinstance(semantic, dict) else {}
        values = data.get("Values", ["Table"]) if isinstance(data, dict) else ["Table"]
        if "Table" not in values:
            return None
    return island_name(kind, dim)


def level_of(rows: int) -> int:
    return int(math.log(max(rows, 1), MERGE_FANOUT))


def _uses_rbf(spec_class) -> bool:
    """Does the kind compare specs under the Gaussian kernel exp(-gamma |x-y|^2) (so random Fourier features apply)?"""
    return bool(getattr(spec_class, "rbf_kernel", False))


def sketch_frequencies(dim: int, gamma: float, n_features: int = SKETCH_FEATURES):
    """The market's fixed random frequencies for an island (a segment's sketch length says which n_features)."""
    from learnware_cli.search.sketch import frequencies

    return frequencies(dim, gamma, n_features, SKETCH_SEED)


# ----------------------------------------------------------------------------- writing


def stack_specs(specs: list, gamma: float) -> dict:
    """The arrays of one segment for specs of one island: zs, betas (float32), selfs (float64), sketch (if RBF)."""
    from learnware_cli.rkme.spec import RKMESpec, SpecStack

    arrays = [s.stack_arrays() for s in specs]
    k_max = max(len(a.beta) for a in arrays)
    dim = int(np.asarray(arrays[0].z).reshape(len(arrays[0].beta), -1).shape[1])
    zs = np.zeros((len(specs), k_max, dim))
    betas = np.zeros((len(specs), k_max))
    for i, a in enumerate(arrays):
        zs[i, : len(a.beta)] = np.asarray(a.z, dtype=np.float64).reshape(len(a.beta), dim)
        betas[i, : len(a.beta)] = a.beta
    cls = type(specs[0])
    if isinstance(specs[0], RKMESpec):
        stack = SpecStack.from_arrays(zs, betas, specs[0].gamma, dtype="float64")
    else:  # another kind stacks its own way (its kernel is not the table's)
        stack = cls.make_stack(zs, betas, gamma=gamma)
    out = {
        "zs": zs.astype(np.float32),
        "betas": betas.astype(np.float32),
        "selfs": np.asarray(stack.self_products, dtype=np.float64)[: len(specs)],
    }
    if _uses_rbf(cls):
        from learnware_cli.search.sketch import sketch_stack

        spec_gamma = float(specs[0].island_key().gamma)
        out["sketch"] = sketch_stack(zs, betas, sketch_frequencies(dim, spec_gamma)).astype(np.float32)
    return add_sketch_index(out)


def add_sketch_index(arrays: dict) -> dict:
    """arrays plus "sketch_index" (a serialised FAISS index of arrays["sketch"]) when the segment is big enough.

    Why: the sketch stage of a search otherwise reads every sketch (2 KB per
    learnware at D = 512: 2 GB at 10^6). A product quantiser (FAISS
    ``IndexPQFastScan``: the D values cut into 256 sub-vectors of 2, each coded
    by the nearest of 16 centroids trained on the segment) keeps 128 bytes per
    learnware, scanned with SIMD lookup tables (~2 ms per 320 000 rows). Its
    approximate distances only choose which rows' float32 sketches are read
    and compared (search.engine: SKETCH_REFINE per segment), and those choose
    the candidates whose MMD^2 is computed exactly: the quantisation costs
    recall, never exactness. Product quantisation, not an inverted file or a
    graph: learnwares of unrelated data have near-orthogonal sketches, with
    no cluster structure for cells or greedy routing to follow, while a
    quantised linear scan finds a planted near neighbour anywhere.
    """
    sketch = arrays.get("sketch")
    if sketch is None or sketch.shape[0] < SKETCH_INDEX_FROM:
        return arrays
    import faiss

    vectors = np.ascontiguousarray(sketch, dtype=np.float32)
    index = faiss.index_factory(vectors.shape[1], SKETCH_INDEX_FACTORY)
    rng = np.random.default_rng(SKETCH_SEED)
    sample = vectors if vectors.shape[0] <= SKETCH_INDEX_TRAIN_ROWS else vectors[np.sort(rng.choice(vectors.shape[0], SKETCH_INDEX_TRAIN_ROWS, replace=False))]
    index.train(sample)
    index.add(vectors)
    return {**arrays, "sketch_index": faiss.serialize_index(index)}


def search_sketch_index(serialised: np.ndarray, user: np.ndarray, n: int, cache_key=None) -> np.ndarray:
    """Rows (int64, approximate nearest first, at most n) of a segment's sketch index nearest to the user sketch (D,)."""
    index = _SKETCH_INDEXES.get(cache_key) if cache_key is not None else None
    if index is None:
        import faiss

        if isinstance(serialised, np.memmap) and serialised.filename:  # read, not mapped: the pages would stay in RSS
            serialised = np.fromfile(serialised.filename, dtype=np.uint8, count=serialised.size, offset=serialised.offset)
        index = faiss.deserialize_index(np.asarray(serialised, dtype=np.uint8))
        if cache_key is not None:
            _remember_index(cache_key, index, int(serialised.shape[0]))
    n = min(n, int(index.ntotal))
    _, labels = index.search(np.asarray(user, dtype=np.float32).reshape(1, -1), n)
    labels = labels[0]
    return labels[labels >= 0].astype(np.int64)


# Deserialised sketch indexes by (market, segment name): a segment never changes, so a process that searches
# again (the Python API, `lw` serving several queries) skips reading them; bounded by bytes, oldest dropped first.
_SKETCH_INDEXES: dict = {}
_SKETCH_INDEX_BYTES: dict = {}
SKETCH_INDEX_CACHE_BYTES = 512 * 2**20


def _remember_index(key, index, size: int) -> None:
    while _SKETCH_INDEXES and sum(_SKETCH_INDEX_BYTES.values()) + size > SKETCH_INDEX_CACHE_BYTES:
        oldest = next(iter(_SKETCH_INDEXES))
        del _SKETCH_INDEXES[oldest], _SKETCH_INDEX_BYTES[oldest]
    _SKETCH_INDEXES[key] = index
    _SKETCH_INDEX_BYTES[key] = size


def write_arrays(folder: Path, arrays: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value, allow_pickle=False)


def new_name(island: str) -> str:
    kind, dim = split_island(island)
    import hashlib
    import re

    label = re.sub(r"[^A-Za-z0-9]+", "_", kind).strip("_")[:40]
    digest = hashlib.sha256(kind.encode()).hexdigest()[:8]
    return f"{label}-{digest}-d{dim}-{uuid.uuid4().hex[:12]}"


# ----------------------------------------------------------------------------- reading


@dataclass
class Segment:
    """One segment's arrays (memory-mapped) and which of its rows count."""

    name: str
    ids: np.ndarray
    versions: np.ndarray
    zs: np.ndarray
    betas: np.ndarray
    selfs: np.ndarray
    sketch: Optional[np.ndarray]
    live: np.ndarray  # (n,) bool
    sketch_index: Optional[np.ndarray] = None  # serialised FAISS index of the sketches (add_sketch_index)

    @property
    def rows(self) -> int:
        return int(self.ids.shape[0])


_OPEN_SEGMENTS: dict = {}
OPEN_SEGMENTS_KEPT = 64


def open_segment(root: Path, name: str) -> dict:
    """A segment's arrays, memory-mapped; kept per process, so a process that searches again reuses its mappings
    (their pages stay mapped: remapping a 10^6 market's segments cost ~40 ms of page faults per warm search).
    Kept by folder and each file's inode, size and mtime: lw writes a segment once, under a unique name, and a
    file changed under it any other way is mapped again (never read through a mapping of another length)."""
    folder = root / SEGMENTS_DIR / name
    with os.scandir(folder) as files:
        key = (str(folder), tuple(sorted((f.name, f.inode(), f.stat().st_size, f.stat().st_mtime_ns) for f in files)))
    if key not in _OPEN_SEGMENTS:
        if len(_OPEN_SEGMENTS) >= OPEN_SEGMENTS_KEPT:
            _OPEN_SEGMENTS.pop(next(iter(_OPEN_SEGMENTS)))
        _OPEN_SEGMENTS[key] = _map_segment(folder)
    return dict(_OPEN_SEGMENTS[key])


def _map_segment(folder: Path) -> dict:
    out = {}
    for key in ("ids", "versions", "zs", "betas", "selfs", "sketch", "sketch_index"):
        path = folder / f"{key}.npy"
        if key in ("sketch", "sketch_index") and not path.exists():
            out[key] = None
            continue
        out[key] = np.load(path, mmap_mode="r", allow_pickle=False)
    return out


def read_rows(array, rows: np.ndarray) -> np.ndarray:
    """array[rows] (rows (n,) int): from a memory-mapped .npy file by positioned reads, one per run of adjacent
    rows; an in-memory array is indexed.

    Why not index the mapping: a search reads a few thousand scattered rows of
    zs and sketch, and each page fault mapped far more than its page (the
    page cache holds large folios here): 300 rows of zs (2.4 MB) added 205 MB
    to the process's RSS. Read, they add their own bytes; ~3 us a row.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not isinstance(array, np.memmap) or not array.filename or not array.flags.c_contiguous:
        return np.asarray(array[rows])
    out = np.empty((rows.size, *array.shape[1:]), dtype=array.dtype)
    if rows.size == 0:
        return out
    row_bytes = out[0].nbytes
    buffer = memoryview(out).cast("B")
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    with open(array.filename, "rb", buffering=0) as fh:
        for first, end in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [rows.size]])):
            part = buffer[first * row_bytes : end * row_bytes]
            if os.preadv(fh.fileno(), [part], array.offset + int(rows[first]) * row_bytes) != part.nbytes:
                raise OSError(f"{array.filename}: shorter than its header says")
    return out


def live_mask(ids: np.ndarray, versions: np.ndarray, dead: set) -> np.ndarray:
    """(n,) bool: rows whose (id, version) is not in dead (a set of (int id, version))."""
    live = np.ones(ids.shape[0], dtype=bool)
    if not dead:
        return live
    dead_ids = np.fromiter((i for i, _ in dead), dtype=np.int64, count=len(dead))
    candidates = np.flatnonzero(np.isin(ids, dead_ids))
    for row in candidates:
        if (int(ids[row]), int(versions[row])) in dead:
            live[row] = False
    return live


@dataclass
class IslandView:
    """Every segment of one island with its live rows: what a search ranks."""

    island: str
    segments: list

    @property
    def count(self) -> int:
        return int(sum(int(s.live.sum()) for s in self.segments))

    @property
    def k_max(self) -> int:
        return max((s.zs.shape[1] for s in self.segments), default=1)

    @property
    def sketchable(self) -> bool:
        return bool(self.segments) and all(s.sketch is not None for s in self.segments)

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, versions) of the live rows, in view order."""
        if not self.segments:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        return (
            np.concatenate([np.asarray(s.ids)[s.live] for s in self.segments]),
            np.concatenate([np.asarray(s.versions)[s.live] for s in self.segments]),
        )

    def gather(self, positions: Iterable[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """zs (n, K_max, d) float64, betas (n, K_max) float64, selfs (n,) of live positions, in that order, read
        from the segments' files (read_rows: the rows of each segment in ascending order)."""
        positions = np.asarray(list(positions) if not isinstance(positions, np.ndarray) else positions, dtype=np.int64)
        k_max = self.k_max
        dim = self.segments[0].zs.shape[2] if self.segments else 0
        zs = np.zeros((positions.size, k_max, dim))
        betas = np.zeros((positions.size, k_max))
        selfs = np.zeros(positions.size)
        if positions.size == 0:
            return zs, betas, selfs
        live_rows = [np.flatnonzero(s.live) for s in self.segments]
        starts = np.cumsum([0] + [rows.size for rows in live_rows])
        owner = np.searchsorted(starts, positions, side="right") - 1
        for i in np.unique(owner):
            segment, at = self.segments[i], np.flatnonzero(owner == i)
            rows = live_rows[i][positions[at] - starts[i]]
            order = np.argsort(rows, kind="stable")
            at, rows = at[order], rows[order]
            k = segment.zs.shape[1]
            zs[at, :k] = read_rows(segment.zs, rows)
            betas[at, :k] = read_rows(segment.betas, rows)
            selfs[at] = segment.selfs[rows]
        return zs, betas, selfs

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """zs (M, K_max, d) float32, betas (M, K_max) float32, selfs (M,) of every live row (the exact path)."""
        k_max = self.k_max
        parts_z, parts_b, parts_s = [], [], []
        for s in self.segments:
            z = np.asarray(s.zs)[s.live]
            b = np.asarray(s.betas)[s.live]
            if z.shape[1] < k_max:
                z = np.concatenate([z, np.zeros((z.shape[0], k_max - z.shape[1], z.shape[2]), np.float32)], axis=1)
                b = np.concatenate([b, np.zeros((b.shape[0], k_max - b.shape[1]), np.float32)], axis=1)
            parts_z.append(z)
            parts_b.append(b)
            parts_s.append(np.asarray(s.selfs)[s.live])
        return np.concatenate(parts_z), np.concatenate(parts_b), np.concatenate(parts_s)

    def sketches(self) -> tuple[list, list]:
        """([sketch memmap per segment], [live positions-in-segment per segment]) for the sketch stage."""
        return [s.sketch for s in self.segments], [s.live for s in self.segments]


def merge_arrays(parts: list[dict]) -> dict:
    """Concatenate segments' arrays (their live rows), padding K to the largest; the sketch index is built anew."""
    k_max = max(p["zs"].shape[1] for p in parts)
    out: dict = {}
    for key in ("ids", "versions", "zs", "betas", "selfs", "sketch"):
        if any(p.get(key) is None for p in parts):
            continue
        chunks = []
        for p in parts:
            value = np.asarray(p[key])[p["live"]]
            if key in ("zs", "betas") and value.shape[1] < k_max:
                pad = [(0, 0), (0, k_max - value.shape[1])] + [(0, 0)] * (value.ndim - 2)
                value = np.pad(value, pad)
            chunks.append(value)
        out[key] = np.concatenate(chunks)
    return add_sketch_index(out)


def remove_folder(root: Path, name: str) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(root / SEGMENTS_DIR / name)

