"""Legacy (session-directory) sessions with a stand-in pipeline runner: what only the file backend does — approvals
by every kind of file write, half-written and garbage edits, bare keys, polling fallback, validation, and kill -9 /
signals of a real process followed by --resume. The contract both backends share (approve, edit, reject, stop,
timeout, lock, best, kill -9 mid-run) is tests/test_session_backends.py. Waits are on watchdog events, never sleeps.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import RunConfig
from alpha_evolve.files import schema_errors
from alpha_evolve.session_files import new_session_dir, validate_session
from tests._cli import run_cli
from tests._loop_harness import LoopRun, legacy_driver, only_session, resume, run_session
from tests._session_helpers import (
    atomic_json,
    history,
    read_json_or_none,
    stub_metrics,
    wait_for_feedback,
    wait_for_status,
    wait_until,
)


def start(tmp_path: Path, **kw: Any) -> LoopRun:
    """A legacy session (tests/_loop_harness.py: the real ``build_loop``) running in a background thread."""
    return run_session("legacy", tmp_path, **kw)


def assert_valid(session_dir: Path) -> None:
    rows, problems = validate_session(session_dir)
    assert problems == []
    assert {r[0] for r in rows} >= {"session_summary.json", "history.jsonl", "agent_briefings.jsonl"}


def iterations(session_dir: Path) -> list[int]:
    return [r["iteration"] for r in history(session_dir)]


# ------------------------------------------------------------------------------------------ auto-approve


def test_no_persist_configs_and_custom_pipeline_dir(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    s = start(tmp_path, auto_approve=True, iterations=1, persist_configs=False, pipeline_output_dir=str(out))
    s.finish()
    recs = history(s.dir)
    assert all(r["config_snapshot"] is None for r in recs)
    assert not (s.dir / "generated_configs").exists()
    assert all(Path(r["run_dir"]).parent == out for r in recs)
    assert_valid(s.dir)


# -------------------------------------------------------------------------------------- manual approval


def _approve(path: Path, how: str, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2)
    if how == "in_place":
        with open(path, "w") as fh:
            fh.write(text)
    elif how == "atomic_rename":  # Claude Code's Edit tool
        atomic_json(path, data, tmp_name=f"{path.name}.tmp.{os.getpid()}.9f3a1c")
    elif how == "delete_recreate":
        path.unlink()
        path.write_text(text)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["in_place", "atomic_rename", "delete_recreate"])
def test_manual_approval_by_any_kind_of_write(tmp_path: Path, how: str) -> None:
    s = start(tmp_path)
    pending = wait_for_status(s.dir, "awaiting_approval")
    assert pending["next_iteration"] == 1 and pending["iteration_completed"] == 0
    assert "alpha-evolve approve" in pending["commands"]["approve"] and "jq" in pending["commands"]["jq"]
    assert any("pending_action.json" in line for line in s.lines)
    pending["status"] = "approved"
    pending["notes"] = f"by {how}"
    _approve(s.dir / "pending_action.json", how, pending)
    assert s.finish().status == "session_complete"
    rec = history(s.dir)[1]
    assert rec["action_id"] == pending["action_id"]
    assert rec["decision"]["status"] == "approved" and rec["decision"]["notes"] == f"by {how}"
    assert rec["decision"]["latency_ms"] is not None and rec["decision"]["edited"] is False
    assert rec["config_updates"] == pending["proposal"]["candidate"]
    final = json.loads((s.dir / "pending_action.json").read_text())
    assert final["status"] == "session_complete" and final["decision"]["status"] == "approved"
    assert not (s.dir / "approval_feedback.json").exists() or \
        json.loads((s.dir / "approval_feedback.json").read_text())["status"] == "accepted"
    assert_valid(s.dir)


def test_half_written_file_is_waited_out(tmp_path: Path) -> None:
    import logging

    seen = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "incomplete content" in record.getMessage():
                seen.set()

    log = logging.getLogger("alpha_evolve.approval")
    spy, old = Spy(level=logging.DEBUG), log.level
    log.addHandler(spy)
    log.setLevel(logging.DEBUG)
    try:
        s = start(tmp_path)
        pending = wait_for_status(s.dir, "awaiting_approval")
        pending["status"] = "approved"
        text = json.dumps(pending, indent=2)
        with open(s.dir / "pending_action.json", "w") as fh:
            fh.write(text[: len(text) // 2])
            fh.flush()
            assert seen.wait(30), "the loop never read the half-written file"
            fh.write(text[len(text) // 2:])
        assert s.finish().status == "session_complete"
    finally:
        log.removeHandler(spy)
        log.setLevel(old)
    assert not any("invalid JSON" in line for line in s.lines), s.lines
    feedback = read_json_or_none(s.dir / "approval_feedback.json")
    assert feedback is None or feedback["status"] == "accepted"


def test_garbage_edits_get_feedback_and_a_good_edit_is_then_accepted(tmp_path: Path) -> None:
    s = start(tmp_path)
    pending = wait_for_status(s.dir, "awaiting_approval")
    path = s.dir / "pending_action.json"
    action_id = pending["action_id"]

    atomic_json(path, {})  # placeholder so the next write is a change; no action_id means the open action
    wait_for_feedback(s.dir, "status None")
    broken = json.dumps({**pending, "status": "approved"})[:-7]
    path.write_text(broken)
    fb = wait_for_feedback(s.dir, "invalid JSON")
    assert fb["action_id"] == action_id
    assert path.read_text() == broken, "the loop overwrote the user's broken file"

    atomic_json(path, {**pending, "status": "aproved"})
    assert "did you mean 'approved'" in wait_for_feedback(s.dir, "status 'aproved'")["problem"]

    atomic_json(path, {**pending, "action_id": "it001-a1-00000000", "status": "approved"})
    wait_for_feedback(s.dir, "is not the open action")

    bad = {**pending, "status": "approved",
           "proposal": {**pending["proposal"], "candidate": {**pending["proposal"]["candidate"],
                                                              "evolution.generations": 99}}}
    atomic_json(path, bad)
    assert "outside [4, 48]" in wait_for_feedback(s.dir, "proposal.candidate refused")["problem"]
    assert s.thread.is_alive()

    good = {**pending, "status": "approved", "notes": "try 8",
            "proposal": {**pending["proposal"], "candidate": {**pending["proposal"]["candidate"],
                                                               "evolution.generations": 8}}}
    atomic_json(path, good)
    assert s.finish().status == "session_complete"
    rec = history(s.dir)[1]
    assert rec["config_updates"]["evolution.generations"] == 8 and rec["decision"]["edited"] is True
    assert rec["objective"] == pytest.approx(stub_metrics(RunConfig().with_updates(rec["config_updates"]))["Sharpe"])
    assert json.loads((s.dir / "approval_feedback.json").read_text())["status"] == "accepted"
    assert sum("still waiting" in line for line in s.lines) == 5
    assert_valid(s.dir)


def test_bare_keys_in_an_edited_candidate_are_recorded_once_under_their_section(tmp_path: Path) -> None:
    s = start(tmp_path)
    pending = wait_for_status(s.dir, "awaiting_approval")
    path = s.dir / "pending_action.json"
    candidate = dict(pending["proposal"]["candidate"])
    twice = {**candidate, "generations": 8}  # the same field as evolution.generations, with another value
    atomic_json(path, {**pending, "status": "approved", "proposal": {**pending["proposal"], "candidate": twice}})
    assert "both set evolution.generations" in wait_for_feedback(s.dir, "give it once")["problem"]
    assert s.thread.is_alive()

    bare = {("generations" if k == "evolution.generations" else k): v for k, v in candidate.items()}
    bare["generations"] = 8
    atomic_json(path, {**pending, "status": "approved", "proposal": {**pending["proposal"], "candidate": bare}})
    assert s.finish().status == "session_complete"
    rec = history(s.dir)[1]
    assert rec["config_updates"] == {**candidate, "evolution.generations": 8}
    assert rec["config_values"]["evolution.generations"] == 8 and "generations" not in rec["config_values"]
    assert_valid(s.dir)


def test_polling_fallback_when_inotify_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import watchdog.observers

    class NoInotify:
        def __init__(self, *a: Any, **k: Any) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(watchdog.observers, "Observer", NoInotify)
    s = start(tmp_path, approval_poll_interval=0.05)
    pending = wait_for_status(s.dir, "awaiting_approval")
    assert s.backend.watch_mode == "polling"
    atomic_json(s.dir / "pending_action.json", {**pending, "status": "approved"})
    assert s.finish().status == "session_complete"
    assert iterations(s.dir) == [0, 1]


def test_session_dirs_are_unique_within_a_second(tmp_path: Path) -> None:
    dirs = {new_session_dir(tmp_path) for _ in range(5)}
    assert len(dirs) == 5 and all(p.name.startswith("self_evo_session_") for p in dirs)


def test_validate_reports_schema_problems_and_duplicates(tmp_path: Path) -> None:
    s = start(tmp_path, auto_approve=True, iterations=1)
    s.finish()
    lines = (s.dir / "history.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    bad["success"] = "yes"
    (s.dir / "history.jsonl").write_text("\n".join([*lines, lines[1], json.dumps(bad)]) + "\n")
    _, problems = validate_session(s.dir)
    assert any("iteration 1 is recorded twice" in p for p in problems)
    assert any("history.jsonl record 4" in p and "success" in p for p in problems)
    proc = run_cli("validate", str(s.dir))
    assert proc.returncode == 1 and "recorded twice" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_a_folder_that_is_no_session_is_one_problem(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    rows, problems = validate_session(tmp_path)
    assert rows == [] and len(problems) == 1 and "not a session directory" in problems[0]


def test_schemas_refuse_what_they_should() -> None:
    assert schema_errors("pending_action", {"status": "approved"})
    assert schema_errors("approval_feedback", {"schema_version": 1, "action_id": "x", "status": "problem",
                                               "problem": None, "file": "f", "created_at": "2024-01-01T00:00:00Z"})


# ---------------------------------------------------------------------------------- real subprocesses


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    proc = run_cli("self-evolve", "--mode", "tracked", "--registry-db", str(tmp_path / "r.sqlite"),
                   "--search-space", str(tmp_path / "missing.json"), "--session-root", str(tmp_path))
    assert proc.returncode == 2 and "search-space file not found" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    proc = run_cli("approve", str(tmp_path / "nope"))
    assert proc.returncode == 1 and proc.stderr.startswith("alpha-evolve: error:") and "Traceback" not in proc.stderr
    proc = run_cli("self-evolve", "--mode", "legacy", "--iterations", "-1", "--session-root", str(tmp_path))
    assert proc.returncode == 2 and "--iterations -1" in proc.stderr


@pytest.mark.slow
def test_cli_resume_of_a_driven_session_is_one_line_and_cli_approve_decides(tmp_path: Path) -> None:
    """The CLI beside a live driver (kill -9 while awaiting is the contract suite's, for both backends)."""
    proc = legacy_driver(tmp_path / "root", "--iterations", "1")
    try:
        session = only_session(tmp_path / "root")
        pending = wait_for_status(session, "awaiting_approval")
        locked = run_cli("self-evolve", "--resume", str(session))
        assert locked.returncode == 2
        assert f"already being driven by pid {proc.pid}" in locked.stderr and len(locked.stderr.splitlines()) == 1
        approved = run_cli("approve", str(session), "--notes", "cli")
        assert approved.returncode == 0, approved.stderr
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    recs = history(session)
    assert [r["iteration"] for r in recs] == [0, 1]
    assert recs[1]["action_id"] == pending["action_id"] and recs[1]["decision"]["notes"] == "cli"
    again = run_cli("approve", str(session))
    assert again.returncode == 1 and "not awaiting approval" in again.stderr
    assert_valid(session)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly_and_resume_finishes(tmp_path: Path, sig: signal.Signals) -> None:
    block = tmp_path / "block"
    block.write_text("1")
    proc = legacy_driver(tmp_path / "root", "--iterations", "2", "--auto-approve",
                  env={"AE_STUB_BLOCK_FILE": str(block), "AE_STUB_BLOCK_ITERATION": "1"})
    try:
        wait_until(tmp_path, lambda: (tmp_path / "block.reached").exists(), what="the blocked run", proc=proc)
        proc.send_signal(sig)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    session = only_session(tmp_path / "root")
    summary = json.loads((session / "session_summary.json").read_text())
    assert summary["status"] == "stopped" and summary["state"]["phase"] == "running"
    assert_valid(session)
    block.unlink()
    done = resume(session)
    assert done.returncode == 0, done.stderr
    assert iterations(session) == [0, 1, 2]
    assert json.loads((session / "pending_action.json").read_text())["status"] == "session_complete"
    assert_valid(session)


@pytest.mark.slow
def test_sigterm_while_awaiting_approval(tmp_path: Path) -> None:
    proc = legacy_driver(tmp_path / "root", "--iterations", "1")
    try:
        session = only_session(tmp_path / "root")
        pending = wait_for_status(session, "awaiting_approval")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert json.loads((session / "pending_action.json").read_text())["status"] == "stopped"
    done = resume(session, "--auto-approve")
    assert done.returncode == 0, done.stderr
    recs = history(session)
    assert [r["iteration"] for r in recs] == [0, 1] and recs[1]["action_id"] == pending["action_id"]
