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


if __name__ == "__main__":
    sys.exit(main())
