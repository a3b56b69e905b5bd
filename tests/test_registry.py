"""Tracked mode on real SQLite files: the registry schema, the loop driven through registry rows (approve, edit,
reject, stop, refused hand edits), the driver lock, legacy import, and the CLI in real subprocesses.

Waits are on watchdog events in the registry's directory (every commit touches the WAL file), never sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import RunConfig
from alpha_evolve.registry import (
    DecisionError,
    ExperimentRegistry,
    RegistryError,
    RegistryStateBackend,
    import_session_dir,
    search_space_record,
    session_checker,
)
from alpha_evolve.samplers import make_sampler
from alpha_evolve.search_space import load_search_space
from alpha_evolve.session import SelfEvolutionLoop, SessionLockedError, SessionSettings
from alpha_evolve.session_files import FileStateBackend, new_session_dir
from tests._session_helpers import DEFAULT_SPACE, ROOT, LoopThread, StubRunner, stub_metrics, wait_until

DRIVER = ROOT / "tests" / "_session_driver.py"


class Tracked(LoopThread):
    """A tracked session loop in a background thread, on a registry file in ``tmp``."""

    def __init__(self, tmp: Path, **kw: Any) -> None:
        self.db = tmp / "reg" / "experiments.sqlite"
        self.registry = ExperimentRegistry(self.db)
        runner = kw.pop("runner", None) or StubRunner()
        base: dict[str, Any] = dict(mode="tracked", search_space_path=str(DEFAULT_SPACE), iterations=1, seed=3)
        base.update(kw)
        self.settings = SessionSettings(**base)
        self.artifacts = new_session_dir(tmp / "sessions")
        self.id = self.artifacts.name
        self.registry.create_session(
            self.id,
            objective="Sharpe",
            maximize=True,
            settings=self.settings.to_dict(),
            base_config=RunConfig().to_dict(),
            search_space=search_space_record(DEFAULT_SPACE),
            artifact_dir=str(self.artifacts),
        )
        space = load_search_space(DEFAULT_SPACE)
        sampler = make_sampler("random", space, seed=3, exploration_prob=0.2, maximize=True, state_dir=self.artifacts)
        self.lines: list[str] = []
        self.backend = RegistryStateBackend(self.registry, self.id, self.artifacts, report=self.lines.append)
        self.loop = SelfEvolutionLoop(self.backend, self.settings, base_config=RunConfig(), space=space,
                                      sampler=sampler, pipeline_runner=runner, out=self.lines.append,
                                      install_signal_handlers=False)
        self.backend.on_stop_request = self.loop.request_stop
        self.start()

    def wait(self, predicate: Any, what: str, timeout: float = 30.0) -> Any:
        return wait_until(self.db.parent, predicate, timeout=timeout, what=what)

    def pending(self, *, not_id: str | None = None) -> dict[str, Any]:
        def check() -> Any:
            p = self.registry.pending_proposal(self.id)
            s = self.registry.get_session(self.id)
            if p and p["action_id"] != not_id and s and s["status"] == "awaiting_approval":
                return p
            return None

        return self.wait(check, "a pending proposal")


def test_schema_is_wal_versioned_and_refuses_foreign_files(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    with ExperimentRegistry(db):
        pass
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables >= {"sessions", "iterations", "proposals", "briefings", "meta"}
    conn.close()
    other = tmp_path / "other.sqlite"
    c2 = sqlite3.connect(other)
    c2.execute("CREATE TABLE foo (x)")
    c2.close()
    with pytest.raises(RegistryError, match="is not an alpha-evolve registry"):
        ExperimentRegistry(other)
    with pytest.raises(Exception, match="does not exist"):
        ExperimentRegistry(tmp_path / "missing.sqlite", create=False)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(RegistryError, match="cannot be opened: file is not a database"):
        ExperimentRegistry(garbage)


def test_auto_approve_tracked_session_records_everything(tmp_path: Path) -> None:
    t = Tracked(tmp_path, auto_approve=True, iterations=3)
    result = t.finish()
    assert result.status == "session_complete"
    s = t.registry.require_session(t.id)
    assert s["status"] == "completed" and s["mode"] == "tracked" and s["iterations_completed"] == 3
    its = t.registry.iterations(t.id)
    assert [i["iteration"] for i in its] == [0, 1, 2, 3]
    for i in its:
        expected = stub_metrics(RunConfig().with_updates(i["config_updates"]))["Sharpe"]
        assert i["objective"] == pytest.approx(expected)
        assert Path(i["run_dir"]).parent == t.artifacts / "pipeline_runs"
    best = max(its, key=lambda i: i["objective"])
    assert s["best_iteration"] == best["iteration"] and s["best_objective"] == pytest.approx(best["objective"])
    props = t.registry.proposals(t.id)
    assert [p["iteration"] for p in props] == [1, 2, 3]
    assert all(p["status"] == "approved" and p["decided_by"] == "auto-approve" for p in props)
    # Each run is over: earlier proposals are completed, the last one carries the session's end.
    assert [p["loop_status"] for p in props] == ["completed", "completed", "session_complete"]
    assert s["search_space"]["parameters"][0]["key"] == "evolution.generations"
    assert s["owner_pid"] is None  # released


def test_manual_approval_edit_reject_and_stop(tmp_path: Path) -> None:
    t = Tracked(tmp_path, iterations=3)
    first = t.pending()
    session = t.registry.require_session(t.id)
    check = session_checker(session)
    key = "evolution.generations"
    # an out-of-range edit is refused up front and changes nothing
    with pytest.raises(DecisionError, match="outside") as bad:
        t.registry.decide(first["action_id"], "approved", candidate={key: 99}, check=check)
    assert bad.value.http_status == 422
    assert t.registry.get_proposal(first["action_id"])["status"] == "pending"  # type: ignore[index]
    with pytest.raises(DecisionError) as wrong:
        t.registry.decide(first["action_id"], "maybe")
    assert wrong.value.http_status == 400
    with pytest.raises(DecisionError) as missing:
        t.registry.decide("nope", "approved")
    assert missing.value.http_status == 404
    # an in-range edit runs exactly as edited
    t.registry.decide(first["action_id"], "approved", candidate={key: 8}, notes="try 8", decided_by="test",
                      check=check)
    with pytest.raises(DecisionError) as twice:
        t.registry.decide(first["action_id"], "rejected")
    assert twice.value.http_status == 409
    second = t.pending(not_id=first["action_id"])
    it1 = t.registry.iterations(t.id)[1]
    assert it1["config_updates"][key] == 8 and it1["record"]["decision"]["notes"] == "try 8"
    assert it1["record"]["decision"]["edited"] is True
    assert it1["record"]["decision"]["latency_ms"] is not None
    p1 = t.registry.get_proposal(first["action_id"])
    assert p1 is not None and p1["status"] == "approved" and p1["edited"] == 1 and p1["decided_by"] == "test"
    # reject: the loop proposes another candidate for the same iteration
    t.registry.decide(second["action_id"], "rejected", notes="no")
    third = t.pending(not_id=second["action_id"])
    assert third["iteration"] == second["iteration"] == 2 and third["attempt"] == 2
    assert t.registry.get_proposal(second["action_id"])["loop_status"] == "rejected"  # type: ignore[index]
    # stop while waiting ends the session cleanly
    t.registry.request_stop(t.id)
    result = t.finish()
    assert result.status == "stopped"
    s = t.registry.require_session(t.id)
    assert s["status"] == "stopped" and s["stop_requested"] == 0
    assert [i["iteration"] for i in t.registry.iterations(t.id)] == [0, 1]


def test_a_refused_hand_edit_reopens_the_proposal_and_the_loop_keeps_waiting(tmp_path: Path) -> None:
    t = Tracked(tmp_path, iterations=1)
    p = t.pending()
    conn = sqlite3.connect(t.db)  # what someone editing the database by hand might do
    conn.execute("UPDATE proposals SET status = 'approved', decided_candidate = ? WHERE action_id = ?",
                 (json.dumps({**p["candidate_snapshot"], "evolution.generations": 1000}), p["action_id"]))
    conn.commit()
    conn.close()
    reopened = t.wait(lambda: (r := t.registry.get_proposal(p["action_id"])) and r["problem"] and r, "a problem")
    assert reopened["status"] == "pending" and "outside" in reopened["problem"]
    assert any("candidate refused" in line for line in t.lines)
    t.registry.decide(p["action_id"], "approved")
    assert t.finish().status == "session_complete"


def test_approval_timeout_ends_the_session_cleanly(tmp_path: Path) -> None:
    t = Tracked(tmp_path, iterations=1, approval_timeout=0.3)
    assert t.finish().status == "timed_out"
    s = t.registry.require_session(t.id)
    assert s["status"] == "stopped" and s["loop_status"] == "timed_out" and "timed out" in s["last_error"]
    p = t.registry.proposals(t.id)[0]
    assert p["status"] == "pending" and p["loop_status"] == "timed_out"  # still answerable; taken on resume


def test_a_second_driver_is_refused(tmp_path: Path) -> None:
    t = Tracked(tmp_path, iterations=1)
    t.pending()
    other = RegistryStateBackend(ExperimentRegistry(t.db), t.id, t.artifacts)
    with pytest.raises(SessionLockedError, match="already being driven by pid"):
        other.open()
    t.registry.request_stop(t.id)
    t.finish()


def test_stop_during_auto_approve_takes_effect_at_the_next_safe_point(tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.write_text("")
    runner = StubRunner(block_file=block, block_iteration=99)  # never blocks; the session just runs
    t = Tracked(tmp_path, auto_approve=True, iterations=10_000, runner=runner)
    t.wait(lambda: len(t.registry.iterations(t.id)) >= 2, "two iterations")
    t.registry.request_stop(t.id)
    result = t.finish()
    assert result.status == "stopped"
    assert len(t.registry.iterations(t.id)) < 10_000


def _legacy_session(tmp_path: Path) -> Path:
    d = new_session_dir(tmp_path / "legacy")
    settings = SessionSettings(mode="legacy", search_space_path=str(DEFAULT_SPACE), iterations=2, seed=1,
                               auto_approve=True)
    space = load_search_space(DEFAULT_SPACE)
    sampler = make_sampler("random", space, seed=1, exploration_prob=0.2, maximize=True, state_dir=d)
    loop = SelfEvolutionLoop(FileStateBackend(d), settings, base_config=RunConfig(), space=space, sampler=sampler,
                             pipeline_runner=StubRunner(), install_signal_handlers=False)
    assert loop.run().status == "session_complete"
    return d


def test_legacy_import_is_idempotent(tmp_path: Path) -> None:
    d = _legacy_session(tmp_path)
    with ExperimentRegistry(tmp_path / "r.sqlite") as reg:
        a = import_session_dir(reg, d)
        b = import_session_dir(reg, d)
        assert a == b and a["iterations"] == 3 and a["proposals"] == 2
        sessions = reg.list_sessions()
        assert len(sessions) == 1 and sessions[0]["mode"] == "legacy" and sessions[0]["status"] == "completed"
        assert len(reg.iterations(d.name)) == 3 and len(reg.proposals(d.name)) == 2
        assert all(p["status"] == "approved" for p in reg.proposals(d.name))
        assert sessions[0]["best_objective"] is not None
        with pytest.raises(Exception, match="not a legacy self-evolution session"):
            import_session_dir(reg, tmp_path)
        # a copy of the directory elsewhere has the same name: it gets its own stable id, never overwrites
        copy = tmp_path / "elsewhere" / d.name
        shutil.copytree(d, copy)
        c1 = import_session_dir(reg, copy)
        c2 = import_session_dir(reg, copy)
        assert c1["session_id"] == c2["session_id"] != d.name and c1["session_id"].startswith(d.name)
        assert len(reg.list_sessions()) == 2 and len(reg.iterations(d.name)) == 3


# ---------------------------------------------------------------------------------------- CLI, subprocesses


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alpha_evolve", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def test_cli_tracked_session_with_approve_reject_stop_and_resume(tmp_path: Path) -> None:
    db = tmp_path / "reg" / "experiments.sqlite"
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "--mode", "tracked", "--registry-db", str(db), "--session-root",
         str(tmp_path / "s"), "--iterations", "2", "--seed", "4"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def pending() -> Any:
            if not db.exists():
                return None
            with ExperimentRegistry(db) as reg:
                rows = reg.list_sessions()
                if rows and rows[0]["status"] == "awaiting_approval":
                    proposal = reg.pending_proposal(rows[0]["id"])
                    return (rows[0]["id"], proposal) if proposal else None
            return None

        (db.parent).mkdir(parents=True, exist_ok=True)
        sid, first = wait_until(db.parent, pending, what="pending proposal", proc=proc)
        out = _cli("approve", sid, "--registry-db", str(db), "--notes", "go")
        assert out.returncode == 0, out.stderr
        assert "approved" in out.stdout
        _sid2, second = wait_until(db.parent, lambda: (p := pending()) and p[1]["action_id"] != first["action_id"]
                                  and p, what="second proposal", proc=proc)
        assert _cli("reject", sid, "--registry-db", str(db)).returncode == 0
        wait_until(db.parent, lambda: (p := pending()) and p[1]["action_id"] != second["action_id"] and p,
                   what="third proposal", proc=proc)
        out = _cli("stop", sid, "--registry-db", str(db))
        assert out.returncode == 0, out.stderr
        _stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with ExperimentRegistry(db) as reg:
        s = reg.require_session(sid)
        assert s["status"] == "stopped" and s["iterations_completed"] == 1
        assert reg.proposals(sid)[0]["notes"] == "go"
    # a bad decision target is one line
    out = _cli("approve", "no-such-session", "--registry-db", str(db))
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1 and "no session" in out.stderr
    # resume, auto-approving the rest
    res = subprocess.run([sys.executable, str(DRIVER), "--mode", "tracked", "--registry-db", str(db), "--resume", sid,
                          "--auto-approve"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with ExperimentRegistry(db) as reg:
        s = reg.require_session(sid)
        assert s["status"] == "completed"
        assert [i["iteration"] for i in reg.iterations(sid)] == [0, 1, 2]
    lst = _cli("registry", "list", "--json", env={"AE_EXPERIMENTS_DB": str(db)})
    assert lst.returncode == 0 and json.loads(lst.stdout)[0]["id"] == sid


def test_cli_registry_import_and_list(tmp_path: Path) -> None:
    d = _legacy_session(tmp_path)
    db = tmp_path / "r.sqlite"
    for _ in range(2):
        out = _cli("registry", "import", str(d), "--registry-db", str(db))
        assert out.returncode == 0, out.stderr
        assert f"imported {d.name}" in out.stdout
    lst = _cli("registry", "list", "--registry-db", str(db), "--json")
    rows = json.loads(lst.stdout)
    assert [r["id"] for r in rows] == [d.name]
    # the table on a narrow terminal still shows the whole id (what approve/reject/stop take)
    table = _cli("registry", "list", "--registry-db", str(db), env={"COLUMNS": "80"})
    assert d.name in table.stdout and "…" not in table.stdout
    bad = _cli("registry", "import", str(tmp_path / "nowhere"), "--registry-db", str(db))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


def test_kill_9_mid_run_then_stop_marks_it_and_resume_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "reg" / "experiments.sqlite"
    db.parent.mkdir(parents=True)
    block = tmp_path / "block"
    block.write_text("1")
    env = {**os.environ, "AE_STUB_BLOCK_FILE": str(block), "AE_STUB_BLOCK_ITERATION": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "--mode", "tracked", "--registry-db", str(db), "--session-root",
         str(tmp_path / "s"), "--iterations", "2", "--auto-approve"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        wait_until(tmp_path, lambda: (tmp_path / "block.reached").exists(), what="iteration 1 running",
                   proc=proc)
    finally:
        proc.kill()
        proc.wait()
    block.unlink()
    with ExperimentRegistry(db) as reg:
        sid = reg.list_sessions()[0]["id"]
        s = reg.require_session(sid)
        assert s["status"] == "running" and s["owner_pid"] == proc.pid  # what a kill -9 leaves behind
        assert [i["iteration"] for i in reg.iterations(sid)] == [0]
        conn = sqlite3.connect(db)  # make the dead driver's heartbeat old, as it is after a while
        conn.execute("UPDATE sessions SET heartbeat_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", (sid,))
        conn.commit()
        conn.close()
        assert reg.list_sessions()[0]["alive"] is False
        stopped = reg.request_stop(sid)  # nobody would act on a flag: the stop is recorded at once
        assert stopped["status"] == "stopped" and "gone" in stopped["last_error"]
    res = subprocess.run([sys.executable, str(DRIVER), "--mode", "tracked", "--registry-db", str(db), "--resume", sid],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with ExperimentRegistry(db) as reg:
        assert reg.require_session(sid)["status"] == "completed"
        its = reg.iterations(sid)
        assert [i["iteration"] for i in its] == [0, 1, 2]
        assert its[1]["record"]["reruns"] == 1  # iteration 1 was re-run once, in a new run directory
