"""The sandbox, tried the way an attacker would: a model that writes where it should not,
reads the parent's secrets, phones home, signals its parent, forks, or outlives lw.

Each attack runs inside a real model worker; the model reports through its
predictions which attacks worked (1) and which were refused (0), and the test
also checks the world outside (files, signals, processes) independently.
Attacks that would be destructive if the sandbox failed are replaced by
harmless equivalents (SIGUSR1 instead of SIGKILL, opening for append
without writing).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import processes_with, wait_until

import badpackages as bp
from learnware_cli.errors import EXIT_REJECTED
from learnware_cli.market import sandbox
from learnware_cli.market.package import extract_package
from learnware_cli.market.store import Market
from learnware_cli.market.worker import MarketBusyError, ModelWorker, SandboxUnavailableError, WorkerError
from test_submit import snapshot

pytestmark = pytest.mark.skipif(sandbox.unavailable_reason() is not None, reason=f"no sandbox here: {sandbox.unavailable_reason()}")

ROOT = Path(__file__).resolve().parents[1]
LW_INIT = ROOT / "learnware_cli" / "__init__.py"

PROBE_MODEL = '''\
import numpy as np
from learnware.model.base import BaseModel

ATTACKS = {attacks}


def _attempt(code):
    try:
        exec(code, {{}})
        return 1
    except BaseException:
        return 0


class Model(BaseModel):
    def __init__(self):
        super().__init__(input_shape=({dim},), output_shape=(1,))
        {on_load}

    def predict(self, X):
        results = [_attempt(code) for code in ATTACKS.values()]
        return np.array(results + [0] * (len(X) - len(results)), dtype=np.int64)
'''


def probe_package(folder: Path, attacks: dict, on_load: str = "pass") -> Path:
    """A package whose predict runs each attack and answers 1 where it worked, 0 where it was refused."""
    source = PROBE_MODEL.format(attacks=repr(attacks), dim=bp.DIM, on_load=on_load)
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = bp.write_zip(folder / "probe.zip", bp.members(**{"__init__.py": source}))
    return extract_package(zip_path, folder / "package")


def run_attacks(tmp_path: Path, attacks: dict, **worker_options) -> dict:
    package_dir = probe_package(tmp_path / "probe", attacks)
    with ModelWorker(package_dir, timeout=30, **worker_options) as worker:
        assert worker.info()["sandbox"]["active"], worker.info()["sandbox"]
        answers = worker.predict(np.zeros((len(attacks) + 1, bp.DIM)))
    return dict(zip(attacks, answers.tolist()))


@pytest.fixture
def victim_market(tmp_path):
    """A market holding one accepted learnware (the one an attacker wants to replace)."""
    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    good = bp.good_numpy_zip(tmp_path / "good")
    from learnware_cli.market.submit import submit_packages

    (outcome,) = submit_packages(market, [good])
    assert outcome.accepted, outcome.reason
    return market


# --------------------------------------------------------------------------- files


def test_model_cannot_touch_the_market_lw_or_home(tmp_path, victim_market):
    other_zip = victim_market.root / "learnwares" / "00000001" / "v1" / "package.zip"
    marker = f"lw-planted-{uuid.uuid4().hex}"
    home_target = Path.home() / marker
    tmp_target = Path("/tmp") / marker
    attacks = {
        "write into the market": f"open({str(victim_market.root / marker)!r}, 'w').write('x')",
        "overwrite another learnware": f"open({str(other_zip)!r}, 'r+b')",
        "read another learnware": f"open({str(other_zip)!r}, 'rb').read(1)",
        "list the market": f"import os; os.listdir({str(victim_market.root)!r})",
        "edit installed lw": f"open({str(LW_INIT)!r}, 'a')",
        "write to $HOME": f"open({str(home_target)!r}, 'w').write('x')",
        "write to /tmp": f"open({str(tmp_target)!r}, 'w').write('x')",
        "read the parent's environment": f"open('/proc/{os.getpid()}/environ', 'rb').read()",
        "read /etc/passwd": "open('/etc/passwd').read()",
        "make a folder beside its temp folder": "import os; os.mkdir('../../escape-" + marker + "')",
    }
    before = snapshot(victim_market.root)
    lw_before = LW_INIT.read_bytes()
    try:
        worked = run_attacks(tmp_path, attacks)
        assert not any(worked.values()), {k: v for k, v in worked.items() if v}
        assert snapshot(victim_market.root) == before
        assert LW_INIT.read_bytes() == lw_before
        assert not home_target.exists() and not tmp_target.exists()
    finally:
        for path in (home_target, tmp_target):
            path.unlink(missing_ok=True)


def test_model_still_works_inside_the_sandbox(tmp_path):
    """What models legitimately do keeps working: imports, threads, its own temp folder."""
    attacks = {
        "import scikit-learn": "import sklearn.linear_model",
        "start a thread": "import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()",
        "write its temp folder": "import os, tempfile; p = os.path.join(tempfile.gettempdir(), 'scratch'); open(p, 'w').write('x'); os.remove(p)",
        "read its own package": "import os; open(os.path.join(os.environ['HOME'], 'package', 'learnware.yaml')).read()",
        "numpy arithmetic": "import numpy as np; assert np.linalg.inv(np.eye(3)).sum() == 3",
    }
    worked = run_attacks(tmp_path, attacks)
    assert all(worked.values()), {k: v for k, v in worked.items() if not v}


def test_hostile_submission_leaves_the_market_byte_identical(tmp_path, victim_market, lw_json):
    """Writes into the market and over another learnware's zip while being checked, then raises."""
    other_zip = victim_market.root / "learnwares" / "00000001" / "v1" / "package.zip"
    body = textwrap.dedent(
        f"""\
        for path, mode in (({str(victim_market.root / 'planted.py')!r}, 'w'), ({str(other_zip)!r}, 'wb'), ({str(LW_INIT)!r}, 'a')):
            try:
                open(path, mode).write('import os  # planted\\n' if 'b' not in mode else b'planted')
            except OSError:
                pass
        raise RuntimeError('done planting')"""
    )
    folder = tmp_path / "hostile"
    folder.mkdir()
    zip_path = bp.write_zip(folder / "hostile.zip", bp.members(**{"__init__.py": bp.numpy_model(body=body)}))
    before = snapshot(victim_market.root)
    lw_before = LW_INIT.read_bytes()
    code, doc = lw_json("submit", zip_path, "--market", victim_market.root)
    assert code == EXIT_REJECTED and "done planting" in doc["message"], doc
    assert snapshot(victim_market.root) == before
    assert LW_INIT.read_bytes() == lw_before


# --------------------------------------------------------------------------- network


def test_model_has_no_network(tmp_path):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    tcp_port, udp_port = server.getsockname()[1], udp.getsockname()[1]
    attacks = {
        "tcp to the host": f"import socket; socket.create_connection(('127.0.0.1', {tcp_port}), timeout=2).sendall(b'x')",
        "udp to the host": f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {udp_port}))",
        "tcp bind": "import socket; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(1)",
        "unix socket": "import socket; socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
    }
    try:
        worked = run_attacks(tmp_path, attacks)
        assert not any(worked.values()), {k: v for k, v in worked.items() if v}
        with pytest.raises(BlockingIOError):
            udp.recv(16)
    finally:
        server.close()
        udp.close()


# --------------------------------------------------------------------------- signals and processes


def test_model_cannot_signal_lw(tmp_path):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    try:
        attacks = {
            "signal the parent": "import os, signal; os.kill(os.getppid(), signal.SIGUSR1)",
            "signal lw by pid": f"import os, signal; os.kill({os.getpid()}, signal.SIGUSR1)",
            "signal lw's group": f"import os, signal; os.killpg({os.getpgid(0)}, signal.SIGUSR1)",
        }
        run_attacks(tmp_path, attacks)
        time.sleep(0.2)
        assert received == []
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_model_cannot_start_processes(tmp_path):
    attacks = {
        "fork": "import os\npid = os.fork()\nif pid == 0: os._exit(0)",
        "subprocess": "import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'], check=True)",
        "exec": "import os, sys; os.execv(sys.executable, [sys.executable, '-c', 'pass'])",
        "multiprocessing": "import multiprocessing as mp; p = mp.Process(target=print); p.start(); p.join()",
    }
    worked = run_attacks(tmp_path, attacks)
    assert not any(worked.values()), {k: v for k, v in worked.items() if v}


def test_model_cannot_use_kernel_escape_hatches(tmp_path):
    """ptrace, new namespaces, mounts, io_uring, bpf: refused by the filter (and no capabilities)."""
    libc = "import ctypes; libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long\n"
    attacks = {
        "ptrace pid 1": libc + "assert libc.ptrace(16, 1, 0, 0) == 0",
        "new user namespace": libc + "assert libc.unshare(0x10000000) == 0",
        "new mount namespace": libc + "assert libc.unshare(0x00020000) == 0",
        "mount tmpfs": libc + "assert libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0",
        "io_uring": libc + "params = ctypes.create_string_buffer(120)\nassert libc.syscall(425, 4, params) >= 0",
        "bpf": libc + "attr = ctypes.create_string_buffer(128)\nassert libc.syscall(321 if __import__('platform').machine() == 'x86_64' else 280, 0, attr, 128) >= 0",
    }
    worked = run_attacks(tmp_path, attacks)
    assert not any(worked.values()), {k: v for k, v in worked.items() if v}


def test_files_in_its_temp_folder_are_capped(tmp_path):
    attacks = {"write 8 MiB": "import os, tempfile\nwith open(os.path.join(tempfile.gettempdir(), 'big'), 'wb') as fh: fh.write(b'x' * (8 << 20))"}
    worked = run_attacks(tmp_path, attacks, file_cap_bytes=4 << 20, output_cap_bytes=1 << 20)
    assert worked == {"write 8 MiB": 0}




def test_bounded_fork_bomb_with_setsid_dies_with_the_worker(tmp_path):
    """Where a market allows processes, children that setsid and double-fork still die with the worker."""
    marker = f"lw-bomb-{uuid.uuid4().hex}"
    child = f"import time, sys; time.sleep(300)  # {marker}"
    bomb = textwrap.dedent(
        f"""\
        import os, subprocess, sys
        for _ in range(12):
            subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session=True)
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, '-c', {child!r}])
            os._exit(0)
        """
    )
    package_dir = probe_package(tmp_path / "bomb", {"bomb": bomb})
    worker = ModelWorker(package_dir, timeout=30, allow_processes=True)
    with worker:
        assert worker.predict(np.zeros((2, bp.DIM)))[0] == 1
        assert wait_until(lambda: len(processes_with(marker)) == 13, 10), processes_with(marker)
    assert wait_until(lambda: not processes_with(marker), 5), processes_with(marker)


@pytest.mark.skipif(os.geteuid() == 0, reason="the kernel does not apply RLIMIT_NPROC to root")
def test_task_limit_bounds_a_fork_bomb(tmp_path):
    bomb = "import os\nfor _ in range(200):\n    if os.fork() == 0:\n        import time; time.sleep(30); os._exit(0)"
    package_dir = probe_package(tmp_path / "nproc", {"bomb": bomb})
    with ModelWorker(package_dir, timeout=30, allow_processes=True, max_tasks=16) as worker:
        assert worker.predict(np.zeros((2, bp.DIM)))[0] == 0  # the 16th task could not be made


def test_killed_lw_leaves_no_worker_alive(tmp_path):
    """SIGKILL the whole lw process mid-check: the keeper takes the model's pid namespace down with it."""
    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    folder = tmp_path / "sleeper"
    folder.mkdir()
    zip_path = bp.write_zip(folder / "sleeper.zip", bp.members(**{"__init__.py": bp.numpy_model(prelude="import time\ntime.sleep(300)\n")}))
    private_tmp = tmp_path / "lw-tmp"
    private_tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(private_tmp))
    lw = subprocess.Popen(
        [sys.executable, "-m", "learnware_cli", "submit", str(zip_path), "--market", str(market.root), "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: len(processes_with(str(private_tmp))) >= 3, 60), "worker never started"
        lw.kill()
        lw.wait()
        assert wait_until(lambda: not processes_with(str(private_tmp)), 5), processes_with(str(private_tmp))
    finally:
        if lw.poll() is None:
            lw.kill()


# --------------------------------------------------------------------------- where the sandbox cannot be had


@pytest.fixture
def no_sandbox_here(monkeypatch):
    """Make the worker believe this machine offers no sandbox (as on macOS or an old kernel)."""
    from learnware_cli.market import worker as worker_module

    original = worker_module._worker_command
    monkeypatch.setattr(worker_module, "_worker_command", lambda *a: original(*a) + ["--pretend-no-sandbox"])
    monkeypatch.setattr(worker_module, "_warned_unsandboxed", False)


def test_required_sandbox_refuses_to_run_the_model(tmp_path, no_sandbox_here):
    package_dir = probe_package(tmp_path / "p", {"nothing": "pass"})
    with pytest.raises(SandboxUnavailableError, match="cannot sandbox"):
        ModelWorker(package_dir, timeout=30).start()


def test_optional_sandbox_runs_with_limits_and_says_so_once(tmp_path, no_sandbox_here, capsys):
    package_dir = probe_package(tmp_path / "p", {"nothing": "pass"})
    for _ in range(2):
        with ModelWorker(package_dir, timeout=30, sandbox="optional") as worker:
            assert worker.info()["sandbox"]["active"] is False
            worker.predict(np.zeros((2, bp.DIM)))
    assert capsys.readouterr().err.count("WITHOUT the sandbox") == 1


def test_market_that_cannot_sandbox_fails_submit_with_exit_5(tmp_path, no_sandbox_here, lw_json):
    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    before = snapshot(market.root)
    code, doc = lw_json("submit", bp.good_numpy_zip(tmp_path / "good"), "--market", market.root)
    assert code == 5 and doc["error"] == "sandbox", doc
    assert snapshot(market.root) == before


# --------------------------------------------------------------------------- time that is the machine's, not the model's


def test_starved_worker_is_not_blamed(tmp_path, monkeypatch):
    """If the worker spent its time waiting for a CPU, the limit stretches; past the cap it is 'busy', not 'timeout'."""
    from learnware_cli.market import worker as worker_module

    package_dir = probe_package(tmp_path / "p", {"sleep": "import time; time.sleep(60)"})
    with ModelWorker(package_dir, timeout=1.0, load_timeout=30, busy_factor=2.0) as worker:
        started = time.monotonic()
        monkeypatch.setattr(worker_module, "machine_wait_seconds", lambda pid: (time.monotonic() - started) * 0.9)
        with pytest.raises(MarketBusyError, match="too busy"):
            worker.predict(np.zeros((2, bp.DIM)))
        assert time.monotonic() - started >= 1.9  # it was given the extra time first


def test_slow_model_on_an_idle_machine_still_times_out(tmp_path, monkeypatch):
    from learnware_cli.market import worker as worker_module

    monkeypatch.setattr(worker_module, "machine_wait_seconds", lambda pid: 0.0)
    package_dir = probe_package(tmp_path / "p", {"sleep": "import time; time.sleep(60)"})
    with ModelWorker(package_dir, timeout=1.0, load_timeout=30) as worker:
        with pytest.raises(WorkerError) as err:
            worker.predict(np.zeros((2, bp.DIM)))
    assert err.value.kind == "timeout"


def test_run_queue_wait_is_measured():
    """schedstat is read for a real process tree (non-negative, grows with contention; 0 if unsupported)."""
    from learnware_cli.market.worker import machine_wait_seconds

    assert machine_wait_seconds(os.getpid()) >= 0.0


# --------------------------------------------------------------------------- the filter itself


def test_seccomp_program_is_well_formed():
    for arch in sandbox._ARCHES.values():
        for allow in (False, True):
            program = sandbox.seccomp_program(arch, allow)
            assert len(program) < 200
            last = len(program) - 1
            for at, (code, jt, jf, k) in enumerate(program):
                if code != sandbox._RET_K:
                    assert at + 1 + max(jt, jf) <= last  # every jump lands inside the program
            assert program[-1][0] == sandbox._RET_K  # ends in a return


def test_sandbox_report_is_in_show_json(tmp_path):
    package_dir = probe_package(tmp_path / "p", {"nothing": "pass"})
    with ModelWorker(package_dir, timeout=30) as worker:
        report = worker.info()["sandbox"]
    assert report["active"] and report["seccomp"] and report["landlock_abi"] >= 1
    assert json.dumps(report)


# --------------------------------------------------------------------------- the market's settings reach every worker


def _set_limits(market: Market, **limits) -> None:
    config = json.loads((market.root / "market.json").read_text())
    config["limits"].update(limits)
    (market.root / "market.json").write_text(json.dumps(config))


def _spawning_zip(folder: Path) -> Path:
    body = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'pass'], check=True)\nreturn np.zeros(len(X), dtype=np.int64)"
    folder.mkdir(parents=True, exist_ok=True)
    return bp.write_zip(folder / "spawner.zip", bp.members(**{"__init__.py": bp.numpy_model(body=body)}))


def test_market_decides_whether_models_may_start_processes(tmp_path, lw_json):
    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    zip_path = _spawning_zip(tmp_path / "spawner")
    code, doc = lw_json("submit", zip_path, "--market", market.root)
    assert code == EXIT_REJECTED and doc["check"] == "model-predict" and "PermissionError" in doc["message"], doc
    _set_limits(market, model_processes=True)
    code, doc = lw_json("submit", zip_path, "--market", market.root)
    assert code == 0, doc


@pytest.mark.parametrize("limits", [{"sandbox": "off"}, {"model_processes": "yes"}, {"model_max_tasks": 0}])
def test_bad_sandbox_settings_are_a_market_error(tmp_path, lw_json, limits):
    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    _set_limits(market, **limits)
    code, doc = lw_json("submit", bp.good_numpy_zip(tmp_path / "good"), "--market", market.root)
    assert code == 5 and next(iter(limits)) in doc["message"], doc


def test_optional_market_accepts_without_sandbox_and_warns(tmp_path, no_sandbox_here, lw):
    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    _set_limits(market, sandbox="optional")
    code, out, err = lw("submit", bp.good_numpy_zip(tmp_path / "good"), "--market", market.root)
    assert code == 0, err
    assert "WITHOUT the sandbox" in err


def test_busy_machine_leaves_packages_unjudged_not_rejected(tmp_path, monkeypatch, lw_json):
    """A batch on a starved machine: the starved package is 'not judged' (exit 5), the others are stored."""
    from learnware_cli.market import worker as worker_module

    market = Market.create(tmp_path / "market", gamma=bp.GAMMA, k=50)
    slow = tmp_path / "slow"
    slow.mkdir()
    slow_zip = bp.write_zip(slow / "slow.zip", bp.members(**{"__init__.py": bp.numpy_model(body="import time\ntime.sleep(60)")}))
    good_zip = bp.good_numpy_zip(tmp_path / "good")
    clock = {}

    def starved(pid):  # every second of wall time was spent waiting for a CPU, from the first call on
        return time.monotonic() - clock.setdefault(pid, time.monotonic())

    monkeypatch.setattr(worker_module, "machine_wait_seconds", starved)
    code, doc = lw_json("submit", good_zip, slow_zip, "--market", market.root, "--timeout", "1", "--jobs", "1")
    assert code == 5, doc
    assert [o["package"] for o in doc["not_judged"]] == [str(slow_zip)] and doc["not_judged"][0]["check"] == "busy"
    assert len(doc["accepted"]) == 1 and doc["rejected"] == []


@pytest.mark.slow
def test_real_load_does_not_time_out_a_good_model(tmp_path):
    """Four busy loops per core: a model needing 1.5 s of CPU under a 2 s limit still answers.

    It gets about a fifth of a core here (~7 s of wall time): without the
    run-queue discount it would time out.
    """
    work = "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end: pass"
    package_dir = probe_package(tmp_path / "cpu", {"work": work})
    # each in its own session: the kernel shares CPU between sessions (autogroups), as between users
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(4 * (os.cpu_count() or 1))]
    try:
        with ModelWorker(package_dir, timeout=2.0, load_timeout=120, busy_factor=20) as worker:
            started = time.monotonic()
            try:
                answer = worker.predict(np.zeros((2, bp.DIM)))
            except MarketBusyError:
                pytest.skip("the machine was starved beyond 20x: nothing to learn here")
            elapsed = time.monotonic() - started
        assert answer[0] == 1
        if elapsed < 2.0:
            pytest.skip(f"the load did not slow the model down here ({elapsed:.2f} s)")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
