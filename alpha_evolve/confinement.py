"""Kernel-enforced confinement of a process that is about to run candidate code (Linux: Landlock + seccomp).

Why the kernel: everything Python-level (the AST policy, restricted builtins, module views, the audit hook) runs in
the same address space as the candidate, and standard-library side doors rewrite it (FIELD_NOTES, "Untrusted code
in-process"). What is applied here cannot be undone from inside the process:

- ``PR_SET_NO_NEW_PRIVS`` (needed by both, and no set-uid gains afterwards);
- Landlock (raw syscalls 444-446, ABI detected at run time): every filesystem right is handled and only
  read/execute is granted beneath the directories Python and the engine load code from (no write anywhere, no
  reads of home directories, configs, sessions or ``/proc``), TCP bind/connect are handled with no rule (denied),
  and (ABI >= 6) signals and abstract Unix sockets are scoped to the process's own domain;
- a seccomp filter (libseccomp through ctypes) that refuses with EPERM: exec, fork/vfork/clone without
  ``CLONE_THREAD`` (threads stay possible), every new socket, signals to any other pid, ptrace and cross-process
  memory access, namespaces/mounts, io_uring (it would bypass seccomp), raising resource limits, module loading;
- resource limits: address space, CPU seconds (SIGXCPU then SIGKILL from the kernel), file size 0, open files,
  no core dumps.

``probe()`` forks a child that confines itself and reports what held, so an evaluator can fail closed with one
clear line on a kernel that lacks Landlock or seccomp.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import resource
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from alpha_evolve.values import one_line

# ----------------------------------------------------------------------------------------------- Landlock ABI

_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_FS_EXECUTE = 1 << 0
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_FILE_RIGHTS_V1 = _FS_EXECUTE | (1 << 1) | _FS_READ_FILE  # rights that apply to a file (not a directory)
_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1


class ConfinementError(RuntimeError):
    """The kernel refused (or lacks) a confinement layer; the message is one line for people."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]  # fmt: skip


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is missing or disabled."""
    res = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))  # fmt: skip
    return int(res) if res > 0 else 0


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: bits 0-12
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= 1 << 14  # TRUNCATE
    if abi >= 5:
        rights |= 1 << 15  # IOCTL_DEV
    return rights


def readable_paths() -> list[str]:
    """Where a candidate process may read: the interpreter's libraries, site-packages, system libs.

    Not the repository root (it may hold ``.env`` files or configs), not home directories, not ``/proc``, and not
    this package's own source: everything of it a candidate may use is imported before the fork, and its other
    modules include the synthetic market's generator, with which a candidate could recompute the default market's
    future and decide identically on a mirrored one (the causality check would pass).
    """
    paths = sysconfig.get_paths()
    candidates = [paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    candidates += [os.path.join(sys.base_prefix, "lib"), os.path.join(sys.base_exec_prefix, "lib")]
    candidates += [p for p in sys.path if p.endswith(("site-packages", "lib-dynload", ".zip")) and p]
    candidates += ["/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/zoneinfo"]
    out: list[str] = []
    for path in candidates:
        real = os.path.realpath(path) if path else ""
        if real and os.path.exists(real) and real not in out:
            out.append(real)
    return out


def _landlock(abi: int, read_paths: Iterable[str]) -> None:
    handled_fs = _fs_rights(abi)
    attr = _RulesetAttr(handled_fs, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)  # fmt: skip
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                            ctypes.c_uint32(0))  # fmt: skip
    if ruleset < 0:
        raise ConfinementError(f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}")
    try:
        for path in read_paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rights = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
                if not os.path.isdir(path):
                    rights &= _FS_FILE_RIGHTS_V1
                rule = _PathBeneathAttr(rights, fd)
                if _libc.syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(
                        _LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)) < 0:  # fmt: skip
                    raise ConfinementError(f"landlock_add_rule({path}) failed: {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)
        if _libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise ConfinementError(f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)


# ----------------------------------------------------------------------------------------------- seccomp

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_NE = 1
_SCMP_CMP_MASKED_EQ = 7
_CLONE_THREAD = 0x00010000


def _scmp_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]  # fmt: skip


_SECCOMP: ctypes.CDLL | None = None


def _libseccomp() -> ctypes.CDLL:
    """Loaded once (before any fork), so a confined child never needs to open the library file itself."""
    global _SECCOMP
    if _SECCOMP is None:
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise ConfinementError(f"libseccomp is not installed ({exc})") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_ArgCmp)]  # fmt: skip
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        _SECCOMP = lib
    return _SECCOMP


# Refused outright (EPERM). Unknown names on this architecture are skipped.
_DENIED_SYSCALLS: tuple[str, ...] = (
    "execve", "execveat", "fork", "vfork", "socket", "socketpair", "ptrace", "process_vm_readv",
    "process_vm_writev", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "mount", "umount2", "pivot_root",
    "chroot", "unshare", "setns", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "init_module",
    "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "iopl",
    "ioperm", "open_by_handle_at", "name_to_handle_at", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "setrlimit", "acct", "settimeofday", "clock_settime", "adjtimex", "sethostname",
    "setdomainname", "syslog", "quotactl", "mknod", "mknodat", "fanotify_init", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "mount_setattr", "setuid", "setgid", "setreuid", "setregid", "setresuid",
    "setresgid", "setgroups", "capset", "personality",
)  # fmt: skip


def _seccomp(own_pid: int) -> None:
    lib = _libseccomp()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise ConfinementError("seccomp_init failed")
    eperm = _scmp_errno(errno.EPERM)

    def rule(name: str, action: int, *cmps: tuple[int, int, int, int]) -> None:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return
        array = (_ArgCmp * max(len(cmps), 1))(*(_ArgCmp(*c) for c in cmps))
        rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
        if rc < 0:
            raise ConfinementError(f"seccomp rule for {name} failed: {os.strerror(-rc)}")

    try:
        for name in _DENIED_SYSCALLS:
            rule(name, eperm)
        # A new process is a clone without CLONE_THREAD; threads (pthread_create) remain possible.
        rule("clone", eperm, (0, _SCMP_CMP_MASKED_EQ, _CLONE_THREAD, 0))
        # clone3 passes its flags in memory seccomp cannot read: ENOSYS makes glibc fall back to clone.
        rule("clone3", _scmp_errno(errno.ENOSYS))
        for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
            rule(name, eperm, (0, _SCMP_CMP_NE, own_pid, 0))  # only this process may be signalled
        rule("prlimit64", eperm, (2, _SCMP_CMP_NE, 0, 0))  # reading limits is fine, setting them is not
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise ConfinementError(f"seccomp_load failed: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)


def seccomp_available() -> bool:
    try:
        _libseccomp()
    except ConfinementError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- limits + apply


@dataclass(frozen=True)
class Limits:
    """Resource limits of a candidate process. ``address_space_bytes`` is absolute (0 = leave as is)."""

    address_space_bytes: int = 0
    cpu_seconds: int = 60
    open_files: int = 64


def _set_limits(limits: Limits) -> None:
    def cap(res: int, soft: int, hard: int | None = None) -> None:
        _cur_soft, cur_hard = resource.getrlimit(res)
        hard_value = soft if hard is None else hard
        if cur_hard != resource.RLIM_INFINITY:
            hard_value = min(hard_value, cur_hard)
            soft = min(soft, hard_value)
        resource.setrlimit(res, (soft, hard_value))

    if limits.address_space_bytes > 0:
        cap(resource.RLIMIT_AS, limits.address_space_bytes)
    cpu = max(int(limits.cpu_seconds), 1)
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL one second later
    cap(resource.RLIMIT_FSIZE, 0)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, max(int(limits.open_files), 16))


def confine(limits: Limits, read_paths: Sequence[str] | None = None, *, kernel: bool = True) -> list[str]:
    """Apply limits and (unless ``kernel`` is False, the documented opt-out) Landlock + seccomp, irreversibly.

    Returns the layers applied. Raises ConfinementError when a kernel layer cannot be applied: the caller must
    not run candidate code then.
    """
    _set_limits(limits)
    applied = ["rlimits"]
    if not kernel:
        return applied
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise ConfinementError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
    abi = landlock_abi()
    if abi < 1:
        raise ConfinementError("this kernel has no Landlock (needs Linux >= 5.13 with landlock in the LSM list)")
    _landlock(abi, read_paths if read_paths is not None else readable_paths())
    applied.append(f"landlock-abi{abi}")
    _seccomp(os.getpid())
    applied.append("seccomp")
    return applied


def probe() -> str | None:
    """Fork a child that confines itself and tries a write, a TCP socket, a fork and an exec.

    Returns None when every layer held, else one line saying what is missing (fail closed on that).
    """
    if not sys.platform.startswith("linux"):
        return f"kernel confinement needs Linux (Landlock + seccomp); this is {sys.platform}"
    if not seccomp_available():
        return "libseccomp is not installed (apt install libseccomp2)"
    if landlock_abi() < 1:
        return "this kernel has no Landlock (needs Linux >= 5.13 with landlock in the LSM list)"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        verdict = "ok"
        try:
            confine(Limits(cpu_seconds=10))
            checks = {
                "file write": lambda: os.open("/tmp/.alpha-evolve-probe", os.O_WRONLY | os.O_CREAT, 0o600),
                "socket": lambda: __import__("socket").socket(),
                "fork": os.fork,
                "exec": lambda: os.execv("/bin/true", ["true"]),
                "signal to parent": lambda: os.kill(os.getppid(), 0),
            }
            for what, attempt in checks.items():
                try:
                    result = attempt()
                except OSError:
                    continue
                if what == "fork" and result == 0:
                    os._exit(0)
                verdict = f"kernel confinement did not hold: {what} was allowed"
                break
        except Exception as exc:
            verdict = one_line(exc)
        with contextlib.suppress(OSError):
            os.write(write_fd, verdict.encode()[:500])
        os._exit(0)
    os.close(write_fd)
    try:
        chunks = []
        while chunk := os.read(read_fd, 1024):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    verdict = b"".join(chunks).decode("utf-8", "replace") or "the probe process died"
    return None if verdict == "ok" else verdict
