"""A market on object storage (s3://), against a real S3 API server on 127.0.0.1.

The server is moto's standalone server (``moto[server]``): it speaks the S3 REST
API over HTTP, conditional writes (``If-None-Match: *``) included, runs in a
thread of this process on a free loopback port, needs no network and no account,
and installs from PyPI. lw talks to it through s3fs exactly as to AWS, with dummy
credentials from the environment and ``AWS_ENDPOINT_URL``.

One thing moto does not do as S3 does: two simultaneous conditional creates of
one key can both "succeed"; ``experiment.local_s3`` makes its PutObject atomic,
as S3's (and MinIO's, R2's) is, so these tests exercise lw's protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

import badpackages as bp  # noqa: E402
from learnware_cli.errors import EXIT_MARKET, EXIT_NOT_FOUND  # noqa: E402
from learnware_cli.market import objstore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free 127.0.0.1 port, for the whole session -> its endpoint URL (experiment.local_s3)."""
    from learnware_cli.experiment.local_s3 import local_s3

    with local_s3() as endpoint:
        yield endpoint


@pytest.fixture
def url(s3_server, tmp_path, monkeypatch):
    """A fresh bucket and market address; this test's replicas live under tmp_path."""
    import boto3

    bucket = f"lw-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    monkeypatch.setenv("LW_CACHE", str(tmp_path / "cache"))
    return f"s3://{bucket}/team/market"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("remote-corpus")
    return {"good": bp.good_numpy_zip(folder / "good"), "folder": folder}


def _keys(url: str, prefix: str = "") -> list[str]:
    store = objstore.FsspecStore(url)
    return store.list(prefix) if prefix else sorted(store.list("log/") + store.list("blobs/") + store.list("segments/") + store.list("snapshots/"))


def _assert_consistent(url: str, cache: Path) -> dict:
    """A fresh replica of the market: valid catalog, every latest version searchable, every file there and as recorded."""
    from learnware_cli.market.remote import Remote

    market = Remote(url, replica=cache).open()
    index = market.read_index(fresh=True)  # validates ids, versions, next_id
    ids = sorted(index["learnwares"])
    assert len(set(ids)) == len(ids)
    for entry in index["learnwares"].values():
        for record in entry["versions"]:
            folder = market.version_dir(entry["id"], record["version"])
            for name in ("package.zip", "semantic.json", "report.json"):
                assert (folder / name).is_file(), f"{entry['id']}@{record['version']}: no {name}"
            assert hashlib.sha256((folder / "package.zip").read_bytes()).hexdigest() == record["checksum"]
            if record.get("spec_file"):  # the spec is stored once, in the package
                assert not (folder / "rkme.json").exists()
            assert market.version_spec(entry["id"], record["version"]).island_key().dim == record["input_dim"]
    for island in market.islands():
        keys = set(zip(*(a.tolist() for a in market.island_view(island).keys())))
        for entry in index["learnwares"].values():
            assert (int(entry["id"]), entry["versions"][-1]["version"]) in keys
    return index


# ----------------------------------------------------------------------------- the commands


def test_cli_on_s3_init_submit_update_list_search_reuse_remove(url, corpus, lw_json, tmp_path):
    good = corpus["good"]
    code, doc = lw_json("init", url, "--gamma", bp.GAMMA, "--k", 50)
    assert code == 0 and doc["market"] == url and doc["K"] == 50
    assert lw_json("init", url)[0] == EXIT_MARKET  # never overwritten

    code, doc = lw_json("submit", good, good, "--market", url)
    assert code == 0, doc
    assert [a["id"] for a in doc["accepted"]] == ["00000001", "00000002"]
    code, doc = lw_json("submit", good, "--market", url, "--update", "1", "--notes", "v2")
    assert code == 0 and doc["results"][0]["id"] == "00000001" and doc["results"][0]["version"] == 2
    assert lw_json("submit", good, "--market", url, "--update", "99")[0] == EXIT_NOT_FOUND

    code, listing = lw_json("list", "--market", url)
    assert code == 0 and listing["count"] == 2
    code, shown = lw_json("show", "1@1", "--market", url)
    assert code == 0 and shown["package_verified"] and shown["version"]["version"] == 1
    code, versions = lw_json("versions", "00000001", "--market", url)
    assert [v["version"] for v in versions["versions"]] == [1, 2] and versions["versions"][1]["notes"] == "v2"

    x, _, _ = bp.data(60)
    import numpy as np

    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    code, found = lw_json("search", "--market", url, "--data", tmp_path / "x.csv", "--match", "island", "-k", 2)
    assert code == 0, found
    assert {r["id"] for r in found["single"]} == {"00000001", "00000002"}
    code, reused = lw_json("reuse", "--market", url, "--learnware", "00000002", "--data", tmp_path / "x.csv", "--out", tmp_path / "pred.csv")
    assert code == 0, reused
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 60

    assert lw_json("remove", "00000001@2", "--market", url)[0] == 0
    code, versions = lw_json("versions", "00000001", "--market", url)
    assert [v["version"] for v in versions["versions"]] == [1]
    assert lw_json("remove", "00000002", "--market", url)[0] == 0
    assert lw_json("show", "2", "--market", url)[0] == EXIT_NOT_FOUND
    code, found = lw_json("search", "--market", url, "--data", tmp_path / "x.csv", "--match", "island")
    assert code == 0 and [r["id"] for r in found["single"]] == ["00000001"]

    # another machine (another replica) sees the same market; reindex rebuilds the replica from the log
    index = _assert_consistent(url, tmp_path / "other-machine")
    assert list(index["learnwares"]) == ["00000001"]
    code, doc = lw_json("reindex", "--market", url, "--rebuild")
    assert code == 0 and doc["rebuilt"]["learnwares"] == 1 and doc["rebuilt"]["versions"] == 1


def test_repeated_search_when_nothing_changed_is_one_list_request(url, corpus, lw_json, tmp_path):
    import numpy as np

    assert lw_json("init", url, "--gamma", bp.GAMMA, "--k", 50)[0] == 0
    assert lw_json("submit", corpus["good"], "--market", url)[0] == 0
    x, _, _ = bp.data(40)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    assert lw_json("search", "--market", url, "--data", tmp_path / "x.csv", "--match", "island")[0] == 0
    for command in (["search", "--market", url, "--data", tmp_path / "x.csv", "--match", "island"], ["list", "--market", url]):
        objstore.REQUESTS.clear()
        assert lw_json(*command)[0] == 0
        assert dict(objstore.REQUESTS) == {"list": 1}, command[0]


def test_missing_market_and_unreachable_storage_are_one_line_errors(url, lw, monkeypatch):
    code, _, err = lw("list", "--market", url)
    assert code == EXIT_MARKET and "not a market" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, _, err = lw("list", "--market", url.replace("team", "other"))
    assert code == EXIT_MARKET and len(err.strip().splitlines()) == 1, err
    assert "lw-test-secret" not in err and "lw-test" not in err.replace(url.replace("team", "other"), "")  # no credentials in messages


# ----------------------------------------------------------------------------- the protocol


def test_conditional_create_race_has_one_winner(url):
    store = objstore.FsspecStore(url)
    for round_ in range(5):
        key = f"race/{round_:03d}"
        barrier = threading.Barrier(4)
        results = []

        def create(n):
            barrier.wait()
            results.append((n, store.put_if_absent(key, f"writer {n}".encode())))

        threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        winners = [n for n, won in results if won]
        assert len(winners) == 1
        assert store.get(key) == f"writer {winners[0]}".encode()


def test_two_writers_race_for_one_seq_and_the_loser_renumbers(url, corpus, tmp_path):
    from learnware_cli.market.remote import Remote

    Remote(url).create(gamma=bp.GAMMA, k=50)
    item = _checked_item(corpus, tmp_path)
    first, second = Remote(url, replica=tmp_path / "a"), Remote(url, replica=tmp_path / "b")
    market_a, market_b = first.open(), second.open()
    seen = []
    real_sync = second.sync

    def stale_once(market):  # B believes the log is where it was before A's commit
        if not seen:
            seen.append(True)
            return market.applied
        return real_sync(market)

    second.sync = stale_once
    (entry_a, _), = market_a.add_versions([item])
    objstore.REQUESTS.clear()
    (entry_b, _), = market_b.add_versions([item])
    assert entry_a["id"] == "00000001" and entry_b["id"] == "00000002"
    assert objstore.REQUESTS["put"] >= 2 + 1  # B's lost create, then its winning one
    records = [json.loads(objstore.FsspecStore(url).get(k)) for k in _keys(url, "log/")]
    assert [r["seq"] for r in records] == [1, 2] and [r["writer"] for r in records] == [first.writer, second.writer]
    _assert_consistent(url, tmp_path / "check")


def test_snapshot_lets_a_new_reader_skip_the_log(url, corpus, tmp_path):
    from learnware_cli.market.remote import Remote

    Remote(url).create(gamma=bp.GAMMA, k=50)
    item = _checked_item(corpus, tmp_path)
    writer = Remote(url, replica=tmp_path / "w")
    writer.snapshot_every = 2
    market = writer.open()
    for _ in range(3):
        market.add_versions([item])
    assert _keys(url, "snapshots/") == ["snapshots/000000000002.sqlite"]
    objstore.REQUESTS.clear()
    reader = Remote(url, replica=tmp_path / "r").open()
    assert reader.applied == 3 and reader.count() == 3
    assert objstore.REQUESTS["get"] == 1 + 1 + 1  # market.json, the snapshot, log record 3 (not 1 and 2)
    _assert_consistent(url, tmp_path / "check")


def test_a_damaged_log_record_is_refused_not_guessed(url, corpus, tmp_path, lw):
    from learnware_cli.market.remote import Remote

    Remote(url).create(gamma=bp.GAMMA, k=50)
    store = objstore.FsspecStore(url)
    store.put("log/000000000001.json", json.dumps({"format": 1, "seq": 1, "ops": [{"op": "add", "id": "../../etc"}]}).encode())
    code, _, err = lw("list", "--market", url)
    assert code == EXIT_MARKET and "not 8 digits" in err


def test_local_folder_store_speaks_the_same_protocol(tmp_path, corpus):
    from learnware_cli.market.remote import Remote

    store = objstore.LocalFolderStore(tmp_path / "bucket")
    remote = Remote("s3://unused/x", store=store, replica=tmp_path / "replica")
    remote.create(gamma=bp.GAMMA, k=50)
    assert store.put_if_absent("x", b"1") and not store.put_if_absent("x", b"2") and store.get("x") == b"1"
    market = remote.open()
    item = _checked_item(corpus, tmp_path)
    ids = [entry["id"] for entry, _ in market.add_versions([item, item])]
    assert ids == ["00000001", "00000002"]
    market.remove("00000001")
    other = Remote("s3://unused/x", store=store, replica=tmp_path / "replica2").open()
    assert [e["id"] for e in other.entries()] == ["00000002"]
    swept = other.remote.sweep(other, min_age_s=0)
    assert not any("blobs/" in key for key in swept.removed)  # identical bytes: 00000002 still references them
    (tmp_path / "replica2" / "index.sqlite").unlink()  # a replica is derived data: a lost one is rebuilt from the log
    again = Remote("s3://unused/x", store=store, replica=tmp_path / "replica2").open()
    assert [e["id"] for e in again.entries()] == ["00000002"] and again.applied == 2


# ----------------------------------------------------------------------------- processes


WRITER = """
import json, sys
from pathlib import Path
from learnware_cli.market.remote import Remote
from learnware_cli.market.store import NewVersion
url, spec, n = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), int(sys.argv[3])
market = Remote(url).open()
for _ in range(n):
    item = NewVersion({k: Path(v) for k, v in spec["files"].items()}, spec["semantic"], spec["record_fields"], checksum=spec["checksum"])
    (entry, record), = market.add_versions([item])
    print("committed", entry["id"], record["version"], flush=True)
"""


def _checked_item(corpus, tmp_path: Path):
    """A package that passed every check (once per module), as submit hands it to the market."""
    from learnware_cli.market.store import Market, NewVersion
    from learnware_cli.market.submit import _accept, _Options

    folder = corpus["folder"] / "checked"
    spec_file = folder / "item.json"
    if not spec_file.is_file():
        local = Market.create(corpus["folder"] / f"local-{uuid.uuid4().hex[:6]}", gamma=bp.GAMMA, k=50)
        work = folder / "work"
        work.mkdir(parents=True)
        _, item = _accept(local, corpus["good"], work, _Options())
        spec_file.write_text(json.dumps({"files": {k: str(v) for k, v in item.files.items()}, "semantic": item.semantic, "record_fields": item.record_fields, "checksum": item.checksum}))
    spec = json.loads(spec_file.read_text())
    return NewVersion({k: Path(v) for k, v in spec["files"].items()}, spec["semantic"], spec["record_fields"], checksum=spec["checksum"])


def _writer(url: str, corpus, cache: Path, count: int = 1) -> subprocess.Popen:
    env = dict(os.environ, LW_CACHE=str(cache), PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(corpus["folder"] / "checked" / "item.json"), str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def test_eight_writers_on_separate_machines_all_land(url, corpus, tmp_path):
    from learnware_cli.market.remote import Remote

    Remote(url).create(gamma=bp.GAMMA, k=50)
    _checked_item(corpus, tmp_path)
    procs = [_writer(url, corpus, tmp_path / f"runner-{n}") for n in range(8)]  # no shared disk: a replica each
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-800:] for _, err in outputs]
    ids = sorted(line.split()[1] for out, _ in outputs for line in out.splitlines() if line.startswith("committed"))
    assert ids == [f"{i:08d}" for i in range(1, 9)]
    index = _assert_consistent(url, tmp_path / "check")
    assert sorted(index["learnwares"]) == ids
    assert [int(k[4:16]) for k in _keys(url, "log/")] == list(range(1, 9))


def test_killed_writers_leave_no_half_entry_and_lose_no_commit(url, corpus, tmp_path):
    from learnware_cli.market.remote import Remote

    Remote(url).create(gamma=bp.GAMMA, k=50)
    _checked_item(corpus, tmp_path)
    rng = random.Random(16)
    committed = set()
    procs = [_writer(url, corpus, tmp_path / f"runner-{n}", count=100_000) for n in range(3)]  # still writing when killed
    for proc in procs:  # each killed at a random moment of its commit loop: uploading, creating the log record, applying it, ...
        first = proc.stdout.readline()
        assert first.startswith("committed"), proc.stderr.read()[-800:]
        committed.add(tuple(first.split()[1:3]))
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        committed |= {tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("committed")}
    survivor = _writer(url, corpus, tmp_path / "runner-0", count=1)  # a killed runner's replica, reused
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err[-800:]
    committed |= {tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("committed")}
    index = _assert_consistent(url, tmp_path / "check")
    stored = {(i, str(r["version"])) for i, e in index["learnwares"].items() for r in e["versions"]}
    assert committed <= stored  # every commit a writer reported is there
    # the sweep deletes what the killed writers uploaded but never committed, and nothing else
    market = Remote(url, replica=tmp_path / "check").open()
    market.remote.sweep(market, min_age_s=0)
    _assert_consistent(url, tmp_path / "after-sweep")
    with market._reading() as conn:
        referenced = {sha for (text,) in conn.execute("SELECT blobs FROM remote_versions") for sha in json.loads(text).values()}
        segments = {name for (name,) in conn.execute("SELECT name FROM segments")}
    assert {k[len("blobs/"):] for k in _keys(url, "blobs/")} == referenced
    assert {k.split("/")[1] for k in _keys(url, "segments/")} == segments


def test_a_reader_during_writes_never_sees_an_inconsistent_market(url, corpus, tmp_path):
    from learnware_cli.market.remote import Remote

    Remote(url).create(gamma=bp.GAMMA, k=50)
    _checked_item(corpus, tmp_path)
    procs = [_writer(url, corpus, tmp_path / f"runner-{n}", count=3) for n in range(2)]
    seen = []
    reader = Remote(url, replica=tmp_path / "reader")
    deadline = time.monotonic() + 120
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        market = reader.open()
        index = market.read_index(fresh=True)
        seen.append(len(index["learnwares"]))
        for island in market.islands():
            keys = set(zip(*(a.tolist() for a in market.island_view(island).keys())))
            assert all((int(i), e["versions"][-1]["version"]) in keys for i, e in index["learnwares"].items())
        for entry in index["learnwares"].values():
            folder = market.version_dir(entry["id"], entry["versions"][-1]["version"])
            assert hashlib.sha256((folder / "package.zip").read_bytes()).hexdigest() == entry["versions"][-1]["checksum"]
        time.sleep(0.1)
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-800:]
    assert seen == sorted(seen)  # the market only grows, one whole commit at a time
    assert len(_assert_consistent(url, tmp_path / "check")["learnwares"]) == 6


@pytest.mark.slow
def test_eight_cli_submitters_with_every_check(url, corpus, tmp_path):
    """The whole `lw submit` (sandboxed model checks included) in 8 processes, each its own runner."""
    from learnware_cli.market.remote import Remote

    Remote(url).create(gamma=bp.GAMMA, k=50)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "learnware_cli", "submit", str(corpus["good"]), "--market", url, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, LW_CACHE=str(tmp_path / f"runner-{n}")),
        )
        for n in range(8)
    ]
    outputs = [p.communicate(timeout=400) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outputs]
    ids = sorted(json.loads(out)["results"][0]["id"] for out, _ in outputs)
    assert ids == [f"{i:08d}" for i in range(1, 9)]
    assert len(_assert_consistent(url, tmp_path / "check")["learnwares"]) == 8


@pytest.mark.slow
def test_the_demo_runs_unchanged_against_a_bucket(tmp_path):
    """`make demo-s3`: every step of `make demo` (pack, submit, list, features, spec, search, every reuser) on s3://."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    work = tmp_path / "demo-work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, "-m", "learnware_cli.experiment.demo_s3", f"DEMO_WORK={work}", f"PYTHON={sys.executable}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "demo finished: market in s3://demo-bucket/market" in done.stdout
    assert (work / "pred-auto.csv").is_file()
