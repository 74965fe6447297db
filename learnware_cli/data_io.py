"""Reading and writing the user's tables: CSV (with or without header), Parquet, .npy, .npz.

Every defect is an InputError whose message names the file and, where it
helps, the line and column.

Tables are read as a stream of row blocks (``_table_source``): CSV by
pyarrow's C parser, Parquet a column at a time, .npy in row chunks straight
from the file. ``read_matrix`` assembles the blocks into one float64 array
(the only full copy); ``scan_table`` never holds the whole table: it keeps
per-column statistics and uniform row samples, which is all ``lw spec`` needs.
pyarrow is imported inside the readers only, so ``lw --help`` does not pay for it.
"""

from __future__ import annotations

import codecs
import csv
import errno
import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from learnware_cli.errors import InputError

MAX_CSV_SNIFF = 64 * 1024
NULL_TOKENS = ("", "nan", "na", "null", "none")  # missing cells (compared stripped, case-insensitively)
CSV_BLOCK_BYTES = 1 << 20  # pyarrow's parse unit, ~1 000 rows of 50 numbers (2-8 MiB blocks parsed slower: out of cache)
CSV_GATHER_BYTES = 4 << 20  # numbers per block handed on (~10 000 rows of 50): a tenth of the per-block steps downstream
PY_BLOCK_ROWS = 4096  # rows per block of the pure-Python CSV path
ARRAY_BLOCK_ROWS = 32768  # rows per block read from .npy files and in-memory arrays


def _parse_float(cell: str) -> float:
    cell = cell.strip()
    if cell == "" or cell.lower() in NULL_TOKENS:
        return math.nan
    return float(cell)


def _is_numeric_row(row: list[str]) -> bool:
    try:
        for cell in row:
            _parse_float(cell)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- sources


@dataclass
class _Source:
    """A table as a stream of row blocks: float64 (b, width) arrays (C or Fortran order), NaN where a cell is missing.

    rows: known up front (arrays, Parquet) or None (CSV: counted while reading).
    columns: for Parquet, a function j -> float64 (rows,) column, the cheaper access there.
    """

    path: Path
    width: int
    header: Optional[list]
    rows: Optional[int]
    blocks: Callable[[], Iterator[np.ndarray]]
    columns: Optional[Callable[[int], np.ndarray]] = None


class _UsePythonParser(Exception):
    """pyarrow met something it cannot judge exactly as the Python parser does: let that parser decide."""


def _csv_prefix(path: Path):
    """(text of the file's start, whether that is the whole file, byte length of a UTF-8 BOM).

    Holds at least MAX_CSV_SNIFF characters (the delimiter sniffer's sample) and
    the first non-empty CSV row whole, unless the file is shorter.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts: list[str] = []
    chars = 0
    bom = 0
    with io.open(path, "rb") as fh:
        first = True
        while True:
            chunk = fh.read(4 * MAX_CSV_SNIFF)
            eof = not chunk
            if first and chunk.startswith(codecs.BOM_UTF8):
                chunk, bom = chunk[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
            first = False
            try:
                piece = decoder.decode(chunk, final=eof)
            except UnicodeDecodeError:
                raise InputError(f"{path}: not a text CSV file") from None
            parts.append(piece)
            chars += len(piece)
            if eof:
                return "".join(parts), True, bom
            if chars >= MAX_CSV_SNIFF:
                text = "".join(parts)
                parts = [text]
                if _first_row(text, _sniff_delimiter(text), complete=True) is not None:
                    return text, False, bom


def _sniff_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:MAX_CSV_SNIFF], delimiters=",;\t ").delimiter
    except csv.Error:
        return ","


def _first_row(text: str, delimiter: str = ",", complete: bool = False):
    """(first CSV row with a non-blank cell, characters up to its end) in text, or None.

    complete: only a row followed by more text counts (the text may be cut).
    """
    lines = io.StringIO(text)
    consumed = 0
    pending = []

    def counted():
        for line in lines:
            pending.append(len(line))
            yield line

    reader = csv.reader(counted(), delimiter=delimiter)
    try:
        for row in reader:
            consumed += sum(pending)
            pending.clear()
            if any(c.strip() for c in row):
                if complete and consumed >= len(text):
                    return None
                return row, consumed
    except csv.Error:
        return None
    return None


def _csv_source(path: Path) -> _Source:
    text, whole, bom = _csv_prefix(path)
    if whole and not text.strip():
        raise InputError(f"{path}: file is empty")
    delimiter = _sniff_delimiter(text)
    first = _first_row(text, delimiter)
    if first is None:
        raise InputError(f"{path}: no data rows")  # only blank rows (the Python path says the same)
    row, consumed = first
    header = None
    start = bom
    if not _is_numeric_row(row):
        header = [c.strip() for c in row]
        start = bom + len(text[:consumed].encode("utf-8"))
    width = len(header) if header else len(row)

    def blocks():
        try:
            yield from _arrow_csv_blocks(path, start, width, delimiter)
        except _UsePythonParser:
            yield _RESTART
            yield from _python_csv_blocks(path, delimiter)

    return _Source(path, width, header, None, blocks)


_RESTART = object()  # marks, in a block stream, "forget the blocks so far: the stream starts again"


def _null_tokens() -> list[str]:
    """Every capitalisation of the missing-cell words that pyarrow does not read as NaN itself."""
    import itertools

    out = [""]
    for word in ("na", "null", "none"):
        out += ["".join(chars) for chars in itertools.product(*[(c.lower(), c.upper()) for c in word])]
    return out


def _arrow_csv_blocks(path: Path, start: int, width: int, delimiter: str) -> Iterator[np.ndarray]:
    """Row blocks parsed by pyarrow's C reader, from byte offset start (after a header and BOM).

    pyarrow's streaming reader reads the file and parses it a block of
    CSV_BLOCK_BYTES at a time (a few MiB in memory), on a worker thread, the
    next group of blocks while this one is converted and handed on; a block
    is handed on as about CSV_GATHER_BYTES of numbers. Raises _UsePythonParser
    where pyarrow refuses a row (a ragged row, a cell that is not a number, odd
    whitespace or quoting) or reads a row of only missing cells, which the
    Python reader skips when all its cells are blank: that reader then
    decides, with its exact messages.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{j}" for j in range(width)]
    # the streaming reader, not read_csv on pieces of the file: it reads the file once, with no copies of
    # our own, and converts each block while its text is in the cache. It parses on one thread, yet on the
    # loaded 2-core machine it parsed 10^6 x 50 in 2.3 s of CPU and wall against 2.8-3.3 s for read_csv
    # on 4 MiB pieces with its 2 threads (whose CPU time per block grows when they run side by side)
    read_options = pacsv.ReadOptions(column_names=names, block_size=CSV_BLOCK_BYTES, use_threads=True)
    parse_options = pacsv.ParseOptions(delimiter=delimiter, quote_char='"', double_quote=True, ignore_empty_lines=True)
    convert_options = pacsv.ConvertOptions(
        column_types={name: pa.float64() for name in names},
        null_values=_null_tokens(),
        strings_can_be_null=False,
        quoted_strings_can_be_null=True,
    )
    refused = (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError)
    gather_rows = max(1, CSV_GATHER_BYTES // (8 * width))
    with pa.OSFile(str(path)) as file:
        file.seek(start)  # the reader starts where the file stands: past the header
        try:
            reader = pacsv.open_csv(file, read_options=read_options, parse_options=parse_options, convert_options=convert_options)
        except refused:  # open_csv parses the first block
            raise _UsePythonParser() from None

        def next_group() -> list:
            """The next record batches, gather_rows rows or more ([] at the file's end)."""
            batches, rows = [], 0
            while rows < gather_rows:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                batches.append(batch)
                rows += batch.num_rows
            return batches

        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lw-csv")
        try:
            pending = executor.submit(next_group)
            while True:
                try:
                    batches = pending.result()
                except refused:
                    raise _UsePythonParser() from None
                if not batches:
                    return
                pending = executor.submit(next_group)  # pyarrow releases the GIL: it parses while we convert
                if any(_has_missing_row(batch.columns) for batch in batches):
                    raise _UsePythonParser()
                yield _gather_columns(batches, width)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            reader.close()


def _has_missing_row(columns) -> bool:
    """Whether some row of these pyarrow float64 arrays is null in every column (looked for only when every column has a null)."""
    if not all(column.null_count for column in columns):
        return False
    missing = np.ones(len(columns[0]), dtype=bool)
    for column in columns:
        missing &= _float_values(column)[1]
    return bool(missing.any())


def _gather_columns(batches: list, width: int) -> np.ndarray:
    """Record batches of float64 columns -> one (rows, width) float64 block, NaN where a cell is null.

    Filled column by column into a (width, rows) array, so that every copy is
    contiguous, and handed on as its transpose: a Fortran-order view, no
    transposition (consumers take either order).
    """
    out = np.empty((width, sum(batch.num_rows for batch in batches)))
    at = 0
    for batch in batches:
        count = batch.num_rows
        for j, column in enumerate(batch.columns):
            _copy_floats(column, out[j, at : at + count])
        at += count
    return out.T


def _float_values(array) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(values, null mask or None) of a pyarrow float64 Array: a read-only view of its value buffer
    (undefined where null) and, where it has nulls, its validity bitmap unpacked and inverted.

    Read from the buffers with NumPy rather than by ``Array.to_numpy``, which imports pandas
    (0.2-0.3 s of every `lw spec`) to hand over the same view.
    """
    n, offset = len(array), array.offset
    if n == 0:
        return np.empty(0), None
    validity, data = array.buffers()[:2]
    values = np.frombuffer(data, dtype=np.float64, count=n, offset=offset * 8)
    values.flags.writeable = False  # pyarrow's buffers are immutable: no one may write through the view
    if not array.null_count:
        return values, None
    bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), count=offset + n, bitorder="little")
    return values, bits[offset:] == 0


def _copy_floats(column, out: np.ndarray) -> None:
    """Copy a pyarrow float64 Array or ChunkedArray into out (n,), NaN where a cell is null."""
    at = 0
    for chunk in column.chunks if hasattr(column, "chunks") else [column]:
        values, null = _float_values(chunk)
        part = out[at : at + values.shape[0]]
        part[:] = values
        if null is not None:
            part[null] = np.nan
        at += values.shape[0]


def _float_array(column) -> np.ndarray:
    """A pyarrow float64 Array or ChunkedArray -> float64 (n,), NaN where null: a read-only view of
    pyarrow's buffer when it is one chunk without nulls, else a copy."""
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    if len(chunks) == 1:
        values, null = _float_values(chunks[0])
        if null is None:
            return values
    out = np.empty(len(column))
    _copy_floats(column, out)
    return out


def _python_csv_blocks(path: Path, delimiter: str) -> Iterator[np.ndarray]:
    """The reference reader, cell by cell in Python: slow, exact, and the source of every CSV message."""
    with io.open(path, encoding="utf-8-sig", newline="") as fh:
        try:
            rows = (row for row in csv.reader(fh, delimiter=delimiter) if any(c.strip() for c in row))
            first = next(rows, None)
            if first is None:
                raise InputError(f"{path}: no data rows")
            header = None
            pending: list[list[str]] = []
            if _is_numeric_row(first):
                pending.append(first)
            else:
                header = [c.strip() for c in first]
            width = len(header) if header else len(first)
            line = 2 if header else 1
            done = False
            while not done:
                for row in rows:
                    pending.append(row)
                    if len(pending) >= PY_BLOCK_ROWS:
                        break
                else:
                    done = True
                if not pending:
                    break
                out = np.empty((len(pending), width))
                for i, row in enumerate(pending):
                    if len(row) != width:
                        raise InputError(f"{path}: line {line + i} has {len(row)} columns, expected {width} (ragged rows)")
                    for j, cell in enumerate(row):
                        try:
                            out[i, j] = _parse_float(cell)
                        except ValueError:
                            name = f" ({header[j]!r})" if header else ""
                            raise InputError(f"{path}: line {line + i}, column {j}{name}: {cell.strip()!r} is not a number") from None
                line += len(pending)
                pending = []
                yield out
        except UnicodeDecodeError:
            raise InputError(f"{path}: not a text CSV file") from None
        except csv.Error as exc:
            raise InputError(f"{path}: not a readable CSV file ({exc})") from None


def _array_source(path: Path, arr: np.ndarray, offset: Optional[int] = None) -> _Source:
    """Row blocks of a numeric array (1-D: one column). offset: where a C-order .npy's data starts in
    its file; then blocks are read from the file, so only one block is in memory at a time."""
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{path}: array has non-numeric dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2-D table, got shape {arr.shape}")
    n, d = arr.shape
    dtype = arr.dtype

    def blocks():
        if offset is not None and arr.flags.c_contiguous:
            row_bytes = d * dtype.itemsize
            step = max(1, min(ARRAY_BLOCK_ROWS, (8 << 20) // max(row_bytes, 1)))
            with io.open(path, "rb") as fh:
                fh.seek(offset)
                for r0 in range(0, n, step):
                    rows = min(step, n - r0)
                    raw = np.empty(rows * d, dtype=dtype)
                    if fh.readinto(memoryview(raw).cast("B")) != raw.nbytes:
                        raise InputError(f"{path}: cannot read as NumPy data (file is truncated)")
                    yield raw.reshape(rows, d).astype(np.float64, copy=False)
            return
        for r0 in range(0, n, ARRAY_BLOCK_ROWS):
            yield np.array(arr[r0 : r0 + ARRAY_BLOCK_ROWS], dtype=np.float64, order="C")

    return _Source(path, d, None, n, blocks)


def _numpy_source(path: Path, suffix: str) -> _Source:
    if suffix == ".npy":
        try:
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only: data is read in blocks
            return _array_source(path, mapped, offset=mapped.offset if isinstance(mapped, np.memmap) else None)
        except ValueError:
            pass  # e.g. an empty array, which cannot be mapped: read it whole below
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: cannot read as NumPy data ({exc})") from None
    try:
        loaded = np.load(path, allow_pickle=False)
        if suffix == ".npz":
            if not loaded.files:
                raise InputError(f"{path}: the .npz archive holds no array")
            arr = loaded[loaded.files[0]]
        else:
            arr = loaded
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read as NumPy data ({exc})") from None
    return _array_source(path, arr)


def _parquet_source(path: Path) -> _Source:
    """A Parquet file of numeric columns (integers, floats, booleans, decimals; nulls are missing
    cells); the header is the column names. Read a column at a time, whatever its row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(str(path), memory_map=False)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read as Parquet ({exc})") from None
    names = list(schema.names)
    for j, fld in enumerate(schema):
        t = fld.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)):
            raise InputError(f"{path}: column {j} ({fld.name!r}) has type {fld.type}, not numbers")
    rows = parquet.metadata.num_rows
    table = None
    if len(set(names)) != len(names):
        table = parquet.read()  # duplicate names: columns are reachable by position only

    def column(j: int) -> np.ndarray:
        try:
            chunked = table.column(j) if table is not None else parquet.read(columns=[names[j]], use_threads=True).column(0)
            values = chunked.cast(pa.float64())
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{path}: cannot read column {j} ({names[j]!r}) as numbers ({exc})") from None
        return _float_array(values)

    def blocks():  # row blocks (read_matrix and scan_table use the columns instead)
        for batch in parquet.iter_batches(batch_size=ARRAY_BLOCK_ROWS):
            out = np.empty((batch.num_rows, len(names)))
            for j, values in enumerate(batch.columns):
                out[:, j] = _float_array(values.cast(pa.float64()))
            yield out

    return _Source(path, len(names), names, rows, blocks, columns=column)


def _table_source(path) -> _Source:
    """The right reader for a table file, after the checks every format shares."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a data file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _numpy_source(path, suffix)
    if suffix in (".parquet", ".pq"):
        return _parquet_source(path)
    return _csv_source(path)


def _check_shape(source: _Source, rows: int) -> None:
    if source.header is not None and rows == 0 and source.columns is None:
        raise InputError(f"{source.path}: no data rows")
    if rows == 0 or source.width == 0:
        raise InputError(f"{source.path}: no data (shape {(rows, source.width)})")


def _consume(source: _Source, consumer_factory):
    """Feed every block to a fresh consumer; if the stream restarts (pyarrow handed over to the Python
    parser), start again with a new consumer on the Python path's blocks."""
    consumer = consumer_factory()
    stream = source.blocks()
    for block in stream:
        if block is _RESTART:
            consumer = consumer_factory()
            continue
        consumer.add(block)
    return consumer


# ---------------------------------------------------------------------------------------------- column statistics


class _ColumnStats:
    """Per-column count and sum of finite cells, and the count of missing or infinite ones, fed by row blocks."""

    def __init__(self, width: int):
        self.rows = 0
        self.bad = np.zeros(width, dtype=np.int64)
        self.sums = np.zeros(width)

    def add(self, block: np.ndarray) -> Optional[np.ndarray]:
        """Count a block; returns its mask of non-finite cells, or None when it has none."""
        self.rows += block.shape[0]
        finite = np.isfinite(block)
        if finite.all():
            self.sums += block.sum(axis=0)
            return None
        self.bad += block.shape[0] - np.count_nonzero(finite, axis=0)
        self.sums += np.where(finite, block, 0.0).sum(axis=0)
        return ~finite

    def add_column(self, j: int, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        self.bad[j] += values.shape[0] - int(np.count_nonzero(finite))
        self.sums[j] += values[finite].sum() if self.bad[j] else values.sum()

    @property
    def replaced(self) -> int:
        return int(self.bad.sum())

    def means(self, source: str) -> np.ndarray:
        """Column means of the finite cells; InputError if a column with bad cells has no finite one."""
        finite = self.rows - self.bad
        empty = np.flatnonzero((finite == 0) & (self.bad > 0))
        if empty.size:
            raise InputError(f"{source}: column {int(empty[0])} has no finite value (all missing or infinite)")
        return self.sums / np.maximum(finite, 1)


def _fill_rows(block: np.ndarray, means: np.ndarray, bad: Optional[np.ndarray] = None) -> np.ndarray:
    """Replace, in place, the non-finite cells of block by the column means."""
    if bad is None:
        bad = ~np.isfinite(block)
    if bad.any():
        np.copyto(block, np.broadcast_to(means, block.shape), where=bad)
    return block


# ---------------------------------------------------------------------------------------------- uniform row samples


_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15
SAMPLE_FIT = 1  # salts: the rows an RKME is fitted on, and the rows its error is measured on
SAMPLE_ERROR = 2


def _mix64(v: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scatters consecutive integers uniformly."""
    v = v ^ (v >> np.uint64(30))
    v = v * _MIX1
    v = v ^ (v >> np.uint64(27))
    v = v * _MIX2
    return v ^ (v >> np.uint64(31))


def _key_offset(seed: int, salt: int) -> np.uint64:
    with np.errstate(over="ignore"):
        return _mix64(np.array([(int(seed) * _GOLDEN + salt * 0xD1B54A32D192ED03) % (1 << 64)], dtype=np.uint64))[0]


def row_keys(start: int, count: int, seed: int, salt: int) -> np.ndarray:
    """Random keys of rows start .. start + count - 1 for (seed, salt): each a function of the row's
    index only, all distinct (a bijection of index + offset), so the rows with the m smallest keys are
    a uniform sample without replacement, the same whether the table is read at once or in blocks."""
    with np.errstate(over="ignore"):
        index = np.arange(start, start + count, dtype=np.uint64) + _key_offset(seed, salt)
        return _mix64(index)


def sample_indices(n: int, m: int, seed: int, salt: int = SAMPLE_FIT) -> np.ndarray:
    """Indices (sorted) of a uniform sample of min(m, n) of n rows, deterministic for (seed, salt):
    the rows with the smallest ``row_keys`` (what ``scan_table`` keeps while it streams)."""
    if m >= n:
        return np.arange(n)
    keys = row_keys(0, n, seed, salt)
    return np.sort(np.argpartition(keys, m - 1)[:m])


class _RowSample:
    """The rows with the m smallest keys among those fed so far (bottom-m sampling), in a bounded buffer."""

    def __init__(self, m: int, seed: int, salt: int, width: int):
        self.m, self.seed, self.salt = m, seed, salt
        self.keys = np.empty(0, dtype=np.uint64)
        self.index = np.empty(0, dtype=np.int64)
        self.rows = np.empty((0, width))
        self.pending: list = []
        self.pending_count = 0
        self.threshold: Optional[np.uint64] = None

    def add(self, start: int, block: np.ndarray) -> None:
        keys = row_keys(start, block.shape[0], self.seed, self.salt)
        index = np.arange(start, start + block.shape[0], dtype=np.int64)
        if self.threshold is not None:
            keep = keys < self.threshold
            if not keep.any():
                return
            keys, index, block = keys[keep], index[keep], block[keep]
        self.pending.append((keys, index, block))  # blocks are fresh arrays: kept without a copy
        self.pending_count += keys.shape[0]
        if self.pending_count >= max(self.m, 4096):
            self._compact()

    def _compact(self) -> None:
        """Keep the m smallest keys of the kept and pending rows: the keys are chosen first, then the
        rows are gathered once into a new buffer (memory: old + pending + m rows, never a concatenation)."""
        if not self.pending:
            return
        parts = [(self.keys, self.index, self.rows)] + self.pending
        keys = np.concatenate([p[0] for p in parts])
        index = np.concatenate([p[1] for p in parts])
        keep = np.arange(keys.shape[0]) if keys.shape[0] <= self.m else np.sort(np.argpartition(keys, self.m - 1)[: self.m])
        rows = np.empty((keep.shape[0], self.rows.shape[1]))
        bounds = np.cumsum([0] + [p[0].shape[0] for p in parts])
        for (_, _, part_rows), lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            a, b = np.searchsorted(keep, [lo, hi])
            rows[a:b] = part_rows[keep[a:b] - lo]
        self.pending, self.pending_count = [], 0
        self.keys, self.index, self.rows = keys[keep], index[keep], rows
        if self.keys.shape[0] >= self.m:
            self.threshold = self.keys.max()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, rows), in row order."""
        self._compact()
        order = np.argsort(self.index, kind="stable")
        if np.all(order[:-1] < order[1:]):
            return self.index, self.rows
        return self.index[order], self.rows[order]


# ---------------------------------------------------------------------------------------------- reading whole tables


def read_table(path) -> np.ndarray:
    """Load a 2-D numeric table from .csv/.txt/.tsv, .parquet, .npy or .npz (first array) -> float64 (n, d).

    1-D arrays are read as one column (a label vector).
    """
    return read_matrix(path).values


def _read_table_and_header(path) -> tuple[np.ndarray, Optional[list]]:
    """read_table, plus the header's column names (None for arrays and header-less CSV)."""
    table = read_matrix(path)
    return table.values, table.header


@dataclass(frozen=True)
class Matrix:
    """A table read from a file, and what reading it had to repair.

    values: float64 (n, d). replaced: how many cells were missing (empty,
    ``nan``, ``NA``) or infinite; with ``fill=True`` they now hold their
    column's mean (the repair the RKME fit makes), else they are as read.
    """

    values: np.ndarray
    replaced: int
    path: Path
    header: Optional[list] = None  # the column names of a CSV header or a Parquet file

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


def nonfinite_cells(arr) -> int:
    """How many cells of a numeric array are NaN or infinite (counted in blocks: no full-size mask)."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "biu":
        return 0
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    return int(sum(flat.shape[0] * flat.shape[1] - np.count_nonzero(np.isfinite(flat[r : r + ARRAY_BLOCK_ROWS])) for r in range(0, flat.shape[0], ARRAY_BLOCK_ROWS)) if flat.size else 0)


def column_stats(arr: np.ndarray) -> _ColumnStats:
    """Finite counts and sums per column of a float (n, d) array, a block of rows at a time."""
    stats = _ColumnStats(arr.shape[1])
    for r0 in range(0, arr.shape[0], ARRAY_BLOCK_ROWS):
        stats.add(arr[r0 : r0 + ARRAY_BLOCK_ROWS])
    return stats


def fill_column_means(arr: np.ndarray, source: str = "data", copy: bool = True) -> tuple[np.ndarray, int]:
    """(arr with NaN/inf cells replaced by their column's finite mean, how many were replaced).

    copy=True (the default) never modifies arr: the result is a new array when
    cells are replaced, and arr itself, unchanged, when there is nothing to
    replace. copy=False fills arr (float64) in place. InputError if a column
    with such cells has no finite value at all.
    """
    x = np.asarray(arr, dtype=np.float64)
    stats = column_stats(x)
    count = stats.replaced
    if count:
        means = stats.means(source)
        if copy and isinstance(arr, np.ndarray) and np.may_share_memory(x, arr):
            x = x.copy()
        for r0 in range(0, x.shape[0], ARRAY_BLOCK_ROWS):
            _fill_rows(x[r0 : r0 + ARRAY_BLOCK_ROWS], means)
    return x, count


class _Assembler:
    """Collects row blocks into one float64 (n, d) array, with the column statistics on the way."""

    def __init__(self, width: int, rows: Optional[int]):
        self.stats = _ColumnStats(width)
        self.width = width
        self.out = np.empty((rows, width)) if rows is not None else None
        self.blocks: list = []  # blocks of a table of unknown length, with their bad-cell masks

    def add(self, block: np.ndarray) -> None:
        start = self.stats.rows
        bad = self.stats.add(block)
        if self.out is not None:
            self.out[start : start + block.shape[0]] = block
            if bad is not None:
                self.blocks.append((start, block.shape[0]))
        else:
            self.blocks.append((block, bad))

    def finish(self, fill: bool, source: str) -> np.ndarray:
        means = self.stats.means(source) if fill and self.stats.replaced else None
        if self.out is not None:
            if means is not None:
                for start, count in self.blocks:
                    _fill_rows(self.out[start : start + count], means)
            return self.out
        # one allocation, filled block by block while the blocks are let go: peak ~1x the table, not 2x
        out = np.empty((self.stats.rows, self.width))
        start = 0
        blocks, self.blocks = self.blocks, []
        for i, (block, bad) in enumerate(blocks):
            if means is not None and bad is not None:
                _fill_rows(block, means, bad)
            out[start : start + block.shape[0]] = block
            start += block.shape[0]
            blocks[i] = None
        return out


def read_matrix(path, fill: bool = False) -> Matrix:
    """Read a table: CSV (header optional), Parquet, .npy or .npz, and say how many cells were missing
    or infinite (``Matrix.replaced``).

    fill=True replaces them by their column's mean here (as ``lw spec`` and
    the RKME fit do); otherwise they are returned as read (NaN, ±inf).
    """
    path = Path(path)
    source = _table_source(path)
    if source.rows is not None:
        _check_shape(source, source.rows)
    if source.columns is not None:  # Parquet: a column at a time into the one array
        assembled = _Assembler(source.width, source.rows)
        for j in range(source.width):
            values = source.columns(j)
            assembled.stats.add_column(j, values)
            assembled.out[:, j] = values
            del values
        assembled.stats.rows = source.rows
        if assembled.stats.replaced:
            assembled.blocks = [(r0, min(ARRAY_BLOCK_ROWS, source.rows - r0)) for r0 in range(0, source.rows, ARRAY_BLOCK_ROWS)]
    else:
        assembled = _consume(source, lambda: _Assembler(source.width, source.rows))
    _check_shape(source, assembled.stats.rows)
    values = assembled.finish(fill, str(path))
    return Matrix(values, assembled.stats.replaced, path, source.header)


# ---------------------------------------------------------------------------------------------- scanning without holding the table


@dataclass
class TableScan:
    """What one pass over a table file keeps: its size, header, missing-cell count, column means, and
    uniform row samples (already filled with the column means), never the whole table.

    samples: name -> (row indices (m,), rows float64 (m, d)), in row order; all rows when the table has
    no more than the sample's size.
    """

    path: Path
    rows: int
    width: int
    header: Optional[list]
    replaced: int
    means: np.ndarray
    samples: dict = field(default_factory=dict)


class _Scanner:
    def __init__(self, width: int, sizes: dict, seed: int):
        self.stats = _ColumnStats(width)
        self.samples = {name: _RowSample(m, seed, salt, width) for name, (m, salt) in sizes.items()}

    def add(self, block: np.ndarray) -> None:
        start = self.stats.rows
        self.stats.add(block)
        for sample in self.samples.values():
            sample.add(start, block)


def scan_table(path, samples: dict, seed: int = 0) -> TableScan:
    """One streaming pass over a table file: ``TableScan`` with, for each name -> (m, salt) of samples,
    the uniform sample of m rows ``sample_indices(rows, m, seed, salt)`` picks. Memory: the samples and one block.

    The same checks and messages as ``read_matrix(path, fill=True)``.
    """
    path = Path(path)
    source = _table_source(path)
    if source.columns is not None:  # Parquet: a column at a time, with the rows known up front
        _check_shape(source, source.rows)
        stats = _ColumnStats(source.width)
        stats.rows = source.rows
        picked = {name: sample_indices(source.rows, m, seed, salt) for name, (m, salt) in samples.items()}
        rows = {name: np.empty((len(index), source.width)) for name, index in picked.items()}
        for j in range(source.width):
            values = source.columns(j)
            stats.add_column(j, values)
            for name, index in picked.items():
                rows[name][:, j] = values[index]
            del values
        out = {name: (picked[name], rows[name]) for name in picked}
    else:
        if source.rows is not None:
            _check_shape(source, source.rows)
        scanner = _consume(source, lambda: _Scanner(source.width, samples, seed))
        stats = scanner.stats
        _check_shape(source, stats.rows)
        out = {name: sample.result() for name, sample in scanner.samples.items()}
    means = stats.means(str(path)) if stats.replaced else stats.sums / max(stats.rows, 1)
    if stats.replaced:
        for _, sample_rows in out.values():
            _fill_rows(sample_rows, means)
    release_free_memory()  # the parser's buffers are free now: let the fit that follows reuse the pages
    return TableScan(path, stats.rows, source.width, source.header, stats.replaced, means, out)


def release_free_memory() -> None:
    """Hand memory that is freed but still held by the allocators back to the system (glibc's
    malloc_trim, pyarrow's pool), so that the next stage's peak does not stack on this one's."""
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
            if trim is not None:
                trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
                _malloc_trim = trim
        except (OSError, AttributeError):
            pass
    if _malloc_trim:
        _malloc_trim(0)
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None and hasattr(pyarrow.MemoryPool, "release_unused"):
        pyarrow.default_memory_pool().release_unused()  # the Parquet reader's (mimalloc or jemalloc) pool


_malloc_trim = None  # glibc's malloc_trim once looked up; False where there is none


def read_vector(path) -> np.ndarray:
    """A label/target file: one column -> (n,); several columns -> (n, d)."""
    arr = read_table(path)
    return arr[:, 0] if arr.shape[1] == 1 else arr


def as_inputs(X) -> np.ndarray:
    """Model inputs of any data type -> ndarray with one item per row: a 2-D table (n, d), images
    (n, C, H, W) or texts (a sequence of str -> str array (n,)). Values pass through untouched."""
    if X is None:
        raise InputError("no data given")
    if isinstance(X, (list, tuple)) and X and all(isinstance(item, str) for item in X):
        return np.array(X, dtype=str)
    X = np.asarray(X)
    if X.dtype.kind == "U":
        if X.ndim != 1 or X.shape[0] == 0:
            raise InputError(f"texts must be a non-empty list of strings, got shape {X.shape}")
        return X
    if X.ndim < 2:
        return as_matrix(X)  # its message
    if X.shape[0] == 0 or any(size == 0 for size in X.shape[1:]):
        raise InputError(f"data is empty (shape {X.shape})")
    return X


def as_matrix(X, numeric: bool = False) -> np.ndarray:
    """Check that X is a non-empty 2-D table -> ndarray (n, d); float64 when numeric.

    Values are otherwise passed through untouched: models own their NaN handling.
    """
    if X is None:
        raise InputError("no data given")
    try:
        X = np.asarray(X, dtype=np.float64) if numeric else np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise InputError(f"data must be numeric ({exc})") from None
    if X.ndim != 2:
        raise InputError(f"data must be a 2-D table (rows x columns), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"data is empty (shape {X.shape})")
    return X


def check_output_path(path) -> Path:
    """Refuse, before any work, an output file that cannot be written; returns it as a Path.

    A folder, a path under a file, or a folder without write permission is an
    InputError (exit 2). A read-only file system is the OSError the write
    would raise (the CLI reports it in one line, exit 5). Folders that do not
    exist yet are fine: the writer creates them.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name to write")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{path}: cannot write this file (permission denied)")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{path}: {parent} is not a folder")
    if _read_only(parent):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot create files in {parent} (permission denied)")
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the write itself will say
        return False


def read_json_file(path, what: str):
    """A user's JSON file (a search result, anchor scores): the parsed document, or one-line
    InputError: "PATH: no such file" / "PATH: not WHAT (why)"."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not {what} ({exc})") from None


def write_text_atomic(path, text: str) -> None:
    """Write a text file whole or not at all (temp file + rename), creating parent folders.

    An OSError (full disk, read-only file system) leaves no partial file; the
    CLI reports it in one line, exit 5.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:  # name the file the user asked for, not the temp file (a failed write() names none)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_table(path, arr) -> None:
    """Write predictions to .npy or CSV (no header), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr)
    if path.suffix.lower() == ".npy":
        np.save(path, arr, allow_pickle=False)
        return
    if arr.ndim == 1:
        arr = arr[:, None]
    fmt = "%d" if arr.dtype.kind in "biu" else "%.10g"
    np.savetxt(path, arr, delimiter=",", fmt=fmt)
