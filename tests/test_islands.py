"""Specification islands: learnwares comparable through shared market features, and the groups that connect them."""

from __future__ import annotations

import json
import random

import pytest

import badpackages as bp
from learnware_cli.experiment.synthetic import spec_only_semantic
from learnware_cli.market.features import FeatureVocabulary, MarketFeature
from learnware_cli.market.islands import compute_islands
from learnware_cli.market.store import Market


def entry(number: int, descriptions: list, task: str = "Regression", data: str = "Table", input_dim=None) -> dict:
    """An index entry whose columns carry these descriptions (None: an undescribed column)."""
    semantic = spec_only_semantic(f"m{number}", len(descriptions), task, output_dim=1 if task == "Regression" else 2)
    semantic["Data"]["Values"] = [data]
    semantic["Input"]["Description"] = {str(c): text for c, text in enumerate(descriptions) if text is not None}
    dim = len(descriptions) if input_dim is None else input_dim
    return {"id": f"{number:08d}", "name": f"m{number}", "semantic": semantic, "versions": [{"version": 1, "input_dim": dim, "output_dim": 1}]}


A = ["alpha", "bravo", "charlie"]
B = ["charlie", "delta", "echo"]
C = ["foxtrot", "golf"]
D = ["echo", "hotel"]


def features_of_groups(island) -> list:
    return [g.features for g in island.groups]


def test_two_column_sets_sharing_a_feature_are_one_island_and_a_third_stays_apart():
    found = compute_islands([entry(1, A), entry(2, B), entry(3, C), entry(4, A)])
    assert [i.id for i in found.islands] == ["island-1", "island-2"]
    joined, apart = found.islands
    assert joined.learnwares == ["00000001", "00000002", "00000004"] and apart.learnwares == ["00000003"]
    assert joined.features == sorted(set(A) | set(B)) and apart.features == sorted(C)
    # a group per column set, the largest first; learnwares 1 and 4 read the same columns
    assert [g.learnwares for g in joined.groups] == [["00000001", "00000004"], ["00000002"]]
    assert features_of_groups(joined) == [sorted(A), sorted(B)]
    assert joined.connectors == [] and apart.connectors == []  # two groups: nothing in between
    assert found.of("00000002") is joined and found.of("00000003") is apart and found.of("99999999") is None
    assert (joined.data_type, joined.task, joined.legacy) == ("Table", "Regression", False)


def test_a_group_between_two_others_is_their_connector():
    found = compute_islands([entry(1, A), entry(2, B), entry(3, D)])
    (island,) = found.islands
    (connector,) = island.connectors
    assert island.groups[connector.group].features == sorted(B) and connector.learnwares == ["00000002"]
    assert sorted(p.via for p in connector.joins) == [["charlie"], ["echo"]]
    assert sorted(island.groups[p.examples[0]].learnwares[0] for p in connector.joins) == ["00000001", "00000003"]
    assert all((p.groups, p.learnwares) == (1, 1) for p in connector.joins)
    from learnware_cli.cli.islands_cmd import connector_lines

    (line,) = connector_lines(found)
    assert line.startswith("island-1: learnware 00000002 (columns charlie, delta, echo) joins {learnware ")
    assert "00000001 (columns alpha, bravo, charlie)" in line and "00000003 (columns echo, hotel)" in line


def test_a_triangle_has_no_connector_and_a_star_has_one_with_a_piece_per_arm():
    triangle = compute_islands([entry(1, A), entry(2, B), entry(3, ["alpha", "echo"])])
    assert len(triangle.islands) == 1 and triangle.islands[0].connectors == []
    hub = ["k0", "k1", "k2", "k3"]
    star = compute_islands([entry(1, hub)] + [entry(2 + i, [hub[i], f"leaf{i}"]) for i in range(4)] + [entry(9, [hub[0], "z"])])
    (island,) = star.islands
    (connector,) = island.connectors
    assert connector.learnwares == ["00000001"]
    pieces = sorted((p.via, p.groups, p.learnwares) for p in connector.joins)
    assert pieces == [(["k0"], 2, 2), (["k1"], 1, 1), (["k2"], 1, 1), (["k3"], 1, 1)]


def _word(number: int) -> str:
    """A name no other number's is near (the vocabulary would join "own 10" and "own 100")."""
    import hashlib

    return "w" + hashlib.sha256(str(number).encode()).hexdigest()[:12]


def test_a_feature_read_by_many_groups_joins_them_without_connectors():
    found = compute_islands([entry(i, ["shared", _word(i)]) for i in range(1, 301)])
    (island,) = found.islands
    assert len(island.groups) == 300 and island.connectors == []


def test_different_tasks_or_data_types_on_the_same_columns_are_different_islands():
    found = compute_islands([entry(1, A), entry(2, A, task="Classification"), entry(3, B, task="Classification"), entry(4, A, data="Image")])
    by_kind = {(i.data_type, i.task): i.learnwares for i in found.islands}
    assert by_kind == {("Table", "Classification"): ["00000002", "00000003"], ("Table", "Regression"): ["00000001"], ("Image", "Regression"): ["00000004"]}


def test_undescribed_learnwares_are_grouped_by_input_dim_and_partly_described_ones_by_their_features():
    found = compute_islands([
        entry(1, [None, None, None]),
        entry(2, [None, None, None]),
        entry(3, [None, None, None, None]),
        entry(4, [None, None, None], task="Classification"),
        entry(5, A),
        entry(6, ["charlie", None]),  # partly described: joins 5 through charlie
        entry(7, [], input_dim=3),  # no Input columns at all: the dimension of its latest version
    ])
    legacy = {(i.task, i.input_dim): i.learnwares for i in found.islands if i.legacy}
    assert legacy == {("Regression", 3): ["00000001", "00000002", "00000007"], ("Regression", 4): ["00000003"], ("Classification", 3): ["00000004"]}
    described = found.of("00000006")
    assert not described.legacy and described.learnwares == ["00000005", "00000006"] and described.undescribed == {"00000006": 1}
    assert all(i.features == [] and i.connectors == [] and len(i.groups) == 1 for i in found.islands if i.legacy)
    assert found.islands[0].learnwares == ["00000001", "00000002", "00000007"]  # the largest island first


def test_island_ids_are_ordered_by_size_then_smallest_learnware_and_do_not_depend_on_input_order():
    entries = [entry(1, C), entry(2, ["india"]), entry(3, A), entry(4, B), entry(5, ["juliet"]), entry(6, ["india"])]
    expected = [["00000002", "00000006"], ["00000003", "00000004"], ["00000001"], ["00000005"]]  # ties: smallest id
    for seed in range(5):
        shuffled = entries[:]
        random.Random(seed).shuffle(shuffled)
        found = compute_islands(shuffled)
        assert [i.learnwares for i in found.islands] == expected
        assert [i.id for i in found.islands] == ["island-1", "island-2", "island-3", "island-4"]
    # a newcomer that starts a small island of its own leaves the others' ids alone
    grown = compute_islands(entries + [entry(7, ["kilo"])])
    assert [i.learnwares for i in grown.islands[:4]] == expected and grown.islands[4].id == "island-5"


def _brute_force(entries) -> dict:
    """{(task, connector group's features): sorted learnware counts of its pieces}, found by removing each group."""
    groups: dict = {}
    for e in entries:
        reads = frozenset(e["semantic"]["Input"]["Description"].values())
        groups.setdefault((e["semantic"]["Task"]["Values"][0], reads), []).append(e["id"])

    def component(start, allowed) -> set:
        seen, todo = {start}, [start]
        while todo:
            k = todo.pop()
            for other in allowed:
                if other not in seen and other[0] == k[0] and other[1] & k[1]:
                    seen.add(other)
                    todo.append(other)
        return seen

    cuts = {}
    for key in groups:
        left, sizes = component(key, groups) - {key}, []
        while left:
            part = component(next(iter(left)), left)
            left -= part
            sizes.append(sum(len(groups[k]) for k in part))
        if len(sizes) >= 2:
            cuts[key] = sorted(sizes)
    return cuts


@pytest.mark.parametrize("seed", range(40))
def test_connectors_match_removing_each_group_by_brute_force(seed):
    rng = random.Random(seed)
    pool = [f"w{i}" for i in range(rng.randint(4, 16))]
    entries = [
        entry(n, rng.sample(pool, rng.randint(1, 3)), task=rng.choice(["Regression", "Regression", "Classification"]))
        for n in range(1, rng.randint(3, 30))
    ]
    found = compute_islands(entries)
    got = {}
    for island in found.islands:
        for c in island.connectors:
            assert len(c.joins) >= 2
            assert sum(p.learnwares for p in c.joins) + len(c.learnwares) == len(island.learnwares)
            assert sum(p.groups for p in c.joins) + 1 == len(island.groups)
            got[(island.task, frozenset(c.features))] = sorted(p.learnwares for p in c.joins)
    assert got == _brute_force(entries)
    assert sorted(lw for i in found.islands for lw in i.learnwares) == sorted(e["id"] for e in entries)


def test_ten_thousand_learnwares_with_a_long_chain():
    """5 000 learnwares in one chain (deep for a recursive search) and 50 hubs of 100: 51 islands."""
    entries, columns = [], {}
    for k in range(5000):
        entries.append(entry(len(entries) + 1, ["x", "y"]))
        columns[entries[-1]["id"]] = [f"chain {k}", f"chain {k + 1}"]
    for hub in range(50):
        for k in range(100):
            entries.append(entry(len(entries) + 1, ["x", "y"]))
            columns[entries[-1]["id"]] = [f"hub {hub}", f"own {hub} {k}"]
    # the vocabulary is built directly: this measures the islands, not the fuzzy matching of 10 000 new names
    names = {f for ids in columns.values() for f in ids}
    vocabulary = FeatureVocabulary(features={f: MarketFeature(f) for f in names}, by_learnware=columns)
    found = compute_islands(entries, vocabulary)
    assert len(entries) == 10_000 and len(found.islands) == 51
    chain = found.islands[0]
    assert len(chain.learnwares) == 5000 and len(chain.connectors) == 4998
    assert all(len(i.learnwares) == 100 and i.connectors == [] for i in found.islands[1:])
    assert json.loads(json.dumps(found.to_dict()))["count"] == 51


def test_an_entry_the_vocabulary_does_not_know_is_read_against_it():
    from learnware_cli.market.features import build_vocabulary

    vocabulary = build_vocabulary([entry(1, A)])
    found = compute_islands([entry(1, A), entry(2, ["Charlie", "zulu"])], vocabulary)
    (island,) = found.islands
    assert island.learnwares == ["00000001", "00000002"] and island.undescribed == {"00000002": 1}


# -- the command ------------------------------------------------------------------------------------


def _package(tmp_path, number: int, descriptions: list, task: str = "Classification"):
    folder = tmp_path / f"p{number}"
    folder.mkdir()
    semantic = bp.semantic(task=task, output_dim=bp.N_CLASSES if task == "Classification" else 1)
    semantic["Input"]["Description"] = {str(i): text for i, text in enumerate(descriptions) if text is not None}
    return bp.write_zip(folder / "p.zip", bp.members(**{"semantic_specification.json": json.dumps(semantic)}))


@pytest.fixture
def chain_market(tmp_path):
    """Real packages: three in a chain (the middle one connects), one apart, one undescribed."""
    from learnware_cli.market.submit import submit_packages

    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    columns = [
        ["age", "height", "weight", "income", "city"],
        ["city", "rainfall", "wind", "sunshine", "humidity"],
        ["humidity", "pressure", "cloud cover", "visibility", "dew point"],
        ["voltage", "current", "power", "frequency", "phase"],
        [None] * bp.DIM,
    ]
    zips = [_package(tmp_path, n, c) for n, c in enumerate(columns)]
    assert all(o.accepted for o in submit_packages(market, zips))
    return market


def test_lw_islands_json_contract(chain_market, lw_json):
    code, doc = lw_json("islands", "--market", chain_market.root)
    assert code == 0 and doc["ok"] is True and doc["market"] == str(chain_market.root) and doc["count"] == 3, doc
    assert [i["id"] for i in doc["islands"]] == ["island-1", "island-2", "island-3"]
    first = doc["islands"][0]
    assert {"id", "data_type", "task", "legacy", "input_dim", "learnwares", "features", "groups", "connectors", "undescribed_columns"} <= set(first)
    assert first["learnwares"] == ["00000001", "00000002", "00000003"] and first["task"] == "Classification"
    (connector,) = first["connectors"]
    assert connector["learnwares"] == ["00000002"] and sorted(p["via"] for p in connector["joins"]) == [["city"], ["humidity"]]
    assert first["groups"][connector["group"]]["learnwares"] == ["00000002"]
    legacy = next(i for i in doc["islands"] if i["legacy"])
    assert legacy["learnwares"] == ["00000005"] and legacy["input_dim"] == bp.DIM and legacy["features"] == []
    assert doc["feature_names"]["cloud cover"] == "cloud cover"


def test_lw_islands_human_output(chain_market, lw):
    code, out, _ = lw("islands", "--market", chain_market.root)
    assert code == 0
    assert "island-1" in out and "island-3" in out and "Classification" in out and "…+" in out
    assert f"(undescribed, input dim {bp.DIM})" in out
    assert "island-1: learnware 00000002 (columns city, humidity, rainfall, …+2) joins {learnware 00000001 (columns age, city, height, …+2)} and {learnware 00000003" in out


def test_lw_islands_on_an_empty_market_and_help(tmp_path, lw, lw_json):
    market = Market.create(tmp_path / "m", gamma=bp.GAMMA, k=50)
    code, doc = lw_json("islands", "--market", market.root)
    assert code == 0 and doc["count"] == 0 and doc["islands"] == []
    code, out, _ = lw("islands", "--help")
    assert code == 0 and "lw islands --market ./market" in out


def test_lw_islands_reads_the_latest_version(tmp_path, lw_json):
    from learnware_cli.experiment.synthetic import write_spec_only_learnwares
    from learnware_cli.market.store import NewVersion
    from learnware_cli.rkme import RKMESpec
    import numpy as np

    market = Market.create(tmp_path / "m", gamma=0.1, k=5)
    spec = RKMESpec(z=np.zeros((4, 2)), beta=np.full(4, 0.25), gamma=0.1, num_points=50)
    semantics = [entry(1, ["north", "south"])["semantic"], entry(2, ["east", "west"])["semantic"]]
    write_spec_only_learnwares(market, [spec, spec], semantics)
    code, doc = lw_json("islands", "--market", market.root)
    assert code == 0 and doc["count"] == 2
    spec.save(tmp_path / "s.json")
    package = tmp_path / "package.zip"
    package.write_bytes((market.root / market.entries()[1]["versions"][-1]["path"] / "package.zip").read_bytes())
    update = NewVersion({"package.zip": package, "rkme.json": tmp_path / "s.json"}, entry(2, ["south", "west"])["semantic"], {"input_dim": 2, "output_dim": 1, "spec_only": True}, "00000002")
    market.add_versions([update])
    code, doc = lw_json("islands", "--market", market.root)
    assert code == 0 and doc["count"] == 1 and doc["islands"][0]["features"] == ["north", "south", "west"]
