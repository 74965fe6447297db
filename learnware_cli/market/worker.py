"""Run a package's model code out of process, with time, memory and output limits.

The market process never imports or unpickles submitted code. ModelWorker
copies the package folder to a private temp dir and starts
``python -P -m learnware_cli.market._worker_main`` there, in its own session,
with a minimal environment; where the pool can serve it (pool.py), the same
worker, with the same arguments, environment and kind of pipes, is instead
forked from a zygote that has NumPy, SciPy and scikit-learn imported already.
Requests and answers travel over stdin/stdout as length-prefixed frames
holding JSON headers and ``.npy`` arrays (loaded here with
``allow_pickle=False``), so the worker can send nothing but numbers and
plain JSON. Every answer is treated as hostile: sizes are capped, dtypes
checked, and each call has a wall-time limit after which the whole process
group is killed.

Failures raise WorkerError with ``kind``:

* ``timeout``    - no answer within the limit (the worker is killed);
* ``crash``      - the model raised, or the process died (last log lines included);
* ``bad-output`` - the answer is not a numeric array of the right length,
                   or breaks the protocol.

Usage::

    with ModelWorker(package_dir, timeout=30, memory_mb=2048) as worker:
        worker.info()        # {'class_name', 'input_shape', 'output_shape', 'has_predict_proba'}
        y = worker.predict(X)
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from learnware_cli.errors import EXIT_MARKET, LwError
from learnware_cli.market._worker_main import MAX_HEADER_BYTES, _U32, _U64, encode_frame

MiB = 1024 * 1024
WORKER_MODULE = "learnware_cli.market._worker_main"
DEFAULT_FILE_CAP = 64 * MiB
BUSY_SHARE = 0.25  # past the wall-time cap, a worker that waited this share of it for a CPU was starved
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_PASS_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "VIRTUAL_ENV")


class SandboxUnavailableError(LwError):
    """This machine cannot sandbox model code and the market requires it: nobody's package is at fault."""

    exit_code = EXIT_MARKET
    kind = "sandbox"


class MarketBusyError(LwError):
    """A model ran out of time because the machine starved it, not because of the model."""

    exit_code = EXIT_MARKET
    kind = "busy"


SANDBOX_MODES = ("required", "optional", "off")
_warned_unsandboxed = False


class WorkerError(LwError):
    """The model worker failed; ``kind`` is 'timeout', 'crash' or 'bad-output'.

    ``log_tail`` holds the last lines the model wrote to stdout/stderr and
    ``details`` a traceback when the model raised.
    """

    exit_code = EXIT_MARKET
    KINDS = ("timeout", "crash", "bad-output")

    def __init__(self, kind: str, message: str, log_tail: str = "", details: str = ""):
        super().__init__(message)
        self.kind = kind
        self.log_tail = log_tail
        self.details = details


def _package_root() -> str:
    """The folder holding the learnware_cli package, for the worker's PYTHONPATH."""
    import learnware_cli

    return str(Path(learnware_cli.__file__).resolve().parent.parent)


def _worker_env(tmp: str, threads: int) -> dict:
    """A small environment: nothing of the market's secrets, one BLAS thread each."""
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    env.update(
        PYTHONPATH=_package_root(),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",
        PYTHONIOENCODING="utf-8",
        HOME=tmp,
        TMPDIR=tmp,
        TEMP=tmp,
        TMP=tmp,
        MPLCONFIGDIR=tmp,
    )
    for var in _THREAD_VARS:
        env[var] = str(threads)
    return env


def _worker_command(package_dir: str, memory_mb: int, output_cap: int, file_cap: int, sandbox_args: list) -> list:
    args = [package_dir, "--memory-mb", str(memory_mb), "--output-cap", str(output_cap), "--file-cap", str(file_cap), *sandbox_args]
    return worker_module_command(args)


def worker_module_command(args: list) -> list:
    """`python -m learnware_cli.market._worker_main ARGS`, with the cwd (the package) kept off sys.path.

    -P (3.11+) does that; older Pythons get the same through a small boot line.
    """
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-s", "-B", "-m", WORKER_MODULE, *args]
    boot = (
        "import sys, runpy; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
        f"sys.argv[0] = {WORKER_MODULE!r}; runpy.run_module({WORKER_MODULE!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-s", "-B", "-c", boot, *args]


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ModelWorker:
    """One model, loaded once in a sandboxed child process, answering predict calls.

    package_dir: an extracted package (see package.extract_package); it is
    copied so the model cannot alter it. timeout: seconds per call;
    load_timeout: seconds for start-up and model loading (default: timeout).
    memory_mb: RLIMIT_AS of the child (0 = none). output_cap_bytes: how much
    of the model's stdout/stderr is kept; ``output_bytes`` tells how much it
    tried to write. max_result_bytes caps one answer. copy_package=False
    runs in package_dir itself (for a private extraction nobody else uses).
    """

    def __init__(
        self,
        package_dir,
        timeout: float = 60.0,
        memory_mb: int = 4096,
        output_cap_bytes: int = 1 * MiB,
        load_timeout: Optional[float] = None,
        max_result_bytes: int = 256 * MiB,
        file_cap_bytes: int = DEFAULT_FILE_CAP,
        threads: int = 1,
        copy_package: bool = True,
        sandbox: str = "required",
        allow_processes: bool = False,
        max_tasks: int = 64,
        busy_factor: float = 4.0,
    ):
        self.package_dir = Path(package_dir)
        self.timeout = float(timeout)
        self.load_timeout = float(load_timeout if load_timeout is not None else timeout)
        self.memory_mb = int(memory_mb)
        self.output_cap_bytes = int(output_cap_bytes)
        self.max_result_bytes = int(max_result_bytes)
        self.file_cap_bytes = max(int(file_cap_bytes), self.output_cap_bytes + MiB)
        self.threads = int(threads)
        self.copy_package = bool(copy_package)
        if sandbox not in SANDBOX_MODES:
            raise ValueError(f"sandbox must be one of {SANDBOX_MODES}, not {sandbox!r}")
        self.sandbox = sandbox
        self.allow_processes = bool(allow_processes)
        self.max_tasks = int(max_tasks)
        self.busy_factor = max(1.0, float(busy_factor))
        self._lifeline: Optional[int] = None
        self._call_started = 0.0
        self._deadline = 0.0
        self._delay_at_start = 0.0
        self._current_limit = self.timeout
        self._proc: Optional[subprocess.Popen] = None
        self._tmp: Optional[str] = None
        self._log_path: Optional[str] = None
        self._info: Optional[dict] = None
        self._reported_output = 0
        self._started = False
        self.load_seconds = 0.0
        self.pooled = False  # forked from the zygote (pool.py) rather than started cold

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> "ModelWorker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> dict:
        """Copy the package, start the worker, wait for the model to load; returns info()."""
        if self._proc is not None:
            return self.info()
        if self._started:
            raise WorkerError("crash", "the model worker has stopped (closed, or killed after an earlier failure)")
        self._started = True
        if not (self.package_dir / "__init__.py").is_file():
            raise WorkerError("crash", f"{self.package_dir}: no __init__.py, not an extracted package")
        self._tmp = tempfile.mkdtemp(prefix="lw-worker-")
        work = str(self.package_dir.resolve())
        if self.copy_package:
            work = os.path.join(self._tmp, "package")
            try:
                shutil.copytree(self.package_dir, work, symlinks=True)
            except (OSError, shutil.Error) as exc:
                self._stop()
                raise WorkerError("crash", f"cannot copy the package for the worker ({exc})") from None
        self._log_path = os.path.join(self._tmp, "output.log")
        log_fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # the lifeline: its write end lives only here (not inheritable), so the
        # worker's keeper sees end-of-file the moment this process dies
        lifeline_read, self._lifeline = os.pipe()
        started = time.monotonic()
        command = _worker_command(work, self.memory_mb, self.output_cap_bytes, self.file_cap_bytes, self._sandbox_args(lifeline_read))
        env = _worker_env(self._tmp, self.threads)
        try:
            self._proc = self._start_pooled(command, work, env, log_fd, lifeline_read)
            self.pooled = self._proc is not None
            if self._proc is None:
                self._proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                    command,
                    cwd=work,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_fd,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(lifeline_read,),
                )
        except OSError as exc:
            self._stop()
            raise WorkerError("crash", f"cannot start the model worker ({exc})") from None
        finally:
            os.close(log_fd)
            os.close(lifeline_read)
        os.set_blocking(self._proc.stdin.fileno(), False)
        try:
            self._begin_call(self.load_timeout)
            header, _ = self._receive("load")
        except BaseException:
            self._stop()
            raise
        self.load_seconds = time.monotonic() - started
        if header.get("op") != "ready":
            self._stop()
            raise WorkerError("bad-output", "worker broke the protocol while loading the model")
        self._info = _clean_info(header.get("info"))
        self._note_sandbox(self._info["sandbox"])
        return dict(self._info)

    def _start_pooled(self, command: list, work: str, env: dict, log_fd: int, lifeline_read: int):
        """The same worker forked from this process's zygote (pool.py), or None: start it cold.

        Only where a fork gives every guarantee a cold worker has: the sandbox
        required (a child that cannot enter it refuses to load the model) and
        one BLAS thread, the zygote's setting.
        """
        if self.sandbox != "required" or self.threads != 1:
            return None
        from learnware_cli.market import pool

        return pool.start_worker(command, work, env, log_fd, lifeline_read, self.memory_mb)

    def _sandbox_args(self, lifeline_read: int) -> list:
        args = ["--sandbox", self.sandbox, "--lifeline", str(lifeline_read), "--write", self._tmp, "--max-tasks", str(self.max_tasks)]
        return args + (["--allow-processes"] if self.allow_processes else [])

    def _note_sandbox(self, report: dict) -> None:
        """Say once per process, on stderr, that models run without the sandbox (optional mode only)."""
        global _warned_unsandboxed
        if report.get("active") or self.sandbox == "off" or _warned_unsandboxed:
            return
        _warned_unsandboxed = True
        print(
            f"warning: model code runs WITHOUT the sandbox ({_one_line(str(report.get('reason', 'unknown')), 200)}); "
            "only time, memory and output limits apply",
            file=sys.stderr,
        )

    def close(self) -> None:
        """Kill the worker's whole process group and remove its temp dir.

        Every process of the worker is sent SIGKILL before this returns. For a
        pooled worker, waiting for the kernel to finish it, reaping it and
        removing its temp dir then happen in the background (pool.finish_later):
        tens of milliseconds per package. A failure (timeout, crash, bad output)
        waits for all of that before it raises.
        """
        self._stop(wait=False)

    def _stop(self, wait: bool = True) -> None:
        proc, self._proc = self._proc, None
        lifeline, self._lifeline = self._lifeline, None
        tmp, self._tmp = self._tmp, None
        if lifeline is not None:
            os.close(lifeline)  # the keeper kills the worker's whole pid namespace
        if proc is not None:
            self._signal(proc)
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            if not wait and getattr(proc, "kill_group", None) is not None:
                from learnware_cli.market import pool

                pool.finish_later(proc, tmp)
                return
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _signal(proc) -> None:
        # The group id is the worker's pid; while the worker or any of its group
        # lives, that id cannot be handed to another process. A pooled worker
        # (pool.PooledProcess) is killed the same way, and through its pidfd.
        kill_group = getattr(proc, "kill_group", None)
        try:
            if kill_group is not None:
                kill_group()
            elif hasattr(os, "killpg"):
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass

    # ----------------------------------------------------------------- public calls

    def info(self) -> dict:
        """class_name, input_shape, output_shape (tuples of ints, or None), has_predict_proba."""
        if self._info is None:
            self.start()
        return dict(self._info)

    def predict(self, x) -> np.ndarray:
        return self._call("predict", x)

    def predict_proba(self, x) -> np.ndarray:
        if not self.info()["has_predict_proba"]:
            raise WorkerError("crash", f"model {self._info['class_name']} has no predict_proba")
        return self._call("predict_proba", x)

    @property
    def output_bytes(self) -> int:
        """Bytes the model wrote (or tried to write) to stdout/stderr so far."""
        size = 0
        if self._log_path and os.path.exists(self._log_path):
            size = os.path.getsize(self._log_path)
        return max(size, self._reported_output)

    def output_tail(self, lines: int = 10, max_bytes: int = 8192) -> str:
        """The last lines of what the model printed (for error messages)."""
        if not self._log_path or not os.path.exists(self._log_path):
            return ""
        with open(self._log_path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(self._log_path) - max_bytes))
            text = fh.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    # ----------------------------------------------------------------- protocol

    def _call(self, op: str, x) -> np.ndarray:
        if self._proc is None:
            self.start()  # raises if this worker already ran and stopped
        x = model_input(x)
        buf = io.BytesIO()
        np.save(buf, x, allow_pickle=False)
        self._begin_call(self.timeout)
        self._send(op, encode_frame({"op": op}, buf.getvalue()))
        header, payload = self._receive(op)
        return self._result_array(op, header, payload, x.shape[0])

    def _result_array(self, op: str, header: dict, payload: bytes, n_rows: int) -> np.ndarray:
        try:
            y = np.load(io.BytesIO(payload), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise WorkerError("bad-output", f"{op} answer is not a plain numeric array ({_one_line(str(exc), 120)})") from None
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "biuf":
            raise WorkerError("bad-output", f"{op} returned dtype {getattr(y, 'dtype', type(y).__name__)}, not numbers")
        if y.ndim == 0 or y.shape[0] != n_rows:
            shape = tuple(y.shape)
            raise WorkerError("bad-output", f"{op} returned shape {shape} for {n_rows} input rows (expected one output per row)")
        return y

    def _send(self, op: str, data: bytes) -> None:
        fd = self._proc.stdin.fileno()
        view = memoryview(data)
        while view:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self._extend_or_fail(op)
                continue
            _, writable, _ = select.select([], [fd], [], remaining)
            if not writable:
                continue
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                self._fail_crash(op)
            view = view[n:]

    def _read_exact(self, op: str, n: int) -> bytes:
        fd = self._proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self._extend_or_fail(op)
                continue
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, min(n - len(buf), MiB))
            if not chunk:
                self._fail_crash(op)
            buf += chunk
        return bytes(buf)

    def _receive(self, op: str) -> tuple[dict, bytes]:
        (head_len,) = _U32.unpack(self._read_exact(op, 4))
        if head_len > MAX_HEADER_BYTES:
            self._fail_protocol(op, f"header of {head_len} bytes")
        try:
            header = json.loads(self._read_exact(op, head_len))
        except (ValueError, UnicodeDecodeError):
            self._fail_protocol(op, "header is not JSON")
        if not isinstance(header, dict):
            self._fail_protocol(op, "header is not an object")
        (payload_len,) = _U64.unpack(self._read_exact(op, 8))
        if payload_len > self.max_result_bytes:
            self._fail_protocol(op, f"answer of {payload_len} bytes is over the {self.max_result_bytes}-byte limit")
        payload = self._read_exact(op, payload_len)
        reported = header.get("output_bytes")
        if isinstance(reported, int) and not isinstance(reported, bool) and reported >= 0:
            self._reported_output = max(self._reported_output, reported)
        if not header.get("ok"):
            self._raise_model_error(op, header)
        return header, payload

    # ----------------------------------------------------------------- time limits

    def _begin_call(self, limit: float) -> None:
        """Start the clock of one call (load or predict): `limit` seconds of the model's own time."""
        self._current_limit = limit
        self._call_started = time.monotonic()
        self._deadline = self._call_started + limit
        self._delay_at_start = self._waiting_seconds()

    def _waiting_seconds(self) -> float:
        """Seconds the worker's processes spent ready to run but waiting for a CPU (all their threads)."""
        if self._proc is None:
            return 0.0
        return machine_wait_seconds(self._proc.pid)

    def _extend_or_fail(self, op: str) -> None:
        """The wall-clock deadline passed: extend it by the time the machine withheld, or fail.

        A limit means the model's time, not the machine's: time the worker
        spent waiting in the run queue (a busy machine) is added back, up to
        busy_factor x the limit of wall time. Past that, if the machine took
        a large share of the time, it is the market that was too busy
        (MarketBusyError, exit 5), not the package that was too slow.
        """
        waited = max(0.0, self._waiting_seconds() - self._delay_at_start)
        elapsed = time.monotonic() - self._call_started
        cap = self._call_started + self._current_limit * self.busy_factor
        extended = min(cap, self._call_started + self._current_limit + waited)
        if extended > time.monotonic() + 0.01:
            self._deadline = extended
            return
        if waited > BUSY_SHARE * elapsed:
            self._stop()
            raise MarketBusyError(
                f"the market's machine was too busy: the model waited {waited:.0f} s for a CPU in {elapsed:.0f} s "
                f"(limit {self._current_limit:g} s of its own time); try again when the machine is less loaded"
            )
        self._fail_timeout(op)

    # ----------------------------------------------------------------- failures

    def _raise_model_error(self, op: str, header: dict) -> None:
        kind = header.get("kind")
        error = _one_line(str(header.get("error", "unknown error")))
        details = str(header.get("traceback", ""))[-4000:]
        if op == "load" and kind == "sandbox":
            self._stop()
            raise SandboxUnavailableError(
                f"this machine cannot sandbox model code ({error}); the market requires the sandbox "
                '(to run models under resource limits only, set "sandbox": "optional" in the limits of market.json)'
            )
        if op == "load":
            tail = self.output_tail_safe()
            self._stop()
            raise WorkerError("crash", f"loading the model failed: {error}", tail, details)
        if kind == "bad-output":
            raise WorkerError("bad-output", f"{op} output is not numeric: {error}", "", details)
        raise WorkerError("crash", f"{op} raised {error}", "", details)

    def output_tail_safe(self) -> str:
        try:
            return self.output_tail()
        except OSError:
            return ""

    def _fail_timeout(self, op: str):
        tail = self.output_tail_safe()
        self._stop()
        what = "finish loading" if op == "load" else f"answer {op}"
        raise WorkerError("timeout", f"model did not {what} within {self._current_limit:g} s (worker killed)", tail)

    def _fail_crash(self, op: str):
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        tail = self.output_tail_safe()
        self._stop()
        raise WorkerError("crash", f"worker died during {op} ({_describe_exit(code)}){_tail_suffix(tail)}", tail)

    def _fail_protocol(self, op: str, what: str):
        self._stop()
        raise WorkerError("bad-output", f"worker broke the protocol during {op}: {what}")


def _task_files(pid: int, name: str) -> list:
    """The text of /proc/PID/task/*/NAME for every thread of pid (threads that vanish are skipped)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    texts = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/{name}") as fh:
                texts.append(fh.read())
        except OSError:
            pass
    return texts


def _tree_pids(root: int, limit: int = 4096) -> list:
    """root and its descendants, from /proc/PID/task/TID/children (Linux); [root] elsewhere."""
    found, queue = [], [root]
    while queue and len(found) < limit:
        pid = queue.pop()
        found.append(pid)
        for text in _task_files(pid, "children"):
            queue.extend(int(c) for c in text.split() if c.isdigit())
    return found


def machine_wait_seconds(root: int) -> float:
    """Run-queue wait of every thread of root's process tree (/proc/*/task/*/schedstat, field 2), in seconds.

    0 where the kernel does not report it: the limits are then plain wall time.
    """
    total = 0
    for pid in _tree_pids(root):
        for text in _task_files(pid, "schedstat"):
            fields = text.split()
            if len(fields) > 1 and fields[1].isdigit():
                total += int(fields[1])
    return total / 1e9


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _tail_suffix(tail: str, lines: int = 3) -> str:
    last = [line.strip() for line in tail.splitlines() if line.strip()][-lines:]
    return ": " + _one_line(" | ".join(last)) if last else ""


def _clean_info(info) -> dict:
    """Re-validate the worker's self-description (it comes from untrusted code)."""
    if not isinstance(info, dict):
        raise WorkerError("bad-output", "worker sent no model description")

    def shape(value):
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and len(value) <= 8:
            return tuple(value)
        return None

    return {
        "class_name": str(info.get("class_name", ""))[:200],
        "input_shape": shape(info.get("input_shape")),
        "output_shape": shape(info.get("output_shape")),
        "has_predict_proba": bool(info.get("has_predict_proba", False)),
        "declared_input_shape": str(info.get("declared_input_shape", ""))[:200],
        "declared_output_shape": str(info.get("declared_output_shape", ""))[:200],
        "sandbox": _clean_sandbox(info.get("sandbox")),
    }


def _clean_sandbox(report) -> dict:
    """The worker's account of its sandbox, reduced to plain values (it is only informative)."""
    if not isinstance(report, dict):
        return {"active": False, "reason": "not reported"}
    clean = {"active": report.get("active") is True}
    for key in ("landlock_abi", "seccomp", "processes", "reason", "setup_seconds"):
        value = report.get(key)
        if isinstance(value, (bool, int, float, str)):
            clean[key] = value if not isinstance(value, str) else value[:300]
    if isinstance(report.get("namespaces"), list):
        clean["namespaces"] = [str(n)[:20] for n in report["namespaces"][:8]]
    return clean


def model_input(x) -> np.ndarray:
    """What crosses to the worker: numbers as float64 (any shape: rows, images), texts as a str array.

    Both are plain ``np.save`` arrays (no pickle); the worker hands texts to
    the model as a list of str, the form text models take.
    """
    if isinstance(x, (list, tuple)) and x and all(isinstance(item, str) for item in x):
        return np.array(x, dtype=str)
    array = np.asarray(x)
    if array.dtype.kind == "U":
        return np.ascontiguousarray(array)
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64))


def worker_options(limits: dict, where: str = "market.json") -> dict:
    """The ModelWorker settings a market's limits choose (besides time and memory).

    ``sandbox``: "required" (default: no sandbox, no model) or "optional"
    (run under resource limits only where the OS offers no sandbox, saying
    so once); ``model_processes``: let models start processes (default
    false); ``model_max_tasks``: RLIMIT_NPROC of a model (threads count).
    A bad value is the market's problem (MarketError, exit 5).
    """
    from learnware_cli.errors import MarketError

    mode = limits.get("sandbox", "required")
    processes = limits.get("model_processes", False)
    tasks = limits.get("model_max_tasks", 64)
    if mode not in ("required", "optional"):
        raise MarketError(f'{where}: limits.sandbox must be "required" or "optional", got {mode!r}')
    if not isinstance(processes, bool):
        raise MarketError(f"{where}: limits.model_processes must be true or false, got {processes!r}")
    if not isinstance(tasks, int) or isinstance(tasks, bool) or not 1 <= tasks <= 65536:
        raise MarketError(f"{where}: limits.model_max_tasks must be an integer 1 .. 65536, got {tasks!r}")
    return {"sandbox": mode, "allow_processes": processes, "max_tasks": tasks}


def run_model(package_dir, x, timeout: float = 60.0, memory_mb: int = 4096, method: str = "predict") -> np.ndarray:
    """Load a package's model in a worker, run predict (or predict_proba) on x, stop the worker."""
    with ModelWorker(package_dir, timeout=timeout, memory_mb=memory_mb) as worker:
        if method == "predict_proba":
            return worker.predict_proba(x)
        return worker.predict(x)
