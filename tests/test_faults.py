"""The machine's failures are never a candidate's or a proposal's: full disks and read-only folders under a real
session and a real evolve run stop them with one line, record nothing, and a resume runs every iteration exactly
once. Plus the classification itself and the SQLite write path (no "cannot rollback" masking the real error)."""

from __future__ import annotations

import errno
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import PipelineOptions, RunConfig
from alpha_evolve.controller import EvolutionController
from alpha_evolve.evaluation_setup import build_evaluator, loop_wiring
from alpha_evolve.experiment_status import EvolutionStatus, ProgressEvent
from alpha_evolve.faults import InfrastructureError, infrastructure_problem, mark_infrastructure
from alpha_evolve.files import FileFormatError, read_json
from alpha_evolve.mutators.offline import OfflineMutator
from alpha_evolve.session_files import new_session_dir, validate_session
from alpha_evolve.store import ProgramStore, StoreError
from tests._faults_helpers import SmallDisk, small_disk
from tests._loop_harness import LegacyState, LoopRun, TrackedState, self_evolve, session_settings
from tests._session_helpers import DEFAULT_SPACE, ROOT, StubRunner, history, wait_until

pytestmark = pytest.mark.timeout(180)


# ------------------------------------------------------------------------------------------ classification


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO])
def test_machine_errors_are_infrastructure(code: int) -> None:
    exc = OSError(code, "boom", "/some/file")
    assert infrastructure_problem(exc) is not None
    try:  # wrapped by a one-line error of ours, the cause still tells
        try:
            raise exc
        except OSError as inner:
            raise FileFormatError("/some/file: cannot read file (boom)") from inner
    except FileFormatError as wrapped:
        assert infrastructure_problem(wrapped) is not None


@pytest.mark.parametrize("text", ["database or disk is full", "attempt to write a readonly database",
                                  "disk I/O error"])
def test_sqlite_machine_errors_are_infrastructure(text: str) -> None:
    assert infrastructure_problem(sqlite3.OperationalError(text)) == text
    wrapped = mark_infrastructure(StoreError(f"store x.sqlite commit failed: {text}"))
    assert "commit failed" in str(infrastructure_problem(wrapped))


@pytest.mark.parametrize("exc", [ValueError("bad"), RuntimeError("stand-in runner told to raise"),
                                 FileNotFoundError(errno.ENOENT, "no such file"), KeyError("x"),
                                 sqlite3.OperationalError("no such table: programs"),
                                 sqlite3.DatabaseError("database disk image is malformed")])
def test_other_errors_are_not(exc: BaseException) -> None:
    assert infrastructure_problem(exc) is None


def test_full_store_gives_the_real_error_not_cannot_rollback(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        if not disk.mounted:
            pytest.skip("needs a real small filesystem (root and mount)")
        store = ProgramStore(disk.path / "p.sqlite")
        try:
            disk.fill()
            with pytest.raises(StoreError) as info:
                store.create_experiment("e", config_toml="x" * 500_000)
            message = str(info.value)
            assert "database or disk is full" in message and "cannot rollback" not in message
            assert "\n" not in message and infrastructure_problem(info.value) is not None
        finally:
            store.close()


# --------------------------------------------------------------------------------------- self-evolution


class FaultAt(StubRunner):
    """The stand-in runner; on iteration ``at`` the disk fails, before the run writes anything or after."""

    def __init__(self, disk: SmallDisk, at: int, how: str, when: str) -> None:
        super().__init__()
        self.disk, self.at, self.how, self.when = disk, at, how, when
        self.fired = False

    def _fire(self) -> None:
        self.fired = True
        self.disk.fill() if self.how == "full" else self.disk.read_only()

    def __call__(self, config: RunConfig, options: PipelineOptions | None = None, *, experiment: str) -> Path:
        due = not self.fired and f"_it{self.at:03d}" in experiment
        if due and self.when == "before":
            self._fire()
        run_dir = super().__call__(config, options, experiment=experiment)
        if due and self.when == "after":
            self._fire()
        return run_dir


def _loop(session_dir: Path, runner: StubRunner, iterations: int) -> LoopRun:
    """An auto-approved legacy session in ``session_dir``, built by the real ``build_loop``; ``.run()`` runs it."""
    settings = session_settings("legacy", iterations=iterations, seed=5, auto_approve=True)
    return LoopRun(LegacyState(settings, session_dir=session_dir), settings, runner=runner)


@pytest.mark.parametrize(("how", "when"), [("full", "before"), ("full", "after"), ("read_only", "before"),
                                           ("read_only", "after")])
def test_session_stops_on_a_machine_fault_and_resume_runs_each_iteration_once(
        tmp_path: Path, how: str, when: str) -> None:
    with small_disk(tmp_path / "disk", "4m") as disk:
        session_dir = new_session_dir(disk.path)
        runner = FaultAt(disk, at=2, how=how, when=when)
        with pytest.raises(InfrastructureError) as info:
            _loop(session_dir, runner, iterations=3).run()
        message = str(info.value)
        assert "\n" not in message and "Traceback" not in message and "cannot rollback" not in message
        assert ("No space left" if how == "full" else "Read-only") in message
        assert runner.fired
        disk.heal()
        recorded = [r["iteration"] for r in history(session_dir)]
        assert recorded in ([0, 1], [0, 1, 2])  # iteration 2 is recorded only if its record was already durable
        assert all(r["success"] for r in history(session_dir)), "the machine's fault was blamed on a proposal"

        result = _loop(session_dir, StubRunner(), iterations=3).run()
        assert result.status == "session_complete"
        records = history(session_dir)
        assert [r["iteration"] for r in records] == [0, 1, 2, 3]
        assert all(r["success"] and r["failure_reason"] is None for r in records)
        briefings = (session_dir / "agent_briefings.jsonl").read_text()
        assert "No space" not in briefings and "Read-only" not in briefings
        assert validate_session(session_dir)[1] == []


def test_cli_session_on_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    """The real command: the session folder turns read-only while it runs; exit 75, one line, then resume."""
    import subprocess
    import sys

    with small_disk(tmp_path / "disk", "4m") as disk:
        if not disk.mounted:
            pytest.skip("a read-only remount needs root and mount")
        driver = ROOT / "tests" / "_session_driver.py"
        block = tmp_path / "block"
        block.write_text("1")
        env = {**__import__("os").environ, "AE_STUB_BLOCK_FILE": str(block), "AE_STUB_BLOCK_ITERATION": "1"}
        proc = subprocess.Popen([sys.executable, str(driver), "--mode", "legacy", "--session-root", str(disk.path),
                                 "--iterations", "2", "--auto-approve", "--search-space", str(DEFAULT_SPACE)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(tmp_path, lambda: (tmp_path / "block.reached").exists(), what="the blocked run")
            session_dir = next(disk.path.glob("self_evo_session_*"))
            disk.read_only()
            block.unlink()
            # the blocked run is stuck; a SIGTERM abandons it, and the stop itself meets the read-only folder
            proc.terminate()
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert "Traceback" not in err and "cannot rollback" not in err, err
        disk.heal()
        done = subprocess.run([sys.executable, str(driver), "--resume", str(session_dir)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert [r["iteration"] for r in history(session_dir)] == [0, 1, 2]


# ------------------------------------------------------------------------------------------ evolve runs


BASE = RunConfig().with_updates({"backtest.synthetic_bars": 400, "evolution.mutator": "offline",
                                 "evolution.max_concurrent": 1})


def _offline_controller(cfg: RunConfig, store: ProgramStore, evaluator: Any) -> EvolutionController:
    return EvolutionController(cfg.evolution, store, evaluator, OfflineMutator(seed=1), wiring=loop_wiring(cfg))


@pytest.fixture(scope="module")
def evaluator() -> Iterator[Any]:
    ev = build_evaluator(BASE, include=("train",))
    yield ev
    ev.close()


@pytest.mark.parametrize("how", ["full"])
async def test_evolve_run_stops_on_a_machine_fault_and_resume_completes(tmp_path: Path, evaluator: Any,
                                                                        how: str) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        store = ProgramStore(disk.path / "programs.sqlite")
        try:
            if not disk.mounted:  # SQLite writes in C: inject its own error where the kernel cannot be used
                real = store.record_iteration

                def failing(*a: Any, **k: Any) -> Any:
                    if disk._injected:
                        raise mark_infrastructure(StoreError("store: commit failed: database or disk is full"))
                    return real(*a, **k)

                store.record_iteration = failing  # type: ignore[method-assign]

            def on_progress(event: ProgressEvent) -> None:
                if event.kind == "iteration" and event.iteration == 2:
                    disk.fill() if how == "full" else disk.read_only()

            ctl = _offline_controller(BASE, store, evaluator)
            with pytest.raises(InfrastructureError) as info:
                await ctl.run("momentum", "fault", 5, on_progress=on_progress)
            assert "\n" not in str(info.value) and "cannot rollback" not in str(info.value)
            disk.heal()
            done = store.completed_iterations("fault")
            assert done == [1, 2]
            with store.snapshot() as conn:
                blamed = conn.execute("SELECT COUNT(*) FROM programs WHERE experiment = 'fault' AND "
                                      "(failure_message LIKE '%disk%' OR failure_message LIKE '%read-only%' OR "
                                      "failure_message LIKE '%Read-only%')").fetchone()[0]
            assert blamed == 0
            # paused when the store could still take that one write; a full disk leaves it "running", which a
            # resume treats as a crashed run (no live process holds its lock)
            assert store.require_experiment("fault").status in ("paused", "running")
            resumed = await _offline_controller(BASE, store, evaluator).resume("fault")
            assert resumed.status is EvolutionStatus.COMPLETED
            assert store.completed_iterations("fault") == [1, 2, 3, 4, 5]
            with store.snapshot() as conn:  # one seed; completed_iterations above lists each iteration once
                assert conn.execute("SELECT COUNT(*) FROM programs WHERE experiment = 'fault' AND is_seed = 1"
                                    ).fetchone()[0] == 1
        finally:
            store.close()


async def test_seed_timeout_blames_the_limit_not_the_seed(tmp_path: Path) -> None:
    cfg = BASE.with_updates({"backtest.soft_timeout_seconds": 0.001, "backtest.hard_timeout_seconds": 5.0})
    ev = build_evaluator(cfg, include=("train",))
    store = ProgramStore(tmp_path / "p.sqlite")
    try:
        with pytest.raises(ValueError) as info:
            await _offline_controller(cfg, store, ev).run("momentum", "slow", 2)
        message = str(info.value)
        assert "too low for this much data" in message and "soft_timeout_seconds" in message
        assert "not a broken seed" in message and "\n" not in message
    finally:
        store.close()
        ev.close()


def test_a_stopped_session_leaves_the_iteration_to_re_run(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "4m") as disk:
        session_dir = new_session_dir(disk.path)
        with pytest.raises(InfrastructureError):
            _loop(session_dir, FaultAt(disk, at=1, how="read_only", when="before"), iterations=1).run()
        disk.heal()
        summary = read_json(session_dir / "session_summary.json")
        assert summary["state"]["phase"] == "running" and summary["state"]["iteration"] == 1
        assert json.dumps(summary).count("failed") == 0


def test_pipeline_run_whose_folder_turns_read_only_is_not_a_failed_run(tmp_path: Path) -> None:
    """The store keeps its open descriptors (as on a folder made read-only), the run's outputs cannot be written:
    the run raises the machine's fault and leaves no "failed" SUMMARY.json for an outer loop to record."""
    from alpha_evolve.pipeline import run_pipeline

    cfg = RunConfig().with_updates({"backtest.synthetic_bars": 420, "evolution.generations": 3,
                                    "evolution.mutator": "offline", "evolution.max_concurrent": 1,
                                    "backtest.bt_top": 1, "backtest.screen_fraction": 0.0,
                                    "pipeline.disable_align_cache": True})
    with small_disk(tmp_path / "disk", "16m") as disk:
        if not disk.mounted:
            pytest.skip("a read-only bind mount needs root and mount")

        def on_progress(event: Any) -> None:
            if getattr(event, "kind", None) == "iteration" and getattr(event, "iteration", 0) == 2:
                disk.read_only()

        with pytest.raises(InfrastructureError) as info:
            run_pipeline(cfg, experiment="ro", output_dir=disk.path, on_progress=on_progress)
        assert "Read-only" in str(info.value) and "\n" not in str(info.value)
        disk.heal()
        assert not list(disk.path.glob("run_ro_*/SUMMARY.json"))


@pytest.mark.parametrize("when", ["before", "after"])
def test_tracked_session_on_a_full_disk_stops_and_resumes_exactly_once(tmp_path: Path, when: str) -> None:
    """The registry (SQLite) and the artefacts share a disk that fills during iteration 2."""
    with small_disk(tmp_path / "disk", "8m") as disk:
        if not disk.mounted:
            pytest.skip("SQLite's own ENOSPC needs a real small filesystem (root and mount)")
        settings = session_settings("tracked", iterations=3, seed=5, auto_approve=True)
        state = TrackedState(settings, disk.path, db=disk.path / "experiments.sqlite")
        try:
            with pytest.raises(InfrastructureError) as info:
                LoopRun(state, runner=FaultAt(disk, at=2, how="full", when=when)).run()
            assert "\n" not in str(info.value) and "cannot rollback" not in str(info.value)
            disk.heal()
            result = LoopRun(state).run()
            assert result.status == "session_complete"
            records = state.history()
            assert [r["iteration"] for r in records] == [0, 1, 2, 3]
            assert all(r["success"] for r in records)
        finally:
            state.close()


def test_resume_on_a_read_only_session_folder_is_one_line_then_completes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with small_disk(tmp_path / "disk", "4m") as disk:
        assert self_evolve("--mode", "legacy", "--session-root", str(disk.path), "--iterations", "1",
                            "--auto-approve", "--search-space", str(DEFAULT_SPACE)) == 0
        session_dir = next(disk.path.glob("self_evo_session_*"))
        before = (session_dir / "history.jsonl").read_bytes()
        capsys.readouterr()
        disk.read_only()
        assert self_evolve("--resume", str(session_dir), "--iterations", "2", "--auto-approve") == 75
        err = capsys.readouterr().err
        assert "cannot be opened" in err and "Read-only" in err and len(err.strip().splitlines()) == 1
        disk.heal()
        assert (session_dir / "history.jsonl").read_bytes() == before
        assert self_evolve("--resume", str(session_dir), "--iterations", "2", "--auto-approve") == 0
        assert [r["iteration"] for r in history(session_dir)] == [0, 1, 2]
