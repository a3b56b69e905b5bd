"""One way to build and drive a self-evolution loop in tests, for both state backends.

A loop is built by the real ``session_start.build_loop`` (base config, search space, sampler, the sequential or
the parallel-runs loop), on a real backend, with the stand-in pipeline runner unless a test passes the real one.
What differs between the modes — where the state lives and how a person answers a proposal — is a ``SessionState``:
``LegacyState`` (a session directory; answers are edits of ``pending_action.json``) or ``TrackedState`` (a session
row in a SQLite registry; answers are registry decisions, as the dashboard and ``alpha-evolve approve`` make them).
The contract suite (tests/test_session_backends.py) runs one set of tests over both, the way Optuna runs one
storage test case over every storage (``STORAGE_MODES`` and ``StorageSupplier``).

Waits are on watchdog events in the state's directory (a file edit, or a commit touching the registry's WAL),
never sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import RunConfig
from alpha_evolve.registry import (
    DecisionError,
    ExperimentRegistry,
    RegistryStateBackend,
    search_space_record,
    session_checker,
)
from alpha_evolve.session_files import FileStateBackend, new_session_dir, validate_session
from alpha_evolve.session_settings import SessionSettings
from alpha_evolve.session_start import build_loop
from tests._session_helpers import (
    DEFAULT_SPACE,
    ROOT,
    LoopThread,
    StubRunner,
    atomic_json,
    read_json_or_none,
    wait_for_feedback,
    wait_until,
)

MODES = ("legacy", "tracked")
DRIVER = ROOT / "tests" / "_session_driver.py"


def session_settings(mode: str = "legacy", **kw: Any) -> SessionSettings:
    """Settings of a test session: the default search space, one proposal, a fixed seed. Legacy sessions re-read
    ``pending_action.json`` only every 60 s, so only watchdog events can make a test pass fast."""
    base: dict[str, Any] = dict(mode=mode, search_space_path=str(DEFAULT_SPACE), iterations=1, seed=3,
                                approval_poll_interval=60.0)
    base.update(kw)
    return SessionSettings(**base)


# ------------------------------------------------------------------------------------------------ states


class SessionState:
    """Where one test session lives and how a person answers it: the only part that differs between modes.

    Actions are returned normalised: ``action_id``, ``iteration``, ``attempt``, ``candidate`` and ``raw`` (the
    pending_action.json object, or the proposal row)."""

    mode: str
    label: str
    artifact_dir: Path
    watch_dir: Path
    """A directory whose changes announce every step of the session (waits re-check on them)."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings

    def backend(self, settings: SessionSettings, report: Callable[[str], None]) -> Any:
        raise NotImplementedError

    def pending(self, *, not_id: str | None = None, timeout: float = 90.0) -> dict[str, Any]:
        raise NotImplementedError

    def approve(self, action: dict[str, Any], *, notes: str | None = None,
                candidate: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def reject(self, action: dict[str, Any], *, notes: str | None = None) -> None:
        raise NotImplementedError

    def stop(self, action: dict[str, Any]) -> None:
        raise NotImplementedError

    def refused(self, action: dict[str, Any], *, status: str = "approved",
                candidate: dict[str, Any] | None = None) -> str:
        """Give a bad answer (an unknown status, or an edit the session must refuse) and return the one line the
        approver is told."""
        raise NotImplementedError

    def action_status(self, action_id: str) -> str | None:
        """How the loop left an action, as the approver sees it (``awaiting_approval``, ``running``,
        ``rejected``, ``stopped``, ``timed_out``, ``session_complete``...)."""
        raise NotImplementedError

    def briefings(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def reader(self) -> Any:
        """A backend that is not opened: what the loop saved, read through the ``StateBackend`` protocol."""
        return self.backend(self.settings, lambda line: None)

    def history(self) -> list[dict[str, Any]]:
        return self.reader().load_history()

    def summary(self) -> dict[str, Any]:
        summary = self.reader().load_summary()
        assert summary is not None, f"{self.label}: no session summary"
        return dict(summary)

    def iterations(self) -> list[int]:
        return [r["iteration"] for r in self.history()]

    def assert_consistent(self) -> None:
        """The backend's own view agrees with the loop's records (schemas, the registry's projections)."""
        raise NotImplementedError

    def after_kill(self, pid: int) -> None:
        """Checks on what a ``kill -9`` of the driver ``pid`` left behind, before anything resumes."""

    @staticmethod
    def new_session_args(root: Path) -> list[str]:
        """``self-evolve`` arguments that create this kind of session under ``root`` (for ``driver``)."""
        raise NotImplementedError

    def resume_args(self) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
        return wait_until(self.watch_dir, predicate, timeout=timeout, what=what)


class LegacyState(SessionState):
    """A session directory; a decision is an edit of ``pending_action.json`` (atomic, like an editor's save)."""

    mode = "legacy"

    def __init__(self, settings: SessionSettings, root: Path | None = None, *, session_dir: Path | None = None) -> None:
        super().__init__(settings)
        self.root = root
        self.dir = session_dir if session_dir is not None else new_session_dir(Path(str(root)) / "sessions")
        self.label = str(self.dir)
        self.artifact_dir = self.watch_dir = self.dir

    @classmethod
    def created_by_driver(cls, root: Path, settings: SessionSettings) -> LegacyState:
        return cls(settings, root, session_dir=only_session(root))

    @property
    def pending_path(self) -> Path:
        return self.dir / "pending_action.json"

    def backend(self, settings: SessionSettings, report: Callable[[str], None]) -> FileStateBackend:
        return FileStateBackend(self.dir, poll_interval=settings.approval_poll_interval,
                                force_polling=settings.force_polling, report=report)

    @staticmethod
    def _normal(raw: dict[str, Any]) -> dict[str, Any]:
        return {"action_id": raw["action_id"], "iteration": raw["next_iteration"], "attempt": raw["attempt"],
                "candidate": dict(raw["proposal"]["candidate"]), "raw": raw}

    def pending(self, *, not_id: str | None = None, timeout: float = 90.0) -> dict[str, Any]:
        def check() -> Any:
            data = read_json_or_none(self.pending_path)
            if isinstance(data, dict) and data.get("status") == "awaiting_approval" and data.get("action_id") != not_id:
                return data
            return None

        return self._normal(self.wait(check, "a pending action", timeout))

    def _answer(self, action: dict[str, Any], status: str, notes: str | None,
                candidate: dict[str, Any] | None = None) -> None:
        raw = dict(action["raw"])
        raw.update(status=status, notes=notes)
        if candidate is not None:
            raw["proposal"] = {**raw["proposal"], "candidate": candidate}
        atomic_json(self.pending_path, raw)

    def approve(self, action: dict[str, Any], *, notes: str | None = None,
                candidate: dict[str, Any] | None = None) -> None:
        self._answer(action, "approved", notes, None if candidate is None else {**action["candidate"], **candidate})

    def reject(self, action: dict[str, Any], *, notes: str | None = None) -> None:
        self._answer(action, "rejected", notes)

    def stop(self, action: dict[str, Any]) -> None:
        self._answer(action, "stop", "enough")

    def refused(self, action: dict[str, Any], *, status: str = "approved",
                candidate: dict[str, Any] | None = None) -> str:
        self._answer(action, status, None, None if candidate is None else {**action["candidate"], **candidate})
        fragment = "proposal.candidate refused" if candidate is not None else f"status {status!r}"
        return str(wait_for_feedback(self.dir, fragment, timeout=90.0)["problem"])

    def action_status(self, action_id: str) -> str | None:
        data = read_json_or_none(self.pending_path)
        return data.get("status") if isinstance(data, dict) and data.get("action_id") == action_id else None

    def briefings(self) -> list[dict[str, Any]]:
        path = self.dir / "agent_briefings.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []

    def assert_consistent(self) -> None:
        rows, problems = validate_session(self.dir)
        assert problems == []
        assert {r[0] for r in rows} >= {"session_summary.json", "history.jsonl"}

    def after_kill(self, pid: int) -> None:
        owner = read_json_or_none(self.dir / ".session.owner")
        assert owner is None or owner.get("pid") == pid  # a stale owner note; the kernel freed the lock itself

    @staticmethod
    def new_session_args(root: Path) -> list[str]:
        return ["--mode", "legacy", "--session-root", str(root), "--approval-poll-interval", "60"]

    def resume_args(self) -> list[str]:
        return ["--resume", str(self.dir)]


class TrackedState(SessionState):
    """A session row in a real registry file; decisions go through the registry as the dashboard's do."""

    mode = "tracked"

    def __init__(self, settings: SessionSettings, root: Path, *, db: Path | None = None,
                 session_id: str | None = None) -> None:
        super().__init__(settings)
        self.root = root
        self.db = db or root / "reg" / "experiments.sqlite"
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.watch_dir = self.db.parent
        self.registry = ExperimentRegistry(self.db)
        if session_id is None:
            self.artifact_dir = new_session_dir(root / "sessions")
            self.id = self.artifact_dir.name
            self.registry.create_session(
                self.id, objective=settings.objective, maximize=settings.maximize, settings=settings.to_dict(),
                base_config=RunConfig().to_dict(), search_space=search_space_record(str(settings.search_space_path)),
                artifact_dir=str(self.artifact_dir),
            )
        else:
            self.id = session_id
            self.artifact_dir = Path(self.registry.require_session(session_id)["artifact_dir"])
        self.label = f"session {self.id}"

    @classmethod
    def created_by_driver(cls, root: Path, settings: SessionSettings) -> TrackedState:
        db = root / "reg" / "experiments.sqlite"

        def created() -> Any:
            if not db.exists():
                return None
            with ExperimentRegistry(db) as reg:
                rows = reg.list_sessions()
                return rows[0]["id"] if rows else None

        sid = wait_until(db.parent, created, what="a tracked session")
        return cls(settings, root, db=db, session_id=sid)

    @property
    def artifacts(self) -> Path:
        return self.artifact_dir

    def backend(self, settings: SessionSettings, report: Callable[[str], None]) -> RegistryStateBackend:
        return RegistryStateBackend(self.registry, self.id, self.artifact_dir, report=report)

    @staticmethod
    def _normal(row: dict[str, Any]) -> dict[str, Any]:
        return {"action_id": row["action_id"], "iteration": row["iteration"], "attempt": row["attempt"],
                "candidate": dict(row["candidate_snapshot"]), "raw": row}

    def pending(self, *, not_id: str | None = None, timeout: float = 90.0) -> dict[str, Any]:
        def check() -> Any:
            p = self.registry.pending_proposal(self.id)
            s = self.registry.get_session(self.id)
            if p and p["action_id"] != not_id and s and s["status"] == "awaiting_approval":
                return p
            return None

        return self._normal(self.wait(check, "a pending proposal", timeout))

    def _check(self) -> Callable[..., list[str]]:
        return session_checker(self.registry.require_session(self.id))

    def approve(self, action: dict[str, Any], *, notes: str | None = None,
                candidate: dict[str, Any] | None = None) -> None:
        self.registry.decide(action["action_id"], "approved", notes=notes, candidate=candidate, decided_by="test",
                             check=self._check())

    def reject(self, action: dict[str, Any], *, notes: str | None = None) -> None:
        self.registry.decide(action["action_id"], "rejected", notes=notes, decided_by="test")

    def stop(self, action: dict[str, Any]) -> None:
        self.registry.request_stop(self.id)

    def refused(self, action: dict[str, Any], *, status: str = "approved",
                candidate: dict[str, Any] | None = None) -> str:
        with pytest.raises(DecisionError) as info:
            self.registry.decide(action["action_id"], status, candidate=candidate, check=self._check())
        return str(info.value)

    def action_status(self, action_id: str) -> str | None:
        row = self.registry.get_proposal(action_id)
        return None if row is None else row["loop_status"]

    def briefings(self) -> list[dict[str, Any]]:
        found = (self.registry.briefing(p["action_id"]) for p in self.registry.proposals(self.id))
        return [b for b in found if b is not None]

    def assert_consistent(self) -> None:
        row = self.registry.require_session(self.id)
        summary = self.summary()
        assert row["mode"] == "tracked" and row["iterations_completed"] == summary["iterations_completed"]
        expected = {"session_complete": "completed", "stopped": "stopped", "timed_out": "stopped"}
        assert row["status"] == expected.get(summary["status"], summary["status"])
        if summary["status"] == "timed_out":
            assert "timed out" in row["last_error"]
        best = summary.get("best") or {}
        assert row["best_iteration"] == best.get("iteration")
        assert [i["iteration"] for i in self.registry.iterations(self.id)] == self.iterations()
        assert row["owner_pid"] is None  # released by the driver

    def after_kill(self, pid: int) -> None:
        import sqlite3

        row = self.registry.require_session(self.id)
        assert row["status"] == "running" and row["owner_pid"] == pid  # what a kill -9 leaves behind
        conn = sqlite3.connect(self.db)  # the dead driver's heartbeat grows old, as it does after a while
        conn.execute("UPDATE sessions SET heartbeat_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", (self.id,))
        conn.commit()
        conn.close()
        assert self.registry.list_sessions()[0]["alive"] is False
        stopped = self.registry.request_stop(self.id)  # nobody would act on a flag: the stop is recorded at once
        assert stopped["status"] == "stopped" and "gone" in stopped["last_error"]

    @staticmethod
    def new_session_args(root: Path) -> list[str]:
        return ["--mode", "tracked", "--registry-db", str(root / "reg" / "experiments.sqlite"), "--session-root",
                str(root / "sessions")]

    def resume_args(self) -> list[str]:
        return ["--mode", "tracked", "--registry-db", str(self.db), "--resume", self.id]

    def close(self) -> None:
        self.registry.close()


STATES: dict[str, type[LegacyState] | type[TrackedState]] = {"legacy": LegacyState, "tracked": TrackedState}


def new_state(mode: str, root: Path, settings: SessionSettings | None = None, **kw: Any) -> SessionState:
    return STATES[mode](settings or session_settings(mode), root, **kw)


# --------------------------------------------------------------------------------------------------- loop


class LoopRun(LoopThread):
    """A session loop from the real ``build_loop``, run in a background thread.

    The loop is built inside that thread: ``SelfEvolutionLoop`` installs SIGINT/SIGTERM handlers only when built on
    the main thread, which is what a CLI process does and what a test thread must not. ``start`` returns once the
    loop exists (or failed to build; ``finish`` then raises the error)."""

    def __init__(self, state: SessionState, settings: SessionSettings | None = None, *,
                 runner: Callable[..., Path] | None = None, start: bool = True) -> None:
        self.state = state
        self.settings = settings or state.settings
        self.runner = runner if runner is not None else StubRunner()
        self.lines: list[str] = []
        self.backend: Any = None
        self._built = threading.Event()
        if start:
            self.start()

    def start(self) -> None:
        super().start()
        assert self._built.wait(60), "the loop was never built"

    def _run(self) -> None:
        try:
            self.backend = self.state.backend(self.settings, self.lines.append)
            self.loop = build_loop(self.backend, self.settings, self.backend.load_summary(), self.state.artifact_dir,
                                   self.runner, label=self.state.label, out=self.lines.append)
            if isinstance(self.backend, RegistryStateBackend):
                self.backend.on_stop_request = self.loop.request_stop  # as open_session wires it
        except BaseException as exc:
            self.error = exc
            return
        finally:
            self._built.set()
        super()._run()

    @property
    def dir(self) -> Path:
        """The session directory (legacy) or artifact directory (tracked)."""
        return self.state.artifact_dir

    def finish(self, timeout: float = 90.0) -> Any:
        """Join the loop's thread (90 s: the lead's allowance for session waits on a loaded CI machine)."""
        return super().finish(timeout)

    def run(self, timeout: float = 90.0) -> Any:
        """Run to the end (a result, or the loop's exception raised here)."""
        return self.finish(timeout)


class Tracked(LoopRun):
    """A tracked session loop (tests/_loop_harness.py: the real ``build_loop``) in a background thread, on a
    registry file in ``tmp``."""

    def __init__(self, tmp: Path, *, runner: Callable[..., Path] | None = None, **kw: Any) -> None:
        settings = session_settings("tracked", **kw)
        self.tracked = TrackedState(settings, tmp)
        self.db, self.registry, self.id, self.artifacts = (self.tracked.db, self.tracked.registry, self.tracked.id,
                                                           self.tracked.artifact_dir)
        super().__init__(self.tracked, settings, runner=runner)

    def wait(self, predicate: Any, what: str, timeout: float = 90.0) -> Any:
        return self.tracked.wait(predicate, what, timeout)

    def pending(self, *, not_id: str | None = None) -> dict[str, Any]:
        return dict(self.tracked.pending(not_id=not_id)["raw"])


def run_session(mode: str, root: Path, *, runner: Callable[..., Path] | None = None, **kw: Any) -> LoopRun:
    """A new session of ``mode`` under ``root``, started; ``kw`` are ``SessionSettings`` fields."""
    settings = session_settings(mode, **kw)
    return LoopRun(new_state(mode, root, settings), settings, runner=runner)


def finished_legacy_session(tmp_path: Path) -> Path:
    """A completed auto-approved legacy session of two proposals (for import and read-only views)."""
    run = run_session("legacy", tmp_path / "legacy", auto_approve=True, iterations=2, seed=1)
    assert run.run().status == "session_complete"
    return run.state.artifact_dir


# ------------------------------------------------------------------------------------- real subprocesses


def driver(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``self-evolve`` in a real process (tests/_session_driver.py: the stand-in runner), for kills and signals."""
    return subprocess.Popen([sys.executable, str(DRIVER), *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def driver_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DRIVER), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def self_evolve(*args: str) -> int:
    """The real ``self-evolve`` entry point in this process, with the stand-in pipeline runner; its exit code."""
    import argparse

    from alpha_evolve.commands.session import add_self_evolve_arguments, run_self_evolve

    parser = argparse.ArgumentParser()
    add_self_evolve_arguments(parser)
    return int(run_self_evolve(parser.parse_args(list(args)), pipeline_runner=StubRunner()))


def legacy_driver(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A new legacy session under ``root`` driven by a real process."""
    return driver(*LegacyState.new_session_args(root), *args, env=env)


def only_session(root: Path) -> Path:
    """The session directory a driver creates under ``root``, once it is there."""
    return wait_until(root, lambda: next(iter(root.glob("self_evo_session_*")), None), what="a session dir")


def resume(session_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``self-evolve --resume DIR`` in a real process, to its end."""
    return driver_run("--resume", str(session_dir), *args)
