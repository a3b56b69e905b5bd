"""The state-backend contract: one suite run against both backends of the self-evolution loop.

Every test takes ``mode`` from ``MODES`` (legacy session files, tracked SQLite registry) — as Optuna runs one
storage test case over every storage — and builds its loop through the real ``build_loop`` (tests/_loop_harness.py).
What the loop relies on from a backend: a new session and its resume, a proposal posted and answered (approved,
edited, rejected, stopped, left to time out), the iteration records and the best, the counts, a second driver kept
out, kill -9 survived, and a bad answer told back as one clear line while the session keeps waiting. What only one
backend does (kinds of file writes, polling fallback, registry rows and HTTP-like refusals) is tested in
test_session.py and test_registry.py.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from alpha_evolve.config import RunConfig
from alpha_evolve.session import SessionLockedError
from tests._loop_harness import (
    MODES,
    STATES,
    LoopRun,
    driver,
    driver_run,
    run_session,
    session_settings,
)
from tests._session_helpers import StubRunner, stub_metrics, wait_until

pytestmark = pytest.mark.parametrize("mode", MODES)

GENERATIONS = "evolution.generations"


def test_auto_approve_records_every_iteration_and_the_best(tmp_path: Path, mode: str) -> None:
    run = run_session(mode, tmp_path, auto_approve=True, iterations=3)
    assert run.run().status == "session_complete"
    state = run.state
    recs = state.history()
    assert [r["iteration"] for r in recs] == [0, 1, 2, 3]
    assert recs[0]["kind"] == "baseline" and recs[0]["config_updates"] == {}
    for r in recs:
        assert r["objective"] == pytest.approx(stub_metrics(RunConfig().with_updates(r["config_updates"]))["Sharpe"])
        assert r["success"] and Path(r["run_dir"]).parent == state.artifact_dir / "pipeline_runs"
        assert Path(r["config_snapshot"]).is_file()
    assert all(r["decision"]["status"] == "auto_approved" for r in recs[1:])
    summary = state.summary()
    assert summary["best"]["iteration"] == max(recs, key=lambda r: r["objective"])["iteration"]
    assert summary["iterations_completed"] == 3 and summary["status"] == "session_complete"
    assert summary["state"]["phase"] == "done"
    assert [b["iteration"] for b in state.briefings()] == [1, 2, 3]
    assert all(b["briefing"]["summary"] for b in state.briefings())
    assert state.action_status(recs[-1]["action_id"]) == "session_complete"
    assert state.action_status(recs[1]["action_id"]) in ("completed", None)  # legacy keeps only the open action
    state.assert_consistent()


def test_failed_and_raising_runs_are_recorded_and_the_session_goes_on(tmp_path: Path, mode: str) -> None:
    runner = StubRunner(fail_if=lambda c: c.get("generations") != 20 and c.get("bt_top") != 5,
                        raise_if=lambda c: c.get("generations") == 20 and c.get("bt_top") != 5)
    run = run_session(mode, tmp_path, auto_approve=True, iterations=6, runner=runner)
    assert run.run().status == "session_complete"
    recs = run.state.history()
    assert len(recs) == 7
    failed = [r for r in recs if not r["success"]]
    assert failed, "the stand-in runner should have failed some candidates"
    for r in failed:
        assert r["objective"] is None
        assert "told to fail" in r["failure_reason"] or "pipeline raised RuntimeError" in r["failure_reason"]
    summary = run.state.summary()
    assert summary["best"]["objective"] == max(r["objective"] for r in recs if r["success"])
    assert summary["iterations_completed"] == 6  # a failed run is a completed iteration
    run.state.assert_consistent()


def test_an_approved_proposal_runs_as_posted(tmp_path: Path, mode: str) -> None:
    run = run_session(mode, tmp_path)
    action = run.state.pending()
    assert (action["iteration"], action["attempt"]) == (1, 1)
    assert run.state.action_status(action["action_id"]) == "awaiting_approval"
    assert any("approve" in line for line in run.lines)  # where and how to decide was printed
    run.state.approve(action, notes="go")
    assert run.finish().status == "session_complete"
    rec = run.state.history()[1]
    assert rec["action_id"] == action["action_id"] and rec["config_updates"] == action["candidate"]
    assert rec["decision"]["status"] == "approved" and rec["decision"]["notes"] == "go"
    assert rec["decision"]["edited"] is False and rec["decision"]["latency_ms"] is not None
    assert run.state.action_status(action["action_id"]) == "session_complete"
    run.state.assert_consistent()


def test_an_edited_candidate_runs_as_edited(tmp_path: Path, mode: str) -> None:
    run = run_session(mode, tmp_path)
    action = run.state.pending()
    value = 8 if action["candidate"][GENERATIONS] != 8 else 9
    run.state.approve(action, notes=f"try {value}", candidate={GENERATIONS: value})
    assert run.finish().status == "session_complete"
    rec = run.state.history()[1]
    assert rec["config_updates"] == {**action["candidate"], GENERATIONS: value}
    assert rec["decision"]["edited"] is True and rec["decision"]["notes"] == f"try {value}"
    assert rec["objective"] == pytest.approx(stub_metrics(RunConfig().with_updates(rec["config_updates"]))["Sharpe"])
    run.state.assert_consistent()


def test_bad_answers_are_one_line_and_the_session_keeps_waiting(tmp_path: Path, mode: str) -> None:
    run = run_session(mode, tmp_path)
    action = run.state.pending()
    line = run.state.refused(action, status="maybe")
    assert "'maybe'" in line and "\n" not in line
    line = run.state.refused(action, candidate={GENERATIONS: 99})
    assert "outside [4, 48]" in line and "\n" not in line and "Traceback" not in line
    assert run.thread.is_alive()
    loop_state = run.state.summary()["state"]  # the loop's own view: the same question, still open
    assert loop_state["phase"] == "awaiting_approval" and loop_state["action"]["action_id"] == action["action_id"]
    run.state.approve(action)
    assert run.finish().status == "session_complete"
    rec = run.state.history()[1]
    assert rec["config_updates"] == action["candidate"]  # nothing of the refused answers was taken
    run.state.assert_consistent()


def test_a_rejection_brings_a_new_proposal_for_the_same_iteration(tmp_path: Path, mode: str) -> None:
    run = run_session(mode, tmp_path)
    first = run.state.pending()
    run.state.reject(first, notes="no")
    second = run.state.pending(not_id=first["action_id"])
    assert (second["iteration"], second["attempt"]) == (1, 2)
    assert run.state.action_status(first["action_id"]) in ("rejected", None)  # legacy shows the open action only
    run.state.approve(second)
    assert run.finish().status == "session_complete"
    recs = run.state.history()
    assert [r["iteration"] for r in recs] == [0, 1]
    assert recs[1]["action_id"] == second["action_id"] and recs[1]["rejected_action_ids"] == [first["action_id"]]
    assert [(b["iteration"], b["attempt"]) for b in run.state.briefings()] == [(1, 1), (1, 2)]
    assert run.state.summary()["iterations_completed"] == 1  # a rejection is not an iteration
    run.state.assert_consistent()


def test_a_stop_ends_the_session_and_resume_continues_the_same_action(tmp_path: Path, mode: str) -> None:
    run = run_session(mode, tmp_path, iterations=2)
    action = run.state.pending()
    run.state.stop(action)
    assert run.finish().status == "stopped"
    summary = run.state.summary()
    assert summary["status"] == "stopped" and summary["state"]["phase"] == "awaiting_approval"
    assert run.state.action_status(action["action_id"]) == "stopped"
    run.state.assert_consistent()

    resumed = LoopRun(run.state, dataclasses.replace(run.settings, auto_approve=True))
    assert resumed.finish().status == "session_complete"
    recs = run.state.history()
    assert [r["iteration"] for r in recs] == [0, 1, 2]
    assert recs[1]["action_id"] == action["action_id"]
    run.state.assert_consistent()


def test_a_timed_out_question_is_asked_again_on_resume(tmp_path: Path, mode: str) -> None:
    run = run_session(mode, tmp_path, approval_timeout=0.3)
    assert run.finish().status == "timed_out"
    summary = run.state.summary()
    assert summary["status"] == "timed_out" and run.state.iterations() == [0]
    first = run.state.history()  # nothing but the baseline ran
    action_id = summary["state"]["action"]["action_id"]
    assert run.state.action_status(action_id) == "timed_out"
    run.state.assert_consistent()

    resumed = LoopRun(run.state, dataclasses.replace(run.settings, approval_timeout=None))
    again = run.state.pending()
    assert again["action_id"] == action_id
    run.state.approve(again)
    assert resumed.finish().status == "session_complete"
    recs = run.state.history()
    assert recs[:1] == first and [r["iteration"] for r in recs] == [0, 1] and recs[1]["action_id"] == action_id


def test_a_second_driver_is_refused_while_the_first_holds_the_session(tmp_path: Path, mode: str) -> None:
    run = run_session(mode, tmp_path)
    action = run.state.pending()
    other = run.state.backend(run.settings, lambda line: None)
    with pytest.raises(SessionLockedError, match=f"already being driven by pid {os.getpid()}"):
        other.open()
    run.state.stop(action)
    assert run.finish().status == "stopped"
    free = run.state.backend(run.settings, lambda line: None)
    free.open()  # released with the first driver
    free.close()


@pytest.mark.slow
def test_kill_9_during_a_run_then_resume_runs_each_iteration_once(tmp_path: Path, mode: str) -> None:
    """A real ``self-evolve`` process killed in iteration 2's run; the resumed session re-runs exactly that one."""
    block = tmp_path / "block"
    block.write_text("1")
    settings = session_settings(mode, iterations=3, auto_approve=True)
    root = tmp_path / "root"
    root.mkdir()
    proc = driver(*STATES[mode].new_session_args(root), "--iterations", "3", "--auto-approve",
                  env={"AE_STUB_BLOCK_FILE": str(block), "AE_STUB_BLOCK_ITERATION": "2"})
    try:
        wait_until(tmp_path, lambda: (tmp_path / "block.reached").exists(), what="the blocked run", proc=proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        proc.communicate()
    state = STATES[mode].created_by_driver(root, settings)
    try:
        assert state.iterations() == [0, 1]
        summary = state.summary()
        assert summary["state"]["phase"] == "running" and summary["state"]["iteration"] == 2
        planned = summary["state"]["candidate"]
        state.after_kill(proc.pid)
        block.unlink()
        done = driver_run(*state.resume_args())
        assert done.returncode == 0, done.stderr
        recs = state.history()
        assert [r["iteration"] for r in recs] == [0, 1, 2, 3]
        assert recs[2]["config_updates"] == planned and recs[2]["reruns"] == 1
        assert recs[2]["run_dir"] != (tmp_path / "block.reached").read_text()  # a new run directory
        assert state.summary()["status"] == "session_complete"
        state.assert_consistent()
    finally:
        state.close()


@pytest.mark.slow
def test_kill_9_while_awaiting_keeps_the_action_and_an_answer_given_meanwhile(tmp_path: Path, mode: str) -> None:
    """A real ``self-evolve`` process killed while it waits; the person answers while nothing drives the session
    and the resumed loop takes that answer for the same action."""
    settings = session_settings(mode, iterations=1)
    root = tmp_path / "root"
    root.mkdir()
    proc = driver(*STATES[mode].new_session_args(root), "--iterations", "1")
    try:
        state = STATES[mode].created_by_driver(root, settings)
        action = state.pending()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        proc.communicate()
    try:
        state.approve(action, notes="while down")
        done = driver_run(*state.resume_args())
        assert done.returncode == 0, done.stderr
        recs = state.history()
        assert [r["iteration"] for r in recs] == [0, 1]
        assert recs[1]["action_id"] == action["action_id"] and recs[1]["decision"]["notes"] == "while down"
        assert state.summary()["status"] == "session_complete"
        state.assert_consistent()
    finally:
        state.close()
