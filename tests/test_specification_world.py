"""A market of learnwares on three column sets, end to end through the CLI (issue 12's "done when").

The packages are written the way the reference ``learnware`` package's template
writes them (learnware.yaml, a BaseModel subclass, a pickled model, an
RKMETableSpecification and a semantic spec whose Input.Description names each
column): nothing lw-specific, so a reference learnware joins the right island
by its column descriptions alone.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import badpackages as bp
from learnware_cli.rkme.spec import fit_rkme

N_FEATURES = 9
COLUMN_SETS = {"A": [0, 1, 2, 3], "B": [2, 3, 4, 5], "C": [6, 7, 8]}
REGIONS = 2
NAMES = ["Departure delay (min)", "distance_miles", "Seats", "engines", "wind speed", "visibility", "temp", "pressure", "humidity"]
# spellings differ between developers: the market matches them by normalised text
SPELLINGS = {"B": {2: "seats", 3: "Engines"}}


def world_rows(rng, region: int, n: int) -> np.ndarray:
    centers = np.random.default_rng(42).normal(0.0, 2.0, (REGIONS, N_FEATURES))
    scales = 10.0 ** np.linspace(-2, 2, N_FEATURES)
    return (centers[region] + rng.normal(0.0, 1.0, (n, N_FEATURES))) * scales


def target(rows: np.ndarray) -> np.ndarray:
    scales = 10.0 ** np.linspace(-2, 2, N_FEATURES)
    return (rows / scales) @ np.linspace(1.0, -1.0, N_FEATURES)


def reference_zip(folder, name: str, columns: list, rows: np.ndarray, y: np.ndarray, descriptions: list):
    """A reference-template regression learnware on the given columns."""
    from sklearn.linear_model import Ridge

    folder.mkdir(parents=True, exist_ok=True)
    semantic = bp.build_semantic(
        name=name, description=f"ridge on {len(columns)} columns", data="Table", task="Regression",
        library="Scikit-learn", scenarios=["Business"], license="MIT",
        input_dim=len(columns), output_dim=1, input_desc=descriptions,
    )
    files = {
        "learnware.yaml": bp.BEIMINGWU_YAML.format(dim=len(columns)),
        "__init__.py": bp.BEIMINGWU_INIT,
        "model.pkl": pickle.dumps(Ridge().fit(rows[:, columns], y)),
        "rkme.json": json.dumps(fit_rkme(rows[:, columns], k=30, gamma=0.1, seed=0).to_json_dict()),
        "semantic_specification.json": json.dumps(semantic),
    }
    return bp.write_zip(folder / f"{name}.zip", files, top=f"{name}/")


@pytest.fixture(scope="module")
def world_market(tmp_path_factory):
    from learnware_cli.cli.app import main

    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    zips = []
    for set_name, columns in COLUMN_SETS.items():
        for region in range(REGIONS):
            rows = world_rows(rng, region, 400)
            descriptions = [SPELLINGS.get(set_name, {}).get(c, NAMES[c]) for c in columns]
            zips.append(reference_zip(root / "packages", f"{set_name}{region}", columns, rows, target(rows), descriptions))
    assert main(["init", str(root / "market"), "--name", "world"]) == 0
    assert main(["submit", *map(str, zips), "--market", str(root / "market"), "--json"]) == 0
    return root


def _user_csv(path, rows: np.ndarray, columns: list) -> str:
    np.savetxt(path, rows[:, columns], delimiter=",", header=",".join(NAMES[c] for c in columns), comments="")
    return str(path)


def _names(doc) -> list:
    return [r["name"] for r in doc["single"]]


def test_reference_packages_join_islands_by_their_descriptions(world_market, lw_json):
    code, doc = lw_json("islands", "--market", world_market / "market")
    assert code == 0
    by_size = sorted(sorted(i["learnwares"]) for i in doc["islands"])
    names = {}
    code, listed = lw_json("list", "--market", world_market / "market")
    for entry in listed["learnwares"]:
        names[entry["id"]] = entry["name"]
    assert sorted(sorted(names[i] for i in island) for island in by_size) == [["A0", "A1", "B0", "B1"], ["C0", "C1"]]


USERS = {
    "subset": ([0, 1, 2], ["A{r}"]),
    "superset": ([0, 1, 2, 3, 8], ["A{r}"]),
    "union": ([0, 1, 2, 3, 4, 5, 6, 7, 8], ["A{r}", "B{r}", "C{r}"]),
}


@pytest.mark.parametrize("kind", list(USERS))
def test_search_finds_the_right_learnwares_across_column_sets(world_market, lw_json, tmp_path, kind):
    columns, expected = USERS[kind]
    rng = np.random.default_rng(7)
    for region in range(REGIONS):
        csv = _user_csv(tmp_path / f"user{region}.csv", world_rows(rng, region, 200), columns)
        code, doc = lw_json("search", "--market", world_market / "market", "--data", csv, "-k", "6")
        assert code == 0 and doc["match"] == "features"
        want = {e.format(r=region) for e in expected}
        if kind == "union":  # the best of each island is the user's region
            best = sorted(i["name"] for i in doc["islands"])
            assert best in ([f"A{region}", f"C{region}"], [f"B{region}", f"C{region}"])
            top_ab = [n for n in _names(doc) if n[0] in "AB"][:2]
            assert set(top_ab) == {f"A{region}", f"B{region}"}
        else:
            assert _names(doc)[0] in want
        first = doc["single"][0]
        assert 0 < first["coverage"] <= 1 and first["mmd2"] >= 0 and first["island"]


def test_reuse_fills_the_columns_a_user_lacks(world_market, lw_json, tmp_path):
    """A learnware on A (4 columns) used by a user who has 3 of them: the 4th is filled in from its RKME
    (how well: tests/test_fill.py, against the column mean)."""
    rng = np.random.default_rng(11)
    rows = world_rows(rng, 0, 300)
    csv = _user_csv(tmp_path / "user.csv", rows, [0, 1, 2])
    np.savetxt(tmp_path / "y.csv", target(rows))
    code, found = lw_json("search", "--market", world_market / "market", "--data", csv, "-k", "1")
    assert found["single"][0]["name"] == "A0" and found["single"][0]["missing"] == ["engines"]
    code, doc = lw_json("reuse", "--market", world_market / "market", "--from", _dump(tmp_path, found),
                        "--data", csv, "--evaluate", tmp_path / "y.csv", "--method", "single")
    assert code == 0, doc
    assert doc["learnwares"][0]["filled_columns"] == 1 and doc["learnwares"][0]["shared_columns"] == 3
    assert np.isfinite(doc["metric"]["value"])


def _dump(tmp_path, doc):
    path = tmp_path / "found.json"
    path.write_text(json.dumps(doc))
    return path
