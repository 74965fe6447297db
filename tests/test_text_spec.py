"""The text RKME (RKMETextSpecification): the offline embedder, the spec on the interface, reading documents."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from learnware_cli.errors import InputError, SpecError
from learnware_cli.specs import Specification, data_type_of, load_spec, same_island, spec_class
from learnware_cli.specs import embedders
from learnware_cli.specs.embedders import (
    HASHED_NGRAMS,
    Embedder,
    HashedNgramEmbedder,
    embedder_id,
    get_embedder,
    known_embedders,
)
from learnware_cli.specs.text_data import read_texts

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- a small labelled corpus

TOPICS = {
    "cooking": (
        ["the chef", "my grandmother", "our cook", "the baker", "a home cook", "the restaurant"],
        ["roasted", "simmered", "baked", "chopped", "seasoned", "fried", "stirred", "whisked"],
        ["the garlic", "fresh tomatoes", "a chicken", "the onions", "sourdough bread", "the risotto", "a pot of soup", "the butter and flour"],
        ["with olive oil", "for twenty minutes", "in a hot oven", "until golden brown", "with a pinch of salt", "over low heat", "for dinner tonight"],
    ),
    "football": (
        ["the striker", "the goalkeeper", "our captain", "the home team", "the midfielder", "the referee"],
        ["scored", "blocked", "passed", "defended", "kicked", "headed", "celebrated", "missed"],
        ["the penalty", "a free kick", "the ball", "the last goal", "a corner", "the league title", "the match", "the cup final"],
        ["in the second half", "before the whistle", "at the stadium", "against the rivals", "in extra time", "from the edge of the box", "in front of the fans"],
    ),
    "finance": (
        ["the bank", "investors", "the central bank", "our fund manager", "the trader", "the company"],
        ["raised", "cut", "bought", "sold", "hedged", "reported", "borrowed", "invested"],
        ["interest rates", "the bonds", "quarterly earnings", "its shares", "the portfolio", "a loan", "the dividend", "foreign currency"],
        ["after the inflation report", "on the stock market", "despite the recession", "to reduce risk", "before the quarter closed", "at a higher yield", "for long-term growth"],
    ),
}


def sentences(topic: str, n: int, seed: int) -> list[str]:
    """n templated sentences about topic (subject, verb, object, phrase), reproducible for a seed."""
    rng = random.Random(f"{topic}/{seed}")
    subj, verb, obj, tail = TOPICS[topic]
    return [f"{rng.choice(subj).capitalize()} {rng.choice(verb)} {rng.choice(obj)} {rng.choice(tail)}." for _ in range(n)]


PARAPHRASES = [
    ("The cat sat on the mat.", "On the mat sat the cat."),
    ("The stock market fell sharply today.", "Today the stock markets fell sharply."),
    ("How do I bake sourdough bread at home?", "Baking sourdough bread at home: how?"),
    ("The goalkeeper saved a penalty in the final minute.", "In the final minute the goalkeeper saved the penalty."),
    ("It is raining heavily in London this morning.", "Heavy rain in London this morning."),
]
UNRELATED = [
    "The cat sat on the mat.",
    "The stock market fell sharply today.",
    "How do I bake sourdough bread at home?",
    "The goalkeeper saved a penalty in the final minute.",
    "Quantum computers use qubits.",
    "My favourite colour is green.",
    "Please close the door when you leave.",
    "The train to Paris was delayed.",
]

# ----------------------------------------------------------------------------- the embedder


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype="<f8").tobytes()).hexdigest()


DOCS = ["Hello, world!", "Ünïcödé ＴＥＸＴ and Straße", "", "!!!", "a b c d e f g", *sentences("finance", 20, 7)]


def test_embedding_is_the_same_bytes_in_another_process():
    here = _digest(get_embedder(HASHED_NGRAMS).embed(DOCS))
    script = (
        "import hashlib, json, sys, numpy as np\n"
        "from learnware_cli.specs.embedders import get_embedder\n"
        "docs = json.loads(sys.stdin.read())\n"
        "x = get_embedder('lw-hashed-ngrams-v1').embed(docs)\n"
        "print(hashlib.sha256(np.ascontiguousarray(x, dtype='<f8').tobytes()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different salt for str hashes: must not matter
    there = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(DOCS), capture_output=True, text=True, check=True, cwd=ROOT, env=env
    ).stdout.strip()
    assert there == here
    # order within a batch, batch composition and the word cache do not change a document's vector
    fresh = HashedNgramEmbedder()
    one_by_one = np.vstack([fresh.embed([d]) for d in reversed(DOCS)])[::-1]
    assert _digest(one_by_one) == here


# The bytes of embed(DOCS), pinned: lw-hashed-ngrams-v1 must give every developer and user the same
# vectors. A change here breaks every published text specification: make it a new embedder name instead.
GOLDEN = {
    (): "b4c522e50ac5419e62a3d6e575f77d3804fb4d6b39f13284f3def4343c8fdf68",
    (("dim", 32), ("seed", 3)): "6e3b97001db0e2582ac1455b185e613b5819c66ca4fb2daa63f4bfdb406b54f9",
}


@pytest.mark.parametrize("params", list(GOLDEN))
def test_embedding_bytes_are_pinned(params):
    assert _digest(get_embedder(HASHED_NGRAMS, **dict(params)).embed(DOCS)) == GOLDEN[params]


def test_batches_and_blocks_do_not_change_the_bytes(monkeypatch):
    docs = DOCS * 3
    whole = _digest(HashedNgramEmbedder().embed(docs))
    monkeypatch.setattr(embedders, "_BATCH_DOCS", 7)  # several batches
    monkeypatch.setattr(embedders, "_BLOCK_DOCS", 4)  # several scatter blocks per batch, some with empty documents
    assert _digest(HashedNgramEmbedder().embed(docs)) == whole
    monkeypatch.setattr(embedders, "_BLOCK_DOCS", 2)
    sparse = HashedNgramEmbedder().embed(["", "!!!", "", "?", "a b", "", "c"])  # blocks with no word at all
    assert np.count_nonzero(np.linalg.norm(sparse, axis=1)) == 2
    np.testing.assert_array_equal(sparse[4], HashedNgramEmbedder().embed(["a b"])[0])


def test_embedder_shape_norms_and_normalisation():
    e = get_embedder()
    assert isinstance(e, Embedder) and e.name == HASHED_NGRAMS and e.dim == 256
    x = e.embed(DOCS)
    assert x.shape == (len(DOCS), 256) and x.dtype == np.float64
    norms = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 4]], 1.0, rtol=1e-12)
    assert norms[2] == 0.0 and norms[3] == 0.0  # no letter or digit: the zero vector
    assert e.embed([]).shape == (0, 256)
    # NFKC + casefold: full-width letters, case, and ß/ss are the same text
    a, b = e.embed(["ＣＡＦＥ STRASSE", "cafe straße"])
    np.testing.assert_array_equal(a, b)
    small = get_embedder(HASHED_NGRAMS, dim=32, seed=3)
    assert small.embed(["x y"]).shape == (1, 32)


def test_embedder_errors_are_one_line_input_errors():
    with pytest.raises(InputError, match=r"unknown embedder 'nope' \(known: .*lw-hashed-ngrams-v1"):
        get_embedder("nope")
    assert HASHED_NGRAMS in known_embedders()
    for bad in ({"dim": 0}, {"nnz": 0}, {"weights": (0, 0, 0)}, {"char_ngrams": (0,)}, {"bogus": 1}):
        with pytest.raises(InputError):
            get_embedder(HASHED_NGRAMS, **bad)
    with pytest.raises(InputError, match="single string"):
        get_embedder().embed("not a list")
    with pytest.raises(InputError, match="document 1 is a int"):
        get_embedder().embed(["ok", 3])


def test_paraphrases_are_closer_than_unrelated_sentences():
    e = get_embedder()
    a = e.embed([p for p, _ in PARAPHRASES])
    b = e.embed([q for _, q in PARAPHRASES])
    paraphrase = np.sum(a * b, axis=1)
    u = e.embed(UNRELATED)
    off = (u @ u.T)[~np.eye(len(UNRELATED), dtype=bool)]
    assert paraphrase.min() > 0.5, paraphrase
    assert abs(off.mean()) < 0.1 and off.max() < 0.4, off
    assert paraphrase.min() > off.max()


def test_topics_separate_in_embedding_space():
    e = get_embedder()
    names = list(TOPICS)
    x = np.vstack([e.embed(sentences(t, 60, 1)) for t in names])
    y = np.repeat(np.arange(len(names)), 60)
    sim = x @ x.T
    same = (y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)
    assert sim[same].mean() > sim[y[:, None] != y[None, :]].mean() + 0.08
    np.fill_diagonal(sim, -np.inf)
    assert (y[sim.argmax(axis=1)] == y).mean() > 0.95  # 1-nearest-neighbour topic


def test_embedder_id_follows_name_and_params():
    assert embedder_id("a", {"x": 1, "y": 2}) == embedder_id("a", {"y": 2, "x": 1})
    assert embedder_id("a", {"x": 1}) != embedder_id("a", {"x": 2}) != embedder_id("b", {"x": 2})
    assert get_embedder(HASHED_NGRAMS, dim=64).params != get_embedder(HASHED_NGRAMS, dim=64, seed=1).params


# ----------------------------------------------------------------------------- the sentence-transformers plug-in


def test_sentence_transformers_plugin_missing_package_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails, installed or not
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(InputError, match="sentence-transformers package is not installed") as caught:
        get_embedder(f"sentence-transformers:{tmp_path}")
    assert "\n" not in caught.value.message
    with pytest.raises(InputError, match="needs a local model path"):
        get_embedder("sentence-transformers:")


def test_sentence_transformers_plugin_loads_offline_and_never_downloads(monkeypatch, tmp_path):
    calls = []

    class FakeModel:
        def __init__(self, path, device=None, local_files_only=False):
            calls.append((path, device, local_files_only, os.environ.get("HF_HUB_OFFLINE")))

        def get_sentence_embedding_dimension(self):
            return 3

        def encode(self, texts, **kwargs):
            return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)

    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=FakeModel))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(InputError, match="no such model folder") as caught:
        get_embedder(f"sentence-transformers:{tmp_path / 'all-MiniLM-L6-v2'}")
    assert "never downloads" in caught.value.message and not calls
    model_dir = tmp_path / "all-MiniLM-L6-v2"
    model_dir.mkdir()
    e = get_embedder(f"sentence-transformers:{model_dir}")
    assert calls == [(str(model_dir), "cpu", True, "1")]
    assert e.name == "sentence-transformers:all-MiniLM-L6-v2" and e.dim == 3
    assert e.embed(["ab", "abcd"]).dtype == np.float64
    spec = spec_class("RKMETextSpecification").fit(["ab", "abcd", "abcdef"], K=10, embedder=e)
    assert spec.island_key().kind.startswith("text:sentence-transformers:all-MiniLM-L6-v2#")


# ----------------------------------------------------------------------------- the specification


def _text_spec(topic: str = "cooking", n: int = 40, seed: int = 1, **params):
    params.setdefault("K", 100)  # K >= n: the exact RKME, no k-means program to compile
    params.setdefault("embedder", get_embedder(HASHED_NGRAMS, dim=32))
    return spec_class("RKMETextSpecification").fit(sentences(topic, n, seed), **params)


def test_text_type_resolves_and_implements_the_interface():
    from learnware_cli.specs.text import TextSpecification

    cls = spec_class("RKMETextSpecification")
    assert cls is TextSpecification and cls.type_name == "RKMETextSpecification"
    spec = _text_spec()
    assert isinstance(spec, Specification)
    assert spec.summary() == {
        "type": "RKMETextSpecification",
        "K": 40,
        "dim": 32,
        "gamma": 0.1,
        "num_points": 40,
        "embedder": HASHED_NGRAMS,
        "embedder_id": embedder_id(HASHED_NGRAMS, get_embedder(HASHED_NGRAMS, dim=32).params),
        "language": [],
    }
    assert "lw-hashed-ngrams-v1" in spec.describe() and "40 documents" in spec.describe()
    assert data_type_of(spec) == "Text"
    with pytest.raises(NotImplementedError, match="cannot generate probe texts"):
        spec.probe_inputs(5)


def test_json_round_trip_is_byte_equal_and_keeps_the_reference_keys(tmp_path):
    spec = _text_spec(language=["en"])
    path = tmp_path / "rkme.json"
    spec.save(path)
    obj = json.loads(path.read_text())
    assert {"type", "gamma", "num_points", "z", "beta", "language"} <= set(obj)  # the reference's keys, as it names them
    assert obj["type"] == "RKMETextSpecification" and obj["language"] == ["en"]
    assert obj["embedder"] == {"name": HASHED_NGRAMS, "params": get_embedder(HASHED_NGRAMS, dim=32).params, "dim": 32}
    loaded = load_spec(path)
    assert type(loaded) is type(spec)
    assert json.dumps(loaded.to_json_dict(), separators=(",", ":")) == path.read_text()
    assert same_island(loaded.island_key(), spec.island_key())
    assert loaded.mmd2(spec) == pytest.approx(0.0, abs=1e-12)
    # the recorded embedder rebuilds, so a user's texts land in the same island
    mine = spec_class("RKMETextSpecification").fit(["my own text", "another one"], embedder=loaded.embedder.build())
    assert same_island(mine.island_key(), spec.island_key())
    by_name = spec_class("RKMETextSpecification").fit(["my own text"], embedder=HASHED_NGRAMS, embedder_params={"dim": 32})
    assert same_island(by_name.island_key(), spec.island_key())


def test_island_key_depends_on_the_embedder_and_its_params():
    base = _text_spec()
    key = base.island_key()
    assert key.kind.startswith("text:lw-hashed-ngrams-v1#") and key.dim == 32 and key.gamma == 0.1
    assert same_island(_text_spec(seed=5).island_key(), key)  # other texts, same embedder
    other_seed = _text_spec(embedder=get_embedder(HASHED_NGRAMS, dim=32, seed=1))
    other_weights = _text_spec(embedder=get_embedder(HASHED_NGRAMS, dim=32, weights=(1, 0, 1)))
    for other in (other_seed, other_weights):
        assert other.island_key().dim == 32 and not same_island(other.island_key(), key)
        with pytest.raises(SpecError, match="embedded differently"):
            base.mmd2(other)
    from learnware_cli.rkme import fit_rkme

    table = fit_rkme(np.random.default_rng(0).normal(size=(20, 32)), k=50)
    assert not same_island(table.island_key(), key)
    with pytest.raises(SpecError, match="cannot compare"):
        base.mmd2(table)


def _reference_layout(dim: int = 384) -> dict:
    """What the reference package's RKMETextSpecification.save writes: the table keys and language, no embedder."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, dim))
    return {"z": z.tolist(), "beta": [0.2] * 5, "gamma": 0.1, "num_points": 120, "type": "RKMETextSpecification", "language": ["en"]}


def test_reference_file_without_embedder_loads_into_an_island_of_its_own(tmp_path):
    from learnware_cli.specs.text import REFERENCE_EMBEDDER

    path = tmp_path / "reference.json"
    path.write_text(json.dumps(_reference_layout(), separators=(",", ":")))
    ref = load_spec(path)
    assert ref.embedder.name == REFERENCE_EMBEDDER and ref.dim == 384 and ref.language == ["en"]
    assert ref.island_key().kind.startswith("text:sentence-transformers:")
    ours = _text_spec(embedder=get_embedder(HASHED_NGRAMS, dim=384))
    assert ours.island_key().dim == 384 and not same_island(ref.island_key(), ours.island_key())
    with pytest.raises(SpecError, match="embedded differently"):
        ours.mmd2(ref)
    with pytest.raises(InputError, match="cannot rebuild that model"):
        ref.embedder.build()
    again = load_spec(ref.to_json_dict())  # re-saved by lw: the embedder is written, the island kept
    assert same_island(again.island_key(), ref.island_key())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"embedder": {"name": HASHED_NGRAMS, "params": {}, "dim": 7}}, "embedder.dim is 7 but z has 384 columns"),
        ({"embedder": "MiniLM"}, "embedder must be an object"),
        ({"embedder": {"name": "", "params": {}}}, "embedder.name must be a non-empty string"),
        ({"embedder": {"name": "x", "params": [1]}}, "embedder.params must be an object"),
        ({"language": "en"}, "language must be a list"),
        ({"type": "RKMETableSpecification"}, None),  # a table spec: loads as a table, not here
        ({"beta": [0.5]}, "beta has 1 weights but z has 5 points"),
    ],
)
def test_malformed_text_files_are_one_line_spec_errors(change, message):
    obj = {**_reference_layout(), **change}
    if message is None:
        assert load_spec(obj).island_key().kind == "table"
        return
    with pytest.raises(SpecError, match=message) as caught:
        load_spec(obj, source="bad.json")
    assert caught.value.message.startswith("bad.json: ") and "\n" not in caught.value.message


def test_spec_of_a_topic_is_closest_to_held_out_texts_of_that_topic():
    e = get_embedder(HASHED_NGRAMS, dim=64)
    fit = spec_class("RKMETextSpecification").fit
    # fitted with a reduced set smaller than the data (k-means, weights, refinement)
    specs = {t: fit(sentences(t, 150, 1), K=20, embedder=e, seed=0) for t in TOPICS}
    held_out = {t: fit(sentences(t, 60, 2), K=100, embedder=e) for t in TOPICS}
    assert all(s.size == 20 and s.num_points == 150 for s in specs.values())
    cls = type(specs["cooking"])
    names = list(TOPICS)
    stack = cls.make_stack(
        np.stack([specs[t].stack_arrays().z for t in names]), np.stack([specs[t].stack_arrays().beta for t in names]), gamma=0.1, dtype="float64"
    )
    for t in names:
        distances = {u: held_out[t].mmd2(specs[u]) for u in names}
        others = min(d for u, d in distances.items() if u != t)
        assert distances[t] * 5 < others, (t, distances)
        batched = held_out[t].mmd2_to_stack(stack)
        np.testing.assert_allclose(batched, [distances[u] for u in names], rtol=1e-6, atol=1e-9)


def test_fit_validates_its_documents():
    fit = spec_class("RKMETextSpecification").fit
    with pytest.raises(InputError, match="single string"):
        fit("one string")
    with pytest.raises(InputError, match="no non-blank document"):
        fit(["", "   "])
    with pytest.raises(InputError, match="disagree"):
        fit(["a b"], K=3, k=4)
    spec = fit(["  ", "one doc", "two docs"], k=5, embedder=get_embedder(HASHED_NGRAMS, dim=16))
    assert spec.num_points == 2 and spec.size == 2


# ----------------------------------------------------------------------------- reading documents


def test_read_texts_from_txt_csv_and_jsonl(tmp_path):
    txt = tmp_path / "docs.txt"
    txt.write_text("first line\n\n   \nsecond, with a comma  \r\nthird\n", encoding="utf-8")
    assert read_texts(txt) == ["first line", "second, with a comma", "third"]
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffcafé\n".encode("utf-8"))
    assert read_texts(bom) == ["café"]

    csv_path = tmp_path / "docs.csv"
    csv_path.write_text('id,Text,label\n1,"Hello, world",a\n2,"multi\nline",b\n3,,c\n', encoding="utf-8")
    assert read_texts(csv_path) == ["Hello, world", "multi\nline"]  # the "text" column, any case
    assert read_texts(csv_path, column="label") == ["a", "b", "c"]
    assert read_texts(csv_path, column=0) == ["1", "2", "3"]
    assert read_texts(csv_path, column="2") == ["a", "b", "c"]
    one = tmp_path / "one.csv"
    one.write_text("review\ngood\nbad\n")
    assert read_texts(one) == ["good", "bad"]
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("text\tn\na, b\t1\n")
    assert read_texts(tsv) == ["a, b"]

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "alpha", "y": 1}\n\n{"text": "beta", "body": "B"}\n{"text": null}\n')
    assert read_texts(jsonl) == ["alpha", "beta"]


@pytest.mark.parametrize(
    "name, content, column, message",
    [
        ("missing.txt", None, None, "no such file"),
        ("empty.txt", b"", None, "file is empty"),
        ("blank.txt", b"\n  \n", None, "file is empty"),
        ("latin1.txt", "ok\ncaf\xe9\n".encode("latin-1"), None, r"not UTF-8 text \(undecodable byte 0xe9 on line 2"),
        ("cols.csv", b"a,b\n1,2\n", None, r"which column holds the text\? name one \(columns: 'a', 'b'\)"),
        ("cols.csv", b"a,b\n1,2\n", "c", r"no column 'c' \(columns: 'a', 'b'\)"),
        ("cols.csv", b"a,b\n1,2\n", 5, r"no column 5 \(the file has 2 columns"),
        ("ragged.csv", b"a,text\n1,x\n2\n", None, "row 3 has 1 columns"),
        ("header_only.csv", b"text\n", None, "no documents"),
        ("bad.jsonl", b'{"text": "a"}\n{oops\n', None, "line 2 is not valid JSON"),
        ("list.jsonl", b"[1, 2]\n", None, "line 1 is not a JSON object"),
        ("nofield.jsonl", b'{"body": "a"}\n', None, "line 1 has no 'text' field"),
        ("number.jsonl", b'{"text": 3}\n', None, "'text' is a int, not a string"),
        ("plain.txt", b"a\n", "text", "a column can only be chosen"),
    ],
)
def test_read_texts_errors_are_one_line_input_errors(tmp_path, name, content, column, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        read_texts(path, column=column)
    assert caught.value.message.startswith(str(path)) and "\n" not in caught.value.message


def test_read_texts_of_a_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_texts(tmp_path)


def test_market_probe_sentences():
    docs = read_texts(ROOT / "market_template" / "probes" / "text.txt")
    assert 50 <= len(docs) <= 80 and len(set(docs)) == len(docs)
    lengths = [len(d.split()) for d in docs]
    assert min(lengths) <= 2 and max(lengths) >= 12  # short and long ones
    x = get_embedder().embed(docs)
    assert np.all(np.linalg.norm(x, axis=1) > 0.99)
