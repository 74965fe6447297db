"""Search quality on a synthetic market with a known truth, plus semantic rules and the CLI."""

from __future__ import annotations


import numpy as np
import pytest

from learnware_cli.experiment.synthetic import make_regions, sample_mixture, spec_only_semantic, write_spec_only_learnwares
from learnware_cli.market.store import Market
from learnware_cli.rkme import fit_rkme
from learnware_cli.search.engine import search
from learnware_cli.search.semantic import parse_tag_filters

N_REGIONS = 24
DIM = 5
K = 30
GAMMA = 0.1
SCENARIOS = ["Business", "Health", "Traffic", "Nature"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("search") / "market"
    market = Market.create(root, gamma=GAMMA, k=K)
    regions = make_regions(N_REGIONS, DIM, seed=7, spread=3.0)
    rng = np.random.default_rng(0)
    specs = [fit_rkme(r.sample(600, rng), k=K, gamma=GAMMA, seed=i) for i, r in enumerate(regions)]
    semantics = [
        spec_only_semantic(f"region {i} {'sales' if i % 2 else 'clinic'} model", DIM, task="Regression" if i % 3 else "Classification", scenario=SCENARIOS[i % 4], output_dim=1 if i % 3 else 2)
        for i in range(N_REGIONS)
    ]
    ids = write_spec_only_learnwares(market, specs, semantics)
    return market, regions, ids


def test_user_from_one_region_finds_it_first(world):
    market, regions, ids = world
    rng = np.random.default_rng(1)
    trials, hits = 40, 0
    for trial in range(trials):
        truth = int(rng.integers(N_REGIONS))
        user = fit_rkme(regions[truth].sample(200, rng), k=K, gamma=GAMMA, seed=trial)
        result = search(market, user, k=3, mixture=False)
        hits += result.single[0]["id"] == ids[truth]
        assert result.considered == N_REGIONS
        assert 0 <= result.single[-1]["score"] <= result.single[0]["score"] <= 1
    assert hits / trials >= 0.95


def test_user_from_two_regions_gets_both_in_mixture(world):
    market, regions, ids = world
    rng = np.random.default_rng(2)
    for a, b in [(0, 5), (3, 11), (7, 20)]:
        x, _, _ = sample_mixture([regions[a], regions[b]], [0.6, 0.4], 1000, rng)
        result = search(market, fit_rkme(x, k=K, gamma=GAMMA), k=4)
        weights = {m["id"]: m["weight"] for m in result.mixture["learnwares"]}
        assert ids[a] in weights and ids[b] in weights, weights
        assert abs(weights[ids[a]] - 0.6) <= 0.15 and abs(weights[ids[b]] - 0.4) <= 0.15
        assert result.mixture["mmd2"] < result.single[0]["mmd2"]
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-6)


def test_semantic_filters_restrict_statistical_search(world):
    market, regions, ids = world
    rng = np.random.default_rng(3)
    user = fit_rkme(regions[0].sample(300, rng), k=K, gamma=GAMMA)
    # region 0 is a Classification learnware: filtering to Regression must exclude it
    result = search(market, user, parse_tag_filters(["Task=Regression"], market.vocabulary), k=3)
    assert ids[0] not in {r["id"] for r in result.single}
    assert all(r["task"] == "Regression" for r in result.single)
    assert result.considered == sum(1 for i in range(N_REGIONS) if i % 3)


def test_tag_keys_intersect_and_class_keys_must_match(world):
    market, _, _ = world
    found = search(market, None, parse_tag_filters(["Scenario=Health,Traffic"], market.vocabulary), k=100)
    assert found.considered == N_REGIONS // 2
    found = search(market, None, parse_tag_filters(["Task=Classification", "Scenario=Business"], market.vocabulary), k=100)
    assert {r["task"] for r in found.single} == {"Classification"}
    assert found.considered == sum(1 for i in range(N_REGIONS) if i % 3 == 0 and i % 4 == 0)


def test_name_search_exact_then_fuzzy(world):
    market, _, ids = world
    exact = search(market, None, {}, "region 13 sales", k=10)
    assert [r["id"] for r in exact.single] == [ids[13]]
    fuzzy = search(market, None, {}, "clinc modl", k=50)  # typos: no substring match
    assert fuzzy.single and all("clinic" in r["name"] for r in fuzzy.single[:5])
    assert not search(market, None, {}, "zzzzqqqq", k=5).single


def test_bad_tag_is_a_clear_error(world):
    market, _, _ = world
    from learnware_cli.errors import InputError

    with pytest.raises(InputError, match="Task value 'Regresion'"):
        parse_tag_filters(["Task=Regresion"], market.vocabulary)
    with pytest.raises(InputError, match="unknown tag key"):
        parse_tag_filters(["Colour=red"], market.vocabulary)


def test_cache_follows_the_index(world, tmp_path):
    market, regions, _ = world
    rng = np.random.default_rng(4)
    user = fit_rkme(regions[2].sample(200, rng), k=K, gamma=GAMMA)
    before = search(market, user, k=1).single[0]
    # a new, better-matching learnware appears: the stale cache must be rebuilt
    better = fit_rkme(regions[2].sample(5000, rng), k=K, gamma=GAMMA)
    [new_id] = write_spec_only_learnwares(market, [better], [spec_only_semantic("newcomer", DIM)])
    try:
        result = search(market, user, k=2)
        assert {r["id"] for r in result.single} == {new_id, before["id"]}
    finally:
        market.remove(new_id)
    assert search(market, user, k=1).single[0]["id"] == before["id"]


def test_search_cli_by_data_writes_reuse_input(world, tmp_path, lw_json):
    market, regions, ids = world
    rng = np.random.default_rng(5)
    x, _, _ = sample_mixture([regions[4], regions[9]], [0.5, 0.5], 600, rng)
    data = tmp_path / "user.csv"
    np.savetxt(data, x, delimiter=",")
    code, doc = lw_json("search", "--market", market.root, "--data", data, "-k", "3")
    assert code == 0 and doc["mode"] == "statistical"
    assert {m["id"] for m in doc["mixture"]["learnwares"]} >= {ids[4], ids[9]}
    assert {"id", "version", "name", "mmd2", "score"} <= set(doc["single"][0])
    code, doc = lw_json("search", "--market", market.root, "--data", data, "--spec", data)
    assert code == 2 and "not both" in doc["message"]


def test_spec_with_other_gamma_is_refused(world, tmp_path, lw_json):
    market, regions, _ = world
    spec = fit_rkme(regions[0].sample(100, np.random.default_rng(0)), k=10, gamma=0.5)
    spec.save(tmp_path / "s.json")
    code, doc = lw_json("search", "--market", market.root, "--spec", tmp_path / "s.json")
    assert code == 2 and "gamma 0.5" in doc["message"]


def _random_semantic(rng) -> dict:
    """A semantic spec with the shapes stored specs take: Values as a list (maybe empty, maybe with ""), a
    string (maybe ""), null or absent; Type declared, other or absent."""
    semantic = {}
    for key in ("Task", "Scenario", "Data type"):
        shape = rng.integers(7)
        if shape == 6:
            continue
        values = {0: [], 1: ["a"], 2: ["a", "b"], 3: ["b", ""], 4: "a", 5: ""}.get(int(shape))
        if rng.random() < 0.1:
            values = None
        semantic[key] = {"Values": values}
        kind = rng.integers(3)
        if kind < 2:
            semantic[key]["Type"] = ("Class", "Tag")[int(kind)]
    return semantic


def test_the_catalog_tag_filter_is_the_python_rule(tmp_path):
    """catalog.tag_condition (SQLite, what a filtered search runs) keeps exactly what semantic.tags_match keeps,
    for every shape of Values, Class and Tag keys, with and without a vocabulary that declares the kind."""
    import json
    import sqlite3

    from learnware_cli.market.catalog import tag_condition
    from learnware_cli.search.semantic import tags_match

    rng = np.random.default_rng(0)
    semantics = [_random_semantic(rng) for _ in range(400)]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE learnwares (id INTEGER, semantic TEXT)")
    conn.executemany("INSERT INTO learnwares VALUES (?, ?)", [(i, json.dumps(s)) for i, s in enumerate(semantics)])
    vocabularies = [{}, {"Task": {"type": "Class"}, "Scenario": {"type": "Tag"}, "Data type": {"type": "Class"}}]
    queries = [{"Task": ["a"]}, {"Task": ["a", "b"]}, {"Scenario": ["b"]}, {"Scenario": ["a"], "Task": ["a", "b", ""]},
               {"Data type": ["a"], "Scenario": ["a", "b"]}, {"Task": []}, {"Missing": ["a"]}]
    checked = 0
    for vocabulary in vocabularies:
        for query in queries:
            condition, params = tag_condition(query, vocabulary)
            kept = {row[0] for row in conn.execute(f"SELECT id FROM learnwares WHERE {condition}", params)}
            expected = {i for i, s in enumerate(semantics) if tags_match(s, query, vocabulary)}
            assert kept == expected, (query, vocabulary, sorted(kept ^ expected)[:5])
            checked += len(expected)
    assert checked > 500  # the queries keep a fair share: the test compares real selections


def test_filtered_and_text_searches_never_build_the_whole_index(world, monkeypatch, lw_json):
    """Tag filters and text run in the catalog: same answers as the Python rule over every entry, without
    Market.read_index (at 10^6 learnwares building it takes over a minute and gigabytes); `lw list` too."""
    from learnware_cli.search.semantic import semantic_search

    market, regions, _ = world
    entries = list(market.read_index()["learnwares"].values())
    user = fit_rkme(regions[2].sample(300, np.random.default_rng(4)), k=K, gamma=GAMMA)

    def everything(*args, **kwargs):
        raise AssertionError("read the whole index")

    monkeypatch.setattr(Market, "read_index", everything)
    for tags, text in [(["Scenario=Health,Traffic"], None), (["Task=Classification", "Scenario=Business"], None), ([], "region 13 sales"), ([], "clinc modl"), (["Task=Regression"], "sales")]:
        query = parse_tag_filters(tags, market.vocabulary)
        expected = [(e["id"], round(s, 4)) for e, s in semantic_search(entries, query, text, market.vocabulary)]
        found = search(market, None, query, text, k=100)
        assert [(r["id"], r["score"]) for r in found.single] == expected and found.considered == len(expected)
        ranked = search(market, user, query, text, k=3)
        assert ranked.considered == len(expected) and {r["id"] for r in ranked.single} <= {i for i, _ in expected}
        options = [a for t in tags for a in ("--tag", t)] + (["--name", text] if text else [])
        code, listed = lw_json("list", "--market", market.root, "--limit", "4", *options)
        assert code == 0 and listed["count"] == len(expected) and [r["id"] for r in listed["learnwares"]] == [i for i, _ in expected[:4]]
