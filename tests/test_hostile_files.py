"""Files that are not regular files never hang or crash the toolkit: a FIFO, a link to /dev/zero, a directory, a
dangling or looping link (or a deletion) in place of pending_action.json, a data file, a strategy file or an
agent's response file is one clear line within a second; a running session reports and restores its pending
action and stays responsive to SIGTERM and to a later valid approval (a real subprocess, real signals)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.data import DataError, load_dataset
from alpha_evolve.files import FileFormatError, read_json, read_jsonl, read_text_file
from alpha_evolve.session import SessionError
from alpha_evolve.session_files import validate_session, write_decision
from tests._loop_harness import self_evolve
from tests._session_helpers import (
    DEFAULT_SPACE,
    ROOT,
    atomic_json,
    history,
    read_json_or_none,
    wait_for_feedback,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

DRIVER = ROOT / "tests" / "_session_driver.py"

# kind -> words the one-line message must contain
KINDS = {
    "fifo": "FIFO",
    "dev_zero": "character device",
    "directory": "directory",
    "dangling": "dangling",
    "loop": "loop",
}


def make_hostile(path: Path, kind: str) -> None:
    """Put ``kind`` where ``path`` was (the way a person or an agent might, by accident or not)."""
    if path.is_symlink() or path.is_file() or path.is_fifo():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        os.symlink("/dev/zero", path)
    elif kind == "directory":
        path.mkdir()
        (path / "keep.txt").write_text("a person's file\n")
    elif kind == "dangling":
        os.symlink(path.parent / "nowhere-at-all.json", path)
    elif kind == "loop":
        os.symlink(path.name, path)
    elif kind == "deleted":
        pass
    else:  # pragma: no cover
        raise ValueError(kind)


def within_a_second(call: Callable[[], Any]) -> BaseException:
    """Run ``call`` in a thread; it must raise within a second (a hang fails the test instead of hanging it)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            box["exc"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5.0)
    assert not thread.is_alive(), "the call blocked (a FIFO or a device was opened for reading)"
    assert time.monotonic() - t0 < 1.0
    assert "exc" in box, "a hostile file was accepted"
    return box["exc"]


# ------------------------------------------------------------------------------------------ the safe reader


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_reader_refuses_a_non_regular_file_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "thing.json"
    path.write_text("{}")
    make_hostile(path, kind)
    for call in (lambda: read_json(path), lambda: read_jsonl(path),
                 lambda: read_text_file(path, what="config file", expected="a TOML file")):
        exc = within_a_second(call)
        assert isinstance(exc, FileFormatError)
        assert str(exc).startswith(str(path)) and KINDS[kind] in str(exc) and "\n" not in str(exc)


def test_oversized_files_are_refused_before_they_are_read(tmp_path: Path) -> None:
    big = tmp_path / "pending_action.json"
    with open(big, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: costs no disk, would cost 64 MiB of memory
    exc = within_a_second(lambda: read_json(big))
    assert "more than the limit of 4 MiB" in str(exc)


# ------------------------------------------------------------------------------------------------ data files


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_data_file_that_is_not_a_file_is_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "prices.csv"
    path.write_text("Date,Open,High,Low,Close\n")
    make_hostile(path, kind)
    exc = within_a_second(lambda: load_dataset(path))
    assert isinstance(exc, DataError) and str(exc).startswith(str(path))
    assert KINDS[kind] in str(exc) and "\n" not in str(exc)


def test_a_fifo_in_a_data_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "universe"
    folder.mkdir()
    (folder / "AAA.csv").write_text("Date,Open,High,Low,Close\n2020-01-01,1,1,1,1\n2020-01-02,1,1,1,1\n")
    os.mkfifo(folder / "BBB.csv")
    exc = within_a_second(lambda: load_dataset(folder))
    assert "BBB.csv" in str(exc) and "FIFO" in str(exc)
    os.symlink(folder / "gone.csv", folder / "CCC.csv")
    exc = within_a_second(lambda: load_dataset(folder, symbols=["CCC"]))
    assert "CCC.csv" in str(exc) and "dangling" in str(exc)
    assert list(load_dataset(folder, symbols=["AAA"]).instruments) == ["AAA"]  # the others are not read


def test_a_gzip_bomb_is_refused_not_expanded(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.csv.gz"
    bomb.write_bytes(gzip.compress(b"Date,Open,High,Low,Close\n" + b"0" * (8 * 1024 * 1024), compresslevel=9))
    with pytest.raises(DataError, match=r"bomb\.csv\.gz: decompresses to more than .* max_bars"):
        load_dataset(bomb, max_bars=1000)


def test_cli_backtest_on_a_fifo_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alpha_evolve.cli import main

    fifo = tmp_path / "prices.csv"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    assert main(["backtest", "--data", str(fifo)]) != 0
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert "FIFO" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_strategy_file_that_is_dev_zero_is_one_line(tmp_path: Path) -> None:
    from alpha_evolve.evaluation_setup import load_seed

    path = tmp_path / "mine.py"
    os.symlink("/dev/zero", path)
    exc = within_a_second(lambda: load_seed(str(path)))
    assert isinstance(exc, ValueError) and "character device" in str(exc)


async def test_an_agent_answering_with_a_fifo_fails_the_mutation_without_hanging(tmp_path: Path) -> None:
    from alpha_evolve.blocks import extract_blocks
    from alpha_evolve.mutators.agent import AgentMutator
    from alpha_evolve.mutators.base import MutationRequest

    code = (ROOT / "alpha_evolve" / "strategies" / "momentum.py").read_text()
    mutator = AgentMutator(tmp_path, timeout=20, settle=0.2)
    request = MutationRequest(request_id="req-1", experiment="exp", iteration=1, parent_id="p0", parent_code=code,
                              parent_blocks=extract_blocks(code), parent_metrics={})
    task = asyncio.create_task(mutator.mutate(request))
    # the agent answers the request it sees with a FIFO instead of a JSON file
    written = await asyncio.to_thread(wait_until, mutator.requests_dir,
                                      lambda: next(iter(mutator.requests_dir.glob("*.json")), None),
                                      what="the mutation request")
    os.mkfifo(mutator.response_path(written.stem))
    response = await asyncio.wait_for(task, timeout=60)
    assert response.failure_kind == "response" and "FIFO" in (response.error or "")


# ------------------------------------------------------------------------------------ pending_action.json


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_approve_and_validate_refuse_a_non_regular_pending_file(tmp_path: Path, kind: str) -> None:
    session = tmp_path / "self_evo_session_x"
    session.mkdir()
    (session / "session_summary.json").write_text("{}")
    pending = session / "pending_action.json"
    make_hostile(pending, kind)
    exc = within_a_second(lambda: write_decision(session, "approved"))
    assert isinstance(exc, SessionError) and KINDS[kind] in str(exc)
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("v", validate_session(session)), daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert any("pending_action.json" in p and KINDS[kind] in p for p in box["v"][1])


class Console:
    """Collects a subprocess's stdout lines; ``wait_for(text)`` returns once a line contains it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hit = next((ln for ln in self.lines if text in ln), None)
                if hit is not None:
                    return hit
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no console line with {text!r} in {self.lines}"
                self._cond.wait(remaining)


def test_a_running_session_reports_restores_and_stays_responsive(tmp_path: Path) -> None:
    """One real session process: each kind of non-file replaces pending_action.json while it waits; each is
    reported (feedback file and console) within a second and the open action restored; a valid approval then goes
    through; finally SIGTERM while a FIFO sits there ends the process at once (exit 130), resumable."""
    kinds = [*sorted(KINDS), "deleted"]
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, str(DRIVER), "--mode", "legacy", "--session-root", str(root),
                             "--approval-poll-interval", "60", "--iterations", str(len(kinds) + 1),
                             "--search-space", str(DEFAULT_SPACE)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    console = Console(proc)
    try:
        session = wait_until(root, lambda: next(iter(root.glob("self_evo_session_*")), None), what="a session")
        pending_path = session / "pending_action.json"
        latencies = []
        for i, kind in enumerate(kinds, 1):
            pending = wait_until(session, lambda i=i: _awaiting(pending_path, i), what=f"action {i}")
            t0 = time.monotonic()
            make_hostile(pending_path, kind)
            word = KINDS.get(kind, "deleted")
            feedback = wait_for_feedback(session, word)
            latencies.append(time.monotonic() - t0)
            assert feedback["action_id"] == pending["action_id"]
            console.wait_for(word)
            restored = wait_until(session, lambda i=i: _awaiting(pending_path, i), what="the restored action")
            assert restored["action_id"] == pending["action_id"] and pending_path.is_file()
            atomic_json(pending_path, {**restored, "status": "approved", "notes": f"after a {kind}"})
        # typically 0.3-0.5 s (a 0.25 s settle for delete-and-recreate saves); a loaded shared machine stretches
        # single cases, so the bound is on the median, with a generous cap for each
        assert sorted(latencies)[len(latencies) // 2] < 1.0 and max(latencies) < 5.0, latencies
        assert list(session.glob("pending_action.json.directory-*/keep.txt")), "the person's directory was lost"
        wait_until(session, lambda: _awaiting(pending_path, len(kinds) + 1), what="the last action")
        make_hostile(pending_path, "fifo")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - t0 < 5.0
    finally:
        proc.kill()
    assert proc.returncode == 130, proc.stderr.read() if proc.stderr else ""
    records = history(session)
    assert [r["iteration"] for r in records] == list(range(len(kinds) + 1))
    assert [r["decision"]["notes"] for r in records[1:]] == [f"after a {k}" for k in kinds]
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    # a link loop left in place while nothing runs: the resumed session reports it, replaces it and finishes
    make_hostile(session / "pending_action.json", "loop")
    assert self_evolve("--resume", str(session), "--auto-approve") == 0
    assert [r["iteration"] for r in history(session)] == list(range(len(kinds) + 2))
    assert read_json_or_none(session / "pending_action.json")["status"] == "session_complete"


def _awaiting(path: Path, iteration: int) -> dict[str, Any] | None:
    if not path.is_file() or path.is_symlink():
        return None
    data = read_json_or_none(path)
    if isinstance(data, dict) and data.get("status") == "awaiting_approval" and data.get("next_iteration") == iteration:
        return data
    return None


def _finished_session(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    assert self_evolve("--mode", "legacy", "--session-root", str(root), "--iterations", "1", "--auto-approve",
                        "--search-space", str(DEFAULT_SPACE)) == 0
    return next(root.glob("self_evo_session_*"))


def test_resume_refuses_a_history_record_that_fails_its_schema(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    session = _finished_session(tmp_path)
    path = session / "history.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["iteration"] = "0"
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    capsys.readouterr()
    assert self_evolve("--resume", str(session), "--iterations", "2") == 2
    err = capsys.readouterr().err
    assert "history record 1" in err and "is not of type 'integer'" in err
    assert len(err.strip().splitlines()) == 1
    assert [r["iteration"] for r in history(session)] == ["0", 1]  # nothing ran
    assert any("history.jsonl record 1" in p for p in validate_session(session)[1])  # validate flags the same


def test_notes_longer_than_the_limit_are_refused(tmp_path: Path) -> None:
    from alpha_evolve.session import MAX_NOTES_CHARS
    from alpha_evolve.session_files import evaluate_pending

    raw = json.dumps({"action_id": "a1", "status": "approved", "notes": "x" * (MAX_NOTES_CHARS + 1),
                      "proposal": {"candidate": {}}}).encode()
    verdict = evaluate_pending(raw, action_id="a1", posted_candidate={}, check_candidate=lambda c: [])
    assert verdict.kind == "problem" and "4,000" in verdict.message
    ok = json.dumps({"action_id": "a1", "status": "approved", "notes": "x" * MAX_NOTES_CHARS,
                     "proposal": {"candidate": {}}}).encode()
    assert evaluate_pending(ok, action_id="a1", posted_candidate={}, check_candidate=lambda c: []).kind == "accept"
    from alpha_evolve.dashboard.app import MAX_NOTES

    assert MAX_NOTES == MAX_NOTES_CHARS == 4000


def test_resume_of_a_folder_that_is_no_session_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from alpha_evolve.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AE_EXPERIMENTS_DB", raising=False)
    folder = tmp_path / "just-a-folder"
    folder.mkdir()
    for target in (str(folder), str(tmp_path / "missing")):
        assert main(["self-evolve", "--resume", target]) == 2
        err = capsys.readouterr().err
        assert "not a self-evolution session" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["just-a-folder"]


def test_stale_temp_files_in_generated_configs_are_removed_on_resume(tmp_path: Path) -> None:
    session = _finished_session(tmp_path)
    stale = session / "generated_configs" / ".tmp-ae-iteration_002.toml.abc123"
    stale.write_text("half a snapshot")
    assert self_evolve("--resume", str(session), "--iterations", "2", "--auto-approve") == 0
    assert not stale.exists()
    assert [r["iteration"] for r in history(session)] == [0, 1, 2]
