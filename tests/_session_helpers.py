"""Helpers for the session and approval tests: a stand-in pipeline runner and event-driven waits on files.

The stand-in runner writes a real run directory with a SUMMARY.json whose metrics are a deterministic function of
the config values, in microseconds instead of the real pipeline's seconds. Waits use a watchdog observer on the
directory (plus a slow re-check against a missed event), never sleeps.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from alpha_evolve.config import METRIC_NAMES, PipelineOptions, RunConfig

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPACE = ROOT / "configs" / "self_evolution" / "default.json"

_counter = itertools.count()


def stub_metrics(config: RunConfig) -> dict[str, float]:
    """Metrics that depend on the tuned values only, so the best iteration is predictable from the history."""
    g, top, nov = config.get("generations"), config.get("bt_top"), config.get("novelty_boost_w")
    sharpe = round(1.0 - abs(g - 12) / 10 + 0.1 * top - 0.3 * nov, 6)
    out = {name: 0.0 for name in METRIC_NAMES}
    out.update(Sharpe=sharpe, Sortino=sharpe * 1.3, MaxDD=round(0.1 + 0.01 * g, 6), Trades=float(10 + g))
    return out


class StubRunner:
    """``run_pipeline``'s signature; ``fail_if(config)`` makes a run fail the way the real one does."""

    def __init__(self, *, fail_if: Callable[[RunConfig], bool] | None = None,
                 raise_if: Callable[[RunConfig], bool] | None = None,
                 block_file: Path | None = None, block_iteration: int | None = None) -> None:
        self.fail_if = fail_if
        self.raise_if = raise_if
        self.block_file = block_file
        self.block_iteration = block_iteration
        self.calls: list[str] = []

    @classmethod
    def from_env(cls) -> StubRunner:
        block = os.environ.get("AE_STUB_BLOCK_FILE")
        at = os.environ.get("AE_STUB_BLOCK_ITERATION")
        return cls(block_file=Path(block) if block else None, block_iteration=int(at) if at else None)

    def __call__(self, config: RunConfig, options: PipelineOptions | None = None, *, experiment: str) -> Path:
        self.calls.append(experiment)
        base = Path(options.output_dir if options and options.output_dir else "pipeline_runs_cs")
        run_dir = base / f"run_{experiment}_{os.getpid()}_{next(_counter)}"
        run_dir.mkdir(parents=True)
        if (self.block_file is not None and self.block_file.exists() and self.block_iteration is not None
                and f"_it{self.block_iteration:03d}" in experiment):
            (self.block_file.parent / (self.block_file.name + ".reached")).write_text(str(run_dir))
            threading.Event().wait()  # a run that never ends: the test kills this process
        if self.raise_if and self.raise_if(config):
            raise RuntimeError("stand-in runner told to raise")
        failed = bool(self.fail_if and self.fail_if(config))
        summary: dict[str, Any] = {
            "schema_version": 1, "status": "failed" if failed else "ok",
            "reason": "stand-in runner told to fail" if failed else None, "run_dir": str(run_dir),
            "experiment": experiment, "best_metrics": {} if failed else stub_metrics(config),
            "config": config.to_dict(),
        }
        (run_dir / "SUMMARY.json").write_text(json.dumps(summary))
        return run_dir


class _Poke(FileSystemEventHandler):
    """Wakes the waiter on changes only: a predicate that reads files in the watched directory (a SQLite registry,
    a JSON file) would otherwise wake itself with its own open/close events and spin, starving the process it waits
    for (seen in CI: ~500 registry opens a second and no proposal posted within 90 s)."""

    _READS = frozenset({"opened", "closed_no_write"})

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in self._READS:
            self.event.set()


@contextlib.contextmanager
def watching(directory: Path) -> Iterator[threading.Event]:
    directory.mkdir(parents=True, exist_ok=True)
    changed = threading.Event()
    observer = Observer()
    observer.schedule(_Poke(changed), str(directory), recursive=False)
    observer.start()
    try:
        yield changed
    finally:
        observer.stop()
        observer.join(5)


def wait_until(directory: Path, predicate: Callable[[], Any], *, timeout: float = 90.0, what: str = "",
               proc: subprocess.Popen[str] | None = None) -> Any:
    """Block until ``predicate()`` is truthy, re-checking on every change in ``directory``; fail after timeout.

    With ``proc`` (the process expected to make the predicate true), fail at once with its exit status and the end
    of its stderr when it exits first, instead of waiting out the timeout and saying nothing about why.
    """
    deadline = time.monotonic() + timeout
    with watching(directory) as changed:
        while True:
            changed.clear()
            value = predicate()
            if value:
                return value
            if proc is not None and proc.poll() is not None:
                value = predicate()  # it may have made the change just before exiting
                if value:
                    return value
                err = proc.stderr.read() if proc.stderr is not None else ""
                raise AssertionError(f"the process exited ({proc.returncode}) before {what or predicate}: "
                                     f"{(err or '')[-2000:]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
            changed.wait(min(remaining, 1.0))


def read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for_status(session_dir: Path, *statuses: str, action_id: str | None = None,
                    timeout: float = 30.0) -> dict[str, Any]:
    """The pending action once it reaches one of ``statuses`` (for ``action_id`` when given)."""
    path = session_dir / "pending_action.json"

    def check() -> Any:
        data = read_json_or_none(path)
        if isinstance(data, dict) and data.get("status") in statuses and (
                action_id is None or data.get("action_id") == action_id):
            return data
        return None

    return wait_until(session_dir, check, timeout=timeout, what=f"{path} status in {statuses}")


def wait_for_new_action(session_dir: Path, old_action_id: str, timeout: float = 30.0) -> dict[str, Any]:
    path = session_dir / "pending_action.json"

    def check() -> Any:
        data = read_json_or_none(path)
        if isinstance(data, dict) and data.get("status") == "awaiting_approval" and \
                data.get("action_id") != old_action_id:
            return data
        return None

    return wait_until(session_dir, check, timeout=timeout, what="a new pending action")


def wait_for_feedback(session_dir: Path, fragment: str, timeout: float = 30.0) -> dict[str, Any]:
    path = session_dir / "approval_feedback.json"

    def check() -> Any:
        data = read_json_or_none(path)
        if isinstance(data, dict) and data.get("status") == "problem" and fragment in (data.get("problem") or ""):
            return data
        return None

    return wait_until(session_dir, check, timeout=timeout, what=f"feedback mentioning {fragment!r}")


def atomic_json(path: Path, data: Any, *, tmp_name: str | None = None) -> None:
    """Write like an editor or Claude Code's Edit tool: a temp file in the same directory, then a rename."""
    tmp = path.parent / (tmp_name or f"{path.name}.tmp.{os.getpid()}.{os.urandom(4).hex()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def history(session_dir: Path) -> list[dict[str, Any]]:
    path = session_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class LoopThread:
    """Runs ``self.loop`` (a SelfEvolutionLoop) in a background thread; ``finish`` joins and returns its result."""

    loop: Any

    def start(self) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.loop.run()
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 30.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the session did not finish"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result
