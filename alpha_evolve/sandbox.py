"""Worker-side guards around untrusted candidate code (defence in depth behind the static policy).

The static policy (AST) is the real gate; these guards exist because an AST check can be fooled (getattr
tricks, string building). They live in the worker process only:
- an audit hook (`sys.addaudithook`, which cannot be removed) that is *armed* only while candidate code runs
  and refuses writes, deletions, processes, signals to other processes, sockets and native-code loading;
- an address-space limit (`RLIMIT_AS`) so a memory bomb becomes a MemoryError instead of the OOM killer;
- a private temporary working directory and a closed stdin.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

_ARMED = False
_INSTALLED = False

# Audit events refused outright while armed.
_REFUSED_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "os.remove",
        "os.rmdir",
        "os.rename",
        "os.mkdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "os.chdir",
        "os.putenv",
        "os.unsetenv",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "shutil.rmtree",
        "shutil.move",
        "shutil.copyfile",
        "socket.__new__",
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.sendto",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.addressof",
        "ctypes.string_at",
        "ctypes.cdata",
        "mmap.__new__",
        "urllib.Request",
        "webbrowser.open",
        "sys.setrecursionlimit",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class SandboxViolation(PermissionError):
    """Raised inside candidate code by the audit hook."""


def _is_write_open(args: tuple[Any, ...]) -> bool:
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 else 0
    if isinstance(mode, str) and any(ch in mode for ch in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _ARMED:
        return
    if event in _REFUSED_EVENTS or (event == "open" and _is_write_open(args)):
        raise SandboxViolation(f"sandbox: {event} is not allowed in strategy code")


def install_audit_hook() -> None:
    """Install the (disarmed) hook once per process."""
    global _INSTALLED
    if not _INSTALLED:
        sys.addaudithook(_hook)
        _INSTALLED = True


@contextlib.contextmanager
def armed() -> Iterator[None]:
    """Refuse dangerous operations for the duration of the block (candidate loading and its backtest)."""
    global _ARMED
    install_audit_hook()
    previous = _ARMED
    _ARMED = True
    try:
        yield
    finally:
        _ARMED = previous


def is_armed() -> bool:
    return _ARMED


def limit_memory(extra_mb: int) -> int:
    """Cap the address space at its current size plus `extra_mb`; returns the limit in bytes.

    The start-up footprint (NautilusTrader alone reserves hundreds of MiB of address space) is not the
    candidate's fault, so the budget is on top of it.
    """
    current = _address_space_bytes()
    limit = current + int(extra_mb) * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # pragma: no cover - non-Linux
        return 0


def isolate_process(workdir: str | None = None) -> str:
    """Private temp cwd (relative paths land there) and no stdin (a candidate cannot block on input)."""
    workdir = workdir or tempfile.mkdtemp(prefix="alpha-evolve-worker-")
    os.chdir(workdir)
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    except OSError:  # pragma: no cover
        pass
    with contextlib.suppress(Exception):
        sys.stdin.close()
    return workdir
