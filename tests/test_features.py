"""Market features: columns of different learnwares described alike are one feature (issue 12, item 2)."""

from __future__ import annotations

import json

import pytest

import badpackages as bp
from learnware_cli.errors import RejectedError
from learnware_cli.market.features import build_vocabulary, column_feature_keys, features_of, normalise
from learnware_cli.market.semantic import build_semantic, validate_semantic
from learnware_cli.market.store import Market


def entry(learnware_id: str, descriptions: list, ids: list = None) -> dict:
    """An index entry; ids: explicit feature ids (Input.Features) per column, None for a column without one."""
    texts = [text if text is not None else "x" for text in descriptions]
    features = {str(column): key for column, key in enumerate(ids or []) if key is not None}
    semantic = build_semantic("m", "d", "Table", "Regression", "Scikit-learn", ["Business"], "MIT", len(texts), 1,
                              input_desc=texts, input_features=features or None)
    for column, text in enumerate(descriptions):  # None: a column without a description
        if text is None:
            del semantic["Input"]["Description"][str(column)]
    return {"id": learnware_id, "semantic": semantic}


def test_normalise_folds_case_punctuation_and_width():
    assert normalise("Temperature (°C)") == normalise("temperature °c") == "temperature c"
    assert normalise("  Ｗｅｅｋ－day ") == "week day"  # full-width forms fold (NFKC)
    assert normalise("") is None and normalise(None) is None and normalise("--") is None


def test_columns_described_alike_are_one_feature():
    vocabulary = build_vocabulary([
        entry("00000002", ["Celsius temp", "weekday", "store size m2"]),
        entry("00000001", ["Temperature, celsius", "Week day", "price"]),
        entry("00000003", ["temp celsius", "humidity", None]),
    ])
    # read in id order: learnware 1's descriptions name the features it introduces
    assert vocabulary.of("00000001") == ["temperature celsius", "week day", "price"]
    assert vocabulary.of("00000002") == ["celsius temp", "week day", "store size m2"]  # abbreviations are not guessed
    assert vocabulary.of("00000003") == ["celsius temp", "humidity", None]  # word order does not matter
    assert vocabulary.features["week day"].learnwares == ["00000001", "00000002"]
    assert sorted(vocabulary.features["week day"].spellings) == ["Week day", "weekday"]
    assert vocabulary.undescribed_columns() == 1


def test_different_quantities_stay_apart():
    vocabulary = build_vocabulary([entry("00000001", ["age", "height cm"]), entry("00000002", ["page", "weight kg"])])
    assert len(vocabulary.features) == 4


def test_word_order_and_small_spelling_differences_match():
    vocabulary = build_vocabulary([entry("00000001", ["departure hour"]), entry("00000002", ["hour departure"]), entry("00000003", ["departure hours"])])
    assert list(vocabulary.features) == ["departure hour"]
    assert vocabulary.features["departure hour"].learnwares == ["00000001", "00000002", "00000003"]


def test_features_of_a_spec_outside_the_market():
    vocabulary = build_vocabulary([entry("00000001", ["distance miles", "carrier code"])])
    semantic = entry("x", ["Distance (miles)", "wind speed"])["semantic"]
    assert features_of(semantic, vocabulary) == ["distance miles", None]


def test_lw_features_and_show_name_the_market_features(tmp_path, lw_json, lw):
    from learnware_cli.market.submit import submit_packages

    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    zips = []
    for number, descriptions in enumerate([[f"feature {i}" for i in range(bp.DIM)], [f"Feature {i}" for i in range(bp.DIM - 1)] + ["rainfall"]]):
        folder = tmp_path / f"p{number}"
        folder.mkdir()
        semantic = bp.semantic()
        semantic["Input"]["Description"] = {str(i): text for i, text in enumerate(descriptions)}
        zips.append(bp.write_zip(folder / "p.zip", bp.members(**{"semantic_specification.json": json.dumps(semantic)})))
    assert all(o.accepted for o in submit_packages(market, zips))
    code, doc = lw_json("features", "--market", market.root)
    assert code == 0 and doc["count"] == bp.DIM + 1
    counts = {f["id"]: f["learnwares"] for f in doc["features"]}
    assert counts["feature 0"] == 2 and counts[f"feature {bp.DIM - 1}"] == 1 and counts["rainfall"] == 1
    code, shown = lw_json("show", "2", "--market", market.root)
    assert code == 0 and shown["features"] == [f"feature {i}" for i in range(bp.DIM - 1)] + ["rainfall"]
    code, out, _ = lw("features", "--market", market.root)
    assert code == 0 and "rainfall" in out


def test_pack_names_columns_from_the_csv_header(tmp_path, lw_json):
    """A developer's CSV header becomes the columns' descriptions, so the market can match them."""
    import zipfile

    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge

    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    x, _, y = bp.data(300)
    names = [f"sensor {i}" for i in range(bp.DIM)]
    np.savetxt(tmp_path / "X.csv", x, delimiter=",", header=",".join(names), comments="")
    joblib.dump(Ridge().fit(x, y), tmp_path / "model.joblib")
    code, doc = lw_json("pack", "--model", tmp_path / "model.joblib", "--data", tmp_path / "X.csv", "--market", market.root,
                        "--name", "ridge", "--task", "Regression", "--out", tmp_path / "pkg.zip")
    assert code == 0, doc
    with zipfile.ZipFile(tmp_path / "pkg.zip") as archive:
        semantic = json.loads(archive.read("semantic_specification.json"))
    assert [semantic["Input"]["Description"][str(i)] for i in range(bp.DIM)] == names


# --------------------------------------------------------------------------- explicit ids (Input.Features)


def test_explicit_ids_join_columns_whose_descriptions_differ():
    vocabulary = build_vocabulary([
        entry("00000001", ["Temp (C)", "humidity"], ["temp_c", None]),
        entry("00000002", ["air temperature celsius", "wind"], ["temp_c", None]),
    ])
    assert vocabulary.of("00000001") == ["temp c", "humidity"]
    assert vocabulary.of("00000002") == ["temp c", "wind"]
    feature = vocabulary.features["temp c"]
    assert feature.learnwares == ["00000001", "00000002"] and feature.explicit_columns == 2
    # the descriptions are still the feature's spellings
    assert sorted(feature.spellings) == ["Temp (C)", "air temperature celsius"]
    assert feature.to_dict()["explicit_columns"] == 2 and vocabulary.features["humidity"].to_dict()["explicit_columns"] == 0


def test_explicit_id_is_matched_exactly_never_fuzzily():
    vocabulary = build_vocabulary([
        entry("00000001", ["temperature"], ["temp_c"]),
        entry("00000002", ["temperature"], ["temp_k"]),  # same description, near-identical id: another feature
        entry("00000003", ["x"], ["tempc"]),  # no space-folding for ids either
        entry("00000004", ["temp c"]),  # a description may join a feature an id made (one namespace)
    ])
    assert [vocabulary.of(f"0000000{i}") for i in range(1, 5)] == [["temp c"], ["temp k"], ["tempc"], ["temp c"]]
    assert vocabulary.features["temp c"].learnwares == ["00000001", "00000004"]
    assert vocabulary.features["temp c"].explicit_columns == 1


def test_explicit_id_wins_over_the_description():
    vocabulary = build_vocabulary([
        entry("00000001", ["week day"], ["day_of_week"]),
        entry("00000002", ["week day"]),  # no id: the description rules, and no feature is called "week day" yet
        entry("00000003", [None], ["day of week"]),  # an id without a description: its text is the spelling
    ])
    assert vocabulary.of("00000001") == ["day of week"] and vocabulary.of("00000002") == ["week day"]
    assert vocabulary.of("00000003") == ["day of week"]
    assert sorted(vocabulary.features["day of week"].spellings) == ["day of week", "week day"]
    assert vocabulary.undescribed_columns() == 0


def test_column_feature_keys():
    semantic = entry("x", ["Temp (C)", None, "wind"], ["temp_c", "rain_mm", None])["semantic"]
    assert column_feature_keys(semantic) == [("temp_c", "Temp (C)"), ("rain_mm", None), (None, "wind")]
    assert column_feature_keys({}) == [] and column_feature_keys({"Input": {"Dimension": 1}}) == [(None, None)]


def test_features_of_honours_explicit_ids():
    vocabulary = build_vocabulary([
        entry("00000001", ["Temp (C)", "distance miles"], ["temp_c", None]),
        entry("00000002", ["pressure"], ["pressure_hpa"]),
    ])
    user = entry("user", ["air temperature", "Distance (miles)", "pressure", "pressure"], ["TEMP-C", None, "pressure_kpa", None])["semantic"]
    # TEMP-C normalises to the market's id; pressure_kpa is new to the market (not fuzzily pressure_hpa),
    # though its description would have matched; a column without an id keeps the description rules
    assert features_of(user, vocabulary) == ["temp c", "distance miles", None, None]
    assert features_of(entry("user", ["Temp (C)"], ["temp_k"])["semantic"], vocabulary) == [None]


@pytest.mark.parametrize("features, message", [
    ({"3": "a"}, "Input Features key '3' is outside [0, 3)"),
    ({"x": "a"}, "Input Features key 'x' is not a column number"),
    ({"0": ""}, "Input Features id for column 0 must be a non-empty string, got ''"),
    ({"1": "   "}, "Input Features id for column 1 must be a non-empty string"),
    ({"0": 7}, "Input Features id for column 0 must be a non-empty string, got 7"),
    ({"0": "--"}, "Input Features id for column 0 has no letter or digit"),
    ({"0": "a\nb"}, "Input Features id for column 0 must be a single line"),
    ({"0": "a" * 2001}, "Input Features id for column 0 is longer than 2000 characters"),
    ("temp_c", "Input Features must map column numbers to feature id strings"),
])
def test_bad_explicit_ids_are_one_line_rejections(features, message):
    semantic = entry("x", ["a", "b", "c"])["semantic"]
    semantic["Input"]["Features"] = features
    with pytest.raises(RejectedError) as caught:
        validate_semantic(semantic)
    assert caught.value.check == "semantic" and message in caught.value.reason and "\n" not in caught.value.reason


def test_explicit_ids_are_normalised_and_kept():
    semantic = entry("x", ["a", "b", "c"])["semantic"]
    semantic["Input"]["Features"] = {" 2": " rain_mm ", "0": "temp_c"}
    assert validate_semantic(semantic)["Input"]["Features"] == {"0": "temp_c", "2": "rain_mm"}
    semantic["Input"]["Features"] = {}  # declares nothing: left out
    assert "Features" not in validate_semantic(semantic)["Input"]
    assert "Features" not in entry("x", ["a"])["semantic"]["Input"]  # absent unless given
    with pytest.raises(RejectedError, match="2 feature id\\(s\\) given for 3 input column\\(s\\)"):
        build_semantic("m", "d", "Table", "Regression", "Scikit-learn", ["Business"], "MIT", 3, 1, input_features=["a", "b"])


def _submit_zip(tmp_path, name: str, features, descriptions=None):
    folder = tmp_path / name
    folder.mkdir()
    semantic = bp.semantic()
    if descriptions is not None:
        semantic["Input"]["Description"] = {str(i): text for i, text in enumerate(descriptions)}
    semantic["Input"]["Features"] = features
    return bp.write_zip(folder / "p.zip", bp.members(**{"semantic_specification.json": json.dumps(semantic)}))


def test_lw_features_and_show_report_explicit_ids(tmp_path, lw_json, lw):
    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    first = _submit_zip(tmp_path, "p1", {"0": "temp_c"}, ["Temp (C)"] + [f"feature {i}" for i in range(1, bp.DIM)])
    second = _submit_zip(tmp_path, "p2", {"0": "temp_c", "1": "temp_k"}, ["air temperature celsius"] + [f"feature {i}" for i in range(1, bp.DIM)])
    for package in (first, second):
        code, doc = lw_json("submit", package, "--market", market.root)
        assert code == 0, doc
    code, doc = lw_json("features", "--market", market.root)
    assert code == 0
    rows = {f["id"]: f for f in doc["features"]}
    assert rows["temp c"]["learnwares"] == 2 and rows["temp c"]["explicit_columns"] == 2
    assert rows["temp c"]["spellings"] == ["Temp (C)", "air temperature celsius"]
    assert rows["temp k"]["used_by"] == ["00000002"] and rows["feature 1"]["learnwares"] == 1  # the id won over "feature 1"
    code, shown = lw_json("show", "00000002", "--market", market.root)
    assert code == 0 and shown["semantic"]["Input"]["Features"] == {"0": "temp_c", "1": "temp_k"}
    assert shown["features"][:3] == ["temp c", "temp k", "feature 2"]
    code, out, _ = lw("show", "00000002", "--market", market.root)
    assert code == 0 and "temp k" in out


def test_a_package_with_bad_explicit_ids_is_rejected_in_one_line(tmp_path, lw):
    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    for name, features, message in [("key", {"9": "temp_c"}, "Input Features key '9' is outside [0, 5)"),
                                     ("empty", {"0": ""}, "Input Features id for column 0 must be a non-empty string")]:
        code, out, err = lw("submit", _submit_zip(tmp_path, name, features), "--market", market.root)
        assert code == 3 and message in err and len(err.strip().splitlines()) == 1, (out, err)
    assert market.entries() == []


def _fitted_ridge(tmp_path):
    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge

    x, _, y = bp.data(300)
    np.savetxt(tmp_path / "X.csv", x, delimiter=",")
    joblib.dump(Ridge().fit(x, y), tmp_path / "model.joblib")
    return tmp_path / "model.joblib", tmp_path / "X.csv"


def test_pack_writes_explicit_feature_ids(tmp_path, lw_json):
    import zipfile

    model, rows = _fitted_ridge(tmp_path)
    ids = [f"sensor_{i}" for i in range(bp.DIM)]
    args = ["pack", "--model", model, "--data", rows, "--name", "ridge", "--task", "Regression", "--out", tmp_path / "pkg.zip"]
    code, doc = lw_json(*args, *[part for key in ids for part in ("--feature-id", key)])
    assert code == 0, doc
    with zipfile.ZipFile(tmp_path / "pkg.zip") as archive:
        semantic = json.loads(archive.read("semantic_specification.json"))
    assert semantic["Input"]["Features"] == {str(i): key for i, key in enumerate(ids)}
    code, doc = lw_json(*args[:-1], tmp_path / "pkg2.zip", "--feature-ids", ",".join(ids))  # the comma-separated form
    assert code == 0, doc
    with zipfile.ZipFile(tmp_path / "pkg2.zip") as archive:
        assert json.loads(archive.read("semantic_specification.json"))["Input"]["Features"] == semantic["Input"]["Features"]


@pytest.mark.parametrize("extra, message", [
    (["--feature-id", "a", "--feature-id", "b"], "--feature-ids names 2 column(s) but the input dimension is 5"),
    (["--feature-ids", "a,b,c"], "--feature-ids names 3 column(s) but the input dimension is 5: give one id per column, in order"),
    ([part for key in ["a", "b", "", "d", "e"] for part in ("--feature-id", key)], "Input Features id for column 2 must be a non-empty string"),
    (["--feature-id", "a", "--semantic", "s.json"], "with --semantic FILE, put the ids in its Input.Features"),
])
def test_pack_refuses_bad_feature_ids_in_one_line(tmp_path, lw, extra, message):
    model, rows = _fitted_ridge(tmp_path)
    code, out, err = lw("pack", "--model", model, "--data", rows, "--name", "ridge", "--task", "Regression",
                        "--out", tmp_path / "pkg.zip", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (out, err)
    assert not (tmp_path / "pkg.zip").exists()


def test_numbered_columns_stay_apart():
    """Near-identical wording that differs in a number is two quantities, not a typo."""
    entries = [
        {"id": "00000001", "semantic": {"Input": {"Dimension": 3, "Description": {"0": "sensor 1", "1": "own 10", "2": "temp 2020"}}}},
        {"id": "00000002", "semantic": {"Input": {"Dimension": 3, "Description": {"0": "sensor 10", "1": "own 100", "2": "temps 2020"}}}},
    ]
    vocabulary = build_vocabulary(entries)
    assert vocabulary.of("00000002") == ["sensor 10", "own 100", "temp 2020"]


def test_show_builds_the_vocabulary_from_the_learnwares_that_describe_columns(tmp_path, lw_json, monkeypatch):
    """`lw show` must not read every entry of a big market: only learnwares whose semantic spec describes or names
    a column can add features, and a partial index lists them. Same features as the vocabulary of every entry."""
    import sqlite3

    import numpy as np

    from learnware_cli.experiment.synthetic import spec_only_semantic, write_spec_only_learnwares
    from learnware_cli.market.catalog import DESCRIBES_COLUMNS
    from learnware_cli.rkme.spec import RKMESpec

    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    rng = np.random.default_rng(0)
    specs = [RKMESpec(z=rng.normal(size=(5, bp.DIM)), beta=np.full(5, 0.2), gamma=bp.GAMMA) for _ in range(6)]
    write_spec_only_learnwares(market, specs[:3], [spec_only_semantic(f"plain {i}", bp.DIM) for i in range(3)])  # describe nothing
    described = [entry("x", ["Temp (C)"] + [f"feature {i}" for i in range(1, bp.DIM)])["semantic"],
                 entry("x", ["temp c"] + [f"Feature {i}" for i in range(1, bp.DIM)], ids=[None, "humidity"])["semantic"]]
    write_spec_only_learnwares(market, specs[3:5], described)
    write_spec_only_learnwares(market, specs[5:], [spec_only_semantic("plain 5", bp.DIM)])
    with sqlite3.connect(market.root / "index.sqlite") as conn:  # a market from before the index: its next write adds it
        conn.execute("DROP INDEX learnwares_with_features")
    write_spec_only_learnwares(market, specs[:1], [spec_only_semantic("plain 6", bp.DIM)])
    every = build_vocabulary(market.entries())
    assert [e["id"] for e in market.feature_entries()] == ["00000004", "00000005"]
    assert build_vocabulary(market.feature_entries()).features.keys() == every.features.keys()
    expected = features_of(described[1], every)
    assert "humidity" in expected and "temp c" in expected

    def everything(*args, **kwargs):
        raise AssertionError("read the whole index")

    listed_rows = sorted((f.to_dict() for f in every.features.values()), key=lambda r: (-r["learnwares"], r["id"]))
    monkeypatch.setattr(Market, "read_index", everything)
    code, shown = lw_json("show", "00000005", "--market", market.root)
    assert code == 0 and shown["features"] == expected, shown
    code, listed = lw_json("features", "--market", market.root)  # `lw features`: the same document as from every entry
    assert code == 0 and listed["features"] == listed_rows and listed["count"] == len(listed_rows)
    assert listed["undescribed_columns"] == every.undescribed_columns() == 5 * bp.DIM, listed  # five plain learnwares
    with sqlite3.connect(market.root / "index.sqlite") as conn:
        plan = " ".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN SELECT id, semantic FROM learnwares WHERE {DESCRIBES_COLUMNS} ORDER BY id"))
    assert "learnwares_with_features" in plan, plan
