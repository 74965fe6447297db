"""The worker pool (pool.py), attacked as a model would: each package gets a fresh fork of a
zygote that never reads submitted bytes, so a model must find neither the zygote nor anything
an earlier package left behind, and the pool must never weaken what a cold worker guarantees.

As in test_sandbox.py, a model reports through its predictions which attempts worked (1)
and which were refused (0), and the test checks the world outside independently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import processes_with, wait_until

import badpackages as bp
from learnware_cli.market import pool, sandbox
from learnware_cli.market._worker_main import _writable_shared_mappings
from learnware_cli.market.package import extract_package
from learnware_cli.market.store import Market
from learnware_cli.market.worker import ModelWorker, WorkerError

pytestmark = pytest.mark.skipif(sandbox.unavailable_reason() is not None, reason=f"no sandbox here: {sandbox.unavailable_reason()}")

MODEL = '''\
import numpy as np
from learnware.model.base import BaseModel

ON_LOAD = {on_load!r}
ATTACKS = {attacks!r}
SEEN = {{}}


def _attempt(code):
    try:
        exec(code, {{"SEEN": SEEN}})
        return 1
    except BaseException:
        return 0


class Model(BaseModel):
    def __init__(self):
        super().__init__(input_shape=({dim},), output_shape=(1,))
        exec(ON_LOAD, {{"SEEN": SEEN}})

    def predict(self, X):
        results = [_attempt(code) for code in ATTACKS.values()]
        return np.array(results + [0] * (len(X) - len(results)), dtype=np.int64)
'''


def attack_package(folder: Path, attacks: dict, on_load: str = "pass", extra: dict | None = None) -> Path:
    """An extracted package that runs on_load when loaded and answers 1 per attack that worked."""
    source = MODEL.format(on_load=on_load, attacks=attacks, dim=bp.DIM)
    folder.mkdir(parents=True, exist_ok=True)
    files = bp.members(**{"__init__.py": source})
    files.update(extra or {})
    return extract_package(bp.write_zip(folder / "attack.zip", files), folder / "package")


def pooled_worker(package_dir: Path, **options) -> ModelWorker:
    worker = ModelWorker(package_dir, timeout=30, **options)
    worker.start()
    assert worker.pooled, pool.status()
    assert worker.info()["sandbox"]["active"], worker.info()["sandbox"]
    return worker


def results(worker: ModelWorker, attacks: dict) -> dict:
    answers = worker.predict(np.zeros((len(attacks) + 1, bp.DIM)))
    return dict(zip(attacks, answers.tolist()))


def run(folder: Path, attacks: dict, on_load: str = "pass", **options) -> dict:
    worker = pooled_worker(attack_package(folder, attacks, on_load), **options)
    try:
        return results(worker, attacks)
    finally:
        worker.close()


def _comm_pids(name: str) -> list:
    """Pids whose command name (/proc/PID/comm, set by prctl(PR_SET_NAME)) is name."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                pass
    return found




def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def zygote(monkeypatch, tmp_path):
    """The running zygote of this process (started by a harmless worker) -> pool.status()."""
    monkeypatch.delenv(pool.ENV_SWITCH, raising=False)
    run(tmp_path / "warm", {"nothing": "pass"})
    state = pool.status()
    assert state["running"] and state["pid"], state
    return state


@pytest.fixture
def fresh_pool(monkeypatch):
    """A pool that may be broken by the test: restored (new zygote, warnings re-armed) afterwards."""
    monkeypatch.delenv(pool.ENV_SWITCH, raising=False)
    pool.shutdown()
    monkeypatch.setattr(pool, "_warned", False)
    yield pool
    pool.shutdown()
    pool.last_error = None


LIBC = "import ctypes; libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long\n"


# --------------------------------------------------------------------------- the zygote is out of reach


def test_model_cannot_signal_ptrace_or_read_the_zygote(tmp_path, zygote):
    pid = zygote["pid"]
    log = os.path.join(zygote["tmp"], "zygote.log")
    attacks = {
        "see the zygote": f"import os; os.kill({pid}, 0)",
        "SIGUSR1 the zygote (would kill it)": f"import os, signal; os.kill({pid}, signal.SIGUSR1)",
        "SIGKILL the zygote's group": f"import os, signal; os.killpg({pid}, signal.SIGKILL)",
        "pidfd of the zygote": LIBC + f"assert libc.syscall(434, {pid}, 0) >= 0",
        "ptrace attach": LIBC + f"assert libc.ptrace(16, {pid}, 0, 0) == 0",
        "ptrace seize": LIBC + f"assert libc.ptrace(0x4206, {pid}, 0, 0) == 0",
        "read its memory": f"open('/proc/{pid}/mem', 'rb').read(1)",
        "read its environment": f"open('/proc/{pid}/environ', 'rb').read()",
        "read its log": f"open({log!r}, 'rb').read()",
        "write its log": f"open({log!r}, 'ab').write(b'x')",
        "plant a file in its folder": f"open({os.path.join(zygote['tmp'], 'planted.py')!r}, 'w').write('x')",
        "kill pid 1 (init)": "import os, signal; os.kill(1, signal.SIGKILL)",
        "signal the parent": "import os, signal; os.kill(os.getppid(), signal.SIGUSR1)",
        # the zygote's control socket, had the child kept it: any socket among the open fds
        "an inherited socket": "import os, stat\nassert any(stat.S_ISSOCK(os.fstat(fd).st_mode) for fd in map(int, os.listdir('/proc/self/fd')) if fd > 2 and os.path.exists(f'/proc/self/fd/{fd}'))",
    }
    worked = run(tmp_path / "attack", attacks)
    assert not any(worked.values()), {k: v for k, v in worked.items() if v}
    assert _alive(pid) and pool.status()["pid"] == pid, pool.status()
    assert not os.path.exists(os.path.join(zygote["tmp"], "planted.py"))
    run(tmp_path / "after", {"nothing": "pass"})  # and it still serves
    assert pool.status()["pid"] == pid


def test_zygote_keeps_no_fd_of_any_worker(tmp_path, zygote):
    """The zygote closes every fd it was sent: lw's end-of-file and lifeline guarantees depend on it."""
    live = pooled_worker(attack_package(tmp_path / "live", {"nothing": "pass"}))
    try:
        run(tmp_path / "done", {"nothing": "pass"})
        fds = {}
        for name in os.listdir(f"/proc/{zygote['pid']}/fd"):
            try:
                fds[int(name)] = os.readlink(f"/proc/{zygote['pid']}/fd/{name}")
            except OSError:
                pass
        sockets = [fd for fd, target in fds.items() if target.startswith("socket:")]
        assert len(sockets) == 1, fds  # its control socket to lw, nothing else
        assert not [t for t in fds.values() if t.startswith("pipe:")], fds
        assert not [t for t in fds.values() if "lw-worker-" in t or "lw-check-" in t], fds
        assert results(live, {"nothing": "pass"}) == {"nothing": 1}
    finally:
        live.close()


# --------------------------------------------------------------------------- nothing crosses from one package to the next


PLANT = """\
import builtins, os, sys
import numpy, sklearn, sklearn.linear_model
SEEN.update(
    numpy_global=hasattr(numpy, '_lw_planted'), builtins_global=hasattr(builtins, '_lw_planted'),
    sklearn_global=hasattr(sklearn, '_lw_planted'), library_patched=sklearn.linear_model.Ridge.predict.__name__ == 'hijacked',
    environment='LW_PLANTED' in os.environ, sys_path='/lw-planted' in sys.path,
    random_state=numpy.random.rand() == numpy.random.RandomState(1234).rand(),
    submitted_module='lw_planted_module' in sys.modules,
)
numpy._lw_planted = builtins._lw_planted = sklearn._lw_planted = 1
def hijacked(*args, **kwargs):
    return 'hijacked'
sklearn.linear_model.Ridge.predict = hijacked
os.environ['LW_PLANTED'] = '1'
sys.path.insert(0, '/lw-planted')
numpy.random.seed(1234)
sys.modules['lw_planted_module'] = sys
"""
STATE = ("numpy_global", "builtins_global", "sklearn_global", "library_patched", "environment", "sys_path", "random_state", "submitted_module")


def _seen_attacks() -> dict:
    return {key: f"assert SEEN[{key!r}]" for key in STATE}


def test_state_left_by_one_package_is_invisible_to_the_next(tmp_path, zygote):
    """Package 1 plants module globals, patches, env and RNG state; package 2 (alive at the same
    time) and package 3 (after it) come from the same zygote and see none of it."""
    sanity = {"own plant visible": "import numpy; assert numpy._lw_planted == 1"}
    first = pooled_worker(attack_package(tmp_path / "one", {**_seen_attacks(), **sanity}, PLANT))
    try:
        seen = results(first, {**_seen_attacks(), **sanity})
        assert seen.pop("own plant visible") == 1  # the probe does detect planted state
        assert not any(seen.values()), seen
        second = results(pooled_worker(attack_package(tmp_path / "two", _seen_attacks(), PLANT)), _seen_attacks())
        assert not any(second.values()), second
    finally:
        first.close()
    third = run(tmp_path / "three", _seen_attacks(), PLANT)
    assert not any(third.values()), third
    assert pool.status()["pid"] == zygote["pid"]  # all from the one zygote


def test_each_pooled_worker_draws_fresh_randomness(tmp_path, zygote):
    draw = "import numpy; v = numpy.random.rand(); SEEN['high'] = v >= 0.5"
    bits = [run(tmp_path / f"r{i}", {"high": "assert SEEN['high']"}, draw)["high"] for i in range(12)]
    assert 0 < sum(bits) < 12, bits  # identical RNG state in every fork would give all 0 or all 1


def test_model_cannot_read_or_write_another_packages_files(tmp_path, zygote):
    victim_dir = attack_package(tmp_path / "victim", {"nothing": "pass"}, extra={"secret.txt": "victim's weights"})
    victim = pooled_worker(victim_dir)  # alive while the attacker runs
    try:
        victim_tmp = victim._tmp
        marker = f"lw-planted-{uuid.uuid4().hex}"
        attacks = {
            "read the victim's package": f"open({str(victim_dir / 'secret.txt')!r}).read()",
            "list the victim's package": f"import os; os.listdir({str(victim_dir)!r})",
            "read the victim's log": f"open({os.path.join(victim_tmp, 'output.log')!r}, 'rb').read()",
            "list the victim's temp folder": f"import os; os.listdir({victim_tmp!r})",
            "write into the victim's temp folder": f"open({os.path.join(victim_tmp, marker)!r}, 'w').write('x')",
            "overwrite the victim's package": f"open({str(victim_dir / 'secret.txt')!r}, 'a').write('x')",
            "list /tmp": "import os; os.listdir('/tmp')",
            "write to /tmp": f"open('/tmp/{marker}', 'w').write('x')",
            "list other processes": "import os; assert [p for p in os.listdir('/proc') if p.isdigit()]",
            "read pid 1's environment": "open('/proc/1/environ', 'rb').read()",
        }
        worked = run(tmp_path / "attacker", attacks)
        assert not any(worked.values()), {k: v for k, v in worked.items() if v}
        assert (victim_dir / "secret.txt").read_text() == "victim's weights"
        assert not os.path.exists(os.path.join(victim_tmp, marker)) and not os.path.exists(f"/tmp/{marker}")
        assert results(victim, {"nothing": "pass"}) == {"nothing": 1}
    finally:
        victim.close()


# --------------------------------------------------------------------------- processes die with their worker


def _leave_child(name: str, then: str = "pass") -> str:
    """Fork a child that leaves the session, renames itself `name` and sleeps; the parent goes on."""
    return (
        LIBC
        + "import os, time\n"
        + "if os.fork() == 0:\n"
        + "    os.setsid()\n"
        + f"    libc.prctl(15, {name.encode()!r}, 0, 0, 0)\n"
        + "    time.sleep(300)\n"
        + "    os._exit(0)\n"
        + then
    )


def test_forked_child_left_behind_dies_with_the_worker(tmp_path, zygote):
    name = f"lwleft{uuid.uuid4().hex[:8]}"
    package_dir = attack_package(tmp_path / "leaver", {"leave a child": _leave_child(name)})
    worker = pooled_worker(package_dir, allow_processes=True)
    try:
        assert results(worker, {"leave a child": ""}) == {"leave a child": 1}
        assert wait_until(lambda: _comm_pids(name), 10), "the child never started"
    finally:
        worker.close()
    assert wait_until(lambda: not _comm_pids(name), 5), _comm_pids(name)


def test_without_processes_allowed_the_pooled_model_cannot_fork(tmp_path, zygote):
    worked = run(tmp_path / "fork", {"fork": "import os\npid = os.fork()\nif pid == 0: os._exit(0)", "exec": "import os, sys; os.execv(sys.executable, [sys.executable, '-c', 'pass'])"})
    assert worked == {"fork": 0, "exec": 0}


def test_timeout_kills_the_pooled_workers_whole_tree(tmp_path, zygote):
    name = f"lwtree{uuid.uuid4().hex[:8]}"
    package_dir = attack_package(tmp_path / "hang", {"hang": _leave_child(name, "time.sleep(600)")})
    worker = ModelWorker(package_dir, timeout=1.5, load_timeout=30, allow_processes=True)
    worker.start()
    assert worker.pooled
    pid = worker._proc.pid
    with pytest.raises(WorkerError) as err:
        worker.predict(np.zeros((2, bp.DIM)))
    assert err.value.kind == "timeout"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped before the error was raised
    assert wait_until(lambda: not _comm_pids(name), 5), _comm_pids(name)


def test_killed_lw_takes_the_zygote_and_every_worker_down(tmp_path):
    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    folder = tmp_path / "sleeper"
    folder.mkdir()
    zip_path = bp.write_zip(folder / "sleeper.zip", bp.members(**{"__init__.py": bp.numpy_model(prelude="import time\ntime.sleep(300)\n")}))
    private_tmp = tmp_path / "lw-tmp"
    private_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != pool.ENV_SWITCH}
    env["TMPDIR"] = str(private_tmp)
    lw = subprocess.Popen(
        [sys.executable, "-m", "learnware_cli", "submit", str(zip_path), "--market", str(market.root), "--json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # the zygote (its command line names its folder in private_tmp) and its child, keeper, init, worker
        assert wait_until(lambda: len(processes_with(str(private_tmp))) >= 4, 60), processes_with(str(private_tmp))
        assert [p for p in processes_with("--zygote") if p in processes_with(str(private_tmp))], "no zygote"
        lw.kill()
        lw.wait()
        assert wait_until(lambda: not processes_with(str(private_tmp)), 5), processes_with(str(private_tmp))
    finally:
        if lw.poll() is None:
            lw.kill()


# --------------------------------------------------------------------------- a failing pool: cold workers, never a hang


def test_killed_zygote_means_a_new_one_or_cold_workers_never_a_hang(tmp_path, fresh_pool, capsys):
    package_dir = attack_package(tmp_path / "p", {"nothing": "pass"})
    survivor = pooled_worker(package_dir)
    first = pool.status()["pid"]
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: not _alive(first), 5)
    assert results(survivor, {"nothing": "pass"}) == {"nothing": 1}  # a running worker does not need the zygote
    survivor.close()
    started = time.monotonic()
    with ModelWorker(package_dir, timeout=30) as worker:
        assert results(worker, {"nothing": "pass"}) == {"nothing": 1}
        assert worker.pooled and pool.status()["pid"] != first  # a new zygote took over
    assert time.monotonic() - started < 60
    assert "model workers start cold" in capsys.readouterr().err  # said once, on one line
    pool._starts = pool.MAX_STARTS  # no zygote may start any more: every worker starts cold
    os.kill(pool.status()["pid"], signal.SIGKILL)
    time.sleep(0.2)
    with ModelWorker(package_dir, timeout=30) as worker:
        assert results(worker, {"nothing": "pass"}) == {"nothing": 1}
        assert not worker.pooled


def test_stopped_zygote_is_given_up_after_a_bounded_wait(tmp_path, fresh_pool, monkeypatch):
    monkeypatch.setattr(pool, "REQUEST_TIMEOUT", 1.0)
    package_dir = attack_package(tmp_path / "p", {"nothing": "pass"})
    run(tmp_path / "warm", {"nothing": "pass"})
    stopped = pool.status()["pid"]
    os.kill(stopped, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with ModelWorker(package_dir, timeout=30) as worker:
            assert results(worker, {"nothing": "pass"}) == {"nothing": 1}
            assert not worker.pooled  # this one started cold
        assert time.monotonic() - started < 30
        assert wait_until(lambda: not _alive(stopped), 5)  # lw killed the stuck zygote
    finally:
        try:
            os.kill(stopped, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_zygote_that_cannot_start_means_cold_workers(tmp_path, fresh_pool, monkeypatch, capsys):
    monkeypatch.setattr(pool, "_zygote_command", lambda fd, tmp: [sys.executable, "-c", "import sys; sys.exit(3)"])
    package_dir = attack_package(tmp_path / "p", {"nothing": "pass"})
    for _ in range(2):
        with ModelWorker(package_dir, timeout=30) as worker:
            assert results(worker, {"nothing": "pass"}) == {"nothing": 1}
            assert not worker.pooled
    err = capsys.readouterr().err
    assert err.count("worker pool is unavailable") == 1 and len(err.strip().splitlines()) == 1, err


# --------------------------------------------------------------------------- where the pool is (not) used, and parity


def test_pool_serves_only_where_it_keeps_every_guarantee(tmp_path, monkeypatch, zygote):
    package_dir = attack_package(tmp_path / "p", {"nothing": "pass"})
    cases = {
        "default": ({}, True),
        "sandbox optional": ({"sandbox": "optional"}, False),
        "little memory": ({"memory_mb": 256}, False),
        "two BLAS threads": ({"threads": 2}, False),
    }
    for name, (options, expected) in cases.items():
        with ModelWorker(package_dir, timeout=30, **options) as worker:
            worker.predict(np.zeros((2, bp.DIM)))
            assert worker.pooled is expected, name
    monkeypatch.setenv(pool.ENV_SWITCH, "0")
    with ModelWorker(package_dir, timeout=30) as worker:
        worker.predict(np.zeros((2, bp.DIM)))
        assert not worker.pooled


def test_pooled_worker_sees_what_a_cold_one_sees(tmp_path, zygote):
    """Imports done in the zygote must not change what a model finds: joblib runs serially (as it
    does when imported inside the sandbox), temp files go to its own folder, no extra threads."""
    attacks = {
        "joblib parallel answers": "from joblib import Parallel, delayed; assert Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]",
        "joblib is serial": "from joblib._multiprocessing_helpers import mp; assert mp is None",
        "temp dir is its own": "import os, tempfile; assert tempfile.gettempdir() == os.environ['TMPDIR'] == os.environ['HOME']",
        "one thread at load": "assert SEEN['threads'] == 1",
        "sklearn works": "from sklearn.linear_model import Ridge; import numpy as np; Ridge().fit(np.eye(3), [1, 2, 3]).predict(np.eye(3))",
    }
    load = "import os; SEEN['threads'] = len(os.listdir('/proc/self/task'))"
    for mode in ("pool", "cold"):
        package_dir = attack_package(tmp_path / mode, attacks, load)
        os.environ[pool.ENV_SWITCH] = "1" if mode == "pool" else "0"
        try:
            with ModelWorker(package_dir, timeout=60) as worker:
                worked = results(worker, attacks)
                assert worker.pooled is (mode == "pool")
        finally:
            os.environ.pop(pool.ENV_SWITCH)
        assert all(worked.values()), (mode, {k: v for k, v in worked.items() if not v})


def test_shared_memory_in_the_zygote_would_be_refused():
    """A mapping every fork would share (here an anonymous MAP_SHARED one) is what the zygote checks for."""
    import mmap

    before = set(_writable_shared_mappings())
    shared = mmap.mmap(-1, 1 << 16)
    try:
        assert set(_writable_shared_mappings()) - before
    finally:
        shared.close()


def test_worker_arguments_put_the_lifeline_on_fd_3():
    command = [sys.executable, "-P", "-s", "-B", "-m", "learnware_cli.market._worker_main", "/pkg", "--lifeline", "17", "--write", "/t"]
    assert pool.worker_arguments(command) == ["/pkg", "--lifeline", "3", "--write", "/t"]
