"""`lw init` and `lw spec` as a user and a CI pipeline meet them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from learnware_cli.errors import EXIT_MARKET, EXIT_USAGE
from learnware_cli.rkme import RKMESpec
from conftest import read_index


def test_init_creates_market_from_template(tmp_path, lw_json):
    code, doc = lw_json("init", tmp_path / "m", "--name", "demo", "--gamma", "0.2", "--k", "30")
    assert code == 0 and doc["ok"] and doc["K"] == 30
    config = json.loads((tmp_path / "m" / "market.json").read_text())
    assert config["name"] == "demo" and config["kernel"] == {"type": "gaussian", "gamma": 0.2, "K": 30}
    assert "Task" in config["vocabulary"] and "Regression" in config["vocabulary"]["Task"]["values"]
    index = read_index(tmp_path / "m")
    assert index["learnwares"] == {}
    assert (tmp_path / "m" / "README.md").read_text().startswith("# Learnware market: demo")


def test_init_refuses_to_overwrite(tmp_path, lw):
    assert lw("init", tmp_path / "m")[0] == 0
    before = (tmp_path / "m" / "market.json").read_bytes()
    code, _, err = lw("init", tmp_path / "m")
    assert code == EXIT_MARKET and "already exists" in err
    assert (tmp_path / "m" / "market.json").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    code, _, err = lw("init", tmp_path / "other")
    assert code == EXIT_MARKET and "not an empty folder" in err
    assert not list(tmp_path.glob(".*init-*")), "no half-built market left behind"


@pytest.fixture
def data_files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    with_header = tmp_path / "with_header.csv"
    np.savetxt(with_header, x, delimiter=",", header="a,b,c,d,e", comments="")
    no_header = tmp_path / "no_header.csv"
    np.savetxt(no_header, x, delimiter=",")
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", data=x)
    return x, [with_header, no_header, tmp_path / "x.npy", tmp_path / "x.npz"]


def test_spec_reads_every_format_and_uses_market_kernel(tmp_path, lw, lw_json, data_files):
    x, files = data_files
    lw("init", tmp_path / "m", "--gamma", "0.3", "--k", "16")
    specs = []
    for i, path in enumerate(files):
        out = tmp_path / f"s{i}.json"
        code, doc = lw_json("spec", path, "--market", tmp_path / "m", "--out", out)
        assert code == 0, doc
        assert doc["rows"] == 400 and doc["dim"] == 5 and doc["K"] == 16 and doc["gamma"] == 0.3
        specs.append(RKMESpec.load(out))
    # same rows, same seed: same spec whatever the file format
    for other in specs[1:]:
        np.testing.assert_allclose(other.z, specs[0].z, atol=1e-6)


def test_spec_human_summary_is_one_line(tmp_path, lw, data_files):
    _, files = data_files
    code, out, _ = lw("spec", files[0], "--k", "10", "--out", tmp_path / "s.json")
    assert code == 0
    assert out.strip().count("\n") == 0 and "K=10" in out


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("a,b\n1,2\n3\n", "ragged"),
        ("a,b\n1,2\n3,oops\n", "'oops' is not a number"),
        ("a,b\n", "no data rows"),
    ],
)
def test_spec_bad_input_is_one_line_error(tmp_path, lw, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, out, err = lw("spec", path, "--out", tmp_path / "s.json")
    assert code == EXIT_USAGE
    assert message in err and err.strip().count("\n") == 0
    assert not (tmp_path / "s.json").exists()


def test_spec_missing_file_json_error(tmp_path, lw_json):
    code, doc = lw_json("spec", tmp_path / "nope.csv", "--out", tmp_path / "s.json")
    assert code == EXIT_USAGE and doc == {"ok": False, "error": "bad-input", "message": f"{tmp_path / 'nope.csv'}: no such file"}


def test_help_is_fast_and_does_not_import_jax():
    """`lw --help` must not pay for JAX or scikit-learn."""
    probe = "import sys; from learnware_cli.cli.app import main; main(['--help']); print(sorted(m for m in ('jax', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")


def test_every_command_has_an_example_in_help(lw):
    from learnware_cli.cli.app import app
    import typer.main

    group = typer.main.get_command(app)
    for name in group.commands:
        code, out, _ = lw(name, "--help")
        assert code == 0 and "Example: lw " + name in " ".join(out.split()), name


def test_spec_measures_the_error_on_a_sample_of_big_data(tmp_path, lw_json):
    from learnware_cli.cli.spec_cmd import ERROR_SAMPLE_ROWS

    x = np.random.default_rng(1).normal(size=(ERROR_SAMPLE_ROWS + 2000, 3))
    np.save(tmp_path / "big.npy", x)
    code, doc = lw_json("spec", tmp_path / "big.npy", "--k", "20", "--out", tmp_path / "s.json")
    assert code == 0 and doc["rows"] == len(x) and doc["error_rows"] == ERROR_SAMPLE_ROWS
    assert 0 < doc["approximation_error"] < 0.05
