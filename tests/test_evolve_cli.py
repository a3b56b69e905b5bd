"""``alpha-evolve evolve`` end to end: JSON outputs, one-line errors, a real ``kill -9`` then ``resume``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from alpha_evolve.cli import main

pytestmark = pytest.mark.timeout(180)

SMALL = """
[evolution]
max_concurrent = 2
[backtest]
synthetic_bars = 400
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _completed(db: Path, experiment: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            row = conn.execute("SELECT completed_iterations FROM experiments WHERE name = ?",
                               (experiment,)).fetchone()
        except sqlite3.OperationalError:
            return 0
    return 0 if row is None else int(row[0])


def _wait_for(proc: subprocess.Popen[bytes], db: Path, experiment: str, n: int) -> None:
    """Block until the run has recorded `n` iterations, watching the store (no fixed sleep)."""
    import time

    deadline = time.monotonic() + 120
    while _completed(db, experiment) < n:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "process exited"
        assert time.monotonic() < deadline, "the run did not progress"
        time.sleep(0.05)


def _spawn(db: Path, cfg: Path, experiment: str, iterations: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "alpha_evolve.cli", "evolve", "start", "--experiment", experiment,
         "--iterations", str(iterations), "--mutator", "offline", "--config", str(cfg), "--db", str(db), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def test_start_status_best_list_json(tmp_path: Path, cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "p.sqlite")
    code, out, _ = run_cli(capsys, "evolve", "start", "--experiment", "demo", "--iterations", "4",
                           "--mutator", "offline", "--config", str(cfg), "--db", db, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["status"] == "completed" and result["iterations_completed"] == 4

    code, out, _ = run_cli(capsys, "evolve", "status", "--experiment", "demo", "--db", db, "--json")
    status = json.loads(out)
    for key in ("experiment", "status", "iterations_completed", "target_iterations", "best_fitness",
                "total_mutations", "successful_mutations", "total_evaluations", "successful_evaluations"):
        assert key in status
    with sqlite3.connect(db) as conn:  # attempts set aside as behaviour duplicates are mutations too
        discarded = conn.execute("SELECT COUNT(*) FROM programs WHERE experiment = 'demo' AND is_seed = 0"
                                 " AND iteration IS NULL").fetchone()[0]
    assert status["iterations_completed"] == 4 and status["total_mutations"] == 4 + discarded
    assert status["best_fitness"] == pytest.approx(result["best_fitness"])

    export = tmp_path / "best.py"
    code, out, _ = run_cli(capsys, "evolve", "best", "--experiment", "demo", "--db", db, "--export", str(export),
                           "--json")
    best = json.loads(out)
    assert code == 0 and best["fitness"] == pytest.approx(status["best_fitness"])
    assert export.read_text().endswith(best["code"])

    code, out, _ = run_cli(capsys, "evolve", "list", "--db", db, "--json")
    listed = json.loads(out)
    assert [e["experiment"] for e in listed["experiments"]] == ["demo"]

    # The exported file is a standalone strategy: the backtest command reproduces its train Sharpe.
    code, out, _ = run_cli(capsys, "backtest", "--strategy-file", str(export), "--config", str(cfg), "--json")
    assert code == 0
    assert json.loads(out)["metrics"]["Sharpe"] == pytest.approx(best["metrics"]["Sharpe"])

    code, out, err = run_cli(capsys, "evolve", "start", "--experiment", "demo", "--db", db, "--config", str(cfg))
    assert code != 0 and "already exists" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["evolve", "status", "--experiment", "bad name!"], "invalid"),
        (["evolve", "status", "--experiment", "missing"], "not found"),
        (["evolve", "resume", "--experiment", "missing"], "not found"),
        (["evolve", "stop", "--experiment", "missing"], "not found"),
        (["evolve", "start", "--experiment", "x", "--seed-strategy", "nope"], "'nope': expected one of"),
    ],
)
def test_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    db = tmp_path / "p.sqlite"
    if "start" not in argv:
        from alpha_evolve.store import ProgramStore

        ProgramStore(db).close()
    code, out, err = run_cli(capsys, *argv, "--db", str(db))
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alpha-evolve: error:") and needle in lines[0]
    assert "Traceback" not in err


def test_missing_store_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "alpha_evolve.cli", "evolve", "status", "--experiment", "demo",
         "--db", str(tmp_path / "none.sqlite"), "--json"], capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr


@pytest.mark.slow
def test_kill_9_then_resume_records_each_iteration_once(tmp_path: Path, cfg: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "p.sqlite"
    proc = _spawn(db, cfg, "crash", 30)
    try:
        _wait_for(proc, db, "crash", 6)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its forked evaluator workers
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = _completed(db, "crash")
    assert 6 <= before < 30
    # The killed run left status "running"; stop notices nobody holds the run lock and marks it paused.
    code, out, _ = run_cli(capsys, "evolve", "stop", "--experiment", "crash", "--db", str(db), "--json")
    assert code == 0 and json.loads(out)["stop"] == "paused"
    code, out, err = run_cli(capsys, "evolve", "resume", "--experiment", "crash", "--db", str(db), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "completed" and result["iterations_completed"] == 30
    assert result["iterations_run"] == 30 - before
    with sqlite3.connect(db) as conn:
        rows = [r[0] for r in conn.execute(
            "SELECT iteration FROM programs WHERE experiment = 'crash' AND is_seed = 0 AND iteration IS NOT NULL"
            " ORDER BY iteration")]  # (attempts set aside as behaviour duplicates carry no iteration number)
        n_seed = conn.execute("SELECT COUNT(*) FROM programs WHERE experiment = 'crash' AND is_seed = 1").fetchone()
    assert rows == list(range(1, 31))
    assert n_seed[0] == 1


def test_kill_9_of_the_cli_alone_leaves_no_orphan_workers(tmp_path: Path, cfg: Path) -> None:
    """`kill -9 PID` (not the group): the forked workers must notice their parent is gone and exit."""
    import psutil

    db = tmp_path / "p.sqlite"
    proc = _spawn(db, cfg, "orphans", 10_000)
    try:
        _wait_for(proc, db, "orphans", 1)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, f"workers outlived the killed CLI: {[p.pid for p in alive]}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever survived (the workers keep the group id)
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_stop_from_another_terminal(tmp_path: Path, cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "p.sqlite"
    proc = _spawn(db, cfg, "remote", 10_000)
    try:
        _wait_for(proc, db, "remote", 2)
        code, out, err = run_cli(capsys, "evolve", "stop", "--experiment", "remote", "--db", str(db), "--json")
        assert code == 0, err
        assert json.loads(out)["stop"] == "requested"
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert result["status"] == "paused" and result["stop_reason"] == "stopped"
    code, out, _ = run_cli(capsys, "evolve", "status", "--experiment", "remote", "--db", str(db), "--json")
    assert json.loads(out)["status"] == "paused"


@pytest.mark.slow
def test_sigint_pauses(tmp_path: Path, cfg: Path) -> None:
    db = tmp_path / "p.sqlite"
    proc = _spawn(db, cfg, "ctrlc", 10_000)
    try:
        _wait_for(proc, db, "ctrlc", 2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr.decode()
    assert json.loads(stdout)["status"] == "paused"
