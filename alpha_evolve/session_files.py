"""Legacy mode: a session is a directory of JSON files, and a decision arrives as an edit of pending_action.json.

Layout of ``<session-root>/self_evo_session_<YYYYmmdd_HHMMSS>/``::

    session_summary.json    summary + the loop's state machine (``state``) + settings for --resume
    history.jsonl           one record per iteration that ran (iteration 0 = baseline)
    agent_briefings.jsonl   one record per proposal: the briefing and the proposal
    pending_action.json     the open question for the approver, then the decision the loop took
    approval_feedback.json  why the last edit of pending_action.json was refused (or that it was accepted)
    generated_configs/      TOML snapshot of each iteration's full config
    pipeline_runs/          inner run directories (unless --pipeline-output-dir)
    .session.lock           filelock sidecar: one driver per session; .session.owner says who

Nothing here overwrites a person's edit while the loop waits: a refused edit stays as it is and the reason goes to
``approval_feedback.json``, so the approver can fix it instead of starting over.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import shlex
import socket
import stat
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock, Timeout

from alpha_evolve.approval import FileWatch, Verdict, wait_for_answer
from alpha_evolve.command_hint import cli
from alpha_evolve.files import (
    MAX_JSON_BYTES,
    FileFormatError,
    atomic_write_json,
    cleanup_stale_temp_files,
    not_a_file_reason,
    read_json,
    read_jsonl,
    read_regular_file,
    schema_errors,
)
from alpha_evolve.session import (
    DECISION_STATUSES,
    MAX_NOTES_CHARS,
    CandidateCheck,
    Decision,
    SessionError,
    SessionLockedError,
    WaitResult,
    utc_now,
)

logger = logging.getLogger("alpha_evolve.session_files")

SUMMARY = "session_summary.json"
HISTORY = "history.jsonl"
BRIEFINGS = "agent_briefings.jsonl"
PENDING = "pending_action.json"
FEEDBACK = "approval_feedback.json"
LOCK = ".session.lock"
OWNER = ".session.owner"
SESSION_PREFIX = "self_evo_session_"

FILE_SCHEMAS = {
    SUMMARY: "session_summary",
    HISTORY: "history_record",
    BRIEFINGS: "agent_briefing",
    PENDING: "pending_action",
    FEEDBACK: "approval_feedback",
}


def new_session_dir(root: str | Path, *, taken: Callable[[str], bool] | None = None) -> Path:
    """Create ``self_evo_session_<UTC stamp>`` under ``root``; a suffix keeps two same-second starts apart, also
    from names ``taken`` reports used elsewhere (a registry's sessions may live under other roots)."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    for n in range(10_000):
        path = base / (f"{SESSION_PREFIX}{stamp}" + (f"_{n}" if n else ""))
        if taken is not None and taken(path.name):
            continue
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise SessionError(f"{base}: cannot create a new session directory")


def approval_commands(session_dir: Path) -> dict[str, str]:
    d = shlex.quote(str(session_dir))
    p = shlex.quote(str(session_dir / PENDING))
    t = shlex.quote(str(session_dir / (PENDING + ".new")))
    return {
        "approve": cli("approve", d, "--notes", "'...'"),
        "reject": cli("reject", d, "--notes", "'...'"),
        "stop": cli("stop", d),
        "jq": f"jq '.status = \"approved\"' {p} > {t} && mv {t} {p}",
    }


INSTRUCTIONS = (
    'Set "status" to "approved" (run proposal.candidate), "rejected" (discard it; a new proposal follows) or '
    '"stop" (end the session, resumable). Optionally add "notes" and edit values in "proposal.candidate" '
    '(checked against the search space and the config). Leave "action_id" unchanged and write the whole file '
    "(atomic rename is best). Problems are reported in approval_feedback.json; the loop keeps waiting."
)


class FileStateBackend:
    """``StateBackend`` over a session directory; decisions arrive by editing ``pending_action.json``."""

    kind = "legacy"

    def __init__(
        self,
        session_dir: str | Path,
        *,
        poll_interval: float = 1.0,
        force_polling: bool = False,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.dir = Path(session_dir).resolve()
        self.location = str(self.dir)
        self.session_id = self.dir.name
        self.artifact_dir = self.dir
        self.poll_interval = poll_interval
        self.force_polling = force_polling
        self._report = report or (lambda line: logger.warning("%s", line))
        self._lock: FileLock | None = None
        self._watch: FileWatch | None = None

    # ---- paths

    @property
    def pending_path(self) -> Path:
        return self.dir / PENDING

    @property
    def feedback_path(self) -> Path:
        return self.dir / FEEDBACK

    def files(self) -> dict[str, str]:
        return {
            "history": str(self.dir / HISTORY),
            "briefings": str(self.dir / BRIEFINGS),
            "pending_action": str(self.pending_path),
            "approval_feedback": str(self.feedback_path),
            "generated_configs": str(self.dir / "generated_configs"),
            "pipeline_runs": str(self.dir / "pipeline_runs"),
        }

    # ---- ownership

    def open(self) -> None:
        if not self.dir.is_dir():
            raise SessionError(f"{self.dir}: session directory not found")
        lock = FileLock(str(self.dir / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            owner = "another process"
            with contextlib.suppress(FileFormatError, AttributeError, TypeError):
                info = read_json(self.dir / OWNER)
                owner = f"pid {info['pid']}" + (f" on {info['host']}" if info.get("host") else "")
            raise SessionLockedError(f"session {self.dir} is already being driven by {owner}") from None
        self._lock = lock
        try:
            atomic_write_json(self.dir / OWNER, {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()})
            removed = cleanup_stale_temp_files(self.dir)
            if removed:
                logger.info("%s: removed %d temp files left by an interrupted write", self.dir, removed)
            for name in (HISTORY, BRIEFINGS):  # set aside a tail torn by a kill before anything appends
                read_jsonl(self.dir / name, repair=True)
            self._watch = FileWatch(self.pending_path, force_polling=self.force_polling).start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(OSError):
                (self.dir / OWNER).unlink()
            lock.release()

    @property
    def watch_mode(self) -> str:
        return self._watch.mode if self._watch else "none"

    # ---- records

    def load_summary(self) -> dict[str, Any] | None:
        path = self.dir / SUMMARY
        if not path.exists():
            return None
        data = read_json(path)
        if not isinstance(data, dict):
            raise SessionError(f"{path}: expected a JSON object")
        return data

    def save_summary(self, summary: dict[str, Any]) -> None:
        summary["files"] = self.files()
        atomic_write_json(self.dir / SUMMARY, summary)

    def load_history(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.dir / HISTORY, repair=True))  # the loop checks each record's schema

    def append_history(self, record: dict[str, Any]) -> None:
        from alpha_evolve.files import append_jsonl

        append_jsonl(self.dir / HISTORY, record)

    def append_briefing(self, record: dict[str, Any]) -> None:
        from alpha_evolve.files import append_jsonl

        append_jsonl(self.dir / BRIEFINGS, record)

    # ---- decisions

    def _decorate(self, action: dict[str, Any]) -> dict[str, Any]:
        return {
            **action,
            "session_dir": str(self.dir),
            "instructions": INSTRUCTIONS,
            "commands": approval_commands(self.dir),
        }

    def post_action(self, action: dict[str, Any]) -> None:
        existing = _read_pending(self.pending_path)
        if (
            isinstance(existing, dict)
            and existing.get("action_id") in (action["action_id"], None)  # None: a bare {"status": ...} answer
            and existing.get("status") in ("approved", "rejected")
        ):
            logger.info(
                "%s: keeping the %s decision already written for %s",
                self.pending_path,
                existing["status"],
                action["action_id"],
            )
            return
        if existing is _UNREADABLE:
            self._report(
                f"{self.pending_path}: left as it is (it does not parse); fix it to answer {action['action_id']}"
            )
            return
        if existing is _NOT_A_FILE:
            self._report(f"{self.pending_path}: {not_a_file_reason(self.pending_path)}; replaced by the open action")
        _write_pending(self.pending_path, self._decorate(action))

    def wait_for_decision(
        self,
        action: dict[str, Any],
        *,
        check_candidate: CandidateCheck,
        timeout: float | None,
        should_stop: Callable[[], bool],
    ) -> WaitResult:
        if self._watch is None:
            raise SessionError("the session is not open")
        action_id = action["action_id"]
        posted = dict(action["proposal"]["candidate"])

        def evaluate(raw: bytes) -> Verdict:
            return evaluate_pending(
                raw,
                action_id=action_id,
                posted_candidate=posted,
                check_candidate=check_candidate,
                source=self.pending_path,
            )

        def on_problem(message: str) -> None:
            self._report(f"{self.pending_path}: {message} (still waiting; see {self.feedback_path.name})")
            atomic_write_json(
                self.feedback_path,
                {
                    "schema_version": 1,
                    "action_id": action_id,
                    "status": "problem",
                    "problem": message,
                    "file": str(self.pending_path),
                    "created_at": utc_now(),
                    "instructions": INSTRUCTIONS,
                },
            )

        def restore() -> None:  # the file was deleted or replaced by a non-file: put the open question back
            _write_pending(self.pending_path, self._decorate(action))

        outcome = wait_for_answer(
            self._watch,
            evaluate,
            on_problem=on_problem,
            poll_interval=self.poll_interval,
            timeout=timeout,
            should_stop=should_stop,
            restore=restore,
        )
        if outcome.kind != "accepted":
            return WaitResult(outcome.kind)
        decision: Decision = outcome.value
        latency = None if outcome.file_mtime is None else max(0.0, (outcome.detected_at - outcome.file_mtime) * 1e3)
        decision = Decision(
            decision.status,
            decision.notes,
            utc_now(),
            decision.edited,
            None if latency is None else round(latency, 3),
            decision.candidate,
        )
        return WaitResult("decided", decision)

    def resolve_action(self, action: dict[str, Any], status: str, decision: Decision | None) -> None:
        record = self._decorate(action)
        record["status"] = status
        if decision is None:  # a terminal status: keep the decision already recorded for this action
            existing = _read_pending(self.pending_path)
            if isinstance(existing, dict) and existing.get("action_id") == action["action_id"]:
                for key in ("decision", "notes", "proposal"):
                    if key in existing:
                        record[key] = existing[key]
        else:
            record["decision"] = decision.to_record()
            record["notes"] = decision.notes
            if decision.candidate:
                record["proposal"] = {**record["proposal"], "candidate": decision.candidate}
        record["updated_at"] = utc_now()
        _write_pending(self.pending_path, record)
        if decision is not None and decision.status in DECISION_STATUSES:
            atomic_write_json(
                self.feedback_path,
                {
                    "schema_version": 1,
                    "action_id": action["action_id"],
                    "status": "accepted",
                    "problem": None,
                    "decision": decision.status,
                    "file": str(self.pending_path),
                    "created_at": utc_now(),
                },
            )

    def approval_hint(self, action: dict[str, Any]) -> list[str]:
        cmds = approval_commands(self.dir)
        return [
            f'edit {self.pending_path} (set "status": "approved" | "rejected" | "stop")',
            f"or run: {cmds['approve']}   (also: reject, stop)",
            f"or: {cmds['jq']}",
            f"watching for changes ({self.watch_mode})",
        ]


# ----------------------------------------------------------------------------------- reading an answer

_UNREADABLE = object()


_NOT_A_FILE = object()


def _read_pending(path: Path) -> Any:
    """The parsed pending file; None when absent, ``_NOT_A_FILE`` for a directory, FIFO, device or broken link
    (read without blocking), ``_UNREADABLE`` when it does not parse."""
    reason = not_a_file_reason(path)
    if reason == "does not exist":
        return None
    if reason is not None:
        return _NOT_A_FILE
    try:
        raw = read_regular_file(path, max_bytes=MAX_JSON_BYTES, what="pending action")
    except FileFormatError:
        return _UNREADABLE
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _UNREADABLE


def _write_pending(path: Path, record: dict[str, Any]) -> None:
    """Write the pending file even where something that is not a file took its place: a directory is moved aside
    (whatever a person put in it is kept), a FIFO, device link or broken link is replaced by the rename."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            aside = path.with_name(f"{path.name}.directory-{datetime.now(UTC).strftime('%Y%m%d_%H%M%S_%f')}")
            os.rename(path, aside)
            logger.warning("%s was a directory; moved it to %s", path, aside.name)
    atomic_write_json(path, record)


def evaluate_pending(
    raw: bytes,
    *,
    action_id: str,
    posted_candidate: Mapping[str, Any],
    check_candidate: CandidateCheck,
    source: Path | str = PENDING,
) -> Verdict:
    """Judge the bytes of pending_action.json as an answer to ``action_id``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Verdict.incomplete(f"invalid JSON ({exc})")
    if not isinstance(data, dict):
        return Verdict.problem("expected a JSON object")
    found = data.get("action_id")
    if found is None or found == "":  # a bare {"status": ..., "notes": ...}: one action is open, so it is this one
        found = action_id
    if found != action_id:
        return Verdict.problem(
            f"action_id {found!r} is not the open action {action_id!r} (leave action_id as written by the loop)"
        )
    status = data.get("status")
    if status == "awaiting_approval":
        return Verdict.wait()
    if status not in DECISION_STATUSES:
        if status in ("running", "auto_approved", "rejected_edit"):
            return Verdict.wait()  # the loop's own bookkeeping, not an answer
        close = difflib.get_close_matches(str(status), DECISION_STATUSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return Verdict.problem(f"status {status!r}: expected 'approved', 'rejected' or 'stop'{hint}")
    notes = data.get("notes")
    if notes is not None and not isinstance(notes, str):
        return Verdict.problem(f"notes {str(notes)[:60]!r}: expected a string")
    if notes is not None and len(notes) > MAX_NOTES_CHARS:
        return Verdict.problem(f"notes: {len(notes):,} characters, more than the limit of {MAX_NOTES_CHARS:,}; "
                               "shorten them")
    proposal = data.get("proposal", {"candidate": dict(posted_candidate)})  # bare answer: the candidate as posted
    candidate = proposal.get("candidate") if isinstance(proposal, dict) else None
    if not isinstance(candidate, dict):
        return Verdict.problem("proposal.candidate: expected an object of config values")
    edited = candidate != dict(posted_candidate)
    if status == "approved" and edited:
        problems = check_candidate(candidate)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return Verdict.problem(f"proposal.candidate refused: {problems[0]}{more}")
    return Verdict.accept(
        Decision(
            status,
            notes,
            utc_now(),
            edited and status == "approved",
            None,
            dict(candidate) if status == "approved" else dict(posted_candidate),
        )
    )


# ------------------------------------------------------------------------------- approve/reject/stop CLI


def open_action(session_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """The action the loop is waiting on, from its own state in the session summary (not from pending_action.json,
    which an approver may have broken), and the session's status; (None, status) when none is open."""
    try:
        summary = read_json(Path(session_dir) / SUMMARY)
    except FileFormatError:
        return None, None
    if not isinstance(summary, dict):
        return None, None
    state = summary.get("state")
    status = summary.get("status") if isinstance(summary.get("status"), str) else None
    if isinstance(state, dict) and state.get("phase") == "awaiting_approval" and isinstance(state.get("action"), dict) \
            and isinstance(state["action"].get("action_id"), str):
        return dict(state["action"]), status
    return None, status


def write_decision(session_dir: str | Path, status: str, notes: str | None = None) -> dict[str, Any]:
    """What ``alpha-evolve approve|reject|stop`` do: answer the open action atomically; one-line errors.

    A pending file awaiting approval is answered in place (a person's valid candidate edit is kept). When the file
    no longer reads as that open action — a refused edit, a typo in "status", a bare ``{"status": ...}``, broken
    JSON — the answer is written over it from the action as the loop posted it (its own state in the session
    summary), so the command line can always decide.
    """
    if status not in DECISION_STATUSES:
        raise SessionError(f"decision {status!r}: expected one of {', '.join(DECISION_STATUSES)}")
    d = Path(session_dir)
    path = d / PENDING
    if not d.is_dir():
        raise SessionError(f"{d}: session directory not found")
    if notes is not None and len(notes) > MAX_NOTES_CHARS:
        raise SessionError(f"--notes: {len(notes):,} characters, more than the limit of {MAX_NOTES_CHARS:,}")
    action, _ = open_action(d)
    data: Any = None
    problem: str | None = None
    try:
        data = read_json(path)
    except FileFormatError as exc:
        problem = str(exc)
    if isinstance(data, dict) and data.get("status") == "awaiting_approval" and "action_id" in data and (
            action is None or data["action_id"] == action["action_id"]):
        answer = data
    elif action is not None:
        answer = {**action, "session_dir": str(d.resolve()), "instructions": INSTRUCTIONS,
                  "commands": approval_commands(d.resolve())}
        if isinstance(data, dict) and data.get("action_id") == action["action_id"] and data.get("notes") \
                and notes is None and isinstance(data.get("notes"), str):
            answer["notes"] = data["notes"]  # the notes of the refused edit, unless new ones are given
    elif problem is not None:
        raise SessionError(problem)
    elif not isinstance(data, dict) or "action_id" not in data:
        raise SessionError(f"{path}: not a pending action (no action_id)")
    else:
        raise SessionError(f"{path}: action {data['action_id']} is {data.get('status')!r}, not awaiting approval")
    answer["status"] = status
    if notes is not None:
        answer["notes"] = notes
    atomic_write_json(path, answer)
    return answer


# ------------------------------------------------------------------------------------------- validation


def validate_session(session_dir: str | Path) -> tuple[list[tuple[str, int, int]], list[str]]:
    """Check every session file against its schema and the cross-file rules.

    Returns (rows of (file, records, problems), problem lines "file[:line]: path: message").
    """
    d = Path(session_dir)
    rows: list[tuple[str, int, int]] = []
    problems: list[str] = []
    if not d.is_dir():
        return rows, [f"{d}: session directory not found"]
    if not any(os.path.lexists(d / name) for name in FILE_SCHEMAS):
        return rows, [f"{d}: not a session directory (none of {', '.join(FILE_SCHEMAS)} is there)"]
    for name, schema in FILE_SCHEMAS.items():
        path = d / name
        found: list[str] = []
        count = 0
        if not os.path.lexists(path):  # a dangling or looping link is there, and read below reports what it is
            if name in (SUMMARY, HISTORY):
                found.append(f"{name}: missing")
            rows.append((name, 0, len(found)))
            problems.extend(found)
            continue
        try:
            if name.endswith(".jsonl"):
                records = read_jsonl(path)
                for i, rec in enumerate(records, 1):
                    found.extend(f"{name} record {i}: {e}" for e in schema_errors(schema, rec))
            else:
                records = [read_json(path)]
                found.extend(f"{name}: {e}" for e in schema_errors(schema, records[0]))
            count = len(records)
        except FileFormatError as exc:
            found.append(str(exc))
            records = []
        if name == HISTORY:
            seen: set[int] = set()
            for rec in records:
                it = rec.get("iteration") if isinstance(rec, dict) else None
                if isinstance(it, int):
                    if it in seen:
                        found.append(f"{name}: iteration {it} is recorded twice")
                    seen.add(it)
        rows.append((name, count, len(found)))
        problems.extend(found)
    return rows, problems
