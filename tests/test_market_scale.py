"""The index a market keeps for scale: a submit appends (its own catalog rows and search segment, nothing
existing rewritten), small segments are merged without changing any answer, superseded and removed versions
drop out of searches, and the two-stage (sketch, then exact) search finds what the exact search finds."""

from __future__ import annotations

import numpy as np
import pytest

from learnware_cli.experiment.synthetic import spec_only_semantic, write_spec_only_learnwares
from learnware_cli.market import segments as seg
from learnware_cli.market.store import Market
from learnware_cli.rkme.spec import RKMESpec
from learnware_cli.search import engine
from learnware_cli.search.engine import search

GAMMA = 0.1
D = 6


def _specs(m: int, rng, k: int = 12, clusters: int = 0) -> list[RKMESpec]:
    """m specs; with clusters > 0 they are mixtures of a few shared clusters (close to each other: a hard market)."""
    specs = []
    centers = rng.normal(size=(max(clusters, 1), D)) * 2
    for _ in range(m):
        if clusters:
            weights = rng.dirichlet(np.full(clusters, 0.5))
            z = centers[rng.choice(clusters, size=k, p=weights)] + rng.normal(size=(k, D)) * 0.7
        else:
            z = rng.normal(size=D) * 3 + rng.normal(size=(k, D))
        beta = rng.uniform(size=k)
        specs.append(RKMESpec(z=z, beta=beta / beta.sum(), gamma=GAMMA, num_points=100))
    return specs


def _fill(market: Market, specs: list, chunk: int = 5000) -> list[str]:
    return write_spec_only_learnwares(market, specs, [spec_only_semantic(f"lw {i}", D) for i in range(len(specs))], chunk=chunk)


def _segment_files(market: Market) -> dict:
    return {p.relative_to(market.root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in (market.root / seg.SEGMENTS_DIR).rglob("*.npy")}


def test_a_submit_appends_its_own_segment_and_rewrites_nothing(tmp_path):
    rng = np.random.default_rng(0)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    _fill(market, _specs(20, rng))
    before = _segment_files(market)
    catalog_before = (market.root / "index.sqlite").stat().st_size
    _fill(market, _specs(1, rng))
    after = _segment_files(market)
    assert all(after[path] == stamp for path, stamp in before.items()), "an existing segment file was rewritten"
    assert len(after) == len(before) + 6  # one new segment: ids, versions, zs, betas, selfs, sketch
    assert (market.root / "index.sqlite").stat().st_size - catalog_before < 64 * 1024


def test_small_segments_are_merged_and_no_answer_changes(tmp_path):
    rng = np.random.default_rng(1)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    specs = _specs(40, rng)
    for spec in specs:  # forty single submits: forty one-row segments, merged as they come
        _fill(market, [spec])
    names = market.island_view(seg.island_name("table", D)).segments
    assert len(names) < 2 * seg.MERGE_FANOUT
    users = _specs(5, np.random.default_rng(2))
    market.remove("00000003")
    before = [[(r["id"], r["mmd2"]) for r in search(market, u, k=5, mixture=False).single] for u in users]
    market.compact(seg.island_name("table", D), everything=True)
    view = market.island_view(seg.island_name("table", D))
    assert len(view.segments) == 1 and view.segments[0].rows == 39  # the removed row is gone from the merged segment
    after = [[(r["id"], r["mmd2"]) for r in search(market, u, k=5, mixture=False).single] for u in users]
    assert [[i for i, _ in row] for row in after] == [[i for i, _ in row] for row in before]
    assert np.allclose([m for row in after for _, m in row], [m for row in before for _, m in row], rtol=1e-9, atol=1e-12)
    assert all("00000003" not in [i for i, _ in row] for row in after)


def test_superseded_and_removed_versions_leave_the_search_and_the_previous_latest_comes_back(tmp_path):
    from learnware_cli.market.store import NewVersion

    rng = np.random.default_rng(3)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    first, replacement, other = _specs(3, rng)
    _fill(market, [first, other])
    (ident,) = [r["id"] for r in search(market, first, k=1, mixture=False).single]
    assert ident == "00000001"
    replacement.save(tmp_path / "r.json")
    semantic = spec_only_semantic("renamed", D)
    placeholder = market.version_dir("00000001", 1) / "package.zip"
    market.add_versions([NewVersion({"package.zip": placeholder, "rkme.json": tmp_path / "r.json"}, semantic, {"input_dim": D, "output_dim": 1}, update_id="00000001")])
    found = search(market, first, k=2, mixture=False).single
    assert [(r["id"], r["version"]) for r in found][:1] != [("00000001", 1)]  # v1 no longer counts
    assert ("00000001", 2) in {(r["id"], r["version"]) for r in search(market, replacement, k=1, mixture=False).single}
    every = search(market, first, k=3, mixture=False, all_versions=True).single
    assert ("00000001", 1) == (every[0]["id"], every[0]["version"])  # --all-versions still finds it
    market.remove("00000001", 2)
    entry = market.entry("00000001")
    assert entry["name"] == "lw 0" and [r["version"] for r in entry["versions"]] == [1]  # the previous latest, name and all
    assert (search(market, first, k=1, mixture=False).single[0]["id"], search(market, first, k=1, mixture=False).single[0]["version"]) == ("00000001", 1)


@pytest.mark.parametrize("clusters", [0, 4])
def test_two_stage_search_finds_what_exact_search_finds(tmp_path, monkeypatch, clusters):
    """recall@5 of sketch-then-exact against exact MMD^2 over 40 users, on a spread and a crowded market."""
    rng = np.random.default_rng(4 + clusters)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    _fill(market, _specs(3000, rng, clusters=clusters), chunk=1000)
    users = _specs(40, np.random.default_rng(100 + clusters), clusters=clusters)
    exact = [[r["id"] for r in search(market, u, k=5, mixture=False, exact=True).single] for u in users]
    monkeypatch.setattr(engine, "TWO_STAGE_FROM", 1000)
    results = [search(market, u, k=5, mixture=False) for u in users]
    assert all(r.user["stage"]["method"] == "sketch" for r in results)
    staged = [[r["id"] for r in res.single] for res in results]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact, staged)])
    assert recall >= 0.99, recall
    # the reported MMD^2 are the exact ones
    one = search(market, users[0], k=5, mixture=False, exact=True).single
    assert np.allclose([r["mmd2"] for r in results[0].single if r["id"] in {o["id"] for o in one}], [o["mmd2"] for o in one if o["id"] in set(staged[0])], rtol=1e-6, atol=1e-9)


def test_lw_list_and_show_read_only_what_they_print(tmp_path, lw_json, monkeypatch):
    rng = np.random.default_rng(5)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    _fill(market, _specs(30, rng))

    def everything(*args, **kwargs):
        raise AssertionError("read the whole index")

    monkeypatch.setattr(Market, "read_index", everything)
    code, doc = lw_json("list", "--market", market.root, "--limit", "5")
    assert code == 0 and doc["count"] == 30 and [r["id"] for r in doc["learnwares"]] == [f"{i:08d}" for i in range(1, 6)]
    users = _specs(1, rng)
    users[0].save(tmp_path / "u.json")
    code, doc = lw_json("search", "--market", market.root, "--spec", tmp_path / "u.json", "-k", "3")
    assert code == 0 and len(doc["single"]) == 3, doc


def test_an_island_too_big_to_stack_is_ranked_by_streaming_its_segments(tmp_path, monkeypatch):
    """--exact on an island above DENSE_EXACT_MAX streams the memory-mapped segments over the devices
    (rkme.sharded) instead of stacking them: the same ranking as the in-memory stack."""
    rng = np.random.default_rng(6)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    _fill(market, _specs(600, rng), chunk=250)
    market.remove("00000007")
    users = _specs(6, np.random.default_rng(7))
    monkeypatch.setattr(engine, "NUMPY_EXACT_MAX", 0)  # the device paths, not NumPy's
    stacked = [[(r["id"], r["mmd2"]) for r in search(market, u, k=5, exact=True).single] for u in users]
    monkeypatch.setattr(engine, "DENSE_EXACT_MAX", 100)
    streamed = [[(r["id"], r["mmd2"]) for r in search(market, u, k=5, exact=True).single] for u in users]
    assert [[i for i, _ in row] for row in streamed] == [[i for i, _ in row] for row in stacked]
    assert np.allclose([m for row in streamed for _, m in row], [m for row in stacked for _, m in row], rtol=1e-9)


@pytest.mark.slow
def test_the_scale_bench_runs_quick(tmp_path):
    """`make bench --only scale --quick`: a 10^4 market built by the bulk path, every figure of the table printed,
    and the two-stage search's recall@5 against the exact one at least 0.99."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, LW_BENCH_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "learnware_cli.bench", "--only", "scale", "--quick", "--json"],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["case"]: row for row in json.loads(done.stdout)["rows"]}
    for case in ("`lw --help`", "build 10000 learnwares (bulk path)", "cold `lw search`, 10000", "cold `lw list --limit 20`, 10000",
                 "warm search, 10000", "recall@5 two-stage vs exact, 10000", "add 1 000 learnwares to 10000", "add 1 learnware to 10000"):
        assert case in rows, case
    assert rows["recall@5 two-stage vs exact, 10000"]["seconds"] >= 0.99


@pytest.mark.slow
def test_the_scale_bench_measures_a_market_built_before(tmp_path):
    """LW_BENCH_SCALE_MARKET=PATH: the bench measures that market (an hour to build at 10^6) instead of building
    one, reports its size as it is, and leaves it in place with the learnwares it added."""
    import json
    import os
    import subprocess
    import sys

    from learnware_cli.bench_scale import build_market

    market, _ = build_market(tmp_path / "built", 3500)
    env = dict(os.environ, LW_BENCH_DIR=str(tmp_path), LW_BENCH_SCALE_MARKET=str(market.root))
    done = subprocess.run([sys.executable, "-m", "learnware_cli.bench", "--only", "scale", "--json"], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["case"]: row for row in json.loads(done.stdout)["rows"]}
    assert "built before 3500 learnwares (bulk path)" in rows and "build 10000 learnwares (bulk path)" not in rows
    assert rows["recall@5 two-stage vs exact, 3500"]["seconds"] >= 0.99
    assert Market.open(market.root).count() == 3500 + 1000 + 1 + 3  # the bulk adds, then three real submits


@pytest.fixture
def indexed(monkeypatch):
    """Sketch indexes on small segments, and a refine budget well below a segment's rows, so the quantiser decides."""
    monkeypatch.setattr(seg, "SKETCH_INDEX_FROM", 700)  # FAISS wants >= 624 rows to train 16 centroids
    monkeypatch.setattr(engine, "SKETCH_REFINE", 150)
    monkeypatch.setattr(engine, "TWO_STAGE_FROM", 1000)


@pytest.mark.parametrize("clusters", [0, 4])
def test_the_sketch_index_keeps_recall(tmp_path, indexed, clusters):
    """Each big segment's product quantiser picks which sketches are compared: recall@5 against the exact search
    stays >= 0.99 over 40 users while the search reads 150 of each 1 000 segment rows' sketches."""
    rng = np.random.default_rng(40 + clusters)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    specs = _specs(3000, rng, clusters=clusters)
    _fill(market, specs, chunk=1000)
    view = market.island_view(seg.island_name("table", D))
    assert [s.sketch_index is not None for s in view.segments] == [True] * 3
    users = _specs(20, np.random.default_rng(200 + clusters), clusters=clusters)  # anywhere
    near = [specs[i] for i in rng.integers(0, 3000, size=20)]  # and beside a learnware
    users += [RKMESpec(z=np.asarray(s.z) + rng.normal(size=np.shape(s.z)) * 0.3, beta=s.beta, gamma=GAMMA) for s in near]
    exact = [[r["id"] for r in search(market, u, k=5, mixture=False, exact=True).single] for u in users]
    staged = [[r["id"] for r in search(market, u, k=5, mixture=False).single] for u in users]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact, staged)])
    assert recall >= 0.99, recall


def test_removed_rows_of_an_indexed_segment_never_come_back_and_a_merge_rebuilds_the_index(tmp_path, indexed):
    rng = np.random.default_rng(7)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    specs = _specs(1600, rng)
    _fill(market, specs, chunk=800)
    target = specs[10]  # learnware 00000011: the user is its twin
    assert search(market, target, k=1, mixture=False).single[0]["id"] == "00000011"
    market.remove("00000011")
    found = [r["id"] for r in search(market, target, k=5, mixture=False).single]
    assert "00000011" not in found and found == [r["id"] for r in search(market, target, k=5, mixture=False, exact=True).single]
    island = seg.island_name("table", D)
    market.compact(island, everything=True)
    (merged,) = market.island_view(island).segments
    assert merged.rows == 1599 and merged.sketch_index is not None
    assert [r["id"] for r in search(market, target, k=5, mixture=False).single] == found


def test_a_filtered_search_of_an_indexed_island_ranks_only_what_the_filter_keeps(tmp_path, indexed, monkeypatch):
    """A tag filter keeping a seventh of the island (its sketches compared directly) or six sevenths (the index's
    nearest, then filtered): only kept learnwares, ranked as the exact search ranks them."""
    monkeypatch.setattr(engine, "TWO_STAGE_FROM", 100)
    rng = np.random.default_rng(8)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    specs = _specs(1600, rng)
    semantics = [spec_only_semantic(f"lw {i}", D, scenario="Business" if i % 7 == 0 else "Others") for i in range(len(specs))]
    write_spec_only_learnwares(market, specs, semantics, chunk=800)
    for scenario, keeps in (("Business", lambda i: i % 7 == 0), ("Others", lambda i: i % 7 != 0)):
        allowed = {f"{i + 1:08d}" for i in range(len(specs)) if keeps(i)}
        for user in [specs[0], specs[3], specs[14]] + _specs(3, rng):
            staged = search(market, user, tags={"Scenario": [scenario]}, k=5, mixture=False)
            exact = search(market, user, tags={"Scenario": [scenario]}, k=5, mixture=False, exact=True)
            assert staged.user["stage"]["method"] == "sketch"
            assert {r["id"] for r in staged.single} <= allowed
            assert [r["id"] for r in staged.single] == [r["id"] for r in exact.single]


def test_a_submit_reads_only_what_it_writes_and_still_finds_duplicates(tmp_path, lw_json, monkeypatch):
    """`lw submit` never materialises the index (at 10^6 that is ~50 s): the byte-identical warning is an
    index lookup; a catalog from before the checksum index gets it from its next write."""
    import sqlite3

    import badpackages as bp

    market = Market.create(tmp_path / "m", gamma=bp.GAMMA, k=50)
    _fill(market, _specs(30, np.random.default_rng(9)))
    with sqlite3.connect(market.root / "index.sqlite") as conn:
        conn.execute("DROP INDEX versions_by_checksum")
    good = bp.good_numpy_zip(tmp_path / "good")

    def everything(*args, **kwargs):
        raise AssertionError("read the whole index")

    monkeypatch.setattr(Market, "read_index", everything)
    code, first = lw_json("submit", good, "--market", market.root)
    assert code == 0 and first["warnings"] == [], first
    code, again = lw_json("submit", good, "--market", market.root)
    (warning,) = again["warnings"]
    assert code == 0 and "00000031 v1" in warning and "00000032 v1" in warning
    with sqlite3.connect(market.root / "index.sqlite") as conn:
        plan = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN SELECT id FROM versions WHERE json_extract(record, '$.checksum') = 'x'"))
    assert "versions_by_checksum" in plan, plan


def _wide_specs(m: int, rng, dim: int = 20, k: int = 50) -> list[RKMESpec]:
    """m specs like the scale bench's (d = 20, unrelated centres): <u,S> ~ 0 between almost any two."""
    specs = []
    for _ in range(m):
        beta = rng.uniform(size=k)
        specs.append(RKMESpec(z=rng.normal(size=dim) * 3 + rng.normal(size=(k, dim)), beta=beta / beta.sum(), gamma=GAMMA, num_points=100))
    return specs


def _shifted(spec: RKMESpec, cross: float) -> RKMESpec:
    """spec's points moved together along one axis so far that <spec, moved> = cross (bisection on the shift)."""
    from learnware_cli.search.exact_numpy import inner_product

    z = np.asarray(spec.z)
    low, high = 0.0, 50.0
    for _ in range(60):
        shift = (low + high) / 2
        moved = z + np.eye(z.shape[1])[0] * shift
        low, high = (shift, high) if inner_product(z, spec.beta, moved, spec.beta, GAMMA) > cross else (low, shift)
    return RKMESpec(z=z + np.eye(z.shape[1])[0] * high, beta=spec.beta, gamma=GAMMA, num_points=100)


def test_a_learnware_the_sketch_cannot_see_reaches_the_top_five_through_the_self_pool(tmp_path, monkeypatch):
    """A learnware whose data barely touch the user's (<u,S> of a few 1e-3, about the sketch's noise on s . u) wins on
    its small <S,S>, though its <S,S> is not among the very smallest: in a market of 10^6 such learnwares are what the
    sketch list can miss. With the sketch list off and 5 self candidates, the self pool's exact <u,S> finds it; a
    list of the plain 5 smallest <S,S> (the earlier rule) does not."""
    from learnware_cli.search import sketch
    from learnware_cli.search.exact_numpy import inner_product, mmd2_to_specs

    rng = np.random.default_rng(11)
    specs = _wide_specs(1000, rng)
    selfs = np.array([inner_product(s.z, s.beta, s.z, s.beta, GAMMA) for s in specs])
    user = specs[int(np.argsort(selfs)[30])]  # <u,u> = the 31st smallest <S,S>
    specs = [s for s in specs if s is not user]
    mmd2, _ = mmd2_to_specs(user.z, user.beta, np.stack([s.z for s in specs]), np.stack([s.beta for s in specs]), GAMMA)
    own = inner_product(user.z, user.beta, user.z, user.beta, GAMMA)
    # the user's points, shifted: <S,S> = <u,u>, and <u,S> chosen so that MMD^2 = 2 <u,u> - 2 <u,S> is the exact 3rd
    cross = own - np.sort(mmd2)[2] / 2 + 1e-5
    assert 0 < cross < 5e-3
    specs.append(_shifted(user, cross))
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=50)
    write_spec_only_learnwares(market, specs, [spec_only_semantic(f"lw {i}", 20) for i in range(len(specs))])
    planted_id = f"{len(specs):08d}"
    monkeypatch.setattr(engine, "TWO_STAGE_FROM", 0)
    monkeypatch.setattr(sketch, "DEFAULT_CANDIDATES", 0)
    monkeypatch.setattr(sketch, "DEFAULT_SELF_CANDIDATES", 5)
    exact = [r["id"] for r in search(market, user, k=5, mixture=False, exact=True).single]
    assert exact[2] == planted_id

    monkeypatch.setattr(engine, "SELF_POOL", 200)
    assert [r["id"] for r in search(market, user, k=5, mixture=False).single] == exact
    monkeypatch.setattr(engine, "SELF_POOL", 5)  # the pool is the list: the 5 smallest <S,S>, as before
    engine._SELF_POOLS.clear()
    assert planted_id not in [r["id"] for r in search(market, user, k=5, mixture=False).single]


def test_gather_reads_any_positions_in_any_order_across_segments(tmp_path):
    """IslandView.gather (one sorted read per segment) returns the rows dense() has at those positions, in the
    order asked, repeats included, with removed rows skipped by the positions."""
    rng = np.random.default_rng(12)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    for size in (30, 7, 12):
        _fill(market, _specs(size, rng, k=int(rng.integers(5, 13))))
    market.remove("00000004")
    view = market.island_view(seg.island_name("table", D))
    assert len(view.segments) >= 2
    zs, betas, selfs = view.dense()
    positions = rng.permutation(view.count)[:25].tolist() + [3, 3, view.count - 1]
    got_z, got_beta, got_selfs = view.gather(positions)
    np.testing.assert_array_equal(got_z, zs[positions])
    np.testing.assert_array_equal(got_beta, betas[positions])
    np.testing.assert_array_equal(got_selfs, selfs[positions])


def test_a_segment_file_changed_under_a_process_is_mapped_again_not_read_stale(tmp_path):
    """A process keeps its segment mappings between searches; a file truncated in place (same inode, shorter: what
    a damaged disk or a hostile hand leaves) is noticed: one clear error, not a crash on a mapping past the end."""
    from learnware_cli.errors import MarketError

    rng = np.random.default_rng(13)
    market = Market.create(tmp_path / "m", gamma=GAMMA, k=12)
    _fill(market, _specs(40, rng))
    user = _specs(1, rng)[0]
    first = search(market, user, k=3, mixture=False)
    (folder,) = [p for p in (market.root / seg.SEGMENTS_DIR).iterdir()]
    zs = folder / "zs.npy"
    with open(zs, "r+b") as fh:
        fh.truncate(zs.stat().st_size // 2)
    with pytest.raises(MarketError, match="unreadable"):
        search(market, user, k=3, mixture=False)
    assert first.single


def test_read_rows_reads_what_indexing_gives_for_any_rows(tmp_path):
    """segments.read_rows (positioned reads of a .npy file, one per run of adjacent rows) = indexing the array:
    scattered, adjacent, repeated and unsorted rows, 2-D and 3-D, and an in-memory array is simply indexed."""
    rng = np.random.default_rng(14)
    for shape in [(500, 7), (300, 4, 3)]:
        values = rng.normal(size=shape).astype(np.float32)
        np.save(tmp_path / "a.npy", values)
        mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
        for rows in [np.sort(rng.choice(shape[0], 40, replace=False)), np.arange(10, 30), np.array([5, 5, 6, 2, shape[0] - 1]), np.array([], dtype=int)]:
            np.testing.assert_array_equal(seg.read_rows(mapped, rows), values[rows])
            np.testing.assert_array_equal(seg.read_rows(values, rows), values[rows])
        with open(tmp_path / "a.npy", "r+b") as fh:  # a file shorter than its header says: an error, not garbage
            fh.truncate((tmp_path / "a.npy").stat().st_size - 8)
        with pytest.raises(OSError, match="shorter"):
            seg.read_rows(mapped, np.array([shape[0] - 1]))
