"""Reading the user's documents for a text specification: .txt, .csv / .tsv, .jsonl.

    read_texts("reviews.txt")                   # one document per line
    read_texts("reviews.csv", column="body")    # a column, by header name or 0-based index
    read_texts("reviews.jsonl")                 # one JSON object per line, its "text" field

Files are UTF-8 (a byte-order mark is allowed). Blank documents are skipped.
Every defect is a one-line InputError naming the file (and the line where it
helps): a missing or empty file, undecodable bytes, no such column, a row or
record without it, no document at all.

CSV: the first row is the header; with no ``column``, the column named
"text" (any case) is used, or the only column there is. A ``column`` that is
all digits is an index, unless the header has a column of that name.
JSON Lines: ``column`` names the field (default "text").
Any other suffix is read as plain text, one document per line.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional, Union

from learnware_cli.errors import InputError

TEXT_FIELD = "text"


def read_texts(path, column: Optional[Union[str, int]] = None) -> list[str]:
    """The non-blank documents of a .txt, .csv/.tsv or .jsonl file, in file order (surrounding whitespace stripped)."""
    path = Path(path)
    text = _read_utf8(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        docs = _from_csv(path, text, column, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        docs = _from_jsonl(path, text, column)
    else:
        if column is not None:
            raise InputError(f"{path}: a column can only be chosen in a .csv, .tsv or .jsonl file (this is read as one document per line)")
        docs = [line.strip() for line in text.splitlines()]
    docs = [doc for doc in docs if doc]
    if not docs:
        raise InputError(f"{path}: no documents (every line or cell is blank)")
    return docs


def _read_utf8(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a text file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise InputError(f"{path}: file is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path}: not UTF-8 text (undecodable byte 0x{raw[exc.start]:02x} on line {line}, byte offset {exc.start}); "
            "convert it to UTF-8 first"
        ) from None


def _from_csv(path: Path, text: str, column, delimiter: str) -> list[str]:
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise InputError(f"{path}: file is empty")
    header, body = [cell.strip() for cell in rows[0]], rows[1:]
    index = _column_index(path, header, column)
    docs = []
    for line, row in enumerate(body, start=2):
        if index >= len(row):
            raise InputError(f"{path}: row {line} has {len(row)} columns, no column {index} ({header[index]!r})")
        docs.append(row[index].strip())
    return docs


def _column_index(path: Path, header: list[str], column) -> int:
    names = ", ".join(repr(name) for name in header)
    if column is None:
        matches = [i for i, name in enumerate(header) if name.casefold() == TEXT_FIELD]
        if matches:
            return matches[0]
        if len(header) == 1:
            return 0
        raise InputError(f"{path}: which column holds the text? name one (columns: {names})")
    if isinstance(column, bool):
        raise InputError(f"{path}: column must be a name or an index, got {column!r}")
    if isinstance(column, str):
        if column in header:
            return header.index(column)
        if not column.strip().isdigit():
            raise InputError(f"{path}: no column {column!r} (columns: {names})")
        column = int(column.strip())
    if not isinstance(column, int):
        raise InputError(f"{path}: column must be a name or an index, got {column!r}")
    if not 0 <= column < len(header):
        raise InputError(f"{path}: no column {column} (the file has {len(header)} columns: {names}; indices start at 0)")
    return column


def _from_jsonl(path: Path, text: str, column) -> list[str]:
    if column is not None and not isinstance(column, str):
        raise InputError(f"{path}: in a .jsonl file the column is a field name, got {column!r}")
    field = column or TEXT_FIELD
    docs = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise InputError(f"{path}: line {line} is not valid JSON ({getattr(exc, 'msg', exc)})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}: line {line} is not a JSON object")
        if field not in record:
            raise InputError(f"{path}: line {line} has no {field!r} field")
        value = record[field]
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(f"{path}: line {line}: {field!r} is a {type(value).__name__}, not a string")
        docs.append(value.strip())
    return docs


__all__ = ["read_texts"]
