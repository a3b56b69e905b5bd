"""Mutations written by a Claude Code session through request/response files.

Why files: a Claude Code session (with the ``alpha-evolve-mutator`` subagent, ``.claude/agents``) cannot be called
like an API, but it can read and write files. Each request is written atomically to
``<run_dir>/mutations/requests/<request_id>.json``; the agent writes ``<run_dir>/mutations/responses/
<request_id>.json``. We watch the responses directory with watchdog (inotify), hand events to asyncio with
``call_soon_threadsafe``, read at once on ``closed``/``moved`` and after a short debounce on ``created``/
``modified`` (partial writes are real: a half-written document simply fails to parse and we wait for the next
event). A slow safety poll covers lost events; if no observer can start (inotify limits), polling is all we do.

Every attempt is its own request: the file id is ``<request_id>-a<attempt>`` (with ``-r<n>`` added when a resumed
run would reuse a name already on disk), so a retry never overwrites an earlier attempt's files and a late answer
to an old attempt can never be taken for the new one. Paths inside a request are absolute: Claude Code resolves a
relative path against its own working directory, which need not be the run's.

Lifecycle of the files: a consumed request and its response move to ``mutations/done/``; a request that timed out,
or whose run was stopped or cancelled while it waited, moves to ``mutations/expired/`` so the agent stops seeing
it, and a response that arrives for it later is moved to ``mutations/late/`` and reported with a warning instead
of being used. Requests left in ``requests/`` by a process that died are expired when the next mutator opens the
run directory (their attempts are re-made under new ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

import alpha_evolve.approval  # noqa: F401  (its filter quiets watchdog's harmless shutdown-race error)
from alpha_evolve.files import (
    MAX_JSON_BYTES,
    FileFormatError,
    atomic_write_bytes,
    cleanup_stale_temp_files,
    dumps,
    not_a_file_reason,
    read_regular_file,
    schema_errors,
)
from alpha_evolve.mutators.base import MutationRequest, MutationResponse, build_candidate, excerpt
from alpha_evolve.values import one_line

logger = logging.getLogger("alpha_evolve.mutators.agent")

REQUEST_SCHEMA = "mutation_request"
RESPONSE_SCHEMA = "mutation_response"
SCHEMA_VERSION = 1
AGENT_NAME = "alpha-evolve-mutator"


class _Handler(FileSystemEventHandler):
    """Runs on the observer thread: must never raise (an exception kills the thread silently)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Any) -> None:
        self._loop = loop
        self._callback = callback

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory or event.event_type not in ("created", "modified", "closed", "moved"):
                return
            path = event.dest_path if event.event_type == "moved" else event.src_path
            if not path:
                return
            self._loop.call_soon_threadsafe(self._callback, os.fsdecode(path), event.event_type)
        except Exception:  # loop closed, or anything else: dropping one event beats losing the observer
            pass


def _stop_quietly(observer: BaseObserver) -> None:
    with contextlib.suppress(Exception):
        observer.stop()
        observer.join(5.0)


class AgentMutator:
    """Delegates each mutation to a Claude Code agent through JSON files under ``run_dir/mutations``."""

    name = "agent"

    def __init__(self, run_dir: str | Path, *, timeout: float = 900.0, debounce: float = 0.05,
                 poll_interval: float = 0.1, safety_poll: float = 2.0, use_observer: bool = True,
                 settle: float = 2.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.root = Path(run_dir).resolve() / "mutations"
        self.requests_dir = self.root / "requests"
        self.responses_dir = self.root / "responses"
        self.done_dir = self.root / "done"
        self.expired_dir = self.root / "expired"
        self.late_dir = self.root / "late"
        self.timeout = timeout
        self.debounce = debounce
        self.poll_interval = poll_interval
        self.safety_poll = safety_poll
        self.use_observer = use_observer
        self.settle = settle  # an unparseable response unchanged this long is malformed, not half-written
        self.late_answers: list[str] = []
        for d in (self.requests_dir, self.responses_dir, self.done_dir, self.expired_dir, self.late_dir):
            d.mkdir(parents=True, exist_ok=True)
            cleanup_stale_temp_files(d)
        for stale in sorted(self.requests_dir.glob("*.json")):  # left by a process that died mid-wait
            self._expire(stale.stem)
            logger.info("mutation request %s was left by an earlier process; moved to %s", stale.stem,
                        self.expired_dir)

    def attempt_id(self, request: MutationRequest) -> str:
        """A file id no earlier attempt used: ``<request_id>-a<attempt>``, plus ``-r<n>`` on a re-made attempt."""
        base = f"{request.request_id}-a{request.attempt}"
        for n in range(10_000):
            rid = base + (f"-r{n}" if n else "")
            names = (self.requests_dir / f"{rid}.json", self.responses_dir / f"{rid}.json",
                     self.expired_dir / f"{rid}.json", self.late_dir / f"{rid}.json",
                     self.done_dir / f"{rid}.request.json")
            if not any(path.exists() for path in names):
                return rid
        raise RuntimeError(f"{self.requests_dir}: no free request id for {base}")

    def request_path(self, request_id: str) -> Path:
        return self.requests_dir / f"{request_id}.json"

    def response_path(self, request_id: str) -> Path:
        return self.responses_dir / f"{request_id}.json"

    # -- one mutation ---------------------------------------------------------------------------------------

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        """One attempt under its own id; the response's ``request_id`` is that attempt id."""
        t0 = time.monotonic()
        self.sweep_late()
        request = dataclasses.replace(request, request_id=self.attempt_id(request))
        target = self.response_path(request.request_id)
        document = self._request_document(request)
        problems = schema_errors(REQUEST_SCHEMA, document)
        if problems:  # a bug on our side, not the agent's: say exactly what is wrong
            raise ValueError(f"mutation request {request.request_id}: {problems[0]}")

        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        pending: dict[str, asyncio.TimerHandle] = {}

        def on_event(path: str, kind: str) -> None:
            if Path(path).name != target.name or Path(path).parent != target.parent:
                return
            if kind in ("closed", "moved"):
                wake.set()
                return
            old = pending.pop("debounce", None)
            if old is not None:
                old.cancel()
            pending["debounce"] = loop.call_later(self.debounce, wake.set)

        observer = self._start_observer(loop, on_event)  # watch before the first read
        interval = self.safety_poll if observer is not None else self.poll_interval
        settled = False  # the request left requests/ (answered or expired) before we stop waiting
        try:
            atomic_write_bytes(self.request_path(request.request_id), dumps(document) + b"\n")
            logger.info("mutation request %s written; waiting up to %.0fs for %s", request.request_id,
                        self.timeout, target)
            deadline = t0 + self.timeout
            last_problem: str | None = None
            bad: tuple[tuple[int, int], float] | None = None  # (size, mtime) of an unparseable file, first seen
            while True:
                parsed = self._try_read(target)
                if parsed is not None:
                    settled = True
                    return self._finish(request, parsed, t0)
                malformed = self._malformed(target)
                wait = interval
                if malformed is None:
                    bad = None
                else:
                    signature, problem = malformed
                    if bad is None or bad[0] != signature:
                        bad = (signature, time.monotonic())
                    elif time.monotonic() - bad[1] >= self.settle:
                        settled = True
                        self._archive(request.request_id)
                        return MutationResponse(
                            request_id=request.request_id, mutator=self.name, failure_kind="response",
                            error=f"{target.name}: " + (problem if problem.startswith(("is ", "larger"))
                                                                 else f"not valid JSON ({problem})"), attempts=1,
                            elapsed=time.monotonic() - t0)
                    wait = min(interval, max(0.01, bad[1] + self.settle - time.monotonic()))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(wait, remaining))
            last_problem = "no response file" if not target.exists() else "response file never became valid JSON"
            settled = True
            self._expire(request.request_id)
            return MutationResponse(
                request_id=request.request_id, mutator=self.name, failure_kind="timeout",
                error=f"no valid answer at {target} within {self.timeout:g}s ({last_problem})",
                attempts=1, elapsed=time.monotonic() - t0)
        finally:
            if not settled:  # cancelled, stopped or interrupted while waiting: the agent must not answer it now
                with contextlib.suppress(Exception):
                    self._expire(request.request_id)
                    logger.info("mutation request %s withdrawn (its run stopped); moved to %s",
                                request.request_id, self.expired_dir)
            for handle in pending.values():
                handle.cancel()
            if observer is not None:
                # Stopping an inotify observer blocks ~0.5 s (its move-pairing delay): do it off the loop and
                # do not wait for it, the answer is already in hand.
                threading.Thread(target=_stop_quietly, args=(observer,), name="ae-observer-stop",
                                 daemon=True).start()

    def _request_document(self, request: MutationRequest) -> dict[str, Any]:
        doc = request.to_dict()
        doc["schema_version"] = SCHEMA_VERSION
        doc["blocks_to_change"] = list(request.blocks_to_change)
        doc["response_path"] = str(self.response_path(request.request_id))  # absolute: see the module docstring
        doc["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return doc

    def _start_observer(self, loop: asyncio.AbstractEventLoop, callback: Any) -> BaseObserver | None:
        if not self.use_observer:
            return None
        try:
            observer = Observer()
            observer.schedule(_Handler(loop, callback), str(self.responses_dir), recursive=False)
            observer.start()
            return observer
        except OSError as exc:  # EMFILE / ENOSPC from inotify: polling still works
            logger.warning("cannot watch %s (%s); polling every %.2fs instead", self.responses_dir, exc,
                           self.poll_interval)
            return None

    @staticmethod
    def _read_response(path: Path) -> bytes | None:
        """The response file's bytes, read without blocking and size-capped (files.read_regular_file); None while
        it is absent or not a regular file (a FIFO or device put there never hangs the run)."""
        if not_a_file_reason(path) is not None:
            return None
        try:
            return read_regular_file(path, max_bytes=MAX_JSON_BYTES, what="response file")
        except FileFormatError:
            return None

    @staticmethod
    def _try_read(path: Path) -> Any | None:
        """The parsed response, or None while it is absent or half-written (wait for the next event)."""
        raw = AgentMutator._read_response(path)
        if raw is None:
            return None
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    @staticmethod
    def _malformed(path: Path) -> tuple[tuple[int, int], str] | None:
        """(size, mtime) and the parse error of a non-empty response file that is not JSON, else None."""
        try:
            st = path.lstat()
        except OSError:
            return None
        reason = not_a_file_reason(path)
        if reason is not None and reason != "does not exist":  # an agent's FIFO/device/link: refuse, never block
            return (st.st_size, st.st_mtime_ns), reason
        raw = AgentMutator._read_response(path)
        if raw is None:
            too_big = st.st_size > MAX_JSON_BYTES
            return ((st.st_size, st.st_mtime_ns), f"larger than the limit of {MAX_JSON_BYTES} bytes") if too_big \
                else None
        if not raw.strip():
            return None
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return (st.st_size, st.st_mtime_ns), one_line(str(exc))
        return None

    def _finish(self, request: MutationRequest, data: Any, t0: float) -> MutationResponse:
        rid = request.request_id
        self._archive(rid)
        notes = data.get("notes") if isinstance(data, dict) and isinstance(data.get("notes"), str) else None

        def failed(kind: str, error: str) -> MutationResponse:
            return MutationResponse(request_id=rid, mutator=self.name, failure_kind=kind, error=error,
                                    attempts=1, elapsed=time.monotonic() - t0, notes=notes,
                                    raw_excerpt=excerpt(orjson.dumps(data).decode(errors="replace")))

        if isinstance(data, dict) and ("blocks" in data) == ("error" in data):
            return failed("response", f"{self.response_path(rid).name}: needs exactly one of 'blocks' "
                                      "(new bodies by block name) or 'error'")
        problems = schema_errors(RESPONSE_SCHEMA, data)
        if problems:
            return failed("response", f"{self.response_path(rid).name}: {problems[0]}")
        if data["request_id"] != rid:
            return failed("response", f"{self.response_path(rid).name}: request_id is {data['request_id']!r}, "
                                      f"expected {rid!r}")
        if data.get("error"):
            return failed("agent", f"the agent gave up: {one_line(str(data['error']))}")
        cand = build_candidate(request, data["blocks"])
        if cand.code is None:
            resp = failed(cand.failure_kind or "syntax", cand.error or "invalid candidate")
            return MutationResponse(**{**resp.to_dict(), "blocks": cand.blocks})
        return MutationResponse(request_id=rid, mutator=self.name, blocks=cand.blocks, code=cand.code,
                                attempts=1, elapsed=time.monotonic() - t0, notes=notes)

    # -- file lifecycle -------------------------------------------------------------------------------------

    def _archive(self, rid: str) -> None:
        for src, dst in ((self.request_path(rid), self.done_dir / f"{rid}.request.json"),
                         (self.response_path(rid), self.done_dir / f"{rid}.response.json")):
            with contextlib.suppress(FileNotFoundError):
                os.replace(src, dst)

    def _expire(self, rid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.request_path(rid), self.expired_dir / f"{rid}.json")
        # A response that is still half-written at the deadline is late too.
        self.sweep_late()

    def sweep_late(self) -> list[str]:
        """Move responses to expired requests aside and report them; returns the request ids found now."""
        found: list[str] = []
        for path in sorted(self.responses_dir.glob("*.json")):
            rid = path.stem
            if not (self.expired_dir / f"{rid}.json").exists():
                continue
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, self.late_dir / path.name)
                found.append(rid)
                self.late_answers.append(rid)
                logger.warning("late answer for timed-out mutation request %s ignored (moved to %s)", rid,
                               self.late_dir)
        return found
