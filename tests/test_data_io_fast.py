"""The table readers behind `lw spec` and every --data option: CSV by pyarrow's C parser, Parquet,
.npy in blocks, and the streaming scan that never holds a big table.

What a user relies on: the same matrix, header, missing-cell count and one-line
messages as the pure-Python CSV reader had (its code is kept below as the oracle),
Parquet files read like CSVs with a header, and the same specification whichever
format or path (whole array or streaming sample) the rows come through.
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from learnware_cli import data_io
from learnware_cli.data_io import SAMPLE_FIT, read_matrix, read_table, sample_indices, scan_table
from learnware_cli.errors import InputError


# ------------------------------------------------------------------------------ the old reader, as the oracle


def _old_parse_float(cell: str) -> float:
    cell = cell.strip()
    if cell == "" or cell.lower() in ("nan", "na", "null", "none"):
        return math.nan
    return float(cell)


def _old_is_numeric_row(row) -> bool:
    try:
        for cell in row:
            _old_parse_float(cell)
    except ValueError:
        return False
    return True


def old_read_csv(path: Path):
    """data_io.read_csv before pyarrow (verbatim but for names): (float64 (n, d), header or None)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    if not text.strip():
        raise InputError(f"{path}: file is empty")
    try:
        delimiter = csv.Sniffer().sniff(text[: 64 * 1024], delimiters=",;\t ").delimiter
    except csv.Error:
        delimiter = ","
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in row)]
    header = None
    if rows and not _old_is_numeric_row(rows[0]):
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
                out[i, j] = _old_parse_float(cell)
            except ValueError:
                name = f" ({header[j]!r})" if header else ""
                raise InputError(f"{path}: line {line}, column {j}{name}: {cell.strip()!r} is not a number") from None
    return out, header


def _outcome(fn, path):
    try:
        values, header = fn(path)
    except InputError as exc:
        return ("error", str(exc))
    return ("ok", values, header)


def _same(new, old):
    assert new[0] == old[0], (new, old)
    if new[0] == "error":
        assert new[1] == old[1]
        return
    np.testing.assert_array_equal(new[1], old[1])  # NaN == NaN here; exact floats
    assert new[2] == old[2]


def _new_read(path):
    table = read_matrix(path)
    return table.values, table.header


CASES = {
    "header": "a,b,c\n1,2,3\n4.5,-6e3,.7\n",
    "no header": "1,2\n3,4\n",
    "missing cells": "a,b\n1,\n,2\nNA,nan\nNULL,None\n  na , 3\n",
    "infinities": "1,inf\n-Infinity,2\n1e400,3\n",
    "blank lines": "\n\na,b\n\n1,2\n\n3,4\n\n",
    "blank rows of delimiters": "a,b\n1,2\n,\n3,4\n",
    "row of NA only": "a,b\n1,2\nNA,NA\n3,4\n",
    "whitespace": "a , b\n 1 ,\t2\n3,   4  \n",
    "quoted": '"a","b"\n"1","2"\n"",3\n',
    "underscores": "a,b\n1_000,2\n",
    "semicolons": "a;b;c\n1;2;3\n4;5;6\n",
    "tabs": "a\tb\n1\t2\n3\t4\n",
    "spaces": "1 2 3\n4 5 6\n",
    "bom": "\ufeffa,b\n1,2\n",
    "bom no header": "\ufeff1,2\n3,4\n",
    "crlf": "a,b\r\n1,2\r\n3,4\r\n",
    "one column": "y\n1\n2\n\n3\n",
    "ragged short": "a,b\n1,2\n3\n",
    "ragged long": "1,2\n3,4,5\n",
    "not a number": "a,b\n1,2\n3,oops\n",
    "not a number, no header": "1,2\n3,x\n",
    "header only": "a,b\n",
    "only delimiters": ",,\n,,\n",
    "whitespace only": "  \n\n \t\n",
    "N/A is not missing": "a\n1\nN/A\n",
    "unicode digits": "a\n１\n",
    "trailing delimiter": "a,b,\n1,2,\n",
    "no final newline": "a,b\n1,2\n3,4",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_csv_reads_as_the_python_reader_did(tmp_path, name):
    path = tmp_path / "t.csv"
    path.write_text(CASES[name], encoding="utf-8")
    _same(_outcome(_new_read, path), _outcome(old_read_csv, path))


def test_not_utf8_is_one_line_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,2\n\xff\xfe,3\n")
    with pytest.raises(InputError, match="not a text CSV file"):
        read_matrix(path)


def test_missing_cells_are_counted_and_filled_with_column_means(tmp_path):
    path = tmp_path / "holes.csv"
    path.write_text("a,b\n1,2\n,3\nnan,inf\n4,5\n6,7\n")
    raw = read_matrix(path)
    assert raw.replaced == 3 and raw.header == ["a", "b"] and raw.shape == (5, 2)
    filled = read_matrix(path, fill=True)
    assert filled.replaced == 3
    np.testing.assert_array_equal(filled.values, [[1, 2], [11 / 3, 3], [11 / 3, 17 / 4], [4, 5], [6, 7]])
    scan = scan_table(path, {"all": (100, SAMPLE_FIT)})
    assert scan.rows == 5 and scan.replaced == 3 and scan.header == ["a", "b"]
    np.testing.assert_array_equal(scan.samples["all"][1], filled.values)


@pytest.fixture
def big_csv(tmp_path, monkeypatch):
    """30 000 x 7 rows at full precision, a header and scattered missing cells, cut into many small
    pyarrow segments and blocks (as a big file would be)."""
    monkeypatch.setattr(data_io, "CSV_GATHER_BYTES", 64 * 1024)
    monkeypatch.setattr(data_io, "CSV_BLOCK_BYTES", 16 * 1024)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30000, 7)) * 10.0 ** rng.integers(-5, 6, size=(30000, 7))
    cells = np.array([repr(float(v)) for v in x.ravel()], dtype=object).reshape(x.shape)
    holes = rng.random(x.shape) < 0.01
    cells[holes] = ""
    x[holes] = np.nan
    path = tmp_path / "big.csv"
    path.write_text("c0,c1,c2,c3,c4,c5,c6\n" + "\n".join(",".join(row) for row in cells) + "\n")
    return path, x, int(holes.sum())


def test_large_csv_is_parsed_exactly(big_csv):
    path, x, holes = big_csv
    table = read_matrix(path)
    assert table.shape == x.shape and table.replaced == holes and table.header == [f"c{j}" for j in range(7)]
    np.testing.assert_array_equal(table.values, x)  # bit for bit: both parsers round correctly


def test_large_csv_error_deep_in_the_file_has_the_old_message(big_csv):
    path, x, _ = big_csv
    lines = path.read_text().split("\n")
    cells = lines[25001].split(",")
    cells[1] = "1.5.2"  # row 25 000 (line 25 002): one bad cell
    lines[25001] = ",".join(cells)
    path.write_text("\n".join(lines))
    expected = _outcome(old_read_csv, path)
    assert expected[0] == "error" and "line 25002, column 1 ('c1'): '1.5.2' is not a number" in expected[1]
    _same(_outcome(_new_read, path), expected)
    with pytest.raises(InputError) as caught:
        scan_table(path, {"fit": (100, SAMPLE_FIT)})
    assert str(caught.value) == expected[1]


def test_parquet_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "age": pa.array([31, 45, None, 28], pa.int64()),
            "income": pa.array([1.5, float("nan"), 2.25, 3.0]),
            "member": pa.array([True, False, True, None]),
            "score": pa.array([0.5, 0.25, 0.125, 1.0], pa.float32()),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=3)  # two row groups
    read = read_matrix(path)
    assert read.header == ["age", "income", "member", "score"] and read.replaced == 3
    expected = np.array([[31, 1.5, 1, 0.5], [45, np.nan, 0, 0.25], [np.nan, 2.25, 1, 0.125], [28, 3.0, np.nan, 1.0]])
    np.testing.assert_array_equal(read.values, expected)
    filled = read_matrix(path, fill=True)
    np.testing.assert_array_equal(filled.values[2, 0], np.mean([31, 45, 28]))
    scan = scan_table(path, {"all": (10, SAMPLE_FIT)})
    np.testing.assert_array_equal(scan.samples["all"][1], filled.values)
    assert scan.replaced == 3 and scan.header == read.header


def test_parquet_with_text_column_is_one_line_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "city": ["Oslo", "Lima"]}), path)
    with pytest.raises(InputError, match=r"column 1 \('city'\) has type string, not numbers"):
        read_matrix(path)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="cannot read as Parquet"):
        read_matrix(path)


def test_numpy_layouts_and_dtypes(tmp_path):
    x = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    np.save(tmp_path / "i.npy", x.astype(np.int16))
    np.save(tmp_path / "v.npy", x[:, 0])
    np.savez_compressed(tmp_path / "z.npz", a=x)
    for name, want in (("f.npy", x), ("i.npy", x), ("v.npy", x[:, :1]), ("z.npz", x)):
        got = read_table(tmp_path / name)
        assert got.dtype == np.float64 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    with pytest.raises(InputError, match=r"no data \(shape \(0, 3\)\)"):
        read_table(tmp_path / "e.npy")
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="expected a 2-D table"):
        read_table(tmp_path / "c.npy")


def test_sample_is_uniform_deterministic_and_the_same_streamed_or_whole(big_csv):
    path, x, _ = big_csv
    idx = sample_indices(30000, 1000, seed=7)
    assert len(idx) == 1000 and len(set(idx.tolist())) == 1000 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, sample_indices(30000, 1000, seed=7))
    assert not np.array_equal(idx, sample_indices(30000, 1000, seed=8))
    assert abs(np.mean(idx) / 30000 - 0.5) < 0.05  # spread over the whole table, not its start
    scan = scan_table(path, {"s": (1000, SAMPLE_FIT)}, seed=7)
    whole = read_matrix(path, fill=True).values
    np.testing.assert_array_equal(scan.samples["s"][0], idx)
    np.testing.assert_array_equal(scan.samples["s"][1], whole[idx])  # filled with the whole columns' means


def test_spec_is_the_same_from_every_format_and_from_the_array(tmp_path, lw_json, monkeypatch):
    """Above the fit's sample size `lw spec` streams the file and fits its sample; fit_rkme on the
    whole array picks the same rows: one spec, whatever the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from learnware_cli.rkme import fit_rkme
    from learnware_cli.rkme import spec as spec_module
    from learnware_cli.rkme.spec import RKMESpec

    monkeypatch.setattr(spec_module, "FIT_SAMPLE_ROWS", 500)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 4))
    x[rng.random(x.shape) < 0.01] = np.nan
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="a,b,c,d", comments="")
    np.save(tmp_path / "x.npy", x)
    pq.write_table(pa.table({name: x[:, j] for j, name in enumerate("abcd")}), tmp_path / "x.parquet")
    expected = fit_rkme(x, k=10, seed=3)
    assert expected.num_points == 3000
    for name in ("x.csv", "x.npy", "x.parquet"):
        code, doc = lw_json("spec", tmp_path / name, "--k", "10", "--seed", "3", "--out", tmp_path / "s.json")
        assert code == 0, doc
        assert doc["rows"] == 3000 and doc["fit_rows"] == 500 and doc["replaced_cells"] == int(np.isnan(x).sum())
        got = RKMESpec.load(tmp_path / "s.json")
        np.testing.assert_allclose(got.z, expected.z, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.beta, expected.beta, rtol=1e-9, atol=1e-12)
        assert got.num_points == 3000


def test_fit_does_not_touch_or_copy_the_callers_array():
    from learnware_cli.rkme.spec import clean_data, fit_rows

    x = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 6.0]])
    before = x.copy()
    np.testing.assert_array_equal(clean_data(x), [[1, 5], [3, 4], [5, 6]])
    np.testing.assert_array_equal(x, before)  # NaN kept: the caller's array is not modified
    clean = np.ones((5, 2))
    assert clean_data(clean) is clean  # nothing to replace: no copy
    rows, n = fit_rows(np.arange(2000.0).reshape(1000, 2), k=1, seed=0, sample_rows=100)
    assert n == 1000 and rows.shape == (100, 2)


def test_help_and_data_io_import_do_not_load_pyarrow():
    probe = (
        "import sys; import learnware_cli.data_io; from learnware_cli.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('pyarrow' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "False", done.stderr


def test_arrow_columns_become_floats_with_nan_for_nulls():
    """The NumPy view of pyarrow's buffers (no Array.to_numpy): offsets, chunks and nulls."""
    import pyarrow as pa

    from learnware_cli.data_io import _float_array

    whole = pa.array([1.0, None, 3.0, 4.0, None, 6.0, 7.0, 8.0, 9.0, None], pa.float64())
    sliced = whole.slice(3, 6)  # offset 3: the validity bits do not start at a byte boundary
    np.testing.assert_array_equal(_float_array(sliced), [4.0, np.nan, 6.0, 7.0, 8.0, 9.0])
    chunked = pa.chunked_array([whole.slice(1, 3), pa.array([], pa.float64()), whole.slice(8, 2), pa.array([2.5])])
    np.testing.assert_array_equal(_float_array(chunked), [np.nan, 3.0, 4.0, 9.0, np.nan, 2.5])
    clean = pa.array([0.5, -1.0])
    view = _float_array(clean)
    np.testing.assert_array_equal(view, [0.5, -1.0])
    assert not view.flags.writeable  # a view of pyarrow's buffer, not a copy


def test_reading_csv_and_parquet_does_not_import_pandas(tmp_path):
    """pyarrow's to_numpy imports pandas (0.2-0.3 s of every `lw spec`); the readers do without it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "t.csv").write_text("a,b\n1,2\n,4\n")
    pq.write_table(pa.table({"a": [1.0, None], "b": [2, 4]}), tmp_path / "t.parquet")
    probe = (
        "import sys; from learnware_cli.data_io import read_matrix, scan_table\n"
        f"for name in ('t.csv', 't.parquet'):\n"
        f"    read_matrix({str(tmp_path)!r} + '/' + name); scan_table({str(tmp_path)!r} + '/' + name, {{'s': (1, 1)}})\n"
        "print('pandas' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "False", done.stderr
