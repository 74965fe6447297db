"""Pre-started model workers: one zygote per lw process, one fresh fork per model.

A cold model worker spends about a second starting Python and importing
NumPy, SciPy and scikit-learn before it loads a 1 KB model. The *zygote*
(``python -P -m learnware_cli.market._worker_main --zygote``) pays that once:
it is started on first use, with one BLAS thread and no other threads, imports
those libraries, and then only forks. It never reads a submitted byte.

For each ModelWorker, lw makes the protocol pipes itself and sends the child's
ends, the log file and the lifeline's read end to the zygote over a private
socketpair (SCM_RIGHTS). The zygote forks ONE child, hands its fds over and
closes its own copies, and answers with the child's pid and a pidfd. The child
moves the fds to 0-3, starts its own session, takes the environment and folder
lw chose, and runs the worker's ``main`` exactly as a cold worker does: it
enters the sandbox (namespaces, keeper, init, limits, Landlock, seccomp) before
it reads anything of its package. A child is never reused; the next package
gets a new fork of the untouched zygote, so nothing a model does in its copy
of memory reaches another package.

ModelWorker's guarantees are kept: the framed protocol runs over the same kind
of pipes; lw alone holds the lifeline's write end, so a killed lw still takes
every model process down; the zygote keeps each child unreaped (a zombie holds
its pid) until lw collects it, so killing the child's process group never hits
a recycled pid; lw also signals the child through its pidfd. The zygote exits
when lw closes its socket or dies.

Every failure of the pool (cannot start, stopped answering, died) makes the
worker start cold instead, with one warning on stderr; ``LW_WORKER_POOL=0``
turns the pool off. The pool is used only where it gives the same guarantees
as a cold worker: the sandbox required, one BLAS thread, and a memory limit
that leaves room beyond the zygote's preloaded libraries.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

MiB = 1024 * 1024
ENV_SWITCH = "LW_WORKER_POOL"  # 0 / off / no / false: every model worker starts cold
START_TIMEOUT = 60.0  # seconds for the zygote's imports (a busy machine is slow)
REQUEST_TIMEOUT = 20.0  # a fork or a reap takes milliseconds; past this the zygote is declared broken
MAX_STARTS = 3  # zygotes one process starts at most (after that, workers start cold)
MEMORY_HEADROOM = 256 * MiB  # what a model must still be able to map beyond the preloaded libraries
CHILD_FDS = 4
LIFELINE_FD = 3


class PoolUnavailable(Exception):
    """The zygote cannot serve this worker; the worker starts cold."""


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "no", "false")


def _zygote_command(control_fd: int, tmp: str) -> list:
    from learnware_cli.market.worker import worker_module_command

    return worker_module_command(["--zygote", "--control", str(control_fd), "--tmp", tmp])


def worker_arguments(command: list) -> list:
    """The worker's own arguments in a cold worker's command line, with the lifeline on the child's fd 3."""
    from learnware_cli.market.worker import WORKER_MODULE

    start = command.index(WORKER_MODULE) + 1 if WORKER_MODULE in command else command.index("-c") + 2
    args = list(command[start:])
    if "--lifeline" in args:
        args[args.index("--lifeline") + 1] = str(LIFELINE_FD)
    return args


def _recv(sock: socket.socket, max_fds: int) -> tuple:
    """One message and the fds it carried (close-on-exec here, so no later child of lw inherits them)."""
    data, ancillary, flags, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(max_fds * 4), socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(int.from_bytes(payload[i : i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4))
    return data, fds, flags


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Zygote:
    """One started zygote process and the socket to it (requests are serialized: each takes milliseconds)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.broken: Optional[str] = None
        self.tmp = tempfile.mkdtemp(prefix="lw-zygote-")
        self.proc: Optional[subprocess.Popen] = None
        self._sock: Optional[socket.socket] = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        from learnware_cli.market.worker import _worker_env

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        env = _worker_env(self.tmp, 1)
        env.update(
            # pyarrow's jemalloc (scikit-learn imports pandas) would start a thread; forks keep only one
            JE_ARROW_MALLOC_CONF="background_thread:false",
            # joblib probes multiprocessing once, at import: inside a sandbox the probe fails and joblib
            # runs serially, so a cold worker's joblib is serial; the zygote imports it outside, so say it
            JOBLIB_MULTIPROCESSING="0",
        )
        log = open(os.path.join(self.tmp, "zygote.log"), "wb")
        try:
            self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                _zygote_command(theirs.fileno(), self.tmp),
                cwd=self.tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as exc:
            raise PoolUnavailable(f"cannot start the worker zygote ({exc})") from None
        finally:
            theirs.close()
            log.close()
        ours.settimeout(START_TIMEOUT)
        try:
            data, fds, _ = _recv(ours, 1)
        except OSError as exc:
            raise PoolUnavailable(f"the worker zygote did not start ({exc}){self._log_tail()}") from None
        _close_all(fds)
        try:
            ready = json.loads(data) if data else {}
        except ValueError:
            ready = {}
        if not ready.get("ok"):
            reason = ready.get("error") or f"it exited{self._log_tail()}"
            raise PoolUnavailable(f"the worker zygote cannot serve: {reason}")
        self.pid = int(ready.get("pid", 0))
        self.vm_bytes = int(ready.get("vm_bytes", 0))
        self.preloaded = list(ready.get("preloaded", []))
        self.start_seconds = float(ready.get("seconds", 0.0))

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.tmp, "zygote.log"), "rb") as fh:
                text = fh.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return f": {lines[-1][:300]}" if lines else ""

    def alive(self) -> bool:
        proc = self.proc
        return self.broken is None and proc is not None and proc.poll() is None

    def _exchange(self, request: dict, fds=()) -> tuple:
        """Send one request (with fds), wait for its reply -> (reply, fds). PoolUnavailable if the zygote fails."""
        with self._lock:
            if self.broken is not None or self._sock is None:
                raise PoolUnavailable(self.broken or "the worker zygote was stopped")
            try:
                self._sock.settimeout(REQUEST_TIMEOUT)
                data = json.dumps(request).encode()
                if fds:
                    socket.send_fds(self._sock, [data], list(fds))
                else:
                    self._sock.send(data)
                reply_data, reply_fds, _ = _recv(self._sock, 1)
            except OSError as exc:  # timeouts included
                self._break(f"the worker zygote stopped answering ({type(exc).__name__}: {exc})")
            if not reply_data:
                _close_all(reply_fds)
                self._break("the worker zygote has exited")
            try:
                reply = json.loads(reply_data)
            except ValueError:
                _close_all(reply_fds)
                self._break("the worker zygote broke its protocol")
            return reply, reply_fds

    def _break(self, reason: str):
        """Give this zygote up (kill it: lw is its parent); the caller's worker starts cold."""
        self.broken = reason
        self.close()
        raise PoolUnavailable(reason)

    def spawn(self, argv: list, cwd: str, env: dict, fds: list) -> tuple:
        """Fork one child that runs the worker with these arguments and fds -> (pid, pidfd)."""
        reply, reply_fds = self._exchange({"op": "spawn", "argv": argv, "cwd": cwd, "env": env}, fds)
        pid = reply.get("pid")
        if not reply.get("ok") or len(reply_fds) != 1 or not isinstance(pid, int) or pid <= 1:
            _close_all(reply_fds)
            raise PoolUnavailable(f"the worker zygote could not fork a worker ({reply.get('error', 'no pid')})")
        return pid, reply_fds[0]

    def reap(self, pid: int) -> Optional[int]:
        """The wait status of an exited child (it is then reaped), or None when unknown or still running."""
        try:
            reply, fds = self._exchange({"op": "reap", "pid": pid})
        except PoolUnavailable:
            return None
        _close_all(fds)
        status = reply.get("status")
        return status if reply.get("ok") and isinstance(status, int) and not isinstance(status, bool) else None

    def close(self) -> None:
        """Close the socket, kill the zygote (it holds nothing to save) and remove its folder.

        Running children are not affected: each has its own pipes and lifeline to lw.
        Were lw to die instead, the zygote would exit at end-of-file on its socket.
        """
        self.broken = self.broken or "the worker zygote was stopped"
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()  # lw is its parent and has not reaped it: the pid is still its own
            proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class PooledProcess:
    """What ModelWorker uses of subprocess.Popen, for a worker the zygote forked.

    Its parent is the zygote, so lw cannot waitpid it: the pidfd tells when it
    has exited and the zygote reaps it on request (only then can its pid be reused).
    """

    def __init__(self, zygote: Zygote, pid: int, pidfd: int, stdin, stdout, args):
        self._zygote = zygote
        self._pidfd: Optional[int] = pidfd
        self.pid = pid
        self.args = args
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: Optional[int] = None

    def _exited(self, timeout: Optional[float] = 0.0) -> bool:
        if self._pidfd is None:
            return True
        readable, _, _ = select.select([self._pidfd], [], [], timeout)
        return bool(readable)

    def _collect(self) -> None:
        status = None
        for pause in (0.0, 0.01, 0.05, 0.2):  # the pidfd said it exited: the zygote sees it at once, or nearly
            time.sleep(pause)
            status = self._zygote.reap(self.pid)
            if status is not None or not self._zygote.alive():
                break
        if status is not None:
            self.returncode = os.waitstatus_to_exitcode(status)
        os.close(self._pidfd)
        self._pidfd = None

    def poll(self) -> Optional[int]:
        if self._pidfd is not None and self._exited(0):
            self._collect()
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Like Popen.wait; None when the exit status is lost (the zygote died first)."""
        if self._pidfd is None:
            return self.returncode
        if not self._exited(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        self._collect()
        return self.returncode

    def kill_group(self) -> None:
        """SIGKILL the child's process group, as killpg does for a cold worker, and the child through its pidfd.

        The group id is the child's pid; while the child is unreaped (the zygote
        keeps it so until lw collects it), that id cannot belong to anyone else.
        """
        if self._pidfd is None:
            return
        if not self._exited(0):
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def kill(self) -> None:
        self.kill_group()


# --------------------------------------------------------------------------- the process's zygote

_lock = threading.Lock()
_zygote: Optional[Zygote] = None
_starts = 0
_warned = False
_prestarting = False
last_error: Optional[str] = None


def _warn_once(reason: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    print(f"warning: the model worker pool is unavailable ({reason}); model workers start cold", file=sys.stderr)


def shared_zygote() -> Optional[Zygote]:
    """This process's zygote, started on first use (and again after a failure, MAX_STARTS times in all)."""
    global _zygote, _starts, last_error
    with _lock:
        if _zygote is not None and _zygote.alive():
            return _zygote
        if _zygote is not None:
            last_error = _zygote.broken or "the worker zygote exited"
            _zygote.close()
            _zygote = None
            _warn_once(last_error)
        if _starts >= MAX_STARTS:
            return None
        _starts += 1
        try:
            _zygote = Zygote()
        except PoolUnavailable as exc:
            last_error = str(exc)
            _warn_once(last_error)
            return None
        return _zygote


def prestart() -> None:
    """Start this process's zygote in a background thread, unless it runs or is starting already.

    The checks call this as soon as a package turns out to hold Python code, so
    the zygote's imports overlap the market's own checks of the first package.
    """
    global _prestarting
    if not enabled():
        return
    with _lock:
        if (_zygote is not None and _zygote.alive()) or _prestarting or _starts >= MAX_STARTS:
            return
        _prestarting = True

    def run() -> None:
        global _prestarting
        try:
            shared_zygote()
        finally:
            _prestarting = False

    threading.Thread(target=run, name="lw-zygote-start", daemon=True).start()


def start_worker(command: list, cwd: str, env: dict, log_fd: int, lifeline_read: int, memory_mb: int) -> Optional[PooledProcess]:
    """Fork the worker `command` would start, from the zygote -> a PooledProcess, or None: start it cold."""
    global last_error
    if not enabled():
        return None
    zygote = shared_zygote()
    if zygote is None:
        return None
    if memory_mb > 0 and memory_mb * MiB < zygote.vm_bytes + MEMORY_HEADROOM:
        return None  # the preloaded libraries would eat the model's address space: a cold worker fits
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        pid, pidfd = zygote.spawn(worker_arguments(command), cwd, env, [in_read, out_write, log_fd, lifeline_read])
    except PoolUnavailable as exc:
        last_error = str(exc)
        if not zygote.alive():
            _warn_once(last_error)
        _close_all((in_write, out_read))
        return None
    finally:
        _close_all((in_read, out_write))
    return PooledProcess(zygote, pid, pidfd, open(in_write, "wb", buffering=0), open(out_read, "rb", buffering=0), command)


def finish_later(proc: PooledProcess, tmp: Optional[str]) -> None:
    """After a pooled worker was sent SIGKILL: wait for it to go, reap it and remove its temp folder, in the background.

    A plain (not daemon) thread, so the interpreter lets it finish before it exits.
    """

    def run() -> None:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    threading.Thread(target=run, name="lw-worker-reaper").start()


def _forget_after_fork() -> None:
    """In a forked copy of lw: the parent's zygote and socket are the parent's; this process starts its own."""
    global _lock, _zygote, _starts, _prestarting
    _lock = threading.Lock()
    zygote, _zygote = _zygote, None
    _starts, _prestarting = 0, False
    if zygote is not None:
        zygote.proc = None  # never wait for or kill the parent's zygote
        sock, zygote._sock = zygote._sock, None
        zygote.broken = "inherited from a parent process"
        if sock is not None:
            sock.close()  # this copy only: the parent's stays open


os.register_at_fork(after_in_child=_forget_after_fork)


def status() -> dict:
    """What the pool is doing in this process (for benchmarks and diagnostics)."""
    with _lock:
        zygote = _zygote
        return {
            "enabled": enabled(),
            "running": zygote is not None and zygote.alive(),
            "pid": getattr(zygote, "pid", None) if zygote is not None else None,
            "tmp": zygote.tmp if zygote is not None else None,
            "vm_bytes": getattr(zygote, "vm_bytes", None) if zygote is not None else None,
            "start_seconds": getattr(zygote, "start_seconds", None) if zygote is not None else None,
            "starts": _starts,
            "last_error": last_error,
        }


def shutdown() -> None:
    """Stop this process's zygote (running workers are not affected); the next worker starts a new one."""
    global _zygote, _starts
    if not _lock.acquire(timeout=0.5):
        return  # a zygote is still starting: it exits by itself when this process closes its socket
    try:
        zygote, _zygote = _zygote, None
        _starts = 0
    finally:
        _lock.release()
    if zygote is not None:
        zygote.close()


atexit.register(shutdown)
