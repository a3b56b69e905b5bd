"""Crash-safe files: atomic JSON/text writes, JSONL logs that survive a torn last line, schema checks.

Every state file of a run or a session goes through here, because FIELD_NOTES measured that a plain
``open('w')`` killed mid-write leaves an unreadable file every time, while temp file + fsync + ``os.replace`` +
directory fsync never did. JSONL appends are not atomic against SIGKILL either: the reader sets aside a torn
last line and truncates it before the next append, but a bad line in the middle is corruption and is reported.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from alpha_evolve.values import json_safe

logger = logging.getLogger("alpha_evolve.files")

# A checkout keeps the schemas at the top level (where people look for them); a wheel carries them inside
# the package (pyproject's force-include).
_HERE = Path(__file__).resolve().parent
SCHEMA_DIR = _HERE.parent / "schemas" if (_HERE.parent / "schemas").is_dir() else _HERE / "schemas"
_TMP_PREFIX = ".tmp-ae-"


class FileFormatError(ValueError):
    """A state file that cannot be read as what it should be; the message is one line naming the file."""


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` so that readers and crashes see either the old or the new file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + p.name + ".", dir=p.parent)
    try:
        # mkstemp creates 0600; keep the replaced file's mode, else the usual 0644, so that an approver running
        # as another user can still read pending_action.json and friends.
        try:  # lstat: a symlink (to /dev/zero, say) put in the file's place must not lend us its mode
            st = os.lstat(p)
            mode = st.st_mode & 0o777 if stat.S_ISREG(st.st_mode) else 0o644
        except OSError:
            mode = 0o644
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(p.parent)
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps(obj: Any, *, indent: bool = True) -> bytes:
    opts = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    if indent:
        opts |= orjson.OPT_INDENT_2
    return orjson.dumps(json_safe(obj), option=opts, default=str)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, dumps(obj) + b"\n")


# ------------------------------------------------------------------------------------------- safe reading

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

MAX_JSON_BYTES = 4 * MIB
"""Cap of a single JSON document a person or an agent hands us (pending_action.json, a response file, a
summary): the largest the loop writes is a few KiB, so 4 MiB leaves room for any honest edit."""

MAX_JSONL_BYTES = 256 * MIB
"""Cap of a JSONL log (history, briefings): ~50 KB a record would still allow thousands of iterations."""

MAX_TEXT_BYTES = 4 * MIB
"""Cap of a config, a search space or a strategy file."""

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _size(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def not_a_file_reason(path: str | Path, *, follow_symlinks: bool = True) -> str | None:
    """Why ``path`` cannot be read as a regular file (missing, dangling or looping link, FIFO, directory, device),
    or None when it is one. Never blocks: only ``lstat``/``stat`` are used."""
    p = Path(path)
    try:
        lst = os.lstat(p)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    if stat.S_ISLNK(lst.st_mode):
        if not follow_symlinks:
            return "is a symbolic link, expected a regular file"
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return f"is a dangling symbolic link (to {target})"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symbolic link loop"
            return f"is a symbolic link that cannot be followed ({exc.strerror or exc})"
        if not stat.S_ISREG(st.st_mode):
            return f"is a symbolic link to {_kind_of(st.st_mode)} ({target}), expected a regular file"
        return None
    if not stat.S_ISREG(lst.st_mode):
        return f"is {_kind_of(lst.st_mode)}, expected a regular file"
    return None


def read_regular_file(
    path: str | Path,
    *,
    max_bytes: int,
    what: str = "file",
    follow_symlinks: bool = True,
    error: type[Exception] = FileFormatError,
) -> bytes:
    """The bytes of a regular file that a person or an agent gave us, or ``error`` with one line naming it.

    Opened with ``O_NONBLOCK`` (a FIFO would otherwise block ``open`` in the kernel, deaf to SIGTERM) and, when
    ``follow_symlinks`` is false, ``O_NOFOLLOW``; ``fstat`` on the open descriptor must say "regular file" (so
    ``/dev/zero``, a directory or a FIFO is refused before a byte is read, with no race against a swap of the
    path), and at most ``max_bytes`` are read (a file that grows while read is refused, not truncated).
    """
    p = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        reason = not_a_file_reason(p, follow_symlinks=follow_symlinks) or "does not exist"
        if reason == "does not exist":
            raise error(f"{p}: {what} not found") from None
        raise error(f"{p}: {what} {reason}") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            reason = not_a_file_reason(p, follow_symlinks=follow_symlinks) or "is not a regular file"
            raise error(f"{p}: {what} {reason}") from None
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            reason = not_a_file_reason(p, follow_symlinks=follow_symlinks) or f"is {_kind_of(st.st_mode)}"
            if "expected" not in reason:
                reason += ", expected a regular file"
            raise error(f"{p}: {what} {reason}")
        if st.st_size > max_bytes:
            raise error(f"{p}: {what} is {_size(st.st_size)}, more than the limit of {_size(max_bytes)}")
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, min(max_bytes + 1 - total, 1 * MIB) or 1)
            except BlockingIOError:  # cannot happen for a regular file; never spin on it
                raise error(f"{p}: {what} would block, expected a regular file") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{p}: {what} grew past the limit of {_size(max_bytes)} while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)


def decompress_gzip(data: bytes, *, max_bytes: int, source: str | Path, error: type[Exception] = FileFormatError
                    ) -> bytes:
    """Inflate gzip ``data`` (concatenated members too) to at most ``max_bytes``: a bomb is refused, not expanded."""
    out: list[bytes] = []
    total = 0
    rest = data
    try:
        while rest:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            buf = rest
            while buf:
                piece = d.decompress(buf, max_bytes + 1 - total)
                out.append(piece)
                total += len(piece)
                if total > max_bytes:
                    raise error(f"{source}: decompresses to more than the limit of {_size(max_bytes)}")
                buf = d.unconsumed_tail
                if d.eof:
                    break
            if not d.eof:
                raise error(f"{source}: unreadable gzip file (truncated)")
            rest = d.unused_data.lstrip(b"\x00")  # members may be padded with zeros
    except zlib.error as exc:
        raise error(f"{source}: unreadable gzip file ({exc})") from None
    return b"".join(out)


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES, what: str = "file") -> Any:
    """Read a JSON file safely (see ``read_regular_file``); any problem is a one-line ``FileFormatError``."""
    p = Path(path)
    raw = read_regular_file(p, max_bytes=max_bytes, what=what)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FileFormatError(f"{p}: invalid JSON ({exc})") from None


def read_text_file(
    path: str | Path,
    *,
    what: str,
    expected: str,
    error: type[Exception] = FileFormatError,
    max_bytes: int = MAX_TEXT_BYTES,
) -> str:
    """A user's text file (config, search space, strategy) or ``error`` with one line saying what went wrong."""
    p = Path(path)
    reason = not_a_file_reason(p)
    if reason is not None and reason.startswith("is a directory"):
        raise error(f"{p}: is a directory, expected {expected}")
    raw = read_regular_file(p, max_bytes=max_bytes, what=what, error=error)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{p}: cannot read {what} ({exc})") from None


def cleanup_stale_temp_files(directory: str | Path) -> int:
    """Remove temp files left by writes that were killed; run when a run or session is (re)opened."""
    d = Path(directory)
    removed = 0
    if not d.is_dir():
        return 0
    for tmp in d.glob(_TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


# ------------------------------------------------------------------------------------------------------ JSONL


def read_jsonl(path: str | Path, *, repair: bool = False) -> list[Any]:
    """Read a JSONL log. A torn last line (no newline, or unparsable) is dropped — and truncated when ``repair``.

    A line that does not parse anywhere but at the end cannot come from a crash during an append, so it is
    reported as corruption instead of being skipped.
    """
    p = Path(path)
    if not os.path.lexists(p):
        return []
    raw = read_regular_file(p, max_bytes=MAX_JSONL_BYTES, what="log")
    records: list[Any] = []
    offset = 0
    lines = raw.split(b"\n")
    for i, line in enumerate(lines):
        is_last = i == len(lines) - 1
        if is_last:
            if line.strip():  # no trailing newline: the append was cut short
                logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted write", p,
                               len(line))
                if repair:
                    _truncate(p, offset)
            break
        if not line.strip():
            offset += len(line) + 1
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            if i == len(lines) - 2 and not lines[-1].strip():
                logger.warning("%s: dropping an unparsable last line left by an interrupted write", p)
                if repair:
                    _truncate(p, offset)
                break
            raise FileFormatError(f"{p}: line {i + 1} is not valid JSON (the file is corrupt)") from None
        offset += len(line) + 1
    return records


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append one record as one line, fsynced; the reader copes with a line torn by a kill."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = dumps(record, indent=False) + b"\n"
    with open(p, "ab") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def iter_jsonl(path: str | Path) -> Iterator[Any]:
    yield from read_jsonl(path)


# ----------------------------------------------------------------------------------------------------- schemas


@functools.cache
def schema_validator(name: str) -> Draft202012Validator:
    """Validator for ``schemas/<name>.schema.json`` (or ``<name>`` when it already ends in .json)."""
    fname = name if name.endswith(".json") else f"{name}.schema.json"
    schema = orjson.loads((SCHEMA_DIR / fname).read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(name: str, instance: Any) -> list[str]:
    """Readable problems of ``instance`` against a schema, each as 'path: message'; empty when valid."""
    validator = schema_validator(name)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors]


def validate_against(name: str, instance: Any, *, source: str) -> None:
    """Raise a one-line ``FileFormatError`` naming ``source`` and the first problem."""
    errors = schema_errors(name, instance)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise FileFormatError(f"{source}: {errors[0]}{more}")
