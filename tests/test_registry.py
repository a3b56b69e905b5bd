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

from alpha_evolve.registry import (
    DecisionError,
    ExperimentRegistry,
    RegistryError,
    import_session_dir,
    session_checker,
)
from tests._loop_harness import DRIVER, Tracked, finished_legacy_session
from tests._session_helpers import ROOT, StubRunner, wait_until


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


def test_auto_approved_proposals_are_rows_with_their_outcome(tmp_path: Path) -> None:
    t = Tracked(tmp_path, auto_approve=True, iterations=3)
    assert t.finish().status == "session_complete"
    props = t.registry.proposals(t.id)
    assert [p["iteration"] for p in props] == [1, 2, 3]
    assert all(p["status"] == "approved" and p["decided_by"] == "auto-approve" for p in props)
    # Each run is over: earlier proposals are completed, the last one carries the session's end.
    assert [p["loop_status"] for p in props] == ["completed", "completed", "session_complete"]
    s = t.registry.require_session(t.id)
    assert s["status"] == "completed" and s["search_space"]["parameters"][0]["key"] == "evolution.generations"
    assert s["best_objective"] == pytest.approx(t.tracked.summary()["best"]["objective"])


def test_registry_decisions_are_refused_with_their_reason_and_change_nothing(tmp_path: Path) -> None:
    """What the dashboard and ``approve`` get from the registry (the loop's side is the contract suite's)."""
    t = Tracked(tmp_path, iterations=2)
    first = t.pending()
    check = session_checker(t.registry.require_session(t.id))
    key = "evolution.generations"
    with pytest.raises(DecisionError, match="outside") as bad:
        t.registry.decide(first["action_id"], "approved", candidate={key: 99}, check=check)
    assert bad.value.http_status == 422
    with pytest.raises(DecisionError, match="not a value of this proposal") as unknown:
        t.registry.decide(first["action_id"], "approved", candidate={"bt_top": 3, "nope": 1}, check=check)
    assert unknown.value.http_status == 422
    with pytest.raises(DecisionError) as wrong:
        t.registry.decide(first["action_id"], "maybe")
    assert wrong.value.http_status == 400
    with pytest.raises(DecisionError) as missing:
        t.registry.decide("nope", "approved")
    assert missing.value.http_status == 404
    assert t.registry.get_proposal(first["action_id"])["status"] == "pending"  # type: ignore[index]
    t.registry.decide(first["action_id"], "approved", candidate={key: 8}, notes="try 8", decided_by="test",
                      check=check)
    with pytest.raises(DecisionError) as twice:
        t.registry.decide(first["action_id"], "rejected")
    assert twice.value.http_status == 409
    t.pending(not_id=first["action_id"])
    p1 = t.registry.get_proposal(first["action_id"])
    assert p1 is not None and p1["status"] == "approved" and p1["edited"] == 1 and p1["decided_by"] == "test"
    assert t.registry.iterations(t.id)[1]["config_updates"][key] == 8
    t.registry.request_stop(t.id)
    assert t.finish().status == "stopped"
    s = t.registry.require_session(t.id)
    assert s["status"] == "stopped" and s["stop_requested"] == 0  # the flag is taken down with the stop


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


def test_legacy_import_is_idempotent(tmp_path: Path) -> None:
    d = finished_legacy_session(tmp_path)
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
    d = finished_legacy_session(tmp_path)
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
