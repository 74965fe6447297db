"""The model worker process: loads one package's model and answers requests.

Started by ``learnware_cli.market.worker.ModelWorker`` as
``python -P -m learnware_cli.market._worker_main <package_dir> ...`` in a new
session (so the parent can kill the whole process group). Everything the
submitted code does happens here, never in the market process:

1. The protocol pipes are moved off fds 0/1; fd 0 becomes /dev/null and fds
   1/2 go to the log file the parent opened (capped, see _CappedText), so a
   model that prints megabytes neither floods nor blocks the protocol.
2. The sandbox (sandbox.py): new namespaces, a keeper that kills everything
   when lw goes away, then resource limits, Landlock, seccomp and no
   capabilities for this process, before anything of the package is read.
   If the machine cannot do that, the worker refuses to load the model
   (``--sandbox required``, the default) or runs it under the resource
   limits alone (``--sandbox optional``).
3. Stand-in ``learnware`` modules (BaseModel etc.) go into sys.modules, then
   the package's ``__init__.py`` is imported as package ``lw_submitted_model``
   and ``class_name(**kwargs)`` from learnware.yaml is instantiated.
4. Loop: read a request frame, run it, write a response frame.

Frames: u32 big-endian header length, a JSON header, u64 payload length and
a payload that is either empty or one ``.npy`` array written with
``np.save(allow_pickle=False)``. Nothing is ever pickled across the boundary.

The same module is also the *zygote* of ``pool.py`` (``--zygote``): a process
that imports NumPy, SciPy, scikit-learn and joblib once, never reads a
submitted byte, and forks one fresh child per model worker. The child moves
the pipes lw sent it to fds 0-3 and then runs :func:`main` exactly as a cold
worker does (steps 1-4 above): it is sandboxed before it reads anything of
its package, and it is never reused.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import traceback

PACKAGE_NAME = "lw_submitted_model"
MAX_HEADER_BYTES = 1 << 20
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


# --------------------------------------------------------------------------- framing (shared with worker.py)


def encode_frame(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return _U32.pack(len(head)) + head + _U64.pack(len(payload)) + payload


def _read_exact_blocking(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("protocol pipe closed")
        buf += chunk
    return bytes(buf)


def _write_all_blocking(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_request(fd: int, max_payload: int) -> tuple[dict, bytes]:
    (head_len,) = _U32.unpack(_read_exact_blocking(fd, 4))
    if head_len > MAX_HEADER_BYTES:
        raise ValueError("request header too large")
    header = json.loads(_read_exact_blocking(fd, head_len))
    (payload_len,) = _U64.unpack(_read_exact_blocking(fd, 8))
    if payload_len > max_payload:
        raise ValueError("request payload too large")
    return header, _read_exact_blocking(fd, payload_len)


# --------------------------------------------------------------------------- output capture


class _Counter:
    def __init__(self, fd: int, cap: int):
        self.fd = fd
        self.cap = cap
        self.total = 0  # bytes the model tried to write
        self.written = 0  # bytes that reached the log file

    def write_bytes(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - self.written
        if room <= 0 or not data:
            return
        chunk = data[:room]
        try:
            _write_all_blocking(self.fd, chunk)
            self.written += len(chunk)
        except OSError:
            self.written = self.cap  # log unwritable (e.g. RLIMIT_FSIZE): stop trying


class _CappedBinary(io.RawIOBase):
    def __init__(self, counter: _Counter):
        self._counter = counter

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self._counter.write_bytes(data)
        return len(data)


class _CappedText(io.TextIOBase):
    """sys.stdout/sys.stderr replacement: keeps the first `cap` bytes, counts the rest, never blocks."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, counter: _Counter):
        self._counter = counter
        self.buffer = _CappedBinary(counter)

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        self._counter.write_bytes(str(text).encode("utf-8", "replace"))
        return len(text)

    def fileno(self) -> int:
        return self._counter.fd

    def isatty(self) -> bool:
        return False


def _isolate_stdio(output_cap: int) -> tuple[int, int, _Counter]:
    """Move the protocol off fds 0/1; send fds 1/2 and sys.stdout/err to the capped log."""
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # fd 2 is the log file the parent opened (append mode)
    counter = _Counter(2, output_cap)
    sys.stdin = open(os.devnull, "r")
    sys.stdout = _CappedText(counter)
    sys.stderr = _CappedText(counter)
    return proto_in, proto_out, counter


# --------------------------------------------------------------------------- stand-in learnware package


class BaseModel:
    """Stand-in for the reference ``learnware.model.base.BaseModel``."""

    def __init__(self, input_shape=None, output_shape=None):
        self.input_shape = input_shape
        self.output_shape = output_shape

    def fit(self, X, y):
        pass

    def predict(self, X):
        raise NotImplementedError("predict is not implemented")

    def finetune(self, X, y):
        pass


def _stub_class(name: str):
    def _unavailable(*args, **kwargs):
        raise NotImplementedError(f"learnware.specification.{name} is not available inside the market worker")

    return type(name, (), {"__init__": _unavailable})


def _specification_getattr(name: str):
    """Module __getattr__: any learnware.specification name is a class that refuses to run."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _stub_class(name)


def install_learnware_stubs() -> None:
    """Put learnware, learnware.model, learnware.model.base, learnware.specification in sys.modules."""
    import types

    root = types.ModuleType("learnware")
    root.__path__ = []  # a package, so 'import learnware.x' looks in sys.modules
    model = types.ModuleType("learnware.model")
    model.__path__ = []
    base = types.ModuleType("learnware.model.base")
    base.BaseModel = BaseModel
    model.BaseModel = BaseModel
    model.base = base
    spec = types.ModuleType("learnware.specification")
    spec.__path__ = []
    spec.__getattr__ = _specification_getattr
    root.model = model
    root.specification = spec
    root.__version__ = "0.0.0-lw-stub"
    for mod in (root, model, base, spec):
        sys.modules[mod.__name__] = mod


# --------------------------------------------------------------------------- model


def _shape_list(value):
    """A declared shape (tuple of ints, numpy ints included) -> list of ints, or None when it is not one."""
    import operator

    items = value if isinstance(value, (list, tuple)) else [value]
    if value is None or len(items) > 8 or any(isinstance(v, bool) for v in items):
        return None
    try:
        return [int(operator.index(v)) for v in items]
    except TypeError:
        return None


def load_model(package_dir: str):
    """Import the package's __init__.py as a package and instantiate class_name(**kwargs)."""
    import importlib.util

    from learnware_cli.market.package import MANIFEST_FILE, MODULE_FILE, load_manifest_yaml, parse_manifest

    with open(os.path.join(package_dir, MANIFEST_FILE), encoding="utf-8-sig") as fh:
        manifest = parse_manifest(load_manifest_yaml(fh.read()))
    install_learnware_stubs()
    sys.path.append(package_dir)  # sibling modules importable, stdlib and numpy not shadowed
    spec = importlib.util.spec_from_file_location(
        PACKAGE_NAME, os.path.join(package_dir, MODULE_FILE), submodule_search_locations=[package_dir]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE_NAME] = module
    spec.loader.exec_module(module)
    cls = getattr(module, manifest.class_name, None)
    if cls is None or not isinstance(cls, type):
        raise LookupError(f"__init__.py defines no class {manifest.class_name!r}")
    model = cls(**manifest.kwargs)
    info = {
        "class_name": manifest.class_name,
        "input_shape": _shape_list(getattr(model, "input_shape", None)),
        "output_shape": _shape_list(getattr(model, "output_shape", None)),
        "has_predict_proba": callable(getattr(model, "predict_proba", None)),
        "declared_input_shape": repr(getattr(model, "input_shape", None))[:200],
        "declared_output_shape": repr(getattr(model, "output_shape", None))[:200],
    }
    return model, info


class BadOutput(Exception):
    """The model returned something that is not a numeric array."""


def _to_numeric_array(result):
    import numpy as np

    if hasattr(result, "detach") and hasattr(result, "cpu"):  # torch tensor
        result = result.detach().cpu().numpy()
    elif hasattr(result, "numpy") and not isinstance(result, np.ndarray):  # tensorflow tensor
        result = result.numpy()
    try:
        array = np.asarray(result)
    except Exception as exc:  # ragged lists and the like
        raise BadOutput(f"output cannot be made an array ({type(exc).__name__})") from None
    if array.dtype.kind not in "biuf":
        raise BadOutput(f"output has dtype {array.dtype}, not numbers (type {type(result).__name__})")
    return array


def _error_header(op: str, kind: str, exc: BaseException) -> dict:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    message = str(exc).strip().splitlines()
    return {
        "ok": False,
        "op": op,
        "kind": kind,
        "error": f"{type(exc).__name__}: {message[0] if message else ''}"[:500],
        "traceback": "".join(tb)[-4000:],
    }


def _serve(model, info: dict, proto_in: int, proto_out: int, counter: _Counter) -> None:
    import numpy as np

    while True:
        try:
            header, payload = _read_request(proto_in, 1 << 40)
        except EOFError:
            return
        op = header.get("op")
        if op == "exit":
            return
        try:
            if op == "info":
                response, body = {"ok": True, "op": op, "info": info}, b""
            elif op in ("predict", "predict_proba"):
                x = np.load(io.BytesIO(payload), allow_pickle=False)
                if x.dtype.kind == "U":  # texts: a text model takes a list of str
                    x = x.tolist()
                y = _to_numeric_array(getattr(model, op)(x))
                buf = io.BytesIO()
                np.save(buf, y, allow_pickle=False)
                response, body = {"ok": True, "op": op}, buf.getvalue()
            else:
                response, body = {"ok": False, "op": str(op), "kind": "protocol", "error": f"unknown op {op!r}"}, b""
        except BadOutput as exc:
            response, body = _error_header(op, "bad-output", exc), b""
        except BaseException as exc:  # the model's own failure, reported, not fatal to the protocol
            response, body = _error_header(op, "crash", exc), b""
        response["output_bytes"] = counter.total
        _write_all_blocking(proto_out, encode_frame(response, body))


def _sandbox_policy(args):
    from learnware_cli.market.sandbox import SandboxPolicy, python_read_paths

    return SandboxPolicy(
        read_paths=python_read_paths() + [os.path.abspath(args.package_dir)],
        write_paths=[os.path.abspath(p) for p in args.write],
        memory_mb=args.memory_mb,
        file_bytes=args.file_cap,
        max_tasks=args.max_tasks,
        allow_processes=args.allow_processes,
    )


def _enter_sandbox(args, proto_in: int, proto_out: int) -> dict:
    """Confine this process (see sandbox.py) -> what was applied; raises SandboxError when it cannot be."""
    from learnware_cli.market import sandbox

    reason = "pretending (--pretend-no-sandbox)" if args.pretend_no_sandbox else sandbox.unavailable_reason()
    if reason:
        raise sandbox.SandboxError(reason)
    if args.lifeline < 0:
        raise sandbox.SandboxError("no lifeline pipe from lw")
    import time

    started = time.perf_counter()
    sandbox.enter(args.lifeline, close_in_helpers=(proto_in, proto_out))
    applied = sandbox.confine(_sandbox_policy(args))
    return dict(applied, active=True, setup_seconds=round(time.perf_counter() - started, 6))


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="lw-model-worker")
    parser.add_argument("package_dir")
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--output-cap", type=int, default=1 << 20)
    parser.add_argument("--file-cap", type=int, default=0)
    parser.add_argument("--sandbox", choices=("required", "optional", "off"), default="required")
    parser.add_argument("--lifeline", type=int, default=-1)
    parser.add_argument("--write", action="append", default=[])
    parser.add_argument("--max-tasks", type=int, default=64)
    parser.add_argument("--allow-processes", action="store_true")
    parser.add_argument("--pretend-no-sandbox", action="store_true", help="tests: act as on a machine without a sandbox")
    args = parser.parse_args(argv)
    proto_in, proto_out, counter = _isolate_stdio(args.output_cap)
    from learnware_cli.market.sandbox import SandboxError, apply_limits

    sandbox = {"active": False, "reason": "turned off"}
    if args.sandbox != "off":
        try:
            sandbox = _enter_sandbox(args, proto_in, proto_out)
        except SandboxError as exc:
            if args.sandbox == "required":
                header = {"ok": False, "op": "load", "kind": "sandbox", "error": str(exc)[:500], "output_bytes": counter.total}
                _write_all_blocking(proto_out, encode_frame(header))
                return 2
            sandbox = {"active": False, "reason": str(exc)[:500]}
    if not sandbox["active"]:
        apply_limits(args.memory_mb, args.file_cap)
    try:
        import numpy  # noqa: F401  (under the limits, before the model)

        model, info = load_model(os.path.abspath(args.package_dir))
    except BaseException as exc:
        header = _error_header("load", "crash", exc)
        header["output_bytes"] = counter.total
        _write_all_blocking(proto_out, encode_frame(header))
        return 1
    info["sandbox"] = sandbox
    _write_all_blocking(proto_out, encode_frame({"ok": True, "op": "ready", "info": info, "output_bytes": counter.total}))
    _serve(model, info, proto_in, proto_out, counter)
    return 0


# --------------------------------------------------------------------------- zygote (see pool.py)

# What the zygote imports before it forks: NumPy, SciPy, joblib and the parts of
# scikit-learn small models unpickle into, plus what main() needs. Installed code
# only (the zygote never reads a submitted byte); a module that is missing is
# simply not preloaded.
ZYGOTE_PRELOAD = (
    "numpy", "scipy", "scipy.linalg", "scipy.sparse", "scipy.special", "scipy.stats", "joblib",
    "sklearn", "sklearn.base", "sklearn.utils", "sklearn.linear_model", "sklearn.ensemble", "sklearn.tree",
    "sklearn.preprocessing", "sklearn.pipeline", "sklearn.compose", "sklearn.impute", "sklearn.svm",
    "sklearn.neighbors", "sklearn.naive_bayes", "sklearn.decomposition", "sklearn.cluster",
    "learnware_cli.market.package", "learnware_cli.market.sandbox",
    "argparse", "importlib.util", "ctypes", "select", "resource", "tempfile", "fcntl",
)
CHILD_FDS = 4  # a child's fds 0-3: protocol in, protocol out, log, lifeline
LIFELINE_FD = 3
MAX_ZYGOTE_REQUEST = 1 << 18


def _writable_shared_mappings() -> list:
    """Mappings of this process that a forked child would share and could write (/proc/self/maps).

    Shared anonymous memory, /dev/shm, memfd and SysV segments, and any writable
    shared mapping: through them one child could leave state for the next.
    Read-only shared mappings of ordinary files (glibc's gconv cache) are harmless.
    """
    found = []
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split(None, 5)
            perms = parts[1] if len(parts) > 1 else ""
            if len(perms) < 4 or perms[3] != "s":
                continue
            path = parts[5].strip() if len(parts) > 5 else ""
            file_backed = path.startswith("/") and not path.startswith("/dev/shm") and not path.endswith("(deleted)")
            if "w" in perms or not file_backed:
                found.append(line.strip())
    return found


def _vm_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _zygote_prepare() -> dict:
    """Import what models load, check that forking this process is safe -> the 'ready' message."""
    import gc
    import importlib
    import time

    started = time.perf_counter()
    loaded = []
    for name in ZYGOTE_PRELOAD:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 - a missing or broken optional library is just not preloaded
            pass
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise RuntimeError(f"the zygote runs {threads} threads after its imports (a fork keeps only one)")
    shared = _writable_shared_mappings()
    if shared:
        raise RuntimeError(f"the zygote maps shared memory that every child would share: {shared[0]}")
    os.close(os.pidfd_open(os.getpid()))  # children are handed to lw as pidfds (Linux >= 5.3)
    gc.collect()
    gc.freeze()  # the preloaded objects stay out of the collector: fewer copied pages per child
    return {
        "op": "ready", "ok": True, "pid": os.getpid(), "vm_bytes": _vm_bytes(), "preloaded": loaded,
        "seconds": round(time.perf_counter() - started, 4),
    }


def _zygote_child(control, fds: list, argv: list, cwd: str, env: dict) -> None:
    """In a fresh fork: take the fds, folder, environment and session a cold worker would have, run main().

    Never returns. Nothing of the package has been read yet: main() enters the
    sandbox first, exactly as in a cold worker.
    """
    code = 1
    try:
        os.setsid()  # its own session and process group (lw kills the group), as start_new_session
        control.detach()  # its fd is closed below with every other fd of the zygote
        import fcntl

        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in fds]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        try:
            top = os.sysconf("SC_OPEN_MAX")
        except (ValueError, OSError):
            top = 65536
        os.closerange(CHILD_FDS, max(top, 65536))
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        import tempfile

        tempfile.tempdir = None  # found again from the new TMPDIR
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()  # fresh entropy, as a cold worker has (random reseeds itself)
        sys.argv = [sys.argv[0], *argv]
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported in the log; the child must never return to the zygote
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
        code = 1
    finally:
        os._exit(code & 0xFF if isinstance(code, int) else 1)


def _zygote_request(control, data: bytes, fds: list, flags: int, children: set) -> tuple:
    """One request -> (reply, fds to send). The received fds are closed here in every case."""
    import socket

    try:
        if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
            raise ValueError("request truncated")
        request = json.loads(data)
        op = request.get("op") if isinstance(request, dict) else None
        if op == "spawn":
            argv, cwd, env = request.get("argv"), request.get("cwd"), request.get("env")
            if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv) and isinstance(cwd, str)):
                raise ValueError("bad spawn request")
            if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
                raise ValueError("bad spawn environment")
            if len(fds) != CHILD_FDS:
                raise ValueError(f"spawn needs {CHILD_FDS} fds, got {len(fds)}")
            pid = os.fork()
            if pid == 0:
                _zygote_child(control, fds, argv, cwd, env)
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                os.kill(pid, 9)  # our own unreaped child: its pid cannot have been reused
                os.waitpid(pid, 0)
                raise
            children.add(pid)
            return {"ok": True, "op": op, "pid": pid}, [pidfd]
        if op == "reap":
            pid = request.get("pid")
            if not isinstance(pid, int) or isinstance(pid, bool) or pid not in children:
                raise ValueError(f"{pid!r} is not a child of this zygote")
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                return {"ok": True, "op": op, "pid": pid, "status": None}, []
            children.discard(pid)
            return {"ok": True, "op": op, "pid": pid, "status": status}, []
        raise ValueError(f"unknown op {op!r}")
    except Exception as exc:  # noqa: BLE001 - answered, the zygote goes on
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}, []
    finally:
        for fd in fds:  # the child holds its own copies; lw sees end-of-file only once these are gone
            try:
                os.close(fd)
            except OSError:
                pass


def _zygote_send(control, message: dict, fds=()) -> None:
    import socket

    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(control, [data], list(fds))
    else:
        control.send(data)


def zygote_main(argv=None) -> int:
    """Serve spawn and reap requests from lw on a socket until lw closes it (or dies)."""
    import argparse
    import socket

    parser = argparse.ArgumentParser(prog="lw-worker-zygote")
    parser.add_argument("--control", type=int, required=True)
    parser.add_argument("--tmp", required=True, help="its private HOME and TMPDIR (lw made it and removes it)")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control)
    try:
        try:
            ready = _zygote_prepare()
        except BaseException as exc:  # noqa: BLE001 - lw then starts workers cold
            _zygote_send(control, {"op": "ready", "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]})
            return 1
        _zygote_send(control, ready)
        _zygote_serve(control)
        return 0
    except OSError:  # lw is gone
        return 0
    finally:
        import shutil

        shutil.rmtree(args.tmp, ignore_errors=True)  # lw removes it too, unless it was killed


def _zygote_serve(control) -> None:
    import socket

    children: set = set()
    while True:
        data, fds, flags, _ = socket.recv_fds(control, MAX_ZYGOTE_REQUEST, CHILD_FDS)
        if not data and not fds:
            return  # lw closed its end, or died: the children keep their own pipes and lifelines
        reply, reply_fds = _zygote_request(control, data, fds, flags, children)
        try:
            _zygote_send(control, reply, reply_fds)
        finally:
            for fd in reply_fds:
                os.close(fd)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--zygote"]:
        sys.exit(zygote_main(sys.argv[2:]))
    sys.exit(main())
