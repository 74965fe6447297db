"""A sandbox for model code, built from what Linux offers an unprivileged user.

The model worker (``_worker_main``) calls :func:`enter` before it imports
anything the model could touch. ``enter`` turns the one process that
``ModelWorker`` started (or that the pool's zygote forked for it, pool.py)
into three::

    lw ──pipes──▶ keeper (our code; new user, pid, network and IPC namespaces)
                    └─ init (pid 1 of the new pid namespace; our code)
                         └─ model worker (pid 2; confined, then loads the model)

* **keeper** watches a *lifeline* pipe whose only write end lives in ``lw``.
  When ``lw`` exits for any reason, SIGKILL included, the kernel closes that
  end; the keeper then kills init, and the kernel kills every process of the
  pid namespace with it: no model process outlives ``lw``, whatever it did
  with ``setsid`` or double forks.
* **init** dies with the keeper (``PR_SET_PDEATHSIG``) and passes the
  worker's exit status up. The model cannot signal either of them: the keeper
  is outside its pid namespace, and pid 1 ignores signals from inside.
* **the model worker** confines itself before any submitted byte is read
  (:func:`confine`): resource limits (address space, file size, core dumps,
  tasks), a Landlock ruleset (read only the Python installation, ``lw``'s own
  package and the model's package; write only its private temp folder;
  no TCP; from ABI 6 no signals or abstract sockets outside the sandbox), a
  seccomp filter (no new processes, no exec, no ptrace, no namespaces or
  mounts, no io_uring, no unix sockets) and no capabilities.

The network namespace has only a loopback device that is down, so no packet
leaves; the IPC namespace hides the host's System V and POSIX queues.

Everything here is plain ``ctypes`` over documented kernel interfaces
(landlock(7), seccomp(2), user_namespaces(7), pid_namespaces(7)); there is
no third-party code in the trust path, and nothing to install.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform
import select
import signal
import struct
import sys
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------- kernel constants

CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

# landlock(7): access rights by the ABI that introduced them
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
_LANDLOCK_RULE_PATH_BENEATH = 1
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446

# seccomp(2) / BPF
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_ARCH_OFFSET, _NR_OFFSET, _ARG0_OFFSET = 4, 0, 16
_AF_UNIX = 1

# Per-architecture syscall numbers (only what the filter names). x86_64 also has
# the legacy fork/vfork and an x32 ABI (numbers >= 2**30) that must be refused.
_ARCHES = {
    "x86_64": dict(
        audit=0xC000003E,
        x32_bit=0x40000000,
        seccomp=317,
        capset=126,
        clone=56,
        socket=41,
        processes=dict(fork=57, vfork=58, execve=59, execveat=322),
        always=dict(
            ptrace=101, process_vm_readv=310, process_vm_writev=311, unshare=272, setns=308, mount=165,
            umount2=166, pivot_root=155, chroot=161, bpf=321, perf_event_open=298, userfaultfd=323,
            keyctl=250, add_key=248, request_key=249, io_uring_setup=425, io_uring_enter=426,
            io_uring_register=427, open_tree=428, move_mount=429, fsopen=430, fsmount=432,
            pidfd_getfd=438, kexec_load=246, init_module=175, finit_module=313,
        ),
    ),
    "aarch64": dict(
        audit=0xC00000B7,
        x32_bit=None,
        seccomp=277,
        capset=91,
        clone=220,
        socket=198,
        processes=dict(execve=221, execveat=281),
        always=dict(
            ptrace=117, process_vm_readv=270, process_vm_writev=271, unshare=97, setns=268, mount=40,
            umount2=39, pivot_root=41, chroot=51, bpf=280, perf_event_open=241, userfaultfd=282,
            keyctl=219, add_key=217, request_key=218, io_uring_setup=425, io_uring_enter=426,
            io_uring_register=427, open_tree=428, move_mount=429, fsopen=430, fsmount=432,
            pidfd_getfd=438, kexec_load=104, init_module=105, finit_module=273,
        ),
    ),
}
_CLONE3 = 435  # same number on every architecture; refused with ENOSYS so libc falls back to clone

MIN_LANDLOCK_ABI = 1

_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


class SandboxError(Exception):
    """The sandbox could not be set up here; the model must not run (unless the market allows that)."""


@dataclass
class SandboxPolicy:
    """What the confined model worker may do.

    read_paths: folders and files it may read (and execute from); write_paths:
    folders it may create, write and delete in; memory_mb: RLIMIT_AS of the
    model process (0: none); file_bytes: RLIMIT_FSIZE; max_tasks: RLIMIT_NPROC
    (threads count; the kernel does not apply it to root); allow_processes:
    let the model fork and exec (off by default: then the model is one
    process and memory_mb bounds it whole).
    """

    read_paths: list = field(default_factory=list)
    write_paths: list = field(default_factory=list)
    memory_mb: int = 0
    file_bytes: int = 0
    max_tasks: int = 64
    allow_processes: bool = False


# ----------------------------------------------------------------------------- probing


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    result = _c().syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return int(result) if result > 0 else 0


def _arch() -> dict | None:
    return _ARCHES.get(platform.machine())


def unavailable_reason() -> str | None:
    """Why this machine cannot run the sandbox, or None when it can (namespaces are tried at start)."""
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no Landlock or user namespaces (Linux only)"
    if _arch() is None:
        return f"no seccomp filter for the {platform.machine()} architecture"
    abi = landlock_abi()
    if abi < MIN_LANDLOCK_ABI:
        return "the kernel has no Landlock (Linux >= 5.13 with landlock in the LSM list)"
    return None


# What a Python process reads that is not part of its installation: shared
# libraries, the loader cache, time zones, and CPU/memory facts that BLAS and
# joblib look up. Nothing under /proc but the process's own folder.
SYSTEM_READ_PATHS = (
    "/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/local/lib",
    "/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo",
    "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu", "/sys/fs/cgroup",
)


def python_read_paths() -> list:
    """The folders this interpreter loads code from, plus lw's own package: what a model may read.

    sys.path entries count except the current folder and any folder that
    merely *contains* lw's source (an editable install's checkout, where
    markets and other files may live): there only lw's package folder is granted.
    """
    import learnware_cli

    own = os.path.dirname(os.path.abspath(learnware_cli.__file__))
    prefixes = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    paths = list(prefixes) + [own]
    cwd = os.path.abspath(os.getcwd())
    for entry in sys.path:
        entry = os.path.abspath(entry) if entry else cwd
        if entry == cwd or not os.path.exists(entry):
            continue
        inside_prefix = any(entry == p or entry.startswith(p + os.sep) for p in prefixes)
        if not inside_prefix and own.startswith(entry.rstrip(os.sep) + os.sep):
            continue  # a checkout holding lw: grant lw's folder only
        paths.append(entry)
    # the interpreter may be a symlink into another installation (venvs, pyenv shims)
    paths.append(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(set(paths)) + list(SYSTEM_READ_PATHS)


# ----------------------------------------------------------------------------- namespaces and process tree


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise SandboxError(f"{what} failed: {os.strerror(code)} (errno {code})")
    return result


def _write_proc(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _enter_namespaces() -> None:
    """New user, pid, network and IPC namespaces, our uid/gid mapped to themselves."""
    uid, gid = os.geteuid(), os.getegid()
    _check(_c().unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC), "unshare (user namespaces)")
    try:
        _write_proc("/proc/self/setgroups", "deny")
        _write_proc("/proc/self/uid_map", f"{uid} {uid} 1")
        _write_proc("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        raise SandboxError(f"mapping the user namespace failed: {exc.strerror}") from None


def _exit_like(status: int) -> None:
    """End the keeper the way the worker ended, given init's wait status.

    init exits with 128 + N when the worker died of signal N (pid 1 cannot
    signal itself), so the keeper re-raises N: lw then sees "killed by SIGN".
    """
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    number = code - 128 if code > 128 else (os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0)
    if number:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP keep their default anyway
            pass
        os.kill(os.getpid(), number)
    os._exit(code)


def _keeper(init_pid: int, lifeline: int) -> None:
    """Wait for init; kill it (and so the whole pid namespace) when the lifeline closes."""
    poller = select.poll()
    poller.register(lifeline, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        pid, status = os.waitpid(init_pid, os.WNOHANG)
        if pid == init_pid:
            _exit_like(status)
        if poller.poll(200):
            if os.read(lifeline, 4096) == b"":  # lw is gone, or closed the worker
                try:
                    os.kill(init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(init_pid, 0)
                os._exit(137)


def _init(worker_pid: int, close: tuple = ()) -> None:
    """Pid 1: reap every process of the namespace; leave (taking them all along) when the worker ends."""
    for fd in close:
        _close_quietly(fd)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if pid == worker_pid:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))  # pid 1 cannot kill itself with a signal: the keeper re-raises it
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def enter(lifeline: int, close_in_helpers: tuple = ()) -> None:
    """Split into keeper, init and worker; only the worker returns.

    lifeline: the read end of a pipe whose write end only lw holds.
    close_in_helpers: fds (the protocol pipes) that keeper and init must not
    keep open, so that lw sees end-of-file as soon as the worker dies.
    Raises SandboxError (in the calling process, before any fork) when the
    namespaces cannot be made.
    """
    _enter_namespaces()
    alive_r, alive_w = os.pipe()  # init's check that the keeper still lives after PDEATHSIG is set
    init_pid = os.fork()
    if init_pid:  # keeper
        _helper(_keep, init_pid, lifeline, alive_r, close_in_helpers)
    try:
        os.close(alive_w)
        _c().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if select.select([alive_r], [], [], 0)[0]:  # the keeper died before PDEATHSIG was armed
            os._exit(137)
        os.close(alive_r)
        _close_quietly(lifeline)
        worker_pid = os.fork()
    except BaseException:
        os._exit(1)
    if worker_pid:  # init
        _helper(_init, worker_pid, close_in_helpers)
    # the model worker


def _helper(run, *args) -> None:
    """Run a helper process's loop; whatever happens, never return into the worker's code."""
    try:
        run(*args)
    finally:
        os._exit(1)


def _keep(init_pid: int, lifeline: int, alive_r: int, close: tuple) -> None:
    os.close(alive_r)
    for fd in close:
        _close_quietly(fd)
    _keeper(init_pid, lifeline)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# ----------------------------------------------------------------------------- confinement of the worker


def confine(policy: SandboxPolicy) -> dict:
    """Limits, Landlock, seccomp and no capabilities, for this (single-threaded) process.

    Returns what was applied, for the worker's report to lw.
    """
    arch = _arch()
    if arch is None:
        raise SandboxError(f"no seccomp filter for the {platform.machine()} architecture")
    apply_limits(policy.memory_mb, policy.file_bytes, policy.max_tasks)
    _check(_c().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    abi = _landlock(policy)
    _seccomp(arch, policy.allow_processes)
    _drop_capabilities(arch)
    return {"landlock_abi": abi, "seccomp": True, "namespaces": ["user", "pid", "net", "ipc"], "processes": policy.allow_processes}


def apply_limits(memory_mb: int, file_bytes: int, max_tasks: int = 0) -> None:
    """RLIMIT_AS / RLIMIT_FSIZE / RLIMIT_CORE / RLIMIT_NPROC, each skipped where the platform lacks it."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    try:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-size writes fail with EFBIG instead of killing
    except (AttributeError, ValueError, OSError):
        pass
    wanted = [("RLIMIT_CORE", 0)]
    if memory_mb > 0:
        wanted.append(("RLIMIT_AS", memory_mb * 1024 * 1024))
    if file_bytes > 0:
        wanted.append(("RLIMIT_FSIZE", file_bytes))
    if max_tasks > 0:
        wanted.append(("RLIMIT_NPROC", max_tasks))
    for name, value in wanted:
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _fs_rights(abi: int) -> int:
    rights = _FS_ABI1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def _landlock(policy: SandboxPolicy) -> int:
    """Deny every filesystem right the kernel knows, except beneath the policy's paths; no TCP; scoped signals."""
    abi = landlock_abi()
    if abi < MIN_LANDLOCK_ABI:
        raise SandboxError("the kernel has no Landlock")
    handled = _fs_rights(abi)
    attr = _RulesetAttr(handled_access_fs=handled)
    size = 8
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    libc = _c()
    ruleset = _check(int(libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))), "landlock_create_ruleset")
    try:
        read = (_FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR) & handled
        for path in policy.read_paths:
            _allow(ruleset, path, read)
        for path in ("/dev/null", "/dev/zero"):
            _allow(ruleset, path, (read | _FS_WRITE_FILE | _FS_IOCTL_DEV) & handled)
        for path in policy.write_paths:
            _allow(ruleset, path, handled)
        _check(int(libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _allow(ruleset: int, path: str, rights: int) -> None:
    """Add a path-beneath rule; a missing path is skipped (nothing there to protect or need)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            rights &= _FS_FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        result = int(_c().syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)))
        _check(result, f"landlock_add_rule({path})")
    finally:
        os.close(fd)


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple:
    return (code, jt, jf, k)


def seccomp_program(arch: dict, allow_processes: bool) -> list:
    """The BPF filter as (code, jt, jf, k) tuples; jumps are resolved from labels here.

    Refused with EPERM: the syscalls in arch["always"] (and, unless processes
    are allowed, fork/vfork/exec and clone without CLONE_THREAD); clone3 with
    ENOSYS (its flags live in memory a filter cannot read; libc then uses
    clone); socket(AF_UNIX), since a unix socket path reaches host services
    that no network namespace hides. A foreign architecture kills the process.
    """
    denied = dict(arch["always"])
    if not allow_processes:
        denied.update(arch["processes"])
    # instructions with symbolic jump targets: ("jeq", k, target_if_true)
    body: list = [("ld", _ARCH_OFFSET), ("jne_kill", arch["audit"]), ("ld", _NR_OFFSET)]
    if arch["x32_bit"]:
        body.append(("jge", arch["x32_bit"], "EPERM"))
    for number in sorted(set(denied.values())):
        body.append(("jeq", number, "EPERM"))
    body.append(("jeq", _CLONE3, "ENOSYS" if not allow_processes else "ALLOW_CLONE3"))
    if not allow_processes:
        body.append(("jeq", arch["clone"], "CLONE"))
    body.append(("jeq", arch["socket"], "SOCKET"))
    body.append(("ret", _RET_ALLOW))
    labels_code = {
        "CLONE": [("ld", _ARG0_OFFSET), ("jset_else", CLONE_THREAD, "ALLOW", "EPERM")],
        "SOCKET": [("ld", _ARG0_OFFSET), ("jeq_else", _AF_UNIX, "EPERM", "ALLOW")],
        "ALLOW": [("ret", _RET_ALLOW)],
        "ALLOW_CLONE3": [("ret", _RET_ALLOW)],
        "EPERM": [("ret", _RET_ERRNO | _errno.EPERM)],
        "ENOSYS": [("ret", _RET_ERRNO | _errno.ENOSYS)],
        "KILL": [("ret", _RET_KILL_PROCESS)],
    }
    program = list(body)
    where = {}
    for label, code in labels_code.items():
        where[label] = len(program)
        program.extend(code)

    def offset(target: str, at: int) -> int:
        jump = where[target] - at - 1
        if not 0 <= jump < 256:
            raise SandboxError("seccomp program too long")
        return jump

    out = []
    for at, item in enumerate(program):
        op = item[0]
        if op == "ld":
            out.append(_bpf(_LD_W_ABS, item[1]))
        elif op == "ret":
            out.append(_bpf(_RET_K, item[1]))
        elif op == "jne_kill":
            out.append(_bpf(_JEQ_K, item[1], 0, offset("KILL", at)))
        elif op == "jge":
            out.append(_bpf(_JGE_K, item[1], offset(item[2], at), 0))
        elif op == "jeq":
            out.append(_bpf(_JEQ_K, item[1], offset(item[2], at), 0))
        elif op == "jset_else":
            out.append(_bpf(_JSET_K, item[1], offset(item[2], at), offset(item[3], at)))
        elif op == "jeq_else":
            out.append(_bpf(_JEQ_K, item[1], offset(item[2], at), offset(item[3], at)))
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _seccomp(arch: dict, allow_processes: bool) -> None:
    program = seccomp_program(arch, allow_processes)
    raw = b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in program)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    result = int(_c().syscall(arch["seccomp"], ctypes.c_uint(_SECCOMP_SET_MODE_FILTER), ctypes.c_uint(_SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog)))
    _check(result, "seccomp")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities(arch: dict) -> None:
    """No capabilities left, not even those the new user namespace granted."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(int(_c().syscall(arch["capset"], ctypes.byref(header), ctypes.byref(data))), "capset")
