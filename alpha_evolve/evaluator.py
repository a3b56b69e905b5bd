"""Evaluate candidate strategies: confined single-use processes run them, a trusted replay scores them.

Threat model (ARCHITECTURE.md, "Evaluation security"): candidate code is an attacker. Python-level checks (the
static policy, restricted builtins, module views, the audit hook) only reject early with readable reasons; the
boundary is (1) the kernel (Landlock + seccomp + rlimits in every process that runs candidate code) and (2) the
trusted recomputation: figures come from replaying the candidate's decision log in a process where no candidate
code ever ran (`forkserver.py`, `replay.py`), and a run whose own fills disagree with that replay is `tampered`.

Process design (`forkserver.py`): a template interpreter exec'd with a scrubbed environment imports NautilusTrader
and wrangles the bars once; per concurrent evaluation it forks a slot; per candidate run the slot forks a fresh
child (never reused: nothing carries over) that confines itself and runs; a replay worker forked from the slot
replays. Limits: a soft timeout (SIGALRM in the child), a hard timeout (the slot SIGKILLs the child), an address
space limit, a CPU limit, output capped. The cascade: static checks in the parent (no execution) -> a quick screen
on the first `screen_fraction` of the train split -> the full split (+ a causality check on promoting splits).
Holdout bars are only ever run when `split="holdout"` is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import queue
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from alpha_evolve.backtest import CANDIDATE_FILENAME, BacktestOutcome, BacktestSettings, infer_periods_per_year
from alpha_evolve.forkserver import ForkServer, SlotHandle
from alpha_evolve.metrics import aggregate
from alpha_evolve.values import one_line

logger = logging.getLogger("alpha_evolve.evaluator")

SPLITS = ("train", "validation", "holdout")
STAGES = ("static", "screen", "full")


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
    warnings: list[str] = field(default_factory=list)  # market-model problems that did not void the figures
    return_stats: dict[str, float] = field(default_factory=dict)  # PSR/DSR inputs from every bar (not `equity`)
    log: str = ""  # what the candidate printed, captured and bounded (never the CLI's stdout)

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
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _frame_of(splits: Any, split: str) -> pd.DataFrame | None:
    value = splits.get(split) if isinstance(splits, Mapping) else getattr(splits, split, None)
    return value if isinstance(value, pd.DataFrame) and len(value) > 0 else None


TaskRunner = Callable[[Mapping[str, Any]], tuple[list[BacktestOutcome], str]]
"""Runs one stage of one candidate on the task's symbols, in the task's order, in confined processes with the
trusted replay and the causality checks of `forkserver._run_task`; returns the verified outcomes (stopping at the
first failing symbol) and the candidate's captured output. The task is plain data: ``code``, ``symbols``,
``split``, ``fraction`` (the screen's share of train, or None), ``causality`` and ``prefix`` (per symbol, the
screen's bar count and decisions, which the full run must repeat)."""


class CandidateCascade:
    """The cascade (static -> screen -> full) and the merge of per-symbol outcomes into a candidate's result.

    One implementation for both backends: the local pool runs each stage as one task over every symbol; the Ray
    backend (`ray_backend.py`) may run a stage as one task per symbol on different nodes and merge them with the
    same `merge_outcomes`, so the result is the local one by construction. Needs `settings`, `symbols` (the
    universe), `causality_splits` and `_available` ((symbol, split) pairs with bars) of the subclass.
    """

    settings: BacktestSettings
    symbols: tuple[str, ...]
    causality_splits: frozenset[str]
    _available: frozenset[tuple[str, str]]

    def cascade(
        self,
        code: str,
        split: str,
        stage: str,
        *,
        parent_code: str | None,
        symbols: Sequence[str] | None,
        screen: bool,
        run: TaskRunner,
    ) -> EvalResult:
        """`evaluate`'s contract, with each stage's runs done by `run`."""
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

        missing = [s for s in chosen if (s, split) not in self._available]
        if missing:
            return EvalResult(
                "data", "static", split, error=f"no {split} bars for {', '.join(missing)}",
                elapsed=time.perf_counter() - started,
            )

        fraction = self.settings.screen_fraction if screen else 0.0
        prefix: dict[str, tuple[int, list[tuple[int, int]]]] = {}
        if split == "train" and fraction > 0:
            outcomes, log = run({"code": code, "symbols": chosen, "split": split, "fraction": fraction})
            result = self.merge_outcomes(outcomes, "screen", split, started, log)
            # The screen ran on a truncated series: the full run must decide the same up to the cut (a free,
            # partial causality check on every candidate; the perturbed-future check runs on promoting splits).
            prefix = {o.symbol: (o.bars, list(o.decisions)) for o in outcomes if o.status == "ok"}
            if not result.ok:
                return result
            reason = self._screen_reason(result.metrics)
            if reason is not None or stage == "screen":
                return _replace(result, passed=reason is None, reason=reason)
        elif stage == "screen":
            # No screen on this split: the screen stage is trivially passed without running anything.
            return EvalResult("ok", "screen", split, passed=True, elapsed=time.perf_counter() - started)

        causality = split in self.causality_splits
        task = {"code": code, "symbols": chosen, "split": split, "fraction": None, "causality": causality,
                "prefix": prefix}
        outcomes, log = run(task)
        result = self.merge_outcomes(outcomes, "full", split, started, log)
        return _replace(result, passed=result.ok)

    def _screen_reason(self, metrics: Mapping[str, float]) -> str | None:
        s = self.settings
        if metrics.get("Trades", 0.0) < s.screen_min_trades:
            return f"screen: {metrics.get('Trades', 0.0):g} round trips < {s.screen_min_trades}"
        if metrics.get("Sharpe", 0.0) < s.screen_min_sharpe:
            return f"screen: Sharpe {metrics['Sharpe']:.3f} < {s.screen_min_sharpe:g}"
        if metrics.get("MaxDD", 0.0) > s.screen_max_drawdown:
            return f"screen: MaxDD {metrics['MaxDD']:.3f} > {s.screen_max_drawdown:g}"
        return None

    def merge_outcomes(
        self, outcomes: Sequence[BacktestOutcome], stage: str, split: str, started: float, log: str = ""
    ) -> EvalResult:
        """A candidate's result from its verified per-symbol outcomes (in the task's symbol order): the first
        failure decides, else the metrics are aggregated over the universe (means and worst, an equal-weight
        curve, return statistics pooled from every bar). Each symbol is its own engine run: nothing here needs
        the symbols to have run together."""
        elapsed = time.perf_counter() - started
        bad = next((o for o in outcomes if o.status != "ok"), None)
        bars = max((o.bars for o in outcomes), default=0)
        if bad is not None:
            error = bad.error or bad.status
            if len(self.symbols) > 1 and bad.symbol and not error.startswith(bad.symbol):
                error = f"{bad.symbol}: {error}"
            return EvalResult(bad.status, stage, split, error=one_line(error), bars=bars, elapsed=elapsed, log=log)
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
            warnings=[w for o in outcomes for w in getattr(o, "warnings", [])],
            return_stats=_return_stats(outcomes),
            log=log,
        )


class StrategyEvaluator(CandidateCascade):
    """Backtests candidate source code in confined, single-use processes and scores it by a trusted replay.

    `data` maps each symbol to its splits: any object with `train`/`validation`/`holdout` DataFrame attributes
    (e.g. `data.DataSplits`) or a mapping with those keys; a missing or empty split is a `data` failure when
    asked for. `periods_per_year` (per symbol) overrides the frequency inferred from the train index.
    `instruments` (per symbol, `market.InstrumentSpec`) fixes the instrument; by default it is inferred from
    the bars given. A split's warm-up bars (the bars just before it) come as a ``"<split>_warmup"`` key or
    attribute of the symbol's splits; they warm indicators up and are never scored.

    `causality_splits`: splits on which every successful full run is also re-run on a series whose future was
    changed after a secret cut (decisions before the cut must not change, else `lookahead`). By default the
    splits that promote programs (validation ranks the top-K, holdout reports the winner).
    `allow_unconfined` is the documented opt-out for kernels without Landlock/seccomp (never the default).
    `fast_replay`: train-time figures may be confirmed by the numpy replay (`replay.vector_fills`) instead of an
    engine replay when it reproduces the claimed fills exactly; validation/holdout always use the engine replay.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        settings: BacktestSettings | None = None,
        max_concurrent: int = 2,
        periods_per_year: Mapping[str, float] | None = None,
        instruments: Mapping[str, Any] | None = None,
        *,
        causality_splits: Iterable[str] = ("validation", "holdout"),
        allow_unconfined: bool | None = None,
        fast_replay: bool = True,
        disable_python_guards_for_tests: bool = False,
    ) -> None:
        if not data:
            raise ValueError("the evaluator needs at least one instrument")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.settings = settings or BacktestSettings()
        self.max_concurrent = int(max_concurrent)
        self.symbols: tuple[str, ...] = tuple(data)
        self.causality_splits = frozenset(causality_splits)
        unconfined = self.settings.allow_unconfined if allow_unconfined is None else bool(allow_unconfined)
        self.confinement = "off (allow_unconfined)" if unconfined else "landlock+seccomp+rlimits"
        frames: dict[tuple[str, str], pd.DataFrame] = {}
        warmups: dict[tuple[str, str], pd.DataFrame] = {}
        ppy_of: dict[str, float] = {}
        self.instruments: dict[str, Any] = {}  # symbol -> market.InstrumentSpec every period trades
        for symbol, splits in data.items():
            train = _frame_of(splits, "train")
            ppy = (periods_per_year or {}).get(symbol)
            if ppy is None and train is not None:
                ppy = infer_periods_per_year(train.index)
            if ppy is not None:
                ppy_of[symbol] = float(ppy)
            given = []
            for split in SPLITS:
                frame = _frame_of(splits, split)
                if frame is not None:
                    frames[(symbol, split)] = frame
                    given.append(frame)
                    warm = _frame_of(splits, f"{split}_warmup")
                    if warm is not None:
                        warmups[(symbol, split)] = warm
            spec = (instruments or {}).get(symbol)
            if spec is None and given:
                spec = self.settings.spec_for(symbol, pd.concat(given))  # MarketError (a ValueError) = one line
            if spec is not None:
                self.instruments[symbol] = spec
        self._available = frozenset(frames)
        self._lock = threading.Lock()
        self._idle: queue.Queue[SlotHandle] = queue.Queue()
        self._slots: dict[int, SlotHandle] = {}
        self._active = 0
        self.peak_concurrency = 0
        self.workers_started = 0
        self.replay_workers_started = 0
        self._closed = False
        # The template is exec'd with a scrubbed environment: secrets of this process never reach it.
        self._server = ForkServer(
            {
                "frames": frames,
                "ppy": ppy_of,
                "specs": dict(self.instruments),
                "warmups": warmups,
                "settings": self.settings,
                "kernel": not unconfined,
                "fast_replay": fast_replay,
                "disable_python_guards_for_tests": disable_python_guards_for_tests,
            }
        )
        if unconfined:
            logger.warning("kernel confinement is OFF (allow_unconfined): candidate code is not contained")
        self._executor = ThreadPoolExecutor(max_workers=self.max_concurrent, thread_name_prefix="ae-eval")
        self._finalizer = weakref.finalize(self, StrategyEvaluator._kill_all, self._slots, self._server)
        try:
            for _ in range(self.max_concurrent):
                self._idle.put(self._spawn())
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ slot lifecycle

    def _spawn(self) -> SlotHandle:
        with self._lock:
            slot = self._server.spawn_slot()
            self.workers_started += 1
            self._slots[slot.pid] = slot
        return slot

    def _retire(self, slot: SlotHandle) -> None:
        with self._lock:
            self._slots.pop(slot.pid, None)
        with contextlib.suppress(OSError):
            slot.conn.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(slot.pid, signal.SIGKILL)

    @staticmethod
    def _kill_all(slots: dict[int, SlotHandle], server: ForkServer) -> None:
        for slot in list(slots.values()):
            with contextlib.suppress(Exception):
                slot.conn.close()
        with contextlib.suppress(Exception):
            server.close()

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the evaluation slots (candidate processes are short-lived children of these)."""
        with self._lock:
            return sorted(self._slots)

    @property
    def template_pid(self) -> int:
        return self._server.pid

    def close(self) -> None:
        """Stop every process; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        slots = list(self._slots.values())
        for slot in slots:
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(None)
            with contextlib.suppress(OSError):
                slot.conn.close()
        deadline = time.monotonic() + 2.0
        for slot in slots:  # slots are the template's children (reaped there): wait until they are gone
            while _alive(slot.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if _alive(slot.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)
        self._slots.clear()
        self._server.close()
        self._finalizer.detach()

    def __enter__(self) -> StrategyEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> StrategyEvaluator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # ------------------------------------------------------------------ running one task on a slot

    def _dispatch(self, task: dict[str, Any]) -> tuple[list[BacktestOutcome], str]:
        if self._closed:
            raise RuntimeError("the evaluator is closed")
        slot = self._idle.get()
        with self._lock:
            self._active += 1
            self.peak_concurrency = max(self.peak_concurrency, self._active)
        broken = False
        try:
            outcomes, broken = self._exchange(slot, task)
            log = "\n".join(o.log for o in outcomes if o.log)
            return outcomes, log
        finally:
            with self._lock:
                self._active -= 1
            if broken:
                self._retire(slot)
                slot = self._spawn()
            self._idle.put(slot)

    def _exchange(self, slot: SlotHandle, task: dict[str, Any]) -> tuple[list[BacktestOutcome], bool]:
        """Send a task to a slot and wait for its verified outcomes.

        The slot enforces every per-candidate limit itself; the generous wait here only guards against a slot
        that itself went wrong (then it is replaced).
        """
        s = self.settings
        runs = 2 if task.get("causality") else 1
        budget = len(task["symbols"]) * (runs * s.hard_timeout_seconds + 4 * max(s.hard_timeout_seconds, 15)) + 30
        symbol = ",".join(task["symbols"])
        try:
            slot.conn.send(task)
            if not slot.conn.poll(budget):
                return [BacktestOutcome("crash", f"the evaluation slot gave no answer in {budget:g} s", symbol)], True
            reply = slot.conn.recv()
        except (EOFError, OSError, ValueError):
            return [BacktestOutcome("crash", "the evaluation slot died", symbol)], True
        started = int(reply.get("replay_workers_started", 0))
        with self._lock:
            self.replay_workers_started += max(started - slot.replays_started, 0)
        slot.replays_started = started
        return list(reply["outcomes"]), False

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
        return self.cascade(code, split, stage, parent_code=parent_code, symbols=symbols, screen=screen,
                            run=self.run_task)

    def run_task(self, task: Mapping[str, Any]) -> tuple[list[BacktestOutcome], str]:
        """One stage of one candidate on the task's symbols, on a slot of this pool (see `TaskRunner`)."""
        return self._dispatch(dict(task))

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
            return "policy", one_line(str(violations[0]))
    if parent_code is not None:
        try:
            from alpha_evolve import blocks
        except ImportError:
            return None
        try:
            blocks.validate_candidate(parent_code, code)
        except Exception as exc:
            kind = getattr(exc, "kind", "syntax")
            return (kind if kind in ("syntax", "policy") else "syntax"), one_line(str(exc))
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace(result: EvalResult, **changes: Any) -> EvalResult:
    import dataclasses

    return dataclasses.replace(result, **changes)


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


def _return_stats(outcomes: Sequence[BacktestOutcome]) -> dict[str, float]:
    """PSR/DSR inputs from every bar of each instrument's equity curve (never the downsampled plot points),
    pooled over a universe like the metrics (`metrics.pooled_return_stats`)."""
    from alpha_evolve.metrics import pooled_return_stats, return_stats

    per = []
    for o in outcomes:
        full = getattr(o, "equity_full", None)
        per.append(return_stats(np.asarray(full, dtype=float)) if full is not None and len(full) >= 2 else {})
    return pooled_return_stats(per)


def _iso(ns: np.ndarray) -> list[str]:
    """Vectorised ISO 8601 UTC timestamps ("2015-01-02T00:00:00Z"); per-element isoformat() costs ms per result."""
    return [str(t) for t in np.datetime_as_string(ns.astype("datetime64[ns]"), unit="s", timezone="UTC")]
