"""Image and text learnwares end to end, and one market holding tables, images and texts (issue 13).

Developers pack scikit-learn pipelines that take raw texts (a list of str) or
raw images (n, 1, 8, 8); the market probes them with its own probe sentences
or with images herded from their specifications; users fit their
specification locally, search, and reuse on their raw data.
"""

from __future__ import annotations

import json
import random

import joblib
import numpy as np
import pytest
from conftest import assert_spec_stored_once

TOPICS = {
    "football": (["striker", "goalkeeper", "referee", "midfielder", "coach"], ["scored a goal", "saved a penalty", "missed the match", "won the derby", "lost the final"]),
    "cooking": (["chef", "baker", "cook", "waiter", "grandmother"], ["baked a cake", "burned the soup", "seasoned the stew", "ruined the bread", "loved the pasta"]),
}
GOOD = {"scored a goal", "saved a penalty", "won the derby", "baked a cake", "seasoned the stew", "loved the pasta"}


def topic_texts(topic: str, n: int, seed: int) -> tuple[list, np.ndarray]:
    rng = random.Random(seed)
    who, what = TOPICS[topic]
    texts, labels = [], []
    for _ in range(n):
        action = rng.choice(what)
        texts.append(f"the {rng.choice(who)} {action} on {rng.choice(['monday', 'sunday', 'friday'])}")
        labels.append(int(action in GOOD))
    return texts, np.array(labels)


def text_model(folder, topic: str):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = topic_texts(topic, 200, seed=1)
    (folder / f"{topic}.txt").write_text("\n".join(texts) + "\n")
    joblib.dump(make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels), folder / f"{topic}.joblib")
    return folder / f"{topic}.joblib", folder / f"{topic}.txt"


def digits(classes) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = np.isin(data.target, list(classes))
    return data.images[keep] / 16.0, data.target[keep]


def image_model(folder, name: str, classes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    images, labels = digits(classes)
    np.save(folder / f"{name}.npy", images[:200])
    flatten = FunctionTransformer(np.reshape, kw_args={"shape": (-1, 64)})  # importable in the worker, unlike a lambda
    joblib.dump(make_pipeline(flatten, LogisticRegression(max_iter=500)).fit(images[:200, None], labels[:200]), folder / f"{name}.joblib")
    return folder / f"{name}.joblib", folder / f"{name}.npy"


def pack(lw_json, model, data, market, name: str, out, *extra):
    code, doc = lw_json("pack", "--model", model, "--data", data, "--market", market, "--name", name, "--task", "Classification", "--out", out, *extra)
    assert code == 0, doc
    return out


def test_text_learnwares_from_pack_to_reuse(tmp_path, lw_json):
    market = tmp_path / "market"
    assert lw_json("init", market)[0] == 0
    zips = [pack(lw_json, *text_model(tmp_path, topic), market, f"{topic} sentiment", tmp_path / f"{topic}.zip") for topic in TOPICS]
    code, doc = lw_json("submit", *zips, "--market", market)
    assert code == 0 and len(doc["accepted"]) == 2, doc
    probed = json.loads((market / "learnwares" / "00000001" / "v1" / "semantic.json").read_text())
    assert probed["Data"]["Values"] == ["Text"]
    for number, package in enumerate(zips, 1):
        assert type(assert_spec_stored_once(market, f"{number:08d}", 1, package)).__name__ == "TextSpecification"

    texts, labels = topic_texts("cooking", 60, seed=9)  # the user's own sentences, never seen by the market
    (tmp_path / "user.txt").write_text("\n".join(texts) + "\n")
    np.savetxt(tmp_path / "y.txt", labels)
    code, spec = lw_json("spec", tmp_path / "user.txt", "--market", market, "--out", tmp_path / "user.json")
    assert code == 0 and spec["type"] == "RKMETextSpecification" and spec["embedder"] == "lw-hashed-ngrams-v1"
    code, found = lw_json("search", "--market", market, "--spec", tmp_path / "user.json", "-k", "2")
    assert code == 0 and [r["name"] for r in found["single"]] == ["cooking sentiment", "football sentiment"]
    (tmp_path / "found.json").write_text(json.dumps(found))
    code, reused = lw_json("reuse", "--market", market, "--from", tmp_path / "found.json", "-k", "1", "--use", "ranking",
                           "--data", tmp_path / "user.txt", "--evaluate", tmp_path / "y.txt")
    assert code == 0 and reused["metric"]["name"] == "accuracy" and reused["metric"]["value"] >= 0.9, reused


def test_a_text_spec_of_another_embedder_is_refused_not_compared(tmp_path, lw_json):
    """Specs embedded differently live on different islands: searching with one finds nothing to compare."""
    from learnware_cli.specs.text import TextSpecification

    market = tmp_path / "market"
    assert lw_json("init", market)[0] == 0
    model, data = text_model(tmp_path, "football")
    code, doc = lw_json("submit", pack(lw_json, model, data, market, "football", tmp_path / "f.zip"), "--market", market)
    assert code == 0
    texts, _ = topic_texts("football", 40, seed=3)
    other = TextSpecification.fit(texts, K=20, gamma=0.1, embedder_params={"dim": 128})
    (tmp_path / "other.json").write_text(json.dumps(other.to_json_dict()))
    code, found = lw_json("search", "--market", market, "--spec", tmp_path / "other.json")
    assert code == 0 and found["single"] == [] and found["considered"] == 0


@pytest.mark.slow
def test_one_market_holds_tables_images_and_texts(tmp_path, lw_json):
    """Each kind is searched in its own island: an image user finds the image learnwares only, in the right order."""
    import badpackages as bp

    market = tmp_path / "market"
    assert lw_json("init", market)[0] == 0
    zips = [bp.good_sklearn_zip(tmp_path / "table", task="Regression")]
    zips.append(pack(lw_json, *text_model(tmp_path, "football"), market, "football sentiment", tmp_path / "text.zip"))
    zips += [pack(lw_json, *image_model(tmp_path, name, classes), market, f"digits {name}", tmp_path / f"{name}.zip")
             for name, classes in (("low", range(0, 5)), ("high", range(5, 10)))]
    code, doc = lw_json("submit", *zips, "--market", market)
    assert code == 0 and len(doc["accepted"]) == 4, doc
    kinds = [type(assert_spec_stored_once(market, f"{number:08d}", 1, package)).__name__ for number, package in enumerate(zips, 1)]
    assert kinds == ["RKMESpec", "TextSpecification", "ImageSpecification", "ImageSpecification"]
    code, listed = lw_json("list", "--market", market)
    assert code == 0 and len(listed["learnwares"]) == 4

    images, _ = digits(range(5, 10))
    np.save(tmp_path / "user.npy", images[250:310])
    code, spec = lw_json("spec", tmp_path / "user.npy", "--market", market, "--out", tmp_path / "user.json")
    assert code == 0 and spec["type"] == "RKMEImageSpecification"
    code, found = lw_json("search", "--market", market, "--spec", tmp_path / "user.json", "-k", "5")
    assert code == 0 and [r["name"] for r in found["single"]] == ["digits high", "digits low"], found
    code, rebuilt = lw_json("reindex", "--market", market)
    assert code == 0 and len(rebuilt["stacks"]) == 3, rebuilt  # one stack per island: table d=5, image, text


@pytest.mark.parametrize("embedder, message", [
    ("nope", "unknown embedder 'nope'"),
    ("sentence-transformers:/nonexistent/model", "sentence-transformers"),
])
def test_spec_names_an_embedder_it_cannot_use_in_one_line(tmp_path, lw, embedder, message):
    texts, _ = topic_texts("football", 20, seed=2)
    (tmp_path / "t.txt").write_text("\n".join(texts))
    code, out, err = lw("spec", tmp_path / "t.txt", "--out", tmp_path / "s.json", "-K", "5", "--embedder", embedder)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.json").exists()


def test_a_text_user_between_two_topics_gets_their_mixture(tmp_path, lw_json):
    market = tmp_path / "market"
    assert lw_json("init", market)[0] == 0
    zips = [pack(lw_json, *text_model(tmp_path, topic), market, topic, tmp_path / f"{topic}.zip") for topic in TOPICS]
    assert lw_json("submit", *zips, "--market", market)[0] == 0
    football, _ = topic_texts("football", 36, seed=21)
    cooking, _ = topic_texts("cooking", 24, seed=22)
    (tmp_path / "user.txt").write_text("\n".join(football + cooking) + "\n")
    assert lw_json("spec", tmp_path / "user.txt", "--market", market, "--out", tmp_path / "user.json")[0] == 0
    code, found = lw_json("search", "--market", market, "--spec", tmp_path / "user.json", "-k", "2")
    weights = {m["name"]: m["weight"] for m in found["mixture"]["learnwares"]}
    assert code == 0 and weights == pytest.approx({"football": 0.6, "cooking": 0.4}, abs=0.1), found["mixture"]
