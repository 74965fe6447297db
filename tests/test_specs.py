"""The specification interface (learnware_cli.specs): registry, JSON round trip, island keys, MMD^2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from learnware_cli.errors import InputError, SpecError
from learnware_cli.rkme import RKMESpec, SpecStack, fit_rkme, mmd2, mmd2_to_many
from learnware_cli.specs import IslandKey, Specification, known_types, load_spec, same_island, spec_class

FIXTURES = Path(__file__).parent / "fixtures"


def _spec(seed: int, d: int = 4, k: int = 12, gamma: float = 0.1, shift: float = 0.0) -> RKMESpec:
    rng = np.random.default_rng(seed)
    return fit_rkme(rng.normal(size=(200, d)) + shift, k=k, gamma=gamma, steps=1, seed=seed)


def test_table_type_names_resolve_to_the_table_rkme():
    assert spec_class("RKMETableSpecification") is RKMESpec
    assert spec_class("RKMEStatSpecification") is RKMESpec  # the reference's older name
    assert {"RKMETableSpecification", "RKMEStatSpecification"} <= set(known_types())
    assert RKMESpec.type_name == "RKMETableSpecification"
    assert isinstance(_spec(0), Specification)


def test_round_trip_through_the_registry_is_byte_equal(tmp_path):
    spec = _spec(1)
    path = tmp_path / "rkme.json"
    spec.save(path)
    loaded = load_spec(path)
    assert type(loaded) is RKMESpec
    assert json.dumps(loaded.to_json_dict(), separators=(",", ":")) == path.read_text()
    again = load_spec(json.loads(path.read_text()), source="in memory")
    np.testing.assert_array_equal(again.stack_arrays().z, spec.z)
    np.testing.assert_array_equal(again.stack_arrays().beta, spec.beta)


def test_fit_through_the_interface_is_fit_rkme():
    x = np.random.default_rng(2).normal(size=(150, 3))
    fitted = spec_class("RKMETableSpecification").fit(x, k=10, gamma=0.2, seed=3, steps=1)
    direct = fit_rkme(x, k=10, gamma=0.2, seed=3, steps=1)
    np.testing.assert_array_equal(fitted.z, direct.z)
    np.testing.assert_array_equal(fitted.beta, direct.beta)


def test_unknown_type_is_one_line_spec_error_naming_the_known_types(tmp_path):
    with pytest.raises(SpecError, match=r"unknown specification type 'RKMEVideoSpecification' \(known: .*RKMETableSpecification"):
        spec_class("RKMEVideoSpecification")
    path = tmp_path / "video.json"
    path.write_text(json.dumps({"type": "RKMEVideoSpecification", "z": [[1.0]], "beta": [1.0]}))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.message.startswith(f"{path}: unknown specification type")
    assert "\n" not in caught.value.message
    with pytest.raises(SpecError, match="unknown specification type"):
        load_spec({"type": ["not", "a", "name"], "z": [[1.0]], "beta": [1.0]})


def test_load_spec_errors_match_rkmespec_load(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_spec(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(tmp_path / "bad.json")
    with pytest.raises(SpecError, match="rkme.json: expected a JSON object"):
        load_spec(None, source="rkme.json")
    # a file without "type" is a table RKME, as before
    spec = _spec(4)
    obj = spec.to_json_dict()
    del obj["type"]
    assert type(load_spec(obj)) is RKMESpec


def test_island_keys():
    a, b = _spec(5, d=4, gamma=0.1), _spec(6, d=4, gamma=0.1, shift=2.0)
    assert a.island_key() == b.island_key() == IslandKey("table", 4, 0.1)
    assert same_island(a.island_key(), b.island_key())
    assert not same_island(a.island_key(), _spec(7, d=5).island_key())
    assert not same_island(a.island_key(), _spec(8, d=4, gamma=0.2).island_key())
    assert same_island(a.island_key(), IslandKey("table", 4, 0.1 * (1 + 1e-12)))  # the tolerance the checks use
    assert not same_island(a.island_key(), IslandKey("image", 4, 0.1))


def test_mmd2_through_the_interface_is_the_existing_function():
    a, b, c = _spec(9), _spec(10, shift=1.0), _spec(11, shift=-1.0)
    assert a.mmd2(b) == mmd2(a, b)
    stack = SpecStack.from_specs([b, c], dtype="float64")
    np.testing.assert_array_equal(a.mmd2_to_stack(stack), mmd2_to_many(a, stack))
    np.testing.assert_allclose(a.mmd2_to_stack(stack), [mmd2(a, b), mmd2(a, c)], rtol=1e-9, atol=1e-12)


def test_reference_written_spec_loads_through_the_registry():
    """rkme_written_by_learnware_0.4.json was saved by the reference package (K=30, d=6)."""
    theirs = load_spec(FIXTURES / "rkme_written_by_learnware_0.4.json")
    ours = load_spec(FIXTURES / "rkme_written_by_lw.json")
    assert type(theirs) is RKMESpec
    assert theirs.island_key() == IslandKey("table", 6, 0.1)
    assert theirs.summary() == {"type": "RKMETableSpecification", "K": 30, "dim": 6, "gamma": 0.1, "num_points": 500}
    assert theirs.mmd2(ours) == pytest.approx(0.009242925034238625, abs=1e-9)  # the reference's figure


def test_importing_the_interface_does_not_import_jax():
    probe = "import sys, learnware_cli.specs as s; s.known_types(); print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_show_and_search_read_specs_through_the_registry(tmp_path, lw, lw_json):
    """`lw show` prints the interface's summary (unchanged output); `lw search --spec` loads through load_spec."""
    from learnware_cli.experiment.synthetic import spec_only_semantic, write_spec_only_learnwares
    from learnware_cli.market.store import Market

    market = Market.create(tmp_path / "market", name="specs", gamma=0.1, k=100)
    theirs = load_spec(FIXTURES / "rkme_written_by_learnware_0.4.json")
    others = [_spec(20 + i, d=6, shift=3.0 * (i + 1)) for i in range(2)]
    write_spec_only_learnwares(market, [theirs, *others], [spec_only_semantic(f"s{i}", 6) for i in range(3)])
    code, shown = lw_json("show", "1", "--market", market.root)
    assert code == 0 and shown["rkme"] == {"type": "RKMETableSpecification", "K": 30, "dim": 6, "gamma": 0.1, "num_points": 500}
    code, out, _ = lw("show", "1", "--market", market.root)
    assert code == 0 and "K=30, d=6, gamma=0.1, fitted on 500 rows" in out
    code, found = lw_json("search", "--market", market.root, "--spec", FIXTURES / "rkme_written_by_learnware_0.4.json", "-k", "1")
    assert code == 0 and found["single"][0]["id"] == "00000001" and found["single"][0]["mmd2"] == pytest.approx(0.0, abs=1e-9)
    wrong = theirs.to_json_dict() | {"gamma": 0.5}
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    code, _, err = lw("search", "--market", market.root, "--spec", tmp_path / "wrong.json")
    assert code == 2 and "uses gamma 0.5 but this market uses 0.1" in err
