"""Market features: columns of different learnwares described alike are one feature (issue 12, item 2)."""

from __future__ import annotations

import json

import pytest

import badpackages as bp
from learnware_cli.market.features import build_vocabulary, features_of, normalise
from learnware_cli.market.semantic import build_semantic
from learnware_cli.market.store import Market


def entry(learnware_id: str, descriptions: list) -> dict:
    texts = [text if text is not None else "x" for text in descriptions]
    semantic = build_semantic("m", "d", "Table", "Regression", "Scikit-learn", ["Business"], "MIT", len(texts), 1, input_desc=texts)
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
