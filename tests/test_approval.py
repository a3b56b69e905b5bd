"""The file-answer waiter on real watchdog observers: every way people and agents write a file, half-written
content, refused content, polling fallback, timeout and stop."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from alpha_evolve.approval import FileWatch, Verdict, WaitOutcome, wait_for_answer
from tests._session_helpers import atomic_json


def evaluate(raw: bytes) -> Verdict:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Verdict.incomplete(str(exc))
    if not isinstance(data, dict):
        return Verdict.problem("not an object")
    if data.get("answer") == "pending":
        return Verdict.wait()
    if data.get("answer") not in ("yes", "no"):
        return Verdict.problem(f"bad answer {data.get('answer')!r}")
    return Verdict.accept(data["answer"])


class Waiter:
    """Runs ``wait_for_answer`` in a thread; the test thread plays the person editing the file."""

    def __init__(self, path: Path, *, force_polling: bool = False, poll_interval: float = 60.0,
                 timeout: float | None = 30.0) -> None:
        self.path = path
        self.problems: list[str] = []
        self.problem_seen = threading.Event()
        self.stop = threading.Event()
        self.outcome: WaitOutcome | None = None
        self.watch = FileWatch(path, force_polling=force_polling).start()

        def on_problem(message: str) -> None:
            self.problems.append(message)
            self.problem_seen.set()

        def run() -> None:
            self.outcome = wait_for_answer(self.watch, evaluate, on_problem=on_problem, poll_interval=poll_interval,
                                           timeout=timeout, should_stop=self.stop.is_set)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 30.0) -> WaitOutcome:
        self.thread.join(timeout)
        self.watch.stop()
        assert not self.thread.is_alive(), "the waiter did not finish"
        assert self.outcome is not None
        return self.outcome

    def next_problem(self, timeout: float = 30.0) -> str:
        assert self.problem_seen.wait(timeout), "no problem was reported"
        self.problem_seen.clear()
        return self.problems[-1]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "answer.json"
    path.write_text(json.dumps({"answer": "pending"}))
    return path


def test_in_place_write_is_accepted(target: Path) -> None:
    w = Waiter(target)
    assert w.watch.mode == "inotify"
    with open(target, "w") as fh:
        fh.write(json.dumps({"answer": "yes"}))
    out = w.result()
    assert (out.kind, out.value) == ("accepted", "yes")
    assert out.file_mtime is not None and out.detected_at >= out.file_mtime - 1


def test_atomic_rename_like_claude_code_edit_tool(target: Path) -> None:
    w = Waiter(target)
    atomic_json(target, {"answer": "no"}, tmp_name=f"{target.name}.tmp.{os.getpid()}.a1b2c3")
    assert w.result().value == "no"


def test_jq_then_mv(target: Path) -> None:
    w = Waiter(target)
    tmp = target.parent / "t"
    tmp.write_text(json.dumps({"answer": "yes"}))
    os.rename(tmp, target)
    assert w.result().value == "yes"


def test_delete_and_recreate(target: Path) -> None:
    w = Waiter(target)
    target.unlink()
    target.write_text(json.dumps({"answer": "yes"}))
    assert w.result().value == "yes"
    assert w.problems == []


def test_answer_already_there_when_waiting_starts(target: Path) -> None:
    target.write_text(json.dumps({"answer": "yes"}))
    assert Waiter(target).result().value == "yes"


def test_half_written_file_is_waited_out(target: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen_incomplete = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "incomplete content" in record.getMessage():
                seen_incomplete.set()

    logger = logging.getLogger("alpha_evolve.approval")
    spy = Spy(level=logging.DEBUG)
    logger.addHandler(spy)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        w = Waiter(target)
        text = json.dumps({"answer": "yes", "notes": "x" * 200})
        with open(target, "w") as fh:
            fh.write(text[:40])
            fh.flush()
            assert seen_incomplete.wait(30), "the waiter never looked at the half-written file"
            assert w.thread.is_alive()
            fh.write(text[40:])
        out = w.result()
    finally:
        logger.removeHandler(spy)
        logger.setLevel(old_level)
    assert out.value == "yes"
    assert w.problems == [], "a half-written file was reported as a problem"


def test_problems_reported_once_per_content_and_waiting_continues(target: Path) -> None:
    w = Waiter(target)
    atomic_json(target, {"answer": "maybe"})
    assert "bad answer 'maybe'" in w.next_problem()
    target.write_bytes(b"{not json")  # a finished but broken file (closed): reported, not accepted
    assert w.next_problem()
    assert target.read_bytes() == b"{not json", "the waiter must never touch the person's file"
    atomic_json(target, {"answer": "yes"})
    assert w.result().value == "yes"
    assert len(w.problems) == 2


def test_polling_fallback_when_inotify_is_unavailable(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import watchdog.observers

    class NoInotify:
        def __init__(self, *a: Any, **k: Any) -> None:
            raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(watchdog.observers, "Observer", NoInotify)
    w = Waiter(target, poll_interval=0.05)
    assert w.watch.mode == "polling"
    atomic_json(target, {"answer": "maybe"})
    assert "maybe" in w.next_problem()
    with open(target, "w") as fh:
        fh.write(json.dumps({"answer": "yes"}))
    assert w.result().value == "yes"


def test_polling_reports_broken_json_only_once_stable(target: Path) -> None:
    w = Waiter(target, force_polling=True, poll_interval=0.05)
    target.write_bytes(b'{"answer": ')
    assert w.next_problem()  # final once two polls saw the same bytes
    target.write_text(json.dumps({"answer": "no"}))
    assert w.result().value == "no"


def test_timeout_and_stop(target: Path) -> None:
    assert Waiter(target, timeout=0.3).result().kind == "timed_out"
    w = Waiter(target, timeout=None)
    w.stop.set()
    assert w.result().kind == "stopped"


def test_handler_ignores_other_files_and_survives_odd_events(target: Path) -> None:
    w = Waiter(target)
    for i in range(20):
        (target.parent / f"other{i}.json").write_text("{}")
    (target.parent / "sub").mkdir()
    os.rename(target.parent / "other0.json", target.parent / "sub" / "x.json")
    atomic_json(target, {"answer": "yes"})
    assert w.result().value == "yes"
