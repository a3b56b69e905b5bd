"""Worker-side guards around untrusted candidate code (defence in depth behind the static policy).

The static policy (AST) is the real gate; these guards exist because an AST check can be fooled (getattr
tricks, string building). They live in the worker process only:
- an audit hook (`sys.addaudithook`, which cannot be removed) that is *armed* only while candidate code runs
  and refuses writes, deletions, processes, signals to other processes, sockets and native-code loading;
- an address-space limit (`RLIMIT_AS`) so a memory bomb becomes a MemoryError instead of the OOM killer;
- a private temporary working directory and a closed stdin;
- candidate modules run with restricted builtins whose ``__import__`` hands out *views* of allowed modules: a
  view never yields a module outside the allow-list, so ``enum.bltns`` (builtins), ``typing.operator`` or the
  root package of a dotted import (``alpha_evolve.sandbox``) cannot be reached by attribute chains, and views
  cannot be assigned to (no disarming the hook through a module global).
While armed the hook also refuses ``compile`` (except while a library module is being imported): every route
from a string to code (``eval``, ``typing`` forward references, ``functools.singledispatch`` annotations, ...)
compiles, and strategy code never needs that.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
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
        "compile",
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


def _importing() -> bool:
    """An import is running: a library module (only allowed ones can be imported) being compiled or executed.

    Module bodies legitimately compile code (``@dataclass``, ``namedtuple``); candidate code never runs inside
    an import, so compiling there is not a string-to-code route for it.
    """
    frame: Any = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


CANDIDATE_FILENAME = "<candidate>"


def _candidate_on_stack() -> bool:
    """Candidate code is (indirectly) running: armed whatever ``_ARMED`` says, so flipping that flag disarms nothing."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == CANDIDATE_FILENAME:
            return True
        frame = frame.f_back
    return False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "sys._getframe" or (event == "object.__getattr__" and args[1:2] == ("f_code",)):
        return  # raised by the stack walks below; refusing or inspecting them would recurse
    if not _ARMED and not _candidate_on_stack():
        return
    if event == "compile" and _importing():
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
def disarmed() -> Iterator[None]:
    """Trusted work inside an armed block that needs a refused event (compiling the candidate's own source)."""
    global _ARMED
    previous = _ARMED
    _ARMED = False
    try:
        yield
    finally:
        _ARMED = previous


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


# ------------------------------------------------------------------------------------------ restricted imports


class _ModuleView:
    """Read-only view of an allowed module whose module-valued attributes go through the allow-list too."""

    __slots__ = ("_view_allowed", "_view_module")

    def __init__(self, module: ModuleType, allowed: Callable[[str], bool]) -> None:
        object.__setattr__(self, "_view_module", module)
        object.__setattr__(self, "_view_allowed", allowed)

    def __getattr__(self, name: str) -> Any:
        module: ModuleType = object.__getattribute__(self, "_view_module")
        allowed: Callable[[str], bool] = object.__getattribute__(self, "_view_allowed")
        value = getattr(module, name)
        if isinstance(value, ModuleType):
            return _view(value, allowed, f"{module.__name__}.{name}")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise SandboxViolation(f"sandbox: assigning to module attribute {name!r} is not allowed in strategy code")

    def __delattr__(self, name: str) -> None:
        raise SandboxViolation(f"sandbox: deleting module attribute {name!r} is not allowed in strategy code")

    def __repr__(self) -> str:
        return f"<module {object.__getattribute__(self, '_view_module').__name__!r} (strategy view)>"


def _view(module: ModuleType, allowed: Callable[[str], bool], reached_as: str) -> _ModuleView:
    if not allowed(module.__name__):
        raise SandboxViolation(f"sandbox: module {module.__name__!r} (reached as {reached_as!r}) is not allowed")
    return _ModuleView(module, allowed)


def restricted_builtins(allowed: Callable[[str], bool], forbidden: Iterable[str]) -> dict[str, Any]:
    """Builtins for a candidate module: without ``forbidden`` names and with an import that returns module views.

    ``allowed(name)`` must also accept the parent packages of allowed modules (``import a.b`` binds ``a``).
    """
    import builtins

    real_import = builtins.__import__

    def guarded_import(
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> Any:
        if level:
            raise SandboxViolation("sandbox: relative imports are not allowed in strategy code")
        if not allowed(name):
            raise SandboxViolation(f"sandbox: import of {name!r} is not allowed in strategy code")
        return _view(real_import(name, globals, locals, fromlist, level), allowed, name)

    namespace = {k: v for k, v in builtins.__dict__.items() if k not in set(forbidden)}
    namespace["__import__"] = guarded_import
    return namespace
