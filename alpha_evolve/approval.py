"""Wait for a person or an agent to answer by editing one file, with low latency and without being fooled.

People and agents edit ``pending_action.json`` with anything: an editor writing in place, ``jq … > t && mv t f``,
Claude Code's Edit tool (``NAME.tmp.<pid>.<hex>`` then a rename, which arrives only as a ``moved`` event), or a
delete-and-recreate. FIELD_NOTES measured that inotify reports each of these within ~2 ms when the *directory* is
watched, that early ``modified`` events show half a document, and that an exception in a handler silently kills
the observer thread. Hence: watch the directory before the first read, keep the handler to one ``queue.put``,
read at once on ``closed``/``moved`` and ~50 ms after ``created``/``modified``, and treat a parse failure as "wait"
until the same bytes have stayed put for a settle time (events can arrive late, so an event is no proof).

Where inotify is not available (``Observer()`` raises EMFILE/ENOSPC/OSError) the waiter re-reads the file every
``poll_interval`` seconds instead; in both modes a periodic re-read guards against a lost event.

This module knows nothing about what the file means: the caller's ``evaluate`` says whether the bytes are an
answer, a problem to report, or not an answer yet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler

logger = logging.getLogger("alpha_evolve.approval")


def _not_a_shutdown_race(record: logging.LogRecord) -> bool:
    """watchdog logs "queue_events() called when the thread is inactive" at ERROR when an event arrives while an
    observer stops (our own last write of the session, or an agent's answer): harmless, and noise at exit."""
    return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_not_a_shutdown_race)

DEBOUNCE_SECONDS = 0.05
"""Delay after ``created``/``modified`` before reading: long enough for a writer to finish a small file."""

SETTLE_SECONDS = 0.25
"""Unparsable content is reported as a problem only after staying unchanged this long (a writer may be mid-way)."""

_STOP_CHECK_SECONDS = 0.2
"""Longest stretch the waiter blocks without looking at the stop flag (signal handlers only set a flag)."""

_NOW = "now"
_SOON = "soon"


@dataclass(frozen=True)
class Verdict:
    """What ``evaluate`` makes of the file's bytes.

    ``wait``: not an answer (e.g. still awaiting). ``incomplete``: does not parse; reported only once the content is
    final. ``problem``: a finished edit that cannot be accepted; reported, and the waiter keeps waiting.
    ``accept``: the answer, carried in ``value``.
    """

    kind: Literal["wait", "incomplete", "problem", "accept"]
    message: str = ""
    value: Any = None

    @classmethod
    def wait(cls) -> Verdict:
        return cls("wait")

    @classmethod
    def incomplete(cls, message: str) -> Verdict:
        return cls("incomplete", message)

    @classmethod
    def problem(cls, message: str) -> Verdict:
        return cls("problem", message)

    @classmethod
    def accept(cls, value: Any) -> Verdict:
        return cls("accept", value=value)


@dataclass(frozen=True)
class WaitOutcome:
    """How a wait ended. ``file_mtime`` is the answer's modification time, for the detection latency."""

    kind: Literal["accepted", "timed_out", "stopped"]
    value: Any = None
    detected_at: float = 0.0
    file_mtime: float | None = None


class _Handler(FileSystemEventHandler):
    """Hands matching events to the waiting thread; never raises (a raise would kill the observer thread)."""

    def __init__(self, target: Path, events: queue.SimpleQueue[str]) -> None:
        self._target = os.fsencode(str(target))
        self._events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            kind = event.event_type
            if kind == "moved":
                if os.fsencode(event.dest_path) == self._target:
                    self._events.put(_NOW)
                elif os.fsencode(event.src_path) == self._target:
                    self._events.put(_SOON)  # renamed away: as good as deleted unless something takes its place
                return
            if os.fsencode(event.src_path) != self._target:
                return
            if kind == "closed":
                self._events.put(_NOW)
            elif kind in ("created", "modified", "attrib", "deleted"):
                self._events.put(_SOON)  # "deleted": the file may be gone for good (reported after a settle time)
        except Exception:  # pragma: no cover - defensive: keep the observer thread alive
            logger.exception("approval watcher: ignoring an event it could not handle")


class FileWatch:
    """Watches one file through its directory; falls back to polling when inotify cannot be had.

    Start it before the first read of the file, so no edit can slip between the read and the watch.
    """

    def __init__(self, path: str | Path, *, force_polling: bool = False) -> None:
        p = Path(path)
        # resolve the folder only: the file itself may be a link to elsewhere, to nowhere or to itself (a loop
        # makes Path.resolve raise on Python 3.11), and the watch is on this name in this folder whatever it is
        self.path = p.parent.resolve() / p.name
        self.events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.mode: Literal["inotify", "polling"] = "polling"
        self._observer: Any = None
        self._force_polling = force_polling

    def start(self) -> FileWatch:
        if self._observer is not None or self._force_polling:
            return self
        try:
            from watchdog.observers import Observer

            observer = Observer()
            observer.schedule(_Handler(self.path, self.events), str(self.path.parent), recursive=False)
            observer.daemon = True
            observer.start()
        except OSError as exc:  # EMFILE (too many inotify instances), ENOSPC (out of watches), ...
            logger.warning("cannot watch %s (%s); polling for changes instead", self.path.parent, exc.strerror or exc)
            self.mode = "polling"
            return self
        self._observer = observer
        self.mode = "inotify"
        return self

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            with contextlib.suppress(Exception):
                observer.stop()
                observer.join(timeout=5)

    def drain(self) -> None:
        """Forget queued events (they only ever trigger a re-read, so dropping them loses nothing)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.events.get_nowait()

    def __enter__(self) -> FileWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_MISSING = "was deleted (or renamed away)"


def _read(path: Path) -> tuple[bytes | None, float | None, str | None]:
    """(content, mtime, trouble): ``trouble`` says why the path is not a readable regular file (deleted, a
    directory, a FIFO, a device, a dangling or looping link, too big). Never blocks: a FIFO put in place of the
    file would otherwise hang ``open`` in the kernel, deaf to SIGTERM."""
    from alpha_evolve.files import MAX_JSON_BYTES, FileFormatError, not_a_file_reason, read_regular_file

    reason = not_a_file_reason(path)
    if reason == "does not exist":
        return None, None, _MISSING
    if reason is not None:
        return None, None, reason
    try:
        raw = read_regular_file(path, max_bytes=MAX_JSON_BYTES, what="file")
        mtime = os.stat(path).st_mtime
    except FileFormatError as exc:
        text = str(exc).split(": file ", 1)[-1]
        if isinstance(exc.__cause__, OSError):  # EACCES while a writer fixes permissions, and the like: wait
            logger.debug("cannot read %s yet: %s", path, exc)
            return None, None, None
        return None, None, _MISSING if text == "not found" else text
    except OSError as exc:
        logger.debug("cannot read %s yet: %s", path, exc)
        return None, None, None
    return raw, mtime, None


def wait_for_answer(
    watch: FileWatch,
    evaluate: Callable[[bytes], Verdict],
    *,
    on_problem: Callable[[str], None],
    poll_interval: float,
    timeout: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    restore: Callable[[], None] | None = None,
) -> WaitOutcome:
    """Block until ``evaluate`` accepts the file's content, the timeout passes, or ``should_stop()`` is true.

    ``on_problem`` is called once per distinct content that ``evaluate`` refuses; content that does not parse is
    reported only once it has stayed the same for ``SETTLE_SECONDS`` (or two polls), because an event can be
    delivered late and a ``moved``/``closed`` event alone does not prove the bytes read after it are final. The
    file itself is never touched, so a person's broken edit is never lost.

    When the path stops being a regular file (deleted, replaced by a directory, a FIFO, a link to a device or to
    nowhere) for ``SETTLE_SECONDS`` — a delete-and-recreate save is over well within that — the problem is
    reported and ``restore()`` (when given) puts the open question back; without ``restore`` a missing file is
    simply awaited.
    """
    path = watch.path
    deadline = None if timeout is None else time.monotonic() + timeout
    poll_interval = max(poll_interval, 0.01)
    settle = SETTLE_SECONDS if watch.mode == "inotify" else max(SETTLE_SECONDS, poll_interval)
    next_rescan = 0.0  # read once at once: the answer may already be there
    read_at: float | None = None  # debounced read pending
    confirm_at: float | None = None  # re-read of unparsable content, to report it if it did not change
    last_raw: bytes | None = None  # content last evaluated
    last_kind: str | None = None
    reported: bytes | None = None  # content last reported as a problem
    trouble_at: float | None = None  # re-check of a path that is not a regular file, to report and restore it
    trouble_seen: str | None = None
    trouble_reported: str | None = None

    def consider(confirming: bool = False) -> WaitOutcome | None:
        nonlocal last_raw, last_kind, reported, confirm_at, trouble_at, trouble_seen, trouble_reported
        raw, mtime, trouble = _read(path)
        if trouble is not None:
            if trouble == _MISSING and restore is None:
                return None
            if not confirming or trouble != trouble_seen:
                if trouble != trouble_seen or trouble_at is None:
                    trouble_seen, trouble_at = trouble, time.monotonic() + SETTLE_SECONDS
                return None
            if trouble != trouble_reported:
                trouble_reported = trouble
                on_problem(f"{trouble}" + ("; restored the open action in its place" if restore else ""))
            if restore is not None:
                try:
                    restore()
                except Exception as exc:  # keep waiting: a later edit or the periodic re-read may still succeed
                    logger.warning("cannot restore %s: %s", path, exc)
            last_raw = None
            return None
        trouble_seen = trouble_at = None
        if raw is None:
            return None
        trouble_reported = None
        if raw == last_raw and not (confirming and last_kind == "incomplete"):
            return None
        verdict = evaluate(raw)
        last_raw, last_kind = raw, verdict.kind
        if verdict.kind == "accept":
            return WaitOutcome("accepted", verdict.value, detected_at=time.time(), file_mtime=mtime)
        if verdict.kind == "problem" or (verdict.kind == "incomplete" and confirming):
            if reported != raw:
                reported = raw
                on_problem(verdict.message)
        elif verdict.kind == "incomplete":
            logger.debug("%s: incomplete content (%s); waiting for the writer to finish", path, verdict.message)
            confirm_at = time.monotonic() + settle
        return None

    while True:
        if should_stop():
            return WaitOutcome("stopped", detected_at=time.time())
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return WaitOutcome("timed_out", detected_at=time.time())
        outcome = None
        if now >= next_rescan:
            next_rescan = now + poll_interval
            outcome = consider()
        elif read_at is not None and now >= read_at:
            read_at = None
            outcome = consider()
        elif confirm_at is not None and now >= confirm_at:
            confirm_at = None
            outcome = consider(confirming=True)
        elif trouble_at is not None and now >= trouble_at:
            trouble_at = None
            outcome = consider(confirming=True)
        if outcome:
            return outcome
        wake = min(x for x in (next_rescan, read_at, confirm_at, trouble_at, deadline, now + _STOP_CHECK_SECONDS)
                   if x is not None)
        try:
            signal = watch.events.get(timeout=max(wake - time.monotonic(), 0.0))
        except queue.Empty:
            continue
        if signal == _NOW:
            read_at = None
            outcome = consider()
            if outcome:
                return outcome
        else:
            read_at = time.monotonic() + DEBOUNCE_SECONDS
