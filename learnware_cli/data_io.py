"""Reading and writing the user's tables: CSV (with or without header), .npy, .npz.

Every defect is an InputError whose message names the file and, where it
helps, the line and column.
"""

from __future__ import annotations

import csv
import errno
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from learnware_cli.errors import InputError

MAX_CSV_SNIFF = 64 * 1024


def _parse_float(cell: str) -> float:
    cell = cell.strip()
    if cell == "" or cell.lower() in ("nan", "na", "null", "none"):
        return math.nan
    return float(cell)


def _is_numeric_row(row: list[str]) -> bool:
    try:
        for cell in row:
            _parse_float(cell)
    except ValueError:
        return False
    return True


def read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """CSV -> (float64 (n, d), header or None). Missing cells become NaN.

    A first row that does not parse as numbers is taken as a header.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    if not text.strip():
        raise InputError(f"{path}: file is empty")
    try:
        dialect = csv.Sniffer().sniff(text[:MAX_CSV_SNIFF], delimiters=",;\t ")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in row)]
    header = None
    if rows and not _is_numeric_row(rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise InputError(f"{path}: no data rows")
    width = len(header) if header else len(rows[0])
    out = np.empty((len(rows), width))
    for i, row in enumerate(rows):
        line = i + (2 if header else 1)
        if len(row) != width:
            raise InputError(f"{path}: line {line} has {len(row)} columns, expected {width} (ragged rows)")
        for j, cell in enumerate(row):
            try:
                out[i, j] = _parse_float(cell)
            except ValueError:
                name = f" ({header[j]!r})" if header else ""
                raise InputError(f"{path}: line {line}, column {j}{name}: {cell.strip()!r} is not a number") from None
    return out, header


def read_table(path) -> np.ndarray:
    """Load a 2-D numeric table from .csv/.txt/.tsv, .npy or .npz (first array) -> float64 (n, d).

    1-D arrays are read as one column (a label vector).
    """
    return _read_table_and_header(path)[0]


def _read_table_and_header(path) -> tuple[np.ndarray, Optional[list]]:
    """read_table, plus the CSV header's column names (None for arrays and header-less CSV)."""
    path = Path(path)
    header = None
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a data file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: cannot read as NumPy data ({exc})") from None
        if suffix == ".npz":
            if not loaded.files:
                raise InputError(f"{path}: the .npz archive holds no array")
            arr = loaded[loaded.files[0]]
        else:
            arr = loaded
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{path}: array has non-numeric dtype {arr.dtype}")
        arr = np.asarray(arr, dtype=np.float64)
    else:
        arr, header = read_csv(path)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2-D table, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{path}: no data (shape {arr.shape})")
    return arr, header


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
    header: Optional[list] = None  # a CSV header's column names, when the file has one

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


def nonfinite_cells(arr) -> int:
    """How many cells of a numeric array are NaN or infinite."""
    return int(np.count_nonzero(~np.isfinite(np.asarray(arr, dtype=np.float64))))


def fill_column_means(arr: np.ndarray, source: str = "data") -> tuple[np.ndarray, int]:
    """(copy of arr with NaN/inf cells replaced by their column's finite mean, how many were replaced).

    InputError if a column has no finite value at all.
    """
    x = np.array(arr, dtype=np.float64)
    bad = ~np.isfinite(x)
    count = int(np.count_nonzero(bad))
    if count:
        finite = (~bad).sum(axis=0)
        empty = np.flatnonzero(finite == 0)
        if empty.size:
            raise InputError(f"{source}: column {int(empty[0])} has no finite value (all missing or infinite)")
        means = np.where(bad, 0.0, x).sum(axis=0) / finite
        x = np.where(bad, means[None, :], x)
    return x, count


def read_matrix(path, fill: bool = False) -> Matrix:
    """``read_table`` that also says how many cells were missing or infinite (``Matrix.replaced``).

    fill=True replaces them by their column's mean here (as ``lw spec`` and
    the RKME fit do); otherwise they are returned as read (NaN, ±inf).
    """
    path = Path(path)
    arr, header = _read_table_and_header(path)
    if fill:
        arr, count = fill_column_means(arr, str(path))
    else:
        count = nonfinite_cells(arr)
    return Matrix(arr, count, path, header)


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
