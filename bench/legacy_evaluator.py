"""The evaluator as it was before #9 (persistent forked workers, figures computed beside the candidate): the
baseline `bench_tamper` measures verification and confinement against. Not used by the toolkit.

Original summary: evaluate candidate strategies on NautilusTrader in a pool of persistent, forked, sandboxed workers.

Design choices (FIELD_NOTES, NautilusTrader 1.221):
- NautilusTrader is imported and every instrument's bars are wrangled in the parent *before* forking, so a
  worker (re)start is a cheap fork; no engine is ever built in the parent.
- Workers are persistent (a fresh `python` per candidate costs ~1.2 s of imports) but recycled after
  `recycle_after` tasks, and after any timeout or memory failure, because finished engines leak.
- Limits: a soft timeout (SIGALRM inside the worker) per instrument run, a hard timeout after which the parent
  SIGKILLs the worker, an address-space limit, and an audit-hook sandbox (see `sandbox.py`). A dead worker is
  noticed at once through its process sentinel, so every failure is reported promptly.
- The cascade: static checks in the parent (no execution) → a quick screen on the first `screen_fraction` of the
  train split (train only) → the full split. Holdout bars are only ever run when `split="holdout"` is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from alpha_evolve import sandbox
from alpha_evolve.backtest import (
    CANDIDATE_FILENAME,
    BacktestOutcome,
    BacktestSettings,
    PreparedBars,
    infer_periods_per_year,
    prepare_bars,
    run_backtest,
)
from alpha_evolve.metrics import aggregate

logger = logging.getLogger("alpha_evolve.evaluator")

SPLITS = ("train", "validation", "holdout")
STAGES = ("static", "screen", "full")
_STDERR_NAME = "stderr.log"


@dataclass(frozen=True)
class EvalResult:
    """Outcome of evaluating one candidate on one split (over every instrument of the universe).

    `status` is "ok" or a failure kind; `stage` is the last stage reached. A candidate screened out is
    `status="ok", stage="screen", passed=False` with the reason. `metrics` aggregates the instruments (means plus
    `worst_*`, see `metrics.aggregate`); `equity` is `[(iso timestamp, value), ...]`, downsampled, equal-weight
    across instruments; `bars` is the number of bars run per instrument at the stage reached.
    """

    status: str
    stage: str
    split: str
    error: str | None = None
    passed: bool = False
    reason: str | None = None
    bars: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    per_instrument: dict[str, dict[str, float]] = field(default_factory=dict)
    equity: list[tuple[str, float]] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["equity"] = [[t, v] for t, v in self.equity]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        values = dict(data)
        values["equity"] = [(str(t), float(v)) for t, v in values.get("equity", [])]
        return cls(**values)


class _CandidateTimeout(BaseException):
    """Raised by SIGALRM in a worker; a BaseException so `except Exception` in candidate code cannot eat it."""


# ============================================================================================ worker process


def _on_alarm(signum: int, frame: Any) -> None:
    raise _CandidateTimeout()


def _worker_main(
    conn: multiprocessing.connection.Connection,
    datasets: Mapping[tuple[str, str], PreparedBars],
    settings: BacktestSettings,
    workdir: str,
    parent_ends: tuple[multiprocessing.connection.Connection, ...] = (),
) -> None:
    """Loop: receive a task, run it under the guards, send the outcomes. Exits with os._exit (no finalizers).

    ``parent_ends`` are the parent's ends of this worker's pipe and of its siblings', inherited through fork:
    closed at once, or a worker whose parent was killed (``kill -9``) never sees EOF and lives on forever.
    """
    for end in parent_ends:
        with contextlib.suppress(OSError):
            end.close()
    # Everything inherited from the parent (prepared bars, the parent's own state) lives as long as the worker:
    # keep it out of the garbage collector's scans, which otherwise re-walk it on every full collection of a
    # long backtest (and touch its pages, undoing copy-on-write sharing).
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(workdir)
    with contextlib.suppress(OSError):
        fd = os.open(os.path.join(workdir, _STDERR_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    sandbox.isolate_process(workdir)
    sandbox.install_audit_hook()
    sandbox.limit_memory(settings.memory_limit_mb)
    signal.signal(signal.SIGALRM, _on_alarm)
    code = 0
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                break
            if task is None:
                break
            conn.send(_run_task(task, datasets, settings))
    except BaseException:  # pragma: no cover - a broken pipe or the like: just go
        code = 1
    finally:
        os._exit(code)


def _run_task(
    task: Mapping[str, Any], datasets: Mapping[tuple[str, str], PreparedBars], settings: BacktestSettings
) -> list[BacktestOutcome]:
    outcomes: list[BacktestOutcome] = []
    for symbol in task["symbols"]:
        prepared = datasets[(symbol, task["split"])]
        fraction = task.get("fraction")
        if fraction:
            prepared = prepared.slice(0, max(int(len(prepared) * fraction), 2))
        outcome = _guarded_run(task["code"], prepared, settings)
        outcomes.append(outcome)
        if outcome.status != "ok":
            break
    return outcomes


def _guarded_run(code: str, prepared: PreparedBars, settings: BacktestSettings) -> BacktestOutcome:
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, settings.soft_timeout_seconds)
    try:
        with sandbox.armed():
            return run_backtest(code, prepared, settings)
    except _CandidateTimeout:
        return BacktestOutcome(
            "timeout",
            f"{prepared.symbol}: no result after the soft timeout of {settings.soft_timeout_seconds:g} s",
            prepared.symbol,
            len(prepared),
            elapsed=time.perf_counter() - started,
        )
    except MemoryError:
        return BacktestOutcome(
            "memory",
            f"{prepared.symbol}: MemoryError (limit {settings.memory_limit_mb} MiB on top of the worker)",
            prepared.symbol,
            len(prepared),
            elapsed=time.perf_counter() - started,
        )
    except RecursionError as exc:
        return BacktestOutcome("runtime", f"RecursionError: {exc}", prepared.symbol, len(prepared))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


# ============================================================================================ parent side


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    workdir: str
    tasks: int = 0
    bars: int = 0

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)


def _frame_of(splits: Any, split: str) -> pd.DataFrame | None:
    value = splits.get(split) if isinstance(splits, Mapping) else getattr(splits, split, None)
    return value if isinstance(value, pd.DataFrame) and len(value) > 0 else None


class StrategyEvaluator:
    """A pool of `max_concurrent` forked workers that backtest candidate source code.

    `data` maps each symbol to its splits: any object with `train`/`validation`/`holdout` DataFrame attributes
    (e.g. `data.DataSplits`) or a mapping with those keys; a missing or empty split is a `data` failure when
    asked for. `periods_per_year` (per symbol) overrides the frequency inferred from the train index.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        settings: BacktestSettings | None = None,
        max_concurrent: int = 2,
        periods_per_year: Mapping[str, float] | None = None,
    ) -> None:
        if not data:
            raise ValueError("the evaluator needs at least one instrument")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.settings = settings or BacktestSettings()
        self.max_concurrent = int(max_concurrent)
        self.symbols: tuple[str, ...] = tuple(data)
        self._datasets: dict[tuple[str, str], PreparedBars] = {}
        for symbol, splits in data.items():
            train = _frame_of(splits, "train")
            ppy = (periods_per_year or {}).get(symbol)
            if ppy is None and train is not None:
                ppy = infer_periods_per_year(train.index)
            for split in SPLITS:
                frame = _frame_of(splits, split)
                if frame is not None:
                    self._datasets[(symbol, split)] = prepare_bars(symbol, frame, self.settings, ppy)
        self._ctx = multiprocessing.get_context("fork")
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: dict[int, _Worker] = {}
        self._active = 0
        self.peak_concurrency = 0
        self.workers_started = 0
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=self.max_concurrent, thread_name_prefix="ae-eval")
        # Kills whatever workers are alive if the evaluator is dropped without close() (holds the dict, not self).
        self._finalizer = weakref.finalize(self, StrategyEvaluator._kill_all, self._workers)
        for _ in range(self.max_concurrent):
            self._idle.put(self._spawn())

    # ------------------------------------------------------------------ worker lifecycle

    def _spawn(self) -> _Worker:
        workdir = tempfile.mkdtemp(prefix="alpha-evolve-worker-")
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        with self._lock:  # one fork at a time: a fork while another thread forks could copy a held lock
            parent_ends = (parent_conn, *(w.conn for w in self._workers.values()))
            process = self._ctx.Process(
                target=_worker_main,
                args=(child_conn, self._datasets, self.settings, workdir, parent_ends),
                name="alpha-evolve-worker",
                daemon=True,
            )
            process.start()
            self.workers_started += 1
            child_conn.close()  # so the parent sees EOF as soon as the worker dies
            worker = _Worker(process, parent_conn, workdir)
            self._workers[worker.pid] = worker
        return worker

    def _retire(self, worker: _Worker, graceful: bool = True) -> None:
        with self._lock:
            self._workers.pop(worker.pid, None)
        if graceful and worker.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
            worker.process.join(1.0)
        if worker.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            worker.process.join(5.0)
        with contextlib.suppress(OSError):
            worker.conn.close()
        shutil.rmtree(worker.workdir, ignore_errors=True)

    @staticmethod
    def _kill_all(workers: dict[int, _Worker]) -> None:
        for worker in list(workers.values()):
            with contextlib.suppress(Exception):
                if worker.process.is_alive():
                    os.kill(worker.pid, signal.SIGKILL)
            shutil.rmtree(worker.workdir, ignore_errors=True)

    @property
    def worker_pids(self) -> list[int]:
        with self._lock:
            return sorted(self._workers)

    def close(self) -> None:
        """Stop every worker; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        for worker in list(self._workers.values()):
            self._retire(worker)
        self._finalizer.detach()

    def __enter__(self) -> StrategyEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> StrategyEvaluator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # ------------------------------------------------------------------ running one task on a worker

    def _dispatch(self, task: dict[str, Any]) -> list[BacktestOutcome]:
        if self._closed:
            raise RuntimeError("the evaluator is closed")
        worker = self._idle.get()
        with self._lock:
            self._active += 1
            self.peak_concurrency = max(self.peak_concurrency, self._active)
        replace = False
        try:
            outcomes, replace = self._exchange(worker, task)
            worker.bars += sum(o.bars for o in outcomes)
            return outcomes
        finally:
            with self._lock:
                self._active -= 1
            worker.tasks += 1
            worn = worker.tasks >= self.settings.recycle_after or worker.bars >= self.settings.recycle_after_bars
            if replace or worn:
                self._retire(worker, graceful=not replace)
                worker = self._spawn()
            self._idle.put(worker)

    def _exchange(self, worker: _Worker, task: dict[str, Any]) -> tuple[list[BacktestOutcome], bool]:
        """Send a task and wait for its outcomes, the worker's death or the hard timeout."""
        n = len(task["symbols"])
        hard = self.settings.hard_timeout_seconds * n
        try:
            worker.conn.send(task)
        except (OSError, ValueError):
            return [self._death_outcome(worker, task)], True
        ready = multiprocessing.connection.wait([worker.conn, worker.process.sentinel], timeout=hard)
        if worker.conn in ready:
            try:
                outcomes: list[BacktestOutcome] = worker.conn.recv()
            except (EOFError, OSError):
                return [self._death_outcome(worker, task)], True
            replace = any(o.status in ("timeout", "memory") for o in outcomes)
            return outcomes, replace
        if ready:  # only the sentinel: the worker died
            return [self._death_outcome(worker, task)], True
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)
        worker.process.join(5.0)
        msg = f"no result after the hard timeout of {hard:g} s; worker killed"
        return [BacktestOutcome("timeout", msg, ",".join(task["symbols"]))], True

    def _death_outcome(self, worker: _Worker, task: Mapping[str, Any]) -> BacktestOutcome:
        worker.process.join(5.0)
        code = worker.process.exitcode
        tail = _stderr_tail(worker.workdir)
        symbol = ",".join(task["symbols"])
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            oom = "memory allocation" in tail or "MemoryError" in tail or -code == signal.SIGKILL
            kind = "memory" if oom else "crash"
            what = "out of memory (killed)" if -code == signal.SIGKILL else f"died with {name}"
            msg = f"worker {what}"
        else:
            kind = "memory" if "memory allocation" in tail else "crash"
            msg = f"worker exited with code {code}"
        if tail:
            msg += f"; last stderr line: {tail}"
        return BacktestOutcome(kind, msg, symbol)

    # ------------------------------------------------------------------ public API

    def evaluate(
        self,
        code: str,
        split: str = "train",
        stage: str = "full",
        *,
        parent_code: str | None = None,
        symbols: Sequence[str] | None = None,
        screen: bool = True,
    ) -> EvalResult:
        """Run the cascade up to `stage` ("static", "screen" or "full") on `split`.

        The screen runs only on the train split (and when `screen_fraction` > 0). `parent_code`, when given,
        lets the static stage check that only EVOLVE-BLOCK bodies changed.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        started = time.perf_counter()
        chosen = tuple(symbols) if symbols else self.symbols
        unknown = [s for s in chosen if s not in self.symbols]
        if unknown:
            raise ValueError(f"unknown symbol(s): {', '.join(unknown)}")

        failure = static_check(code, parent_code)
        if failure is not None:
            kind, message = failure
            return EvalResult(kind, "static", split, error=message, elapsed=time.perf_counter() - started)
        if stage == "static":
            return EvalResult("ok", "static", split, passed=True, elapsed=time.perf_counter() - started)

        missing = [s for s in chosen if (s, split) not in self._datasets]
        if missing:
            return EvalResult(
                "data", "static", split, error=f"no {split} bars for {', '.join(missing)}",
                elapsed=time.perf_counter() - started,
            )

        fraction = self.settings.screen_fraction if screen else 0.0
        if split == "train" and fraction > 0:
            outcomes = self._dispatch({"code": code, "symbols": chosen, "split": split, "fraction": fraction})
            result = self._result(outcomes, "screen", split, started)
            if not result.ok:
                return result
            reason = self._screen_reason(result.metrics)
            if reason is not None or stage == "screen":
                return _replace(result, passed=reason is None, reason=reason)
        elif stage == "screen":
            # No screen on this split: the screen stage is trivially passed without running anything.
            return EvalResult("ok", "screen", split, passed=True, elapsed=time.perf_counter() - started)

        outcomes = self._dispatch({"code": code, "symbols": chosen, "split": split, "fraction": None})
        result = self._result(outcomes, "full", split, started)
        return _replace(result, passed=result.ok)

    async def aevaluate(
        self,
        code: str,
        split: str = "train",
        stage: str = "full",
        *,
        parent_code: str | None = None,
        symbols: Sequence[str] | None = None,
        screen: bool = True,
    ) -> EvalResult:
        """`evaluate` without blocking the event loop; at most `max_concurrent` run at once."""
        loop = asyncio.get_running_loop()
        call = functools.partial(
            self.evaluate, code, split, stage, parent_code=parent_code, symbols=symbols, screen=screen
        )
        return await loop.run_in_executor(self._executor, call)

    def evaluate_many(
        self, codes: Iterable[str], split: str = "train", stage: str = "full"
    ) -> list[EvalResult]:
        """Evaluate several candidates concurrently; results in input order."""
        futures = [self._executor.submit(self.evaluate, code, split, stage) for code in codes]
        return [f.result() for f in futures]

    # ------------------------------------------------------------------ helpers

    def _screen_reason(self, metrics: Mapping[str, float]) -> str | None:
        s = self.settings
        if metrics.get("Trades", 0.0) < s.screen_min_trades:
            return f"screen: {metrics.get('Trades', 0.0):g} round trips < {s.screen_min_trades}"
        if metrics.get("Sharpe", 0.0) < s.screen_min_sharpe:
            return f"screen: Sharpe {metrics['Sharpe']:.3f} < {s.screen_min_sharpe:g}"
        if metrics.get("MaxDD", 0.0) > s.screen_max_drawdown:
            return f"screen: MaxDD {metrics['MaxDD']:.3f} > {s.screen_max_drawdown:g}"
        return None

    def _result(self, outcomes: list[BacktestOutcome], stage: str, split: str, started: float) -> EvalResult:
        elapsed = time.perf_counter() - started
        bad = next((o for o in outcomes if o.status != "ok"), None)
        bars = max((o.bars for o in outcomes), default=0)
        if bad is not None:
            error = bad.error or bad.status
            if len(self.symbols) > 1 and bad.symbol and not error.startswith(bad.symbol):
                error = f"{bad.symbol}: {error}"
            return EvalResult(bad.status, stage, split, error=_one_line(error), bars=bars, elapsed=elapsed)
        per = {o.symbol: o.metrics for o in outcomes}
        return EvalResult(
            "ok",
            stage,
            split,
            bars=bars,
            metrics=aggregate(per),
            per_instrument=per,
            equity=_combine_equity(outcomes, self.settings.starting_capital),
            elapsed=elapsed,
        )


def static_check(code: str, parent_code: str | None = None) -> tuple[str, str] | None:
    """Checks that need no execution: compiles, the policy, and (with a parent) the EVOLVE-BLOCK structure.

    Returns (failure kind, one-line message) or None. A blocks problem is reported as `syntax` (the
    contract has no separate kind for it).
    """
    try:
        compile(code, CANDIDATE_FILENAME, "exec")
    except SyntaxError as exc:
        return "syntax", f"SyntaxError: {exc.msg} (line {exc.lineno})"
    try:
        from alpha_evolve import policy
    except ImportError:
        policy = None  # type: ignore[assignment]
    if policy is not None:
        violations = policy.check_policy(code)
        if violations:
            return "policy", _one_line(str(violations[0]))
    if parent_code is not None:
        try:
            from alpha_evolve import blocks
        except ImportError:
            return None
        try:
            blocks.validate_candidate(parent_code, code)
        except Exception as exc:
            kind = getattr(exc, "kind", "syntax")
            return (kind if kind in ("syntax", "policy") else "syntax"), _one_line(str(exc))
    return None


def _replace(result: EvalResult, **changes: Any) -> EvalResult:
    import dataclasses

    return dataclasses.replace(result, **changes)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _stderr_tail(workdir: str) -> str:
    try:
        with open(os.path.join(workdir, _STDERR_NAME), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 4096, 0))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _combine_equity(outcomes: Sequence[BacktestOutcome], capital: float) -> list[tuple[str, float]]:
    """Equal-weight portfolio of the instruments' curves (each rescaled to the starting capital)."""
    if len(outcomes) == 1:
        o = outcomes[0]
        return list(zip(_iso(np.asarray(o.equity_index, dtype=np.int64)), o.equity_values, strict=True))
    series = []
    for o in outcomes:
        s = pd.Series(o.equity_values, index=pd.to_datetime(np.asarray(o.equity_index, dtype=np.int64), utc=True))
        series.append(s / s.iloc[0] * capital if len(s) and s.iloc[0] else s)
    frame = pd.concat(series, axis=1).sort_index().ffill().bfill()
    combined = frame.mean(axis=1)
    stamps = pd.DatetimeIndex(combined.index).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return list(zip(_iso(stamps), (float(v) for v in combined), strict=True))


def _iso(ns: np.ndarray) -> list[str]:
    """Vectorised ISO 8601 UTC timestamps ("2015-01-02T00:00:00Z"); per-element isoformat() costs ms per result."""
    return [str(t) for t in np.datetime_as_string(ns.astype("datetime64[ns]"), unit="s", timezone="UTC")]
