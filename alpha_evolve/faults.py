"""Telling the machine's failures apart from a candidate's or a proposal's.

A full disk, a read-only folder, an I/O error or a store that cannot be written says nothing about the settings
or the strategy being tried. Recording it as their failure teaches the sampler a falsehood, puts it into the
briefing and the store, and (because the iteration is then "done") makes ``--resume`` skip it. So every layer
that records outcomes asks ``infrastructure_problem(exc)`` first: when it answers, the run or session stops
cleanly with that one line, leaves the iteration un-recorded, and a resume re-runs it once the machine is fixed.

Errors are recognised by their errno (the OSError family) or, for SQLite, by the engine's own wording (its
exceptions carry no errno); a wrapper that re-raises with ``from None`` marks its exception with
``mark_infrastructure`` so the verdict survives the re-raise.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

from alpha_evolve.values import one_line

INFRASTRUCTURE_ERRNOS = frozenset(
    {
        errno.ENOSPC,  # no space left on device
        errno.EDQUOT,  # disk quota exceeded
        errno.EACCES,  # permission denied
        errno.EPERM,  # operation not permitted
        errno.EROFS,  # read-only file system
        errno.EIO,  # input/output error
        errno.EFBIG,  # file too large (RLIMIT_FSIZE, filesystem limit)
        errno.EMFILE,  # too many open files in this process
        errno.ENFILE,  # too many open files in the system
        errno.ENOMEM,  # the kernel could not allocate (not a Python MemoryError of a candidate)
        errno.ESTALE,  # stale NFS handle
        errno.EAGAIN,  # fork or thread limit reached (RLIMIT_NPROC, cgroup pids)
    }
)

_SQLITE_PHRASES = (
    "database or disk is full",
    "attempt to write a readonly database",
    "disk i/o error",
    "unable to open database file",
    "readonly database",
    "no space left on device",
    "read-only file system",
    "out of memory",
)

_ATTR = "_alpha_evolve_infrastructure"

EXIT_INFRASTRUCTURE = 75
"""Exit code of a command stopped by the machine's failure (``EX_TEMPFAIL``: fix the machine, then resume)."""


class InfrastructureError(RuntimeError):
    """The machine failed (disk full, no permission, I/O error, store not writable); one line, resumable."""


def mark_infrastructure(exc: BaseException, reason: str | None = None) -> BaseException:
    """Tag ``exc`` (typically a wrapper raised ``from None``) as the machine's fault; returns it for ``raise``."""
    setattr(exc, _ATTR, reason or one_line(exc))
    return exc


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                stack.append(nxt)
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)


def describe_oserror(exc: OSError) -> str:
    """``No space left on device: '/path'`` without the ``[Errno 28]`` noise."""
    what = exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    where = exc.filename if exc.filename is not None else None
    return f"{what}: {where}" if where is not None else str(what)


def infrastructure_problem(exc: BaseException) -> str | None:
    """One line describing the machine's failure behind ``exc`` (anywhere in its chain), else None."""
    for e in _chain(exc):
        marked = getattr(e, _ATTR, None)
        if marked:
            return str(marked)
        if isinstance(e, InfrastructureError):
            return one_line(e)
        if isinstance(e, OSError) and e.errno in INFRASTRUCTURE_ERRNOS:
            return describe_oserror(e)
        if isinstance(e, sqlite3.Error):
            text = str(e).lower()
            if any(p in text for p in _SQLITE_PHRASES):
                return one_line(e)
    return None


def sqlite_infrastructure(exc: sqlite3.Error) -> bool:
    """A SQLite error that is the disk's or the permissions' fault (SQLite gives messages, not errnos)."""
    text = str(exc).lower()
    return any(p in text for p in _SQLITE_PHRASES)


def as_infrastructure(exc: BaseException) -> InfrastructureError | None:
    """An ``InfrastructureError`` with the one-line reason when ``exc`` is the machine's fault, else None."""
    reason = infrastructure_problem(exc)
    if reason is None:
        return None
    if isinstance(exc, InfrastructureError):
        return exc
    return InfrastructureError(reason)
