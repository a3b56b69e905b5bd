"""``self-evolve --parallel-runs N``: several approved runs in flight, approvals one at a time as before, history in
iteration order, and a crash with runs in flight resumed with the same candidates."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import PipelineOptions, RunConfig
from alpha_evolve.parallel_runs import ParallelRunsLoop
from alpha_evolve.session_files import validate_session
from tests._loop_harness import MODES, LoopRun, legacy_driver, only_session, resume, run_session
from tests._session_helpers import StubRunner, history, wait_until


class GateRunner(StubRunner):
    """Each iteration's run waits until the test opens its gate; records which runs were in flight together."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[int, threading.Event] = {}
        self.started: dict[int, threading.Event] = {}
        self.lock = threading.Lock()
        self.running: set[int] = set()
        self.peak = 0

    def _events(self, iteration: int) -> tuple[threading.Event, threading.Event]:
        with self.lock:
            return (self.gates.setdefault(iteration, threading.Event()),
                    self.started.setdefault(iteration, threading.Event()))

    def __call__(self, config: RunConfig, options: PipelineOptions | None = None, *, experiment: str) -> Path:
        iteration = int(experiment.split("_it")[1][:3])
        gate, started = self._events(iteration)
        with self.lock:
            self.running.add(iteration)
            self.peak = max(self.peak, len(self.running))
        started.set()
        if iteration > 0:
            assert gate.wait(60), f"iteration {iteration} was never released"
        try:
            return super().__call__(config, options, experiment=experiment)
        finally:
            with self.lock:
                self.running.discard(iteration)

    def wait_started(self, iteration: int) -> None:
        assert self._events(iteration)[1].wait(30), f"iteration {iteration} never started"

    def release(self, iteration: int) -> None:
        self._events(iteration)[0].set()


def _summary(session_dir: Path) -> dict[str, Any]:
    return json.loads((session_dir / "session_summary.json").read_text())


def parallel_session(mode: str, tmp_path: Path, runner: StubRunner, **kw: Any) -> LoopRun:
    run = run_session(mode, tmp_path, runner=runner, parallel_runs=2, **kw)
    assert isinstance(run.loop, ParallelRunsLoop)  # build_loop chose the parallel-runs loop
    return run


@pytest.mark.parametrize("mode", MODES)
def test_runs_overlap_up_to_n_and_are_recorded_in_iteration_order(tmp_path: Path, mode: str) -> None:
    runner = GateRunner()
    s = parallel_session(mode, tmp_path, runner, auto_approve=True, iterations=4)
    runner.wait_started(1)
    runner.wait_started(2)  # approved and started while iteration 1 is still running
    state = s.state.summary()["state"]
    assert sorted(r["iteration"] for r in state["in_flight"]) == [1, 2]  # resume would re-run both
    assert all(r["candidate"] is not None and r["decision"]["status"] == "auto_approved" for r in state["in_flight"])
    assert not runner.started.get(3, threading.Event()).is_set()  # two slots: the third waits
    runner.release(2)  # the later run finishes first ...
    runner.wait_started(3)  # ... which frees a slot
    assert s.state.iterations() == [0]  # ... but 2 is not recorded before 1
    for it in (1, 3, 4):
        runner.release(it)
    result = s.finish()
    assert result.status == "session_complete"
    recs = s.state.history()
    assert [r["iteration"] for r in recs] == [0, 1, 2, 3, 4]
    assert all(r["success"] for r in recs) and runner.peak == 2
    summary = s.state.summary()
    assert summary["iterations_completed"] == 4 and summary["state"]["phase"] == "done"
    assert summary["state"].get("in_flight", []) == []
    s.state.assert_consistent()


@pytest.mark.parametrize("mode", MODES)
def test_each_candidate_is_still_approved_one_at_a_time(tmp_path: Path, mode: str) -> None:
    runner = GateRunner()
    s = parallel_session(mode, tmp_path, runner, iterations=2)
    first = s.state.pending()
    assert first["iteration"] == 1
    s.state.approve(first)
    runner.wait_started(1)
    second = s.state.pending(not_id=first["action_id"])
    assert second["iteration"] == 2
    assert not runner.gates[1].is_set()  # proposed and awaiting its own decision while run 1 is in flight
    assert not runner.started.get(2, threading.Event()).is_set()  # nothing runs before its approval
    s.state.approve(second)
    runner.wait_started(2)
    runner.release(1)
    runner.release(2)
    assert s.finish().status == "session_complete"
    recs = s.state.history()
    assert [r["iteration"] for r in recs] == [0, 1, 2]
    assert [r["action_id"] for r in recs[1:]] == [first["action_id"], second["action_id"]]
    assert all(r["decision"]["status"] == "approved" for r in recs[1:])
    s.state.assert_consistent()


def test_kill_9_with_runs_in_flight_then_resume(tmp_path: Path) -> None:
    """Iteration 2 blocks, iteration 3 starts beside it; kill -9; resume re-runs both with their candidates."""
    block = tmp_path / "block"
    block.write_text("1")
    proc = legacy_driver(tmp_path / "root", "--iterations", "3", "--auto-approve", "--parallel-runs", "2",
                  env={"AE_STUB_BLOCK_FILE": str(block), "AE_STUB_BLOCK_ITERATION": "2"})
    try:
        wait_until(tmp_path, lambda: (tmp_path / "block.reached").exists(), what="the blocked run", proc=proc)
        session = only_session(tmp_path / "root")
        wait_until(session, lambda: sorted(r["iteration"] for r in _summary(session)["state"].get("in_flight", []))
                   == [2, 3], what="runs 2 and 3 in flight")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    summary = _summary(session)
    planned = {r["iteration"]: r["candidate"] for r in summary["state"]["in_flight"]}
    assert [r["iteration"] for r in history(session)] == [0, 1]
    block.unlink()
    done = resume(session)
    assert done.returncode == 0, done.stderr
    recs = history(session)
    assert [r["iteration"] for r in recs] == [0, 1, 2, 3]
    assert {r["iteration"]: r["config_updates"] for r in recs[2:]} == planned
    assert recs[2]["reruns"] == 1
    assert _summary(session)["status"] == "session_complete"
    assert validate_session(session)[1] == []
