"""The contract every `lw` command keeps, whatever goes wrong: one JSON document under --json (usage
errors included), one line otherwise, flag values checked before any work, the same option names
everywhere, readable tables in logs, and output that says what was done."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from learnware_cli.errors import EXIT_MARKET, EXIT_USAGE
from learnware_cli.experiment.synthetic import spec_only_semantic, write_spec_only_learnwares
from learnware_cli.market.store import Market
from learnware_cli.rkme import RKMESpec

DIM = 3
GAMMA = 0.1
LONG_NAME = "Quarterly regional electricity demand forecaster for northern grids"


def _commands() -> list[str]:
    import typer.main

    from learnware_cli.cli.app import app

    return list(typer.main.get_command(app).commands)


def _spec(seed: int) -> RKMESpec:
    rng = np.random.default_rng(seed)
    return RKMESpec(z=rng.normal(size=(4, DIM)) + seed, beta=np.full(4, 0.25), gamma=GAMMA, num_points=50)


@pytest.fixture
def market(tmp_path) -> Market:
    """Three spec-only Regression learnwares, the first with a long name."""
    market = Market.create(tmp_path / "market", gamma=GAMMA, k=5)
    names = [LONG_NAME, "store sales", "clinic visits"]
    write_spec_only_learnwares(market, [_spec(i) for i in range(3)], [spec_only_semantic(n, DIM) for n in names])
    return market


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if an RKME fit starts: flag and path checks must come before the work."""
    import learnware_cli.rkme

    def refuse(*args, **kwargs):
        raise AssertionError("the RKME fit ran before the command line was checked")

    monkeypatch.setattr(learnware_cli.rkme, "fit_rkme", refuse)


@pytest.fixture
def rows_csv(tmp_path):
    path = tmp_path / "x.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(40, DIM)), delimiter=",")
    return path


def _one_line(err: str) -> bool:
    return err.strip().count("\n") == 0


# -- 6. usage errors are errors like any other -------------------------------------------------------


@pytest.mark.parametrize("command", _commands())
def test_unknown_option_is_a_json_usage_error_for_every_command(command, lw_json):
    code, doc = lw_json(command, "--no-such-flag")
    assert code == EXIT_USAGE
    assert doc["ok"] is False and doc["error"] == "usage" and "--no-such-flag" in doc["message"], doc


@pytest.mark.parametrize(
    "args, needle",
    [
        (["show"], "Missing argument"),
        (["spec", "x.csv", "--out", "s.json", "--k", "many"], "--k"),
        (["list", "--limit"], "--limit"),
        (["serch"], "No such command"),
    ],
)
def test_usage_errors_under_json(args, needle, lw_json):
    code, doc = lw_json(*args)
    assert code == EXIT_USAGE and doc["ok"] is False and doc["error"] == "usage" and needle in doc["message"], doc


def test_usage_error_without_json_is_short_and_plain(lw):
    code, out, err = lw("search", "--bogus")
    assert code == EXIT_USAGE and out == ""
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "--bogus" in lines[0] and "lw search --help" in lines[-1]
    assert not any(ch in err for ch in "╭│╰"), "no boxed panel"


# -- 13. flag values are checked before any work -----------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["spec", "{data}", "--out", "{tmp}/s.json", "--steps", "-1"], "--steps"),
        (["spec", "{data}", "--out", "{tmp}/s.json", "--k", "0"], "--k"),
        (["spec", "{data}", "--out", "{tmp}/s.json", "--gamma", "-1"], "--gamma"),
        (["list", "--limit", "-1"], "--limit"),
        (["search", "-k", "0"], "-k"),
        (["submit", "{tmp}/p.zip", "--jobs", "0"], "--jobs"),
        (["submit", "{tmp}/p.zip", "--timeout", "0"], "--timeout"),
        (["submit", "{tmp}/p.zip", "--timeout", "-1"], "--timeout"),
        (["init", "{tmp}/m", "--k", "0"], "--k"),
    ],
)
def test_bad_flag_values_are_one_line_usage_errors(args, needle, tmp_path, rows_csv, market, lw, no_fit):
    args = [a.format(data=rows_csv, tmp=tmp_path) for a in args] + ["--market", market.root]
    if args[0] == "init":
        args = args[:-2]
    code, out, err = lw(*args)
    assert code == EXIT_USAGE and needle in err and _one_line(err.splitlines()[0]), err
    assert out == "" and not (tmp_path / "s.json").exists() and not (tmp_path / "m").exists()


def test_spec_refuses_k_above_the_row_count(tmp_path, rows_csv, lw, no_fit):
    code, _, err = lw("spec", rows_csv, "--k", "41", "--out", tmp_path / "s.json")
    assert code == EXIT_USAGE and _one_line(err) and "40 rows" in err and "K=41" in err and "--k 40" in err
    code, _, err = lw("spec", rows_csv, "--out", tmp_path / "s.json")  # the default K (100) is no excuse either
    assert code == EXIT_USAGE and "K=100" in err


# -- 7. an output path that cannot be written is refused before the work -------------------------------


def test_spec_out_that_is_a_folder_or_under_a_file_fails_before_the_fit(tmp_path, rows_csv, lw, lw_json, no_fit):
    (tmp_path / "folder").mkdir()
    code, out, err = lw("spec", rows_csv, "--k", "5", "--out", tmp_path / "folder")
    assert code == EXIT_USAGE and _one_line(err) and "is a folder" in err and "Traceback" not in err
    (tmp_path / "file").write_text("x")
    code, doc = lw_json("spec", rows_csv, "--k", "5", "--out", tmp_path / "file" / "s.json")
    assert code == EXIT_USAGE and doc["error"] == "bad-input" and "not a folder" in doc["message"]


def test_spec_on_a_read_only_file_system_is_exit_5_before_the_fit(tmp_path, rows_csv, lw, monkeypatch, no_fit):
    from learnware_cli import data_io

    monkeypatch.setattr(data_io, "_read_only", lambda folder: True)
    code, _, err = lw("spec", rows_csv, "--k", "5", "--out", tmp_path / "s.json")
    assert code == EXIT_MARKET and _one_line(err) and "Read-only file system" in err


def test_a_full_disk_while_writing_the_spec_is_one_line_and_leaves_no_file(tmp_path, rows_csv, lw, monkeypatch):
    from learnware_cli import data_io

    class FullDisk:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a failed write() names no file

    monkeypatch.setattr(data_io, "open", FullDisk, raising=False)  # shadows the builtin in data_io only
    code, _, err = lw("spec", rows_csv, "--k", "5", "--out", tmp_path / "s.json")
    assert code == EXIT_MARKET and _one_line(err) and "No space left on device" in err and "s.json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


# -- 9. the same option names everywhere -------------------------------------------------------------


def test_k_is_spelled_both_ways_everywhere(tmp_path, rows_csv, market, lw_json):
    for spelling in ("-k", "--k"):
        code, doc = lw_json("search", "--market", market.root, "--tag", "Task=Regression", spelling, "1")
        assert code == 0 and len(doc["single"]) == 1, doc
        code, doc = lw_json("spec", rows_csv, spelling, "7", "--out", tmp_path / "s.json")
        assert code == 0 and doc["K"] == 7, doc
        code, doc = lw_json("init", tmp_path / f"m{spelling}", spelling, "9")
        assert code == 0 and doc["K"] == 9, doc


def test_init_takes_the_folder_as_argument_or_market_or_env(tmp_path, lw_json, monkeypatch):
    code, doc = lw_json("init", "--market", tmp_path / "by-option")
    assert code == 0 and (tmp_path / "by-option" / "market.json").is_file(), doc
    monkeypatch.setenv("LW_MARKET", str(tmp_path / "by-env"))
    code, doc = lw_json("init")
    assert code == 0 and (tmp_path / "by-env" / "market.json").is_file(), doc
    code, doc = lw_json("init", tmp_path / "by-argument")  # an argument beats the environment's default
    assert code == 0 and (tmp_path / "by-argument" / "market.json").is_file(), doc
    code, doc = lw_json("init", tmp_path / "a", "--market", tmp_path / "b")
    assert code == EXIT_USAGE and doc["error"] == "usage" and not (tmp_path / "a").exists()


# -- 10. shell completion -----------------------------------------------------------------------------


def test_shell_completion_is_offered_and_completes_commands(lw, monkeypatch):
    from typer import completion

    code, out, _ = lw("--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out
    # typer detects the shell from the parent processes (sh under make in CI, bash at a terminal): pin it
    monkeypatch.setattr(completion, "_get_shell_name", lambda: "bash")
    code, out, _ = lw("--show-completion")
    assert code == 0 and "_LW_COMPLETE" in out and "complete" in out
    env = dict(os.environ, _LW_COMPLETE="complete_bash", COMP_WORDS="lw sea", COMP_CWORD="1")
    done = subprocess.run([sys.executable, "-m", "learnware_cli"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["search"], done


# -- 11. tables in a log ------------------------------------------------------------------------------


def test_tables_are_not_wrapped_when_stdout_is_a_log(market, lw):
    code, out, _ = lw("list", "--market", market.root)  # captured: not a terminal
    assert code == 0
    line = next(l for l in out.splitlines() if "00000001" in l)
    assert LONG_NAME in line and "Regression" in line, out
    assert not any(ch in out for ch in "┃│━"), "plain aligned rows in a log"


# -- 8. one JSON shape for submit (the fields every outcome carries) ---------------------------------


def test_submit_json_has_one_shape_for_one_package_or_many(tmp_path, lw_json):
    import badpackages as bp

    market = Market.create(tmp_path / "m", gamma=bp.GAMMA, k=50)
    good = bp.good_numpy_zip(tmp_path / "good")
    code, one = lw_json("submit", good, "--market", market.root)
    assert code == 0, one
    assert set(one) == {"ok", "accepted", "rejected", "not_judged", "results", "warnings"}, one
    assert [r["id"] for r in one["results"]] == ["00000001"] and one["accepted"] == one["results"] and one["warnings"] == []
    # 12. the same bytes again: accepted, with a warning that names the learnware already holding them
    code, again = lw_json("submit", good, "--market", market.root)
    assert code == 0 and set(again) == set(one)
    (warning,) = again["warnings"]
    assert "00000001 v1" in warning and "00000002 v1" in warning and "sha256" in warning


def test_submit_warns_about_a_duplicate_in_human_output(tmp_path, lw, lw_json):
    import badpackages as bp

    market = Market.create(tmp_path / "m", gamma=bp.GAMMA, k=50)
    good = bp.good_numpy_zip(tmp_path / "good")
    assert lw_json("submit", good, "--market", market.root)[0] == 0
    code, out, err = lw("submit", good, "--market", market.root)
    assert code == 0 and "warning:" in err and "00000001 v1" in err and "accepted" in out


# -- 12. say what was done ------------------------------------------------------------------------------


def test_spec_reports_the_cells_it_replaced(tmp_path, lw, lw_json):
    path = tmp_path / "holes.csv"
    path.write_text("a,b\n1,2\n,3\nnan,inf\n4,5\n6,7\n")
    code, doc = lw_json("spec", path, "--k", "2", "--out", tmp_path / "s.json")
    assert code == 0 and doc["replaced_cells"] == 3, doc
    code, out, _ = lw("spec", path, "--k", "2", "--out", tmp_path / "s.json")
    assert code == 0 and "3 missing or infinite cell(s) replaced by column means" in out and _one_line(out)
    path.write_text("a,b\n1,2\n3,4\n")
    code, doc = lw_json("spec", path, "--k", "2", "--out", tmp_path / "s.json")
    assert code == 0 and doc["replaced_cells"] == 0


def test_read_matrix_counts_and_fills(tmp_path):
    from learnware_cli.data_io import read_matrix, read_table
    from learnware_cli.errors import InputError

    path = tmp_path / "t.csv"
    path.write_text("1,2\nNA,inf\n3,-inf\n")
    raw = read_matrix(path)
    assert raw.replaced == 3 and np.isnan(raw.values[1, 0]) and raw.shape == (3, 2)
    np.testing.assert_array_equal(raw.values, read_table(path))  # the old reader is unchanged
    filled = read_matrix(path, fill=True)
    assert filled.replaced == 3 and np.array_equal(filled.values, [[1, 2], [2, 2], [3, 2]])
    path.write_text("1,nan\n2,nan\n")
    with pytest.raises(InputError, match="column 1 has no finite value"):
        read_matrix(path, fill=True)


def test_search_says_when_more_matches_exist(market, lw, lw_json):
    code, doc = lw_json("search", "--market", market.root, "--tag", "Task=Regression", "-k", "2")
    assert code == 0 and len(doc["single"]) == 2 and doc["total"] == 3 and doc["more"] == 1, doc
    code, out, _ = lw("search", "--market", market.root, "--tag", "Task=Regression", "-k", "2")
    assert code == 0 and "showing 2 of 3 matches" in out and "-k 3" in out
    code, doc = lw_json("search", "--market", market.root, "--tag", "Task=Regression", "-k", "5")
    assert code == 0 and doc["more"] == 0


def test_show_names_the_version_it_shows(market, tmp_path, lw, lw_json):
    from learnware_cli.market.store import NewVersion

    spec_path = tmp_path / "v2.json"
    _spec(1).save(spec_path)
    package = tmp_path / "package.zip"
    with zipfile.ZipFile(package, "w") as zf:
        zf.writestr("README.txt", "v2")
    record = {"input_dim": DIM, "output_dim": 1, "spec_only": True}
    renamed = NewVersion({"package.zip": package, "rkme.json": spec_path}, spec_only_semantic("new name", DIM), record, "00000001")
    market.add_versions([renamed])
    code, doc = lw_json("show", "00000001@1", "--market", market.root)
    assert code == 0 and doc["name"] == LONG_NAME and doc["version"]["version"] == 1, doc
    code, out, _ = lw("show", "00000001@1", "--market", market.root)
    assert code == 0 and out.splitlines()[0].startswith(LONG_NAME)
    code, doc = lw_json("show", "00000001", "--market", market.root)
    assert code == 0 and doc["name"] == "new name"
