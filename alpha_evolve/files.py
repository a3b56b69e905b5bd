"""Crash-safe files: atomic JSON/text writes, JSONL logs that survive a torn last line, schema checks.

Every state file of a run or a session goes through here, because FIELD_NOTES measured that a plain
``open('w')`` killed mid-write leaves an unreadable file every time, while temp file + fsync + ``os.replace`` +
directory fsync never did. JSONL appends are not atomic against SIGKILL either: the reader sets aside a torn
last line and truncates it before the next append, but a bad line in the middle is corruption and is reported.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

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
        try:
            mode = os.stat(p).st_mode & 0o777
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


def _clean(value: Any) -> Any:
    """NaN/inf become null explicitly (orjson would do it silently; we want it deliberate and documented)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def dumps(obj: Any, *, indent: bool = True) -> bytes:
    opts = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    if indent:
        opts |= orjson.OPT_INDENT_2
    return orjson.dumps(_clean(obj), option=opts, default=str)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, dumps(obj) + b"\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file is a one-line ``FileFormatError``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise FileFormatError(f"{p}: file not found") from None
    except OSError as exc:
        raise FileFormatError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FileFormatError(f"{p}: invalid JSON ({exc})") from None


def read_text_file(path: str | Path, *, what: str, expected: str, error: type[Exception] = FileFormatError) -> str:
    """A user's text file (config, search space, strategy) or ``error`` with one line saying what went wrong."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{p}: is a directory, expected {expected}") from None
    except (OSError, UnicodeDecodeError) as exc:
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
    if not p.exists():
        return []
    raw = p.read_bytes()
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
