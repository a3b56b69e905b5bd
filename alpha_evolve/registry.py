"""Tracked mode: the SQLite experiment registry, and the ``StateBackend`` that keeps a session in it.

Why SQLite (WAL): the session process writes while the dashboard and the ``approve``/``reject``/``stop`` commands
(other processes) read and answer; WAL lets readers go on during a write, and every change is one ``BEGIN
IMMEDIATE`` transaction, so a kill leaves either the whole change or none of it.

How a decision reaches a waiting session: the dashboard or the CLI sets the proposal row to ``approved`` or
``rejected`` (or the session's ``stop_requested`` flag) in one transaction. The waiting loop polls every
``DECISION_POLL_SECONDS`` (50 ms) but only reads rows when ``PRAGMA data_version`` says another connection has
committed since its last look — a cheap check with no file-system events to lose; a decision is typically picked up
within 50-100 ms.

Tables (``SCHEMA_VERSION`` in ``PRAGMA user_version``): ``sessions`` (one row per session, tracked or imported
legacy), ``iterations`` (one row per history record), ``proposals`` (one per posted action), ``briefings`` and
``meta`` (a ``revision`` counter bumped by every write, which the dashboard polls for live updates).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock, Timeout

from alpha_evolve.command_hint import cli
from alpha_evolve.session import (
    MAX_NOTES_CHARS,
    CandidateCheck,
    Decision,
    SessionError,
    SessionLockedError,
    WaitResult,
    candidate_problems,
    utc_now,
)
from alpha_evolve.sqlite_db import SQLiteFile
from alpha_evolve.values import finite_or_none

logger = logging.getLogger("alpha_evolve.registry")

SCHEMA_VERSION = 1
DEFAULT_REGISTRY_DB = "artifacts/experiments/experiments.sqlite"
ENV_REGISTRY_DB = "AE_EXPERIMENTS_DB"
DECISION_POLL_SECONDS = 0.05
HEARTBEAT_SECONDS = 1.0
STALE_SECONDS = 15.0
"""A session whose driver has not beaten for this long is shown as not responding (killed, machine asleep)."""

SESSION_STATUSES = ("running", "awaiting_approval", "stop_requested", "stopped", "completed", "failed")
PROPOSAL_STATUSES = ("pending", "approved", "rejected")
LOCK = ".session.lock"

# the loop's own status words -> the registry's session status
_LOOP_TO_SESSION = {
    "running": "running",
    "awaiting_approval": "awaiting_approval",
    "session_complete": "completed",
    "stopped": "stopped",
    "timed_out": "stopped",
    "failed": "failed",
}

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        mode TEXT NOT NULL CHECK (mode IN ('tracked', 'legacy')),
        status TEXT NOT NULL CHECK (status IN ('running', 'awaiting_approval', 'stop_requested', 'stopped',
                                               'completed', 'failed')),
        loop_status TEXT,
        stop_requested INTEGER NOT NULL DEFAULT 0,
        objective TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('maximize', 'minimize')),
        seed INTEGER,
        sampler TEXT,
        iterations_target INTEGER NOT NULL DEFAULT 0,
        iterations_completed INTEGER NOT NULL DEFAULT 0,
        config_path TEXT,
        base_config TEXT NOT NULL DEFAULT '{}',
        settings TEXT NOT NULL DEFAULT '{}',
        search_space_path TEXT,
        search_space TEXT,
        data_hash TEXT,
        best_iteration INTEGER,
        best_objective REAL,
        last_error TEXT,
        artifact_dir TEXT,
        source_dir TEXT,
        summary TEXT NOT NULL DEFAULT '{}',
        owner_pid INTEGER,
        owner_host TEXT,
        heartbeat_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ix_sessions_created ON sessions(created_at)",
    """CREATE TABLE IF NOT EXISTS iterations (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        iteration INTEGER NOT NULL,
        kind TEXT,
        action_id TEXT,
        config_updates TEXT NOT NULL DEFAULT '{}',
        metrics TEXT NOT NULL DEFAULT '{}',
        objective REAL,
        success INTEGER NOT NULL,
        failure_reason TEXT,
        run_dir TEXT,
        record TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (session_id, iteration)
    )""",
    """CREATE TABLE IF NOT EXISTS proposals (
        action_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        iteration INTEGER NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
        loop_status TEXT,
        proposed_updates TEXT NOT NULL DEFAULT '{}',
        base_kind TEXT,
        base_snapshot TEXT NOT NULL DEFAULT '{}',
        candidate_snapshot TEXT NOT NULL DEFAULT '{}',
        decided_candidate TEXT,
        edited INTEGER NOT NULL DEFAULT 0,
        decided_by TEXT,
        decided_at TEXT,
        decided_ts REAL,
        notes TEXT,
        problem TEXT,
        action TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ix_proposals_session ON proposals(session_id, iteration, attempt)",
    """CREATE TABLE IF NOT EXISTS briefings (
        action_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        iteration INTEGER NOT NULL,
        record TEXT NOT NULL
    )""",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0)",
)

_JSON_SESSION = ("base_config", "settings", "search_space", "summary")
_JSON_ITERATION = ("config_updates", "metrics", "record")
_JSON_PROPOSAL = ("proposed_updates", "base_snapshot", "candidate_snapshot", "decided_candidate", "action")


class RegistryError(SessionError):
    """A registry problem a user can act on (missing session, corrupt file, decision not possible); one line."""


class DecisionError(RegistryError):
    """A decision that cannot be taken: ``http_status`` says why (404 unknown, 409 not pending, 422 invalid)."""

    def __init__(self, message: str, http_status: int = 422) -> None:
        super().__init__(message)
        self.http_status = http_status


def default_registry_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--registry-db``, else ``$AE_EXPERIMENTS_DB``, else ``artifacts/experiments/experiments.sqlite``."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_REGISTRY_DB) or DEFAULT_REGISTRY_DB)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def _row(row: sqlite3.Row | None, json_cols: tuple[str, ...]) -> dict[str, Any] | None:
    if row is None:
        return None
    out = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a Mapping
    for col in json_cols:
        if col in out and isinstance(out[col], str):
            out[col] = orjson.loads(out[col])
    return out


def driver_alive(owner_pid: int | None, heartbeat_at: str | None) -> bool:
    """Whether a session still has a process driving it: an owner that beat within ``STALE_SECONDS``."""
    if not owner_pid or not heartbeat_at:
        return False
    try:
        beat = datetime.fromisoformat(heartbeat_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (datetime.now(UTC) - beat).total_seconds() < STALE_SECONDS


class ExperimentRegistry(SQLiteFile):
    """Sessions, iterations and proposals in one SQLite file, shared by the loop, the CLI and the dashboard.

    One connection per thread (sqlite3 connections must not cross threads mid-transaction); ``close()`` them all.
    """

    KIND = "registry"
    ERROR = RegistryError
    SCHEMA_VERSION = SCHEMA_VERSION
    SCHEMA = _SCHEMA
    TABLES = frozenset({"meta", "sessions", "iterations", "proposals", "briefings"})

    def __init__(self, db_path: str | os.PathLike[str], *, create: bool = True, busy_timeout_s: float = 30.0) -> None:
        super().__init__(db_path, create=create, busy_timeout_s=busy_timeout_s)

    def _on_write(self, conn: sqlite3.Connection) -> None:
        # Every change bumps ``meta.revision``: what live views poll to know something moved.
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")

    _read = SQLiteFile.snapshot

    def data_version(self) -> int:
        """Changes when another connection commits: the cheap "anything new?" check of the waiting loop."""
        return int(self._conn().execute("PRAGMA data_version").fetchone()[0])

    def revision(self) -> int:
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------------------------------ sessions

    def create_session(
        self,
        session_id: str,
        *,
        mode: str = "tracked",
        objective: str,
        maximize: bool,
        settings: Mapping[str, Any],
        base_config: Mapping[str, Any],
        search_space: Any = None,
        artifact_dir: str | None = None,
        source_dir: str | None = None,
        status: str = "running",
    ) -> dict[str, Any]:
        now = utc_now()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone():
                raise RegistryError(f"registry {self.path}: session {session_id} already exists")
            conn.execute(
                """INSERT INTO sessions (id, mode, status, objective, direction, seed, sampler, iterations_target,
                       config_path, base_config, settings, search_space_path, search_space, artifact_dir, source_dir,
                       summary, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?)""",
                (
                    session_id, mode, status, objective, "maximize" if maximize else "minimize",
                    settings.get("seed"), settings.get("sampler"), int(settings.get("iterations") or 0),
                    settings.get("config_path"), _dumps(dict(base_config)), _dumps(dict(settings)),
                    settings.get("search_space_path"), None if search_space is None else _dumps(search_space),
                    artifact_dir, source_dir, now, now,
                ),
            )  # fmt: skip
        return self.require_session(session_id)

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            return _row(conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone(), _JSON_SESSION)

    def session_of_process(self, pid: int) -> str | None:
        """The newest session a process owns now (``owner_pid``): how a launcher learns the id it started."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT id FROM sessions WHERE owner_pid = ? ORDER BY created_at DESC LIMIT 1", (pid,)
            ).fetchone()
        return None if row is None else str(row[0])

    def require_session(self, session_id: str) -> dict[str, Any]:
        found = self.get_session(session_id)
        if found is None:
            raise DecisionError(f"registry {self.path}: no session {session_id!r}", 404)
        return found

    def list_sessions(self) -> list[dict[str, Any]]:
        """Newest first, without the bulky JSON columns (the list view needs only the headline)."""
        with self._read() as conn:
            rows = conn.execute(
                """SELECT id, mode, status, loop_status, stop_requested, objective, direction, seed, sampler,
                          iterations_target, iterations_completed, best_iteration, best_objective, last_error,
                          data_hash, config_path, search_space_path, artifact_dir, source_dir, owner_pid,
                          heartbeat_at, created_at, updated_at, finished_at
                   FROM sessions ORDER BY created_at DESC, id DESC"""
            ).fetchall()
        out = [r for r in (_row(x, ()) for x in rows) if r is not None]
        for r in out:
            r["alive"] = driver_alive(r["owner_pid"], r["heartbeat_at"])
        return out

    def save_summary(self, session_id: str, summary: Mapping[str, Any]) -> None:
        """Store the loop's summary and the columns derived from it, in one transaction."""
        loop_status = str(summary.get("status") or "running")
        best = summary.get("best") or {}
        with self._write() as conn:
            row = conn.execute("SELECT stop_requested FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise RegistryError(f"registry {self.path}: no session {session_id!r}")
            status = _LOOP_TO_SESSION.get(loop_status, "running")
            if row[0] and status in ("running", "awaiting_approval"):
                status = "stop_requested"
            last_error = summary.get("failure_reason")
            if loop_status == "timed_out":
                timeout = (summary.get("settings") or {}).get("approval_timeout")
                last_error = f"no decision within {timeout:g} s (timed out)" if timeout else "timed out"
            conn.execute(
                """UPDATE sessions SET status = ?, loop_status = ?, iterations_completed = ?, iterations_target = ?,
                       best_iteration = ?, best_objective = ?, last_error = COALESCE(?, last_error), summary = ?,
                       settings = ?, updated_at = ?, finished_at = ?,
                       stop_requested = CASE WHEN ? IN ('stopped', 'completed', 'failed') THEN 0
                                             ELSE stop_requested END
                   WHERE id = ?""",
                (
                    status, loop_status, int(summary.get("iterations_completed") or 0),
                    int(summary.get("iterations_target") or 0), best.get("iteration"),
                    finite_or_none(best.get("objective")),
                    last_error, _dumps(dict(summary)), _dumps(summary.get("settings") or {}), utc_now(),
                    summary.get("finished_at"), status, session_id,
                ),
            )  # fmt: skip

    def request_stop(self, session_id: str) -> dict[str, Any]:
        """What ``alpha-evolve stop`` and the dashboard's Stop do: the loop stops at its next safe point."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT status, owner_pid, heartbeat_at FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise DecisionError(f"registry {self.path}: no session {session_id!r}", 404)
            if row[0] not in ("running", "awaiting_approval", "stop_requested"):
                raise DecisionError(f"session {session_id} is {row[0]}, not running", 409)
            if not driver_alive(row[1], row[2]):  # nobody will act on the flag: record the stop ourselves
                conn.execute(
                    """UPDATE sessions SET stop_requested = 0, status = 'stopped', loop_status = 'stopped',
                           owner_pid = NULL, last_error = ?, updated_at = ?, finished_at = ? WHERE id = ?""",
                    (
                        f"its process was gone (last heartbeat {row[2] or 'never'}); resume to continue",
                        utc_now(), utc_now(), session_id,
                    ),
                )  # fmt: skip
            else:
                conn.execute(
                    "UPDATE sessions SET stop_requested = 1, status = 'stop_requested', updated_at = ? WHERE id = ?",
                    (utc_now(), session_id),
                )
        return self.require_session(session_id)

    def stop_requested(self, session_id: str) -> bool:
        row = self._conn().execute("SELECT stop_requested FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return bool(row and row[0])

    def claim(self, session_id: str) -> None:
        """Record this process as the session's driver; a stale stop request from a previous driver is dropped."""
        with self._write() as conn:
            conn.execute(
                """UPDATE sessions SET owner_pid = ?, owner_host = ?, heartbeat_at = ?, stop_requested = 0
                   WHERE id = ?""",
                (os.getpid(), socket.gethostname(), utc_now(), session_id),
            )

    def release(self, session_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE sessions SET owner_pid = NULL WHERE id = ? AND owner_pid = ?", (session_id, os.getpid())
            )

    def heartbeat(self, session_id: str) -> None:
        conn = self._conn()
        conn.execute("UPDATE sessions SET heartbeat_at = ? WHERE id = ?", (utc_now(), session_id))

    # ---------------------------------------------------------------------------------------- iterations

    def append_iteration(self, session_id: str, record: Mapping[str, Any], *, replace: bool = False) -> None:
        data_hash = _data_hash(record.get("run_dir"))
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        with self._write() as conn:
            try:
                conn.execute(
                    f"""{verb} INTO iterations (session_id, iteration, kind, action_id, config_updates, metrics,
                           objective, success, failure_reason, run_dir, record, created_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        session_id, int(record["iteration"]), record.get("kind"), record.get("action_id"),
                        _dumps(record.get("config_updates") or {}), _dumps(record.get("metrics") or {}),
                        finite_or_none(record.get("objective")), int(bool(record.get("success"))),
                        record.get("failure_reason"), record.get("run_dir"), _dumps(dict(record)),
                        (record.get("timings") or {}).get("finished_at") or utc_now(),
                    ),
                )  # fmt: skip
            except sqlite3.IntegrityError:
                raise RegistryError(
                    f"session {session_id}: iteration {record['iteration']} is already recorded"
                ) from None
            if data_hash:
                conn.execute(
                    "UPDATE sessions SET data_hash = COALESCE(data_hash, ?) WHERE id = ?", (data_hash, session_id)
                )
            if record.get("action_id"):
                # The proposal's run is over: it no longer "runs" in the loop, whatever the run's outcome.
                conn.execute(
                    "UPDATE proposals SET loop_status = 'completed', updated_at = ? WHERE action_id = ? "
                    "AND loop_status IN ('running', 'auto_approved')",
                    (utc_now(), record["action_id"]),
                )

    def iterations(self, session_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM iterations WHERE session_id = ? ORDER BY iteration", (session_id,)
            ).fetchall()
        return [r for r in (_row(x, _JSON_ITERATION) for x in rows) if r is not None]

    # ----------------------------------------------------------------------------------------- proposals

    def add_briefing(self, session_id: str, record: Mapping[str, Any], *, replace: bool = False) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO briefings (action_id, session_id, iteration, "
                "record) VALUES (?, ?, ?, ?)",
                (record["action_id"], session_id, int(record["iteration"]), _dumps(dict(record))),
            )

    def briefing(self, action_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT record FROM briefings WHERE action_id = ?", (action_id,)).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    def post_proposal(self, session_id: str, action: Mapping[str, Any]) -> dict[str, Any]:
        """Insert the pending proposal, or re-open it for a resumed loop keeping any decision already taken."""
        proposal = action.get("proposal") or {}
        now = utc_now()
        base_snapshot = _base_snapshot(action, self.briefing(action["action_id"]))
        with self._write() as conn:
            existing = conn.execute(
                "SELECT status FROM proposals WHERE action_id = ?", (action["action_id"],)
            ).fetchone()
            if existing is None:
                conn.execute(
                    """INSERT INTO proposals (action_id, session_id, iteration, attempt, status, loop_status,
                           proposed_updates, base_kind, base_snapshot, candidate_snapshot, action, created_at,
                           updated_at)
                       VALUES (?, ?, ?, ?, 'pending', 'awaiting_approval', ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        action["action_id"], session_id, int(action["next_iteration"]), int(action.get("attempt") or 1),
                        _dumps(action.get("proposed_updates") or {}), proposal.get("base"),
                        _dumps(base_snapshot), _dumps(proposal.get("candidate") or {}),
                        _dumps(dict(action)), action.get("created_at") or now, now,
                    ),
                )  # fmt: skip
            else:
                conn.execute(
                    "UPDATE proposals SET loop_status = 'awaiting_approval', updated_at = ? WHERE action_id = ?",
                    (now, action["action_id"]),
                )
        found = self.get_proposal(action["action_id"])
        assert found is not None
        return found

    def get_proposal(self, action_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            return _row(
                conn.execute("SELECT * FROM proposals WHERE action_id = ?", (action_id,)).fetchone(), _JSON_PROPOSAL
            )

    def proposals(self, session_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM proposals WHERE session_id = ? ORDER BY iteration, attempt, created_at", (session_id,)
            ).fetchall()
        return [r for r in (_row(x, _JSON_PROPOSAL) for x in rows) if r is not None]

    def pending_proposal(self, session_id: str) -> dict[str, Any] | None:
        """The open question of a session: the newest proposal that is pending and still awaited by the loop."""
        with self._read() as conn:
            row = conn.execute(
                """SELECT * FROM proposals WHERE session_id = ? AND status = 'pending'
                   ORDER BY iteration DESC, attempt DESC, created_at DESC LIMIT 1""",
                (session_id,),
            ).fetchone()
        return _row(row, _JSON_PROPOSAL)

    def decide(
        self,
        action_id: str,
        status: str,
        *,
        notes: str | None = None,
        candidate: Mapping[str, Any] | None = None,
        decided_by: str = "cli",
        check: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]] | None = None,
    ) -> dict[str, Any]:
        """Answer a pending proposal in one transaction. ``check(candidate, posted)`` returns the problems of an
        edited candidate; any problem refuses the decision and changes nothing."""
        if status not in ("approved", "rejected"):
            raise DecisionError(f"decision {status!r}: expected 'approved' or 'rejected'", 400)
        if notes is not None and not isinstance(notes, str):
            raise DecisionError("notes: expected a string", 400)
        if notes is not None and len(notes) > MAX_NOTES_CHARS:
            raise DecisionError(f"notes: longer than {MAX_NOTES_CHARS} characters", 400)
        with self._write() as conn:
            row = _row(
                conn.execute("SELECT * FROM proposals WHERE action_id = ?", (action_id,)).fetchone(), _JSON_PROPOSAL
            )
            if row is None:
                raise DecisionError(f"no proposal {action_id!r}", 404)
            if row["status"] != "pending":
                raise DecisionError(f"proposal {action_id} is already {row['status']}", 409)
            posted = dict(row["candidate_snapshot"])
            chosen = posted if candidate is None or status == "rejected" else dict(candidate)
            edited = status == "approved" and chosen != posted
            if edited:
                unknown = sorted(set(chosen) - set(posted))
                if unknown:
                    raise DecisionError(f"candidate: {unknown[0]} is not a value of this proposal", 422)
                chosen = {**posted, **chosen}
                edited = chosen != posted
                problems = check(chosen, posted) if (check and edited) else []
                if problems:
                    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                    raise DecisionError(f"candidate refused: {problems[0]}{more}", 422)
            now = utc_now()
            conn.execute(
                """UPDATE proposals SET status = ?, decided_candidate = ?, edited = ?, decided_by = ?, decided_at = ?,
                       decided_ts = ?, notes = ?, problem = NULL, updated_at = ? WHERE action_id = ?""",
                (status, _dumps(chosen), int(edited), decided_by, now, time.time(), notes, now, action_id),
            )
        found = self.get_proposal(action_id)
        assert found is not None
        return found

    def reopen_proposal(self, action_id: str, problem: str) -> None:
        """The loop refused an answer (e.g. a hand-edited row): back to pending, with the reason for the approver."""
        with self._write() as conn:
            conn.execute(
                """UPDATE proposals SET status = 'pending', problem = ?, decided_at = NULL, decided_ts = NULL,
                       updated_at = ? WHERE action_id = ?""",
                (problem, utc_now(), action_id),
            )

    def resolve_proposal(self, action_id: str, loop_status: str, decision: Decision | None) -> None:
        with self._write() as conn:
            if decision is not None and decision.status in ("approved", "rejected", "auto_approved"):
                status = "rejected" if decision.status == "rejected" else "approved"
                conn.execute(
                    """UPDATE proposals SET status = ?, loop_status = ?, decided_candidate = ?, edited = ?,
                           notes = COALESCE(notes, ?), decided_at = COALESCE(decided_at, ?),
                           decided_by = COALESCE(decided_by, ?), updated_at = ? WHERE action_id = ?""",
                    (
                        status, loop_status, _dumps(decision.candidate), int(decision.edited), decision.notes,
                        decision.decided_at, "auto-approve" if decision.status == "auto_approved" else None,
                        utc_now(), action_id,
                    ),
                )  # fmt: skip
            else:
                conn.execute(
                    "UPDATE proposals SET loop_status = ?, updated_at = ? WHERE action_id = ?",
                    (loop_status, utc_now(), action_id),
                )

    # ---------------------------------------------------------------------------------------- overview

    def recorded_run_dirs(self) -> list[str]:
        """Every run directory an iteration of any session recorded (the dashboard lists these runs too)."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT run_dir FROM iterations WHERE run_dir IS NOT NULL")]

    def session_detail(self, session_id: str) -> dict[str, Any]:
        """Everything a session page shows, read in one snapshot."""
        with self._read():
            session = self.require_session(session_id)
            return {
                "session": session,
                "iterations": self.iterations(session_id),
                "proposals": self.proposals(session_id),
                "pending": self.pending_proposal(session_id),
                "revision": self.revision(),
            }


def _base_snapshot(action: Mapping[str, Any], briefing: Mapping[str, Any] | None) -> dict[str, Any]:
    """The base's values of the space: the sampler's ``base_values`` (kept with the briefing), else the candidate
    with the proposed changes left out."""
    proposal = (briefing or {}).get("proposal") or {}
    if isinstance(proposal.get("base_values"), Mapping) and proposal["base_values"]:
        return dict(proposal["base_values"])
    candidate = dict((action.get("proposal") or {}).get("candidate") or {})
    changed = action.get("proposed_updates") or {}
    return {k: v for k, v in candidate.items() if k not in changed}


def _data_hash(run_dir: Any) -> str | None:
    """The data fingerprint a pipeline run recorded (``SUMMARY.json`` ``data.hash``-like fields), if any."""
    if not run_dir:
        return None
    from alpha_evolve.files import FileFormatError, read_json

    try:
        summary = read_json(Path(run_dir) / "SUMMARY.json")
    except FileFormatError:
        return None
    data = summary.get("data") if isinstance(summary, dict) else None
    if not isinstance(data, dict):
        return None
    for key in ("hash", "data_hash", "sha256", "fingerprint"):
        if isinstance(data.get(key), str):
            return str(data[key])
    return None


# ------------------------------------------------------------------------------------------------ backend


def registry_commands(db: Path, session_id: str) -> dict[str, str]:
    d, s = shlex.quote(str(db)), shlex.quote(session_id)
    return {
        "approve": cli("approve", s, "--registry-db", d, "--notes", "'...'"),
        "reject": cli("reject", s, "--registry-db", d, "--notes", "'...'"),
        "stop": cli("stop", s, "--registry-db", d),
        "dashboard": cli("dashboard", "--registry-db", d),
    }


class RegistryStateBackend:
    """``StateBackend`` over the registry: state in rows, a decision arrives as an update of the proposal row.

    ``artifact_dir`` (``<session-root>/<session-id>/``) holds the config snapshots, the inner runs (unless
    ``--pipeline-output-dir``), the Optuna study, and the lock file that keeps a second driver out.
    """

    kind = "tracked"

    def __init__(
        self,
        registry: ExperimentRegistry,
        session_id: str,
        artifact_dir: str | Path,
        *,
        poll_interval: float = DECISION_POLL_SECONDS,
        on_stop_request: Callable[[], None] | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.session_id = session_id
        self.artifact_dir = Path(artifact_dir).resolve()
        self.location = f"{registry.path}#{session_id}"
        self.poll_interval = poll_interval
        self.on_stop_request = on_stop_request
        self._report = report or (lambda line: logger.warning("%s", line))
        self._lock: FileLock | None = None
        self._beat: threading.Thread | None = None
        self._beat_stop = threading.Event()

    # ---- ownership

    def open(self) -> None:
        if self.registry.get_session(self.session_id) is None:
            raise SessionError(f"registry {self.registry.path}: no session {self.session_id!r}")
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.artifact_dir / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            row = self.registry.get_session(self.session_id) or {}
            owner = f"pid {row['owner_pid']}" if row.get("owner_pid") else "another process"
            raise SessionLockedError(f"session {self.session_id} is already being driven by {owner}") from None
        self._lock = lock
        try:
            self.registry.claim(self.session_id)
            self._beat_stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, name="registry-heartbeat", daemon=True)
            self._beat.start()
        except BaseException:
            self.close()
            raise

    def _heartbeat(self) -> None:
        """Keeps ``heartbeat_at`` fresh for the dashboard and passes a stop request to a loop that is not waiting
        (e.g. mid-run or auto-approving), so it stops at its next safe point."""
        told = False
        last_beat = 0.0
        while not self._beat_stop.wait(HEARTBEAT_SECONDS / 4):
            try:
                if not told and self.registry.stop_requested(self.session_id):
                    told = True
                    if self.on_stop_request is not None:
                        self.on_stop_request()
                if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                    last_beat = time.monotonic()
                    self.registry.heartbeat(self.session_id)
            except Exception:  # never let the heartbeat kill anything; the next beat retries
                logger.debug("heartbeat failed", exc_info=True)

    def close(self) -> None:
        self._beat_stop.set()
        beat, self._beat = self._beat, None
        if beat is not None:
            beat.join(timeout=5)
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(Exception):
                self.registry.release(self.session_id)
            lock.release()

    # ---- records

    def load_summary(self) -> dict[str, Any] | None:
        row = self.registry.require_session(self.session_id)
        summary = row.get("summary") or {}
        return dict(summary) if summary else None

    def save_summary(self, summary: dict[str, Any]) -> None:
        summary["files"] = {
            "registry": str(self.registry.path),
            "artifact_dir": str(self.artifact_dir),
            "generated_configs": str(self.artifact_dir / "generated_configs"),
            "pipeline_runs": str(self.artifact_dir / "pipeline_runs"),
        }
        self.registry.save_summary(self.session_id, summary)

    def load_history(self) -> list[dict[str, Any]]:
        return [dict(r["record"]) for r in self.registry.iterations(self.session_id)]

    def append_history(self, record: dict[str, Any]) -> None:
        self.registry.append_iteration(self.session_id, record)

    def append_briefing(self, record: dict[str, Any]) -> None:
        self.registry.add_briefing(self.session_id, record)

    # ---- decisions

    def post_action(self, action: dict[str, Any]) -> None:
        self.registry.post_proposal(self.session_id, action)

    def wait_for_decision(
        self,
        action: dict[str, Any],
        *,
        check_candidate: CandidateCheck,
        timeout: float | None,
        should_stop: Callable[[], bool],
    ) -> WaitResult:
        action_id = action["action_id"]
        deadline = None if timeout is None else time.monotonic() + timeout
        seen_version: int | None = None
        last_full = 0.0
        while True:
            if should_stop():
                return WaitResult("stopped")
            version = self.registry.data_version()
            now = time.monotonic()
            if version != seen_version or now - last_full >= 1.0:  # a full read each second guards the shortcut
                seen_version, last_full = version, now
                result = self._look(action_id, check_candidate)
                if result is not None:
                    return result
            if deadline is not None and time.monotonic() >= deadline:
                return WaitResult("timed_out")
            time.sleep(self.poll_interval)

    def _look(self, action_id: str, check_candidate: CandidateCheck) -> WaitResult | None:
        if self.registry.stop_requested(self.session_id):
            return WaitResult("decided", Decision("stop", "stop requested", utc_now(), False, None, {}))
        row = self.registry.get_proposal(action_id)
        if row is None:
            raise SessionError(f"registry {self.registry.path}: proposal {action_id} disappeared")
        if row["status"] == "pending":
            return None
        posted = dict(row["candidate_snapshot"])
        candidate = dict(row["decided_candidate"] or posted) if row["status"] == "approved" else posted
        edited = candidate != posted
        if edited:
            problems = check_candidate(candidate)
            if problems:
                message = f"candidate refused: {problems[0]}"
                self._report(f"{self.location}: {message} (still waiting)")
                self.registry.reopen_proposal(action_id, message)
                return None
        latency = None
        if row.get("decided_ts"):
            latency = round(max(0.0, (time.time() - float(row["decided_ts"])) * 1e3), 3)
        return WaitResult(
            "decided",
            Decision(row["status"], row.get("notes"), row.get("decided_at") or utc_now(), edited, latency, candidate),
        )

    def resolve_action(self, action: dict[str, Any], status: str, decision: Decision | None) -> None:
        self.registry.resolve_proposal(action["action_id"], status, decision)

    def approval_hint(self, action: dict[str, Any]) -> list[str]:
        cmds = registry_commands(self.registry.path, self.session_id)
        return [
            f"decide in the dashboard ({cmds['dashboard']}), Experiments tab, session {self.session_id}",
            f"or run: {cmds['approve']}   (also: reject, stop)",
            f"waiting on the registry row (polling every {self.poll_interval * 1000:.0f} ms)",
        ]


# ----------------------------------------------------------------------------------------------- checks


def search_space_record(path: str | Path) -> dict[str, Any]:
    """What the registry keeps of a search space: the file's parsed content (so the dashboard can rebuild and
    re-check it even if the file changes later) and its validated description."""
    import tomlkit

    from alpha_evolve.search_space import load_search_space

    space = load_search_space(path)  # validates; raises SearchSpaceError with a one-line message
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    raw = tomlkit.parse(text).unwrap() if p.suffix.lower() == ".toml" else orjson.loads(text)
    return {"path": str(p), "raw": raw, "description": space.description, "parameters": space.describe()}


def session_checker(session: Mapping[str, Any]) -> Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]:
    """``decide(check=...)`` for a session row: its stored search space and base config."""
    from alpha_evolve.config import from_mapping
    from alpha_evolve.search_space import parse_search_space

    space_data = session.get("search_space")
    if not space_data:
        raise DecisionError(f"session {session['id']} records no search space; cannot check an edited candidate")
    space = parse_search_space(space_data.get("raw", space_data), source=session.get("search_space_path") or "<space>")
    base = from_mapping(session.get("base_config") or {}, source="<session base config>")

    def check(candidate: Mapping[str, Any], posted: Mapping[str, Any]) -> list[str]:
        return candidate_problems(space, base, candidate, posted)

    return check


# ------------------------------------------------------------------------------------------ legacy import


def import_session_dir(registry: ExperimentRegistry, session_dir: str | Path) -> dict[str, Any]:
    """Copy a legacy session directory into the registry so the dashboard shows it; idempotent (a re-import
    replaces the rows it wrote before, never duplicates them). The directory stays the session's home: decisions
    for a still-running legacy session are still taken by editing its ``pending_action.json``."""
    from alpha_evolve.files import FileFormatError, read_json, read_jsonl
    from alpha_evolve.session_files import BRIEFINGS, HISTORY, PENDING, SUMMARY

    d = Path(session_dir).resolve()
    if not (d / SUMMARY).is_file():
        raise RegistryError(f"{d}: not a legacy self-evolution session (no {SUMMARY})")
    try:
        summary = read_json(d / SUMMARY)
        history = [r for r in read_jsonl(d / HISTORY, repair=False) if isinstance(r, dict)]
        briefings = [r for r in read_jsonl(d / BRIEFINGS, repair=False) if isinstance(r, dict)]
        pending = read_json(d / PENDING) if (d / PENDING).is_file() else None
    except FileFormatError as exc:
        raise RegistryError(str(exc)) from None
    if not isinstance(summary, dict):
        raise RegistryError(f"{d / SUMMARY}: expected a JSON object")
    session_id = str(summary.get("session_id") or d.name)
    settings = dict(summary.get("settings") or {})
    space = None
    if settings.get("search_space_path"):
        with contextlib.suppress(Exception):  # the file may have moved since; the session is still worth showing
            space = search_space_record(settings["search_space_path"])
    loop_status = str(summary.get("status") or "stopped")
    status = _LOOP_TO_SESSION.get(loop_status, "stopped")
    best = summary.get("best") or {}
    approved = {r.get("action_id"): r for r in history if r.get("action_id")}
    rejected = {a for r in history for a in (r.get("rejected_action_ids") or [])}
    state = summary.get("state") or {}
    rejected.update(state.get("rejected_action_ids") or [])
    now = utc_now()
    with registry._write() as conn:
        row = conn.execute("SELECT mode, source_dir FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is not None and (row[0] != "legacy" or row[1] != str(d)):
            # the name is taken by another session: a suffix derived from the directory keeps re-imports stable
            session_id = f"{session_id}-{hashlib.sha1(str(d).encode()).hexdigest()[:6]}"
        conn.execute("DELETE FROM iterations WHERE session_id = ?", (session_id,))
        conn.execute("DELETE FROM proposals WHERE session_id = ?", (session_id,))
        conn.execute("DELETE FROM briefings WHERE session_id = ?", (session_id,))
        conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        conn.execute(
            """INSERT INTO sessions (id, mode, status, loop_status, objective, direction, seed, sampler,
                   iterations_target, iterations_completed, config_path, base_config, settings, search_space_path,
                   search_space, best_iteration, best_objective, last_error, artifact_dir, source_dir, summary,
                   created_at, updated_at, finished_at)
               VALUES (?, 'legacy', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                session_id, status, loop_status, summary.get("objective") or "Sharpe",
                "maximize" if summary.get("maximize", True) else "minimize", settings.get("seed"),
                settings.get("sampler"), int(summary.get("iterations_target") or settings.get("iterations") or 0),
                int(summary.get("iterations_completed") or 0), settings.get("config_path"),
                _dumps(summary.get("base_config") or {}), _dumps(settings), settings.get("search_space_path"),
                None if space is None else _dumps(space), best.get("iteration"), finite_or_none(best.get("objective")),
                summary.get("failure_reason"), str(d), str(d), _dumps(summary),
                summary.get("created_at") or now, summary.get("updated_at") or now, summary.get("finished_at"),
            ),
        )  # fmt: skip
        data_hash = None
        for rec in history:
            data_hash = data_hash or _data_hash(rec.get("run_dir"))
            conn.execute(
                """INSERT OR REPLACE INTO iterations (session_id, iteration, kind, action_id, config_updates, metrics,
                       objective, success, failure_reason, run_dir, record, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    session_id, int(rec.get("iteration", 0)), rec.get("kind"), rec.get("action_id"),
                    _dumps(rec.get("config_updates") or {}), _dumps(rec.get("metrics") or {}),
                    finite_or_none(rec.get("objective")), int(bool(rec.get("success"))), rec.get("failure_reason"),
                    rec.get("run_dir"), _dumps(rec), (rec.get("timings") or {}).get("finished_at") or now,
                ),
            )  # fmt: skip
        if data_hash:
            conn.execute("UPDATE sessions SET data_hash = ? WHERE id = ?", (data_hash, session_id))
        for b in briefings:
            action_id = b.get("action_id")
            if not action_id:
                continue
            conn.execute(
                "INSERT OR REPLACE INTO briefings (action_id, session_id, iteration, record) VALUES (?, ?, ?, ?)",
                (action_id, session_id, int(b.get("iteration", 0)), _dumps(b)),
            )
            pdict = b.get("proposal") or {}
            candidate = dict(pdict.get("candidate") or {})
            decision: dict[str, Any] = {}
            decided_candidate: dict[str, Any] | None = None
            if action_id in approved:
                p_status, loop = "approved", "running"
                decision = approved[action_id].get("decision") or {}
                decided_candidate = dict(approved[action_id].get("config_updates") or candidate)
            elif action_id in rejected:
                p_status, loop = "rejected", "rejected"
            else:
                p_status, loop = "pending", loop_status
            if isinstance(pending, dict) and pending.get("action_id") == action_id:
                decision = pending.get("decision") or decision
                loop = str(pending.get("status") or loop)
                if p_status == "pending" and loop in ("approved", "rejected"):
                    p_status = loop  # answered in the file, not yet taken by the loop
            action = {
                "action_id": action_id,
                "next_iteration": b.get("iteration"),
                "attempt": b.get("attempt"),
                "proposed_updates": pdict.get("updates") or {},
                "proposal": {k: pdict.get(k) for k in ("base", "candidate", "base_updates", "trial_number")},
                "summary": (b.get("briefing") or {}).get("summary"),
                "analysis": (b.get("briefing") or {}).get("analysis"),
                "created_at": b.get("created_at"),
            }
            conn.execute(
                """INSERT OR REPLACE INTO proposals (action_id, session_id, iteration, attempt, status, loop_status,
                       proposed_updates, base_kind, base_snapshot, candidate_snapshot, decided_candidate, edited,
                       decided_by, decided_at, notes, action, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    action_id, session_id, int(b.get("iteration", 0)), int(b.get("attempt") or 1), p_status, loop,
                    _dumps(pdict.get("updates") or {}), pdict.get("base"),
                    _dumps(_base_snapshot(action, b)), _dumps(candidate),
                    None if decided_candidate is None else _dumps(decided_candidate),
                    int(bool(decision.get("edited"))), "legacy file" if p_status != "pending" else None,
                    decision.get("decided_at"), decision.get("notes"), _dumps(action),
                    b.get("created_at") or now, now,
                ),
            )  # fmt: skip
    return {
        "session_id": session_id,
        "iterations": len(history),
        "proposals": sum(1 for b in briefings if b.get("action_id")),
        "status": status,
    }
