"""The inner evolution loop: select a parent, mutate it, validate, evaluate on train, record, prune, repeat.

Why it is shaped like this:

- **Exact resume.** An iteration counts only once its program row is committed (``ProgramStore.record_iteration``
  inserts the row and bumps the experiment's counter in one transaction; ``(experiment, iteration)`` is unique).
  Resume asks the store which iteration numbers exist and runs exactly the missing ones of ``1..target``, so a
  ``kill -9`` at any point loses the iterations in flight (they are redone) and never records one twice. The seed
  is iteration 0, stored with ``is_seed`` and evaluated only if the store has no seed for the experiment.
- **Concurrency without changing what is recorded.** Up to ``max_concurrent`` iterations are in flight; an
  iteration number is assigned when a slot is taken and the result is recorded under that number whatever the
  completion order. Parent selection uses ``random.Random(f"{random_seed}:{iteration}")`` and the offline mutator
  derives its stream from the request id, so neither depends on timing. What *can* depend on timing with
  ``max_concurrent > 1`` is which programs already exist when a slot selects its parent (a faster sibling may or
  may not be recorded yet); the set of recorded iteration numbers of a run that reaches its target is
  ``1..target`` regardless.
- **Stops.** ``stop()`` (and a stop request written to the store by another process, see ``request_stop``)
  lets in-flight iterations finish, ``stop(force=True)`` cancels them (they are simply not recorded); either way
  the experiment is persisted as ``paused``. Early-stop conditions (target fitness, wall clock, patience, budget)
  take no new slots, let in-flight iterations finish, and end the run ``completed`` with ``stop_reason`` naming the
  condition. Store corruption ends it ``failed`` with a one-line ``RuntimeError``.
- **Fitness** is the train metric named by ``fitness_metric`` from the *full* stage (sign flipped for metrics
  where lower is better); screened-out and failed programs get none and are never parents.
- **Nothing is evaluated twice** (``program_keys``). A candidate whose normalised code matches a program already
  evaluated in the experiment is sent back to the mutator ("this change did nothing new") while attempts remain,
  and otherwise recorded with that program's result and no backtest (``duplicate_kind = "code"``). A backtested
  candidate that traded exactly like an earlier program is sent back the same way (the backtest stays on record
  as a discarded attempt) or, on the last attempt, recorded as its duplicate (``"behavior"``). Duplicates are
  stored and linked but are never parents, novelty references, top programs or separate trials. Which program is
  a duplicate is decided when it is recorded, in iteration order, so concurrency cannot change it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import random
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import filelock

from alpha_evolve import qd_archive
from alpha_evolve.blocks import CandidateError, extract_blocks, validate_candidate
from alpha_evolve.config import EvolutionConfig
from alpha_evolve.decision_trace import DecisionTracer
from alpha_evolve.evaluation_setup import LoopWiring, load_seed, loop_wiring, mutator_from_config
from alpha_evolve.experiment_status import (
    STOP_REQUESTED,
    EvolutionProgress,
    EvolutionResult,
    EvolutionStatus,
    ProgressEvent,
    StopReason,
    config_from_experiment,
    experiment_is_live,
    experiment_stats,
    lock_path,
    progress_from_store,
)
from alpha_evolve.faults import InfrastructureError, as_infrastructure
from alpha_evolve.metric_names import LOWER_IS_BETTER_METRICS, RANKING_METRICS
from alpha_evolve.mutators.base import (
    BudgetExceeded,
    Inspiration,
    MutationRequest,
    MutationResponse,
    Mutator,
    Sibling,
)
from alpha_evolve.program_keys import code_key, result_behavior_key
from alpha_evolve.selection import select_parent
from alpha_evolve.store import (
    FAILURE_KINDS,
    DuplicateIterationError,
    Program,
    ProgramStore,
    StoreError,
    validate_experiment_name,
)
from alpha_evolve.values import finite_or_none, one_line

if TYPE_CHECKING:
    from alpha_evolve.evaluation_backend import Evaluator
    from alpha_evolve.evaluator import EvalResult

logger = logging.getLogger("alpha_evolve.controller")

__all__ = ["BEHAVIOR_POINTS", "EvolutionController", "StopCondition", "behavior_descriptor", "fitness_from_metrics"]

BEHAVIOR_POINTS = 32
"""Length of the downsampled return vector kept as a behaviour descriptor for novelty."""

_POLL_SECONDS = 0.5
_IMPROVEMENT_EPS = 1e-12


@dataclass(frozen=True)
class StopCondition:
    """Early-termination conditions; ``None``/0 disables one. Built from the config unless given to ``run``."""

    target_fitness: float | None = None
    max_wall_seconds: float | None = None
    patience: int = 0
    budget_tokens: int = 0
    budget_usd: float = 0.0

    @classmethod
    def from_config(cls, config: EvolutionConfig) -> StopCondition:
        def opt(value: float) -> float | None:
            return None if value is None or math.isnan(value) else float(value)

        return cls(
            target_fitness=opt(config.target_fitness),
            max_wall_seconds=opt(config.max_wall_seconds),
            patience=int(config.patience),
            budget_tokens=int(config.budget_tokens),
            budget_usd=float(config.budget_usd),
        )


# ------------------------------------------------------------------------------------------------ helpers


def fitness_from_metrics(metrics: Mapping[str, Any], metric: str) -> float | None:
    """The fitness of a full-stage train result; ``None`` when the metric is missing or not finite."""
    f = finite_or_none(metrics.get(metric))
    if f is None:
        return None
    return -f if metric in LOWER_IS_BETTER_METRICS else f


def behavior_descriptor(result: EvalResult, points: int = BEHAVIOR_POINTS) -> dict[str, Any]:
    """Trade count, exposure and a short return vector (equity sampled at ``points + 1`` evenly spaced bars)."""
    metrics = result.metrics
    out: dict[str, Any] = {
        "trades": float(metrics.get("Trades", 0.0) or 0.0),
        "exposure": float(metrics.get("Exposure", 0.0) or 0.0),
        "returns": [],
    }
    values = [float(v) for _, v in result.equity]
    if len(values) >= 3:
        n = min(points, len(values) - 1)
        idx = [round(i * (len(values) - 1) / n) for i in range(n + 1)]
        sampled = [values[i] for i in idx]
        rets = [(b / a - 1.0) if a else 0.0 for a, b in itertools.pairwise(sampled)]
        out["returns"] = [round(r, 8) if math.isfinite(r) else 0.0 for r in rets]
    return out


# Failures that say more about the worker than about the program: a seed that ended so is scored again on resume.
_TRANSIENT_FAILURES = frozenset({"crash", "timeout", "memory"})

# A resumed experiment's programs traced into the pre-check's index (the latest; ~40 ms each on 1,000 bars).
_TRACE_RESUME_PROGRAMS = 500

_MUTATION_TO_STORE_KIND = {"syntax": "syntax", "policy": "policy", "timeout": "timeout"}


@dataclass
class _Outcome:
    program: Program
    mode: str
    recorded: bool


@dataclass
class _Prepared:
    iteration: int
    parent: Program
    mode: str
    request: MutationRequest
    started: float
    horizon: int = 0  # the last program id stored when the iteration started: what its duplicate checks see


@dataclass
class _Session:
    experiment: str
    target: int
    started: float
    stop: StopCondition
    on_progress: Callable[[ProgressEvent], None] | None
    random_seed: int
    best: float | None = None
    since_best: int = 0
    recorded: int = 0
    halt_reason: StopReason | None = None
    tokens: int = 0  # spent by mutations that were not recorded (discarded or budget-interrupted)
    usd: float = 0.0
    last_poll: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class _FatalMutator(Exception):
    def __init__(self, response: MutationResponse) -> None:
        super().__init__(response.error or response.failure_kind or "mutator failed")
        self.response = response


# --------------------------------------------------------------------------------------------- controller


class EvolutionController:
    """Runs and resumes evolution experiments in one store. Not thread-safe (``stop`` excepted).

    It takes its ``[evolution]`` section and a ``LoopWiring`` naming the few things it needs from the rest of the
    run's config (``evaluation_setup.loop_wiring(run_config)``; without one, every other section's defaults).
    """

    def __init__(
        self,
        config: EvolutionConfig,
        store: ProgramStore,
        evaluator: Evaluator,
        mutator: Mutator | None = None,
        *,
        wiring: LoopWiring | None = None,
    ) -> None:
        if not isinstance(config, EvolutionConfig):
            raise ValueError(
                f"config must be the [evolution] section (an EvolutionConfig), got {type(config).__name__}; pass "
                "the rest of a run config as wiring=evaluation_setup.loop_wiring(run_config)"
            )
        ev = config
        wiring = wiring if wiring is not None else loop_wiring(ev)
        if wiring.fitness.metric != ev.fitness_metric:
            raise ValueError(
                f"wiring built for fitness {wiring.fitness.metric!r}, but the section says {ev.fitness_metric!r}"
            )
        ratios = (ev.elite_ratio, ev.exploit_ratio, ev.explore_ratio)
        if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
            raise ValueError(f"elite/exploit/explore ratios must be >= 0 and sum to 1, got {ratios}")
        if ev.population_size < 2 or ev.max_concurrent < 1 or ev.max_retries < 1:
            raise ValueError("population_size must be >= 2, max_concurrent >= 1 and max_retries >= 1")
        if ev.fitness_metric not in RANKING_METRICS:
            raise ValueError(f"fitness_metric {ev.fitness_metric!r}: expected one of {', '.join(RANKING_METRICS)}")
        self.config = ev
        self.wiring = wiring
        self.store = store
        self.evaluator = evaluator
        self.mutator = mutator
        self.data_hash: str | None = None  # recorded in the experiment row when set (the CLI sets it)
        # Set by the pipeline: candidates whose traced orders repeat a program's are sent back before a backtest.
        self.tracer: DecisionTracer | None = None
        self.traced_duplicates = 0  # mutation attempts sent back by the tracer (no backtest was run for them)
        self._session: _Session | None = None
        self._last_experiment: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._force = False
        self._inflight: dict[asyncio.Task[Program], int] = {}
        self._modes: dict[int, str] = {}
        self._discarded: dict[int, list[Program]] = {}  # backtested attempts set aside, by iteration
        # Extra train figures folded into fitness (fold fitness, information ratio); see folds.fitness_hook.
        # Built on first evaluation unless a caller (the pipeline) already set it.
        self.metric_hook: Callable[[EvalResult], dict[str, float]] | None = None
        self._hook_checked = False

    # ------------------------------------------------------------------------------------- public API

    async def run(
        self,
        seed_strategy: str,
        experiment: str,
        iterations: int,
        stop_condition: StopCondition | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
    ) -> EvolutionResult:
        """Create ``experiment``, evaluate the seed (iteration 0), then run iterations ``1..iterations``."""
        validate_experiment_name(experiment)
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
        label, seed_code = load_seed(seed_strategy)
        if self.store.get_experiment(experiment) is not None:
            raise ValueError(
                f"experiment {experiment!r} already exists in store {self.store.path}; resume it or choose another name"
            )
        updates: dict[str, Any] = {"evolution.generations": max(1, iterations)}
        if not label.endswith(".py"):
            updates["evolution.seed_strategy"] = label
        self.store.create_experiment(
            experiment,
            config_toml=self.wiring.record_config(self.config, updates),
            target_iterations=iterations,
            random_seed=self.config.random_seed,
            data_hash=self.data_hash,
            nautilus_version=_version("nautilus_trader"),
            toolkit_version=_version("alpha-evolve"),
            status=EvolutionStatus.RUNNING.value,
        )
        logger.info(
            "experiment %s: starting from seed %s, %d iterations, mutator %s, fitness %s",
            experiment,
            label,
            iterations,
            getattr(self.mutator, "name", self.config.mutator),
            self.config.fitness_metric,
        )
        return await self._run_session(
            experiment,
            list(range(1, iterations + 1)),
            iterations,
            seed_code,
            stop_condition,
            on_progress,
            self.config.random_seed,
        )

    async def resume(
        self,
        experiment: str,
        additional_iterations: int = 0,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        stop_condition: StopCondition | None = None,
    ) -> EvolutionResult:
        """Run exactly the iteration numbers of ``1..target + additional`` that the store does not hold."""
        validate_experiment_name(experiment)
        exp = self.store.get_experiment(experiment)
        if exp is None:
            raise ValueError(f"experiment {experiment!r} not found in store {self.store.path}")
        if (
            isinstance(additional_iterations, bool)
            or not isinstance(additional_iterations, int)
            or additional_iterations < 0
        ):
            raise ValueError(f"additional_iterations must be an integer >= 0, got {additional_iterations!r}")
        if exp.status == EvolutionStatus.RUNNING.value and experiment_is_live(self.store, experiment):
            raise ValueError(f"experiment {experiment!r} is running in another process; stop it first")
        target = exp.target_iterations + additional_iterations
        done = set(self.store.completed_iterations(experiment))
        missing = [i for i in range(1, target + 1) if i not in done]
        seed = self.store.seed(experiment)
        if not missing and seed is not None:
            raise ValueError(
                f"experiment {experiment!r} has recorded all {target} iterations; pass "
                "additional iterations to continue it"
            )
        seed_code: str | None = None
        if seed is None:  # killed before the seed was recorded
            stored = config_from_experiment(self.store, experiment)
            _, seed_code = load_seed(stored.evolution.seed_strategy)
        if additional_iterations:
            self.store.update_experiment(experiment, target_iterations=target)
        random_seed = exp.random_seed if exp.random_seed is not None else self.config.random_seed
        if random_seed != self.config.random_seed:
            logger.warning(
                "experiment %s was started with random_seed %d; using it (config says %d)",
                experiment,
                random_seed,
                self.config.random_seed,
            )
        logger.info(
            "experiment %s: resuming (%s), %d of %d iterations recorded, running %d more",
            experiment,
            exp.status,
            len(done),
            target,
            len(missing),
        )
        return await self._run_session(experiment, missing, target, seed_code, stop_condition, on_progress, random_seed)

    def stop(self, force: bool = False) -> None:
        """Finish in-flight iterations (or, with ``force``, cancel them unrecorded), then persist ``paused``.

        Safe to call from a signal handler or another thread.
        """
        self._stop_requested = True
        self._force = self._force or force
        loop, session = self._loop, self._session
        if loop is not None and session is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(session.wake.set)

    def get_progress(self, experiment: str | None = None) -> EvolutionProgress:
        name = experiment or (self._session.experiment if self._session else self._last_experiment)
        if name is None:
            raise ValueError("no active experiment: name one")
        elapsed = None
        if self._session is not None and self._session.experiment == name:
            elapsed = time.monotonic() - self._session.started
        return progress_from_store(self.store, name, elapsed)

    # ------------------------------------------------------------------------------------- the session

    async def _run_session(
        self,
        experiment: str,
        pending: list[int],
        target: int,
        seed_code: str | None,
        stop_condition: StopCondition | None,
        on_progress: Callable[[ProgressEvent], None] | None,
        random_seed: int,
    ) -> EvolutionResult:
        lock = filelock.FileLock(lock_path(self.store, experiment), timeout=0, thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise ValueError(f"experiment {experiment!r} is running in another process") from None
        self._loop = asyncio.get_running_loop()
        self._stop_requested = False
        self._force = False
        session = _Session(
            experiment,
            target,
            time.monotonic(),
            stop_condition or StopCondition.from_config(self.config),
            on_progress,
            random_seed,
        )
        self._session = session
        self._last_experiment = experiment
        try:
            return await self._drive(session, pending, seed_code)
        finally:
            self._session = None
            self._inflight.clear()
            lock.release()

    async def _drive(self, s: _Session, pending: list[int], seed_code: str | None) -> EvolutionResult:
        if self.mutator is None:
            self.mutator = self._default_mutator(s.experiment)
        try:
            # Clear a stale stop request and mark the experiment running again.
            self.store.update_experiment(s.experiment, status=EvolutionStatus.RUNNING.value, stop_reason="")
            seed = self.store.seed(s.experiment)
            if seed_code is not None and seed is None:
                await self._evaluate_seed(s, seed_code)
            elif seed is not None and seed.status in _TRANSIENT_FAILURES:
                await self._rescore_seed(s, seed)
            best = self.store.top_k(s.experiment, 1)
            s.best = best[0].fitness if best else None
            if self.store.eligible_count(s.experiment) == 0 and pending:
                raise ValueError(
                    f"experiment {s.experiment!r} has no program that can be a parent (the seed failed evaluation)"
                )
            iterations_before = len(self.store.completed_iterations(s.experiment))
            self._check_budget(s)  # a resumed experiment whose budget is already spent starts nothing new
            await self._loop_iterations(s, deque(pending))
            reason = s.halt_reason
            if reason is None:
                remaining = set(range(1, s.target + 1)) - set(self.store.completed_iterations(s.experiment))
                reason = StopReason.ITERATIONS if not remaining else StopReason.STOPPED
            status = EvolutionStatus.PAUSED if reason is StopReason.STOPPED else EvolutionStatus.COMPLETED
            if reason is StopReason.MUTATOR:
                status = EvolutionStatus.FAILED
            self.store.update_experiment(s.experiment, status=status.value, stop_reason=reason.value)
            s.recorded = len(self.store.completed_iterations(s.experiment)) - iterations_before
            logger.info(
                "experiment %s: %s (%s) after %d new iterations, best fitness %s",
                s.experiment,
                status.value,
                reason.value,
                s.recorded,
                _fmt(s.best),
            )
            return self._result(s, status, reason.value)
        except BaseException as exc:
            fault = as_infrastructure(exc) if isinstance(exc, Exception) else None
            if fault is not None:
                # The machine failed (disk full, read-only folder, store not writable): no candidate is to blame.
                # Whatever was in flight is dropped unrecorded, so a resume re-runs exactly those iterations.
                await self._cancel_inflight()
                logger.info("experiment %s stopped: %s", s.experiment, fault)
                with contextlib.suppress(Exception):
                    self.store.update_experiment(
                        s.experiment, status=EvolutionStatus.PAUSED.value, stop_reason=StopReason.STOPPED.value
                    )
                raise InfrastructureError(
                    f"experiment {s.experiment!r} stopped: {fault} (nothing was recorded as a candidate's failure; "
                    "free space or fix permissions, then resume)"
                ) from None
            if isinstance(exc, StoreError | sqlite3.DatabaseError):
                await self._cancel_inflight()
                message = one_line(exc)
                logger.error("experiment %s failed: %s", s.experiment, message)
                with contextlib.suppress(Exception):
                    self.store.update_experiment(
                        s.experiment, status=EvolutionStatus.FAILED.value, stop_reason=StopReason.ERROR.value
                    )
                raise RuntimeError(f"experiment {s.experiment!r} failed: {message}") from None
            # ValueError (bad seed), cancellation, KeyboardInterrupt: nothing in flight survives; leave the
            # experiment resumable.
            await self._cancel_inflight()
            with contextlib.suppress(Exception):
                exp = self.store.get_experiment(s.experiment)
                if exp is not None and exp.status == EvolutionStatus.RUNNING.value:
                    self.store.update_experiment(
                        s.experiment, status=EvolutionStatus.PAUSED.value, stop_reason=StopReason.STOPPED.value
                    )
            raise

    async def _rescore_seed(self, s: _Session, seed: Program) -> None:
        """A seed whose worker died (crash, timeout, memory) was not judged on its merits: score it again."""
        logger.warning("experiment %s: re-scoring the seed (its last evaluation ended in %s)", s.experiment,
                       seed.status)
        result = await self._evaluate(seed.code, parent_code=None, screen=False)
        fresh = dataclasses.replace(seed, status="ok", failure_message=None, fitness=None, metrics={})
        self._apply_result(fresh, result)
        assert seed.id is not None
        self.store.update_metrics(
            seed.id, fresh.metrics, fresh.fitness, status=fresh.status, stage=fresh.stage,
            failure_message=fresh.failure_message, behavior=fresh.behavior, elapsed_s=result.elapsed,
            behavior_key=fresh.behavior_key,
        )
        if fresh.status == "timeout":
            raise ValueError(self._seed_timeout_message(result))
        if fresh.status != "ok":
            raise ValueError(
                f"the seed strategy failed evaluation again ({fresh.status}): {fresh.failure_message}"
            )

    def _seed_timeout_message(self, result: EvalResult) -> str:
        """A seed that runs out of time says the limit is too low for this much data: the seed is the known-good
        reference, and blaming it sends people hunting for a bug that is not there."""
        bt = getattr(self.evaluator, "settings", None)
        soft = bt.soft_timeout_seconds if bt is not None else self.wiring.soft_timeout_seconds
        hard = bt.hard_timeout_seconds if bt is not None else self.wiring.hard_timeout_seconds
        bars = f"{result.bars:,} train bars" if result.bars else "the train split"
        return (
            f"the seed strategy did not finish within the timeout on {bars} ({one_line(result.error or 'timeout')}): "
            f"the limit is too low for this much data, not a broken seed; raise [backtest] soft_timeout_seconds "
            f"(now {soft:g}) and hard_timeout_seconds (now {hard:g}), or use "
            "fewer bars"
        )

    async def _evaluate_seed(self, s: _Session, code: str) -> None:
        """Score the seed on the whole train split (never screened out: it is the reference parent)."""
        result = await self._evaluate(code, parent_code=None, screen=False)
        program = Program(
            experiment=s.experiment,
            code=code,
            blocks=extract_blocks(code),
            iteration=0,
            generation=0,
            is_seed=True,
            stage=result.stage,
            elapsed_s=result.elapsed,
            code_key=code_key(code),
        )
        self._apply_result(program, result)
        self.store.insert(program)
        if program.status != "ok":
            logger.error(
                "experiment %s: the seed failed evaluation (%s): %s",
                s.experiment,
                program.status,
                program.failure_message,
            )
            self.store.update_experiment(
                s.experiment, status=EvolutionStatus.FAILED.value, stop_reason=StopReason.ERROR.value
            )
            if program.status == "timeout":
                raise ValueError(self._seed_timeout_message(result))
            raise ValueError(
                f"the seed strategy failed evaluation on the train split ({program.status}): {program.failure_message}"
            )
        logger.info("experiment %s: seed %s = %s", s.experiment, self.config.fitness_metric, _fmt(program.fitness))
        self._emit(
            s,
            ProgressEvent(
                s.experiment,
                "seed",
                0,
                0,
                s.target,
                program.id,
                None,
                None,
                program.status,
                program.fitness,
                program.fitness,
                True,
                time.monotonic() - s.started,
            ),
        )

    async def _loop_iterations(self, s: _Session, pending: deque[int]) -> None:
        """Run iterations with up to ``max_concurrent`` in flight, recording them strictly in iteration order.

        Iteration ``i`` chooses its parent right after iteration ``i - max_concurrent`` is recorded, so it always
        sees exactly the store of iterations ``0 .. i - max_concurrent``: with a fixed seed and a deterministic
        mutator a run records the same programs however fast each evaluation happens to be. A finished
        iteration waits for the ones before it (head-of-line) — a small price for reproducible runs.
        """
        inflight = self._inflight
        while True:
            self._check_external(s)
            self._start_iterations(s, pending)
            if not inflight:
                return
            if self._force:
                await self._cancel_inflight()
                return
            s.wake.clear()
            waker: asyncio.Task[Any] = asyncio.create_task(s.wake.wait())
            waiting: list[asyncio.Task[Any]] = [*inflight, waker]
            await asyncio.wait(waiting, timeout=_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            # Record finished iterations in order; start the next one after each record (see the docstring).
            while inflight:
                task, iteration = min(inflight.items(), key=lambda item: item[1])
                if not task.done():
                    break
                del inflight[task]
                self._finish(s, task, iteration)
                self._start_iterations(s, pending)

    def _start_iterations(self, s: _Session, pending: deque[int]) -> None:
        inflight = self._inflight
        while not self._halting(s) and pending and len(inflight) < self.config.max_concurrent:
            iteration = pending.popleft()
            prepared = self._prepare(s, iteration)
            self._modes[iteration] = prepared.mode
            task = asyncio.create_task(self._iteration(s, prepared), name=f"iteration-{iteration}")
            inflight[task] = iteration

    def _finish(self, s: _Session, task: asyncio.Task[Program], iteration: int) -> None:
        try:
            program = task.result()
        except asyncio.CancelledError:
            return
        except BudgetExceeded as exc:
            if exc.response is not None:
                s.tokens += _tokens(exc.response)
                s.usd += float(exc.response.cost_usd)
            logger.info("experiment %s: %s", s.experiment, one_line(exc))
            s.halt_reason = s.halt_reason or StopReason.BUDGET
            return
        except _FatalMutator as exc:
            logger.error(
                "experiment %s: the mutator cannot continue (%s): %s",
                s.experiment,
                exc.response.failure_kind,
                one_line(exc),
            )
            s.halt_reason = s.halt_reason or StopReason.MUTATOR
            return
        outcome = self._record(s, iteration, program)
        if outcome.recorded:
            self._after_record(s, iteration, outcome)

    def _halting(self, s: _Session) -> bool:
        if self._stop_requested and s.halt_reason is None:
            s.halt_reason = StopReason.STOPPED
            logger.info(
                "experiment %s: stop requested; finishing %d iteration(s) in flight", s.experiment, len(self._inflight)
            )
        if (
            s.halt_reason is None
            and s.stop.max_wall_seconds is not None
            and time.monotonic() - s.started >= s.stop.max_wall_seconds
        ):
            s.halt_reason = StopReason.WALL_CLOCK
            logger.info("experiment %s: wall-clock limit of %gs reached", s.experiment, s.stop.max_wall_seconds)
        return s.halt_reason is not None

    def _check_external(self, s: _Session) -> None:
        now = time.monotonic()
        if now - s.last_poll < _POLL_SECONDS:
            return
        s.last_poll = now
        exp = self.store.get_experiment(s.experiment)
        if exp is not None and exp.stop_reason == STOP_REQUESTED and not self._stop_requested:
            logger.info("experiment %s: stop requested from another process", s.experiment)
            self._stop_requested = True

    def _after_record(self, s: _Session, iteration: int, outcome: _Outcome) -> None:
        program = outcome.program
        fitness = program.fitness if program.status == "ok" else None
        new_best = False
        if fitness is not None and (s.best is None or fitness > s.best + _IMPROVEMENT_EPS):
            improvement = "" if s.best is None else f" (was {_fmt(s.best)})"
            s.best = fitness
            s.since_best = 0
            new_best = True
            logger.info(
                "experiment %s: new best %s %s at iteration %d, program %s%s",
                s.experiment,
                self.config.fitness_metric,
                _fmt(fitness),
                iteration,
                program.id,
                improvement,
            )
        else:
            s.since_best += 1
        exp = self.store.get_experiment(s.experiment)
        completed = exp.completed_iterations if exp is not None else 0
        self._emit(
            s,
            ProgressEvent(
                s.experiment,
                "iteration",
                iteration,
                completed,
                s.target,
                program.id,
                program.parent_id,
                outcome.mode,
                program.status,
                fitness,
                s.best,
                new_best,
                time.monotonic() - s.started,
                program.failure_message,
            ),
        )
        if s.halt_reason is not None:
            return
        st = s.stop
        if st.target_fitness is not None and s.best is not None and s.best >= st.target_fitness:
            s.halt_reason = StopReason.TARGET_FITNESS
            logger.info("experiment %s: target fitness %g reached", s.experiment, st.target_fitness)
        elif st.patience and s.since_best >= st.patience:
            s.halt_reason = StopReason.PATIENCE
            logger.info("experiment %s: no improvement for %d iterations", s.experiment, s.since_best)
        else:
            self._check_budget(s)

    def _check_budget(self, s: _Session) -> None:
        """The budget covers the whole experiment, so what earlier runs (before a stop or crash) spent counts."""
        st = s.stop
        if not (st.budget_tokens or st.budget_usd):
            return
        stats = experiment_stats(self.store, s.experiment)
        tokens = int(stats["input_tokens"]) + int(stats["output_tokens"]) + s.tokens
        usd = float(stats["cost_usd"]) + s.usd
        if (st.budget_tokens and tokens >= st.budget_tokens) or (st.budget_usd and usd >= st.budget_usd):
            s.halt_reason = StopReason.BUDGET
            logger.info("experiment %s: budget exhausted (%d tokens, $%.4f)", s.experiment, tokens, usd)

    def _emit(self, s: _Session, event: ProgressEvent) -> None:
        logger.debug("progress %s", event)
        if s.on_progress is None:
            return
        try:
            s.on_progress(event)
        except Exception:
            logger.warning("progress callback failed", exc_info=True)

    async def _cancel_inflight(self) -> None:
        tasks = list(self._inflight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            logger.info("cancelled %d unrecorded iteration(s)", len(tasks))
        self._inflight.clear()
        self._modes.clear()
        self._discarded.clear()

    # ------------------------------------------------------------------------------------- one iteration

    def _prepare(self, s: _Session, iteration: int) -> _Prepared:
        """Choose the parent and build the request now, from the store as it is at this moment."""
        parent, mode = self._draw_parent(s.experiment, random.Random(f"{s.random_seed}:{iteration}"))
        logger.debug("iteration %d: parent %s (%s, fitness %s)", iteration, parent.id, mode, _fmt(parent.fitness))
        horizon = self.store.max_program_id(s.experiment)
        request = self._request(s.experiment, iteration, parent, horizon)
        return _Prepared(iteration, parent, mode, request, time.monotonic(), horizon)

    def _draw_parent(self, experiment: str, rng: random.Random) -> tuple[Program, str]:
        """(parent, mode) by the configured selection: elite / exploit / explore ratios over the population or,
        with ``selection = "map_elites"``, over the archive's cell champions."""
        ev = self.config
        ratios = (ev.elite_ratio, ev.exploit_ratio, ev.explore_ratio)
        if ev.selection == "map_elites":
            return qd_archive.select_parent(self.store, experiment, rng, ratios)
        return select_parent(self.store, experiment, rng, ratios, ev.novelty_boost_w)

    def _request(self, experiment: str, iteration: int, parent: Program, horizon: int | None = None) -> MutationRequest:
        """The mutation request for a child of ``parent``: the loop's and the single-mutation call's alike.

        ``siblings``: what the parent's children evaluated up to ``horizon`` bought, so the mutator does not make
        a change that bought nothing again.
        """
        return MutationRequest(
            request_id=f"{experiment}-{iteration}",
            experiment=experiment,
            iteration=iteration,
            parent_id=str(parent.id),
            parent_code=parent.code,
            parent_blocks=parent.blocks or extract_blocks(parent.code),
            parent_metrics=parent.metrics,
            guidance=self.config.guidance,
            inspirations=self._inspirations(experiment, parent),
            fitness=self.wiring.fitness,
            allow_short=self.wiring.allow_short,
            siblings=tuple(sibling_of(c) for c in self.store.children(experiment, int(parent.id or 0),
                                                                       max_id=horizon)),
        )

    def _default_mutator(self, experiment: str) -> Mutator:
        """The configured mutator (from this loop's section), its files beside the store."""
        return mutator_from_config(self.config, run_dir=self.store.path.parent / "agent" / experiment)

    async def _iteration(self, s: _Session, prepared: _Prepared) -> Program:
        """Mutate and evaluate; the result is recorded by the loop, in iteration order.

        Attempts (``max_retries``) are shared by invalid candidates, code already evaluated and candidates that
        traded exactly like an earlier program: each is sent back to the mutator with the reason.
        """
        iteration, parent, request = prepared.iteration, prepared.parent, prepared.request
        discarded: list[Program] = []
        attempt, error = 1, None
        while True:
            tried = {p.code_key: p.duplicate_of or 0 for p in discarded if p.code_key}
            code, response, tokens, usd, error, kind, attempt = await self._mutate(
                request, parent, attempt, error, prepared.horizon, tried, discarded
            )
            program = Program(
                experiment=s.experiment,
                code=code or parent.code,
                parent_id=parent.id,
                generation=parent.generation + 1,
                iteration=iteration,
                mutator=response.mutator if response else getattr(self.mutator, "name", None),
                model=response.model if response else None,
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                cost_usd=usd,
            )
            if code is None:
                program.status = _MUTATION_TO_STORE_KIND.get(kind or "", "syntax")
                program.blocks = dict(response.blocks) if response else {}
                program.failure_message = f"mutation failed ({kind}): {error}"
                program.stage = None
                break
            program.blocks = extract_blocks(code)
            program.code_key = code_key(code)
            cached = next((p for p in discarded if p.code_key == program.code_key), None) or \
                self.store.find_by_code_key(s.experiment, program.code_key, max_id=prepared.horizon)
            if cached is not None:  # the last attempt repeated known code: reuse its result, no backtest
                _reuse_result(program, cached)
                logger.info("iteration %d: same code as program %s; its result is reused", iteration, cached.id)
                break
            result = await self._evaluate(code, parent_code=parent.code)
            self._apply_result(program, result)
            if result.status == "timeout":
                logger.warning("iteration %d: evaluation timed out: %s", iteration, result.error)
            twin = self._behavior_twin(program, prepared.horizon)
            if twin is None or attempt >= self.config.max_retries:
                break
            program.iteration = None  # a discarded attempt: on record, but not the iteration's program
            program.duplicate_of, program.duplicate_kind = twin, "behavior"
            program.elapsed_s = time.monotonic() - prepared.started
            discarded.append(program)
            request = dataclasses.replace(request, siblings=(*request.siblings, sibling_of(program)))
            error = (f"this change did nothing: the candidate traded exactly like program #{twin} on the train "
                     "period (same trades, metrics and equity curve); make a different change that alters when "
                     "the strategy trades")
            logger.info("iteration %d: attempt %d behaves like program %s; asking for another", iteration,
                        attempt, twin)
            attempt += 1
        program.elapsed_s = time.monotonic() - prepared.started
        if discarded:
            self._discarded[iteration] = discarded
        logger.debug(
            "iteration %d: %s fitness %s (%s)",
            iteration,
            program.status,
            _fmt(program.fitness),
            program.failure_message or "",
        )
        return program

    def _behavior_twin(self, program: Program, horizon: int | None = None) -> int | None:
        """The id of the first program of the experiment that behaved exactly like ``program``, if any."""
        if program.behavior_key is None:
            return None
        twin = self.store.find_by_behavior_key(program.experiment, program.behavior_key, max_id=horizon)
        if twin is None or twin.id == program.id:
            return None
        return twin.duplicate_of or twin.id

    def _mark_duplicate(self, program: Program) -> None:
        """Decided at record time, in iteration order: concurrent siblings cannot both be "the first"."""
        if program.duplicate_of is not None:
            return
        twin = self._behavior_twin(program)
        if twin is not None:
            program.duplicate_of, program.duplicate_kind = twin, "behavior"

    def _record(self, s: _Session, iteration: int, program: Program) -> _Outcome:
        mode = self._modes.pop(iteration, "?")
        discarded = self._discarded.pop(iteration, [])
        for attempt in discarded:
            self._mark_duplicate(attempt)
        self._mark_duplicate(program)
        try:
            self.store.record_iteration(program, discarded=discarded)
        except DuplicateIterationError as exc:
            logger.warning("iteration %d already recorded; skipped (%s)", iteration, one_line(exc))
            return _Outcome(program, mode, recorded=False)
        if self.tracer is not None and s.experiment in self.tracer.indexed:
            for evaluated in (*discarded, program):
                if evaluated.status in ("ok", "screened") and evaluated.id is not None:
                    self.tracer.remember(int(evaluated.duplicate_of or evaluated.id), evaluated.code, evaluated.stage)
        ev = self.config
        archive = min(ev.archive_size, ev.population_size - 1)
        protect = qd_archive.keep_ids(self.store, s.experiment) if ev.selection == "map_elites" else ()
        self.store.prune(s.experiment, ev.population_size, archive, protect)
        return _Outcome(program, mode, recorded=True)

    def _inspirations(self, experiment: str, parent: Program) -> tuple[Inspiration, ...]:
        n = self.config.inspirations
        if n <= 0:
            return ()
        top = [p for p in self.store.top_k(experiment, n + 1, active_only=True) if p.id != parent.id][:n]
        return tuple(
            Inspiration(blocks=p.blocks or extract_blocks(p.code), metrics=p.metrics, program_id=str(p.id)) for p in top
        )

    async def _mutate(
        self,
        request: MutationRequest,
        parent: Program,
        first_attempt: int = 1,
        error: str | None = None,
        horizon: int | None = None,
        tried: Mapping[str, int] | None = None,
        references: Sequence[Program] = (),
    ) -> tuple[str | None, MutationResponse | None, tuple[int, int], float, str | None, str | None, int]:
        """Attempts ``first_attempt..max_retries``, each told why the previous one was not used.

        Returns (code, response, tokens, usd, error, kind, attempt used). Code identical to a program already
        evaluated is sent back while attempts remain; on the last attempt it is returned (the caller reuses the
        stored result).
        """
        assert self.mutator is not None
        kind: str | None = None
        response: MutationResponse | None = None
        tin = tout = 0
        usd = 0.0
        attempt = first_attempt
        for attempt in range(first_attempt, self.config.max_retries + 1):
            try:
                response = await self.mutator.mutate(request.with_error(error, attempt))
            except BudgetExceeded as exc:
                if exc.response is not None:
                    tin += exc.response.input_tokens
                    tout += exc.response.output_tokens
                    usd += exc.response.cost_usd
                raise BudgetExceeded(
                    str(exc),
                    dataclasses.replace(
                        exc.response or MutationResponse(request.request_id, "?"),
                        input_tokens=tin,
                        output_tokens=tout,
                        cost_usd=usd,
                    ),
                ) from None
            tin += response.input_tokens + response.cache_read_tokens + response.cache_creation_tokens
            tout += response.output_tokens
            usd += response.cost_usd
            if response.fatal:
                self._record_attempt(request, attempt, response, response.failure_kind, response.error)
                raise _FatalMutator(response)
            if response.ok and response.code is not None:
                try:
                    validate_candidate(parent.code, response.code)
                except CandidateError as exc:
                    error, kind = one_line(exc), exc.kind
                else:
                    key = code_key(response.code)
                    found = self.store.find_by_code_key(request.experiment, key, max_id=horizon)
                    known = found.id if found is not None else (tried or {}).get(key)
                    last = attempt >= self.config.max_retries
                    # Worked out without a backtest: would it send exactly the orders of a program already run?
                    traced = None if known is not None or last else \
                        self._trace_verdict(request.experiment, parent, response.code, horizon, references)
                    if (known is None and traced is None) or last:
                        self._record_attempt(request, attempt, response, None, None)
                        return response.code, response, (tin, tout), usd, None, None, attempt
                    error, kind = traced or (
                        f"this change did nothing new: the candidate is the same program as #{known} (already "
                        "evaluated; only comments, layout or literal spelling differ); make a different change"
                    ), "duplicate"
                    if traced:
                        self.traced_duplicates += 1
            else:
                error, kind = response.error or "the mutator returned no code", response.failure_kind or "syntax"
            self._record_attempt(request, attempt, response, kind, error)
            if attempt < self.config.max_retries:
                # A duplicate is an expected, counted event (SUMMARY counts), not something for the person to act on.
                logger.log(
                    logging.INFO if kind == "duplicate" else logging.WARNING,
                    "iteration %d: mutation attempt %d failed (%s): %s; retrying",
                    request.iteration,
                    attempt,
                    kind,
                    error,
                )
            elif kind == "timeout":
                logger.warning("iteration %d: mutator timed out: %s", request.iteration, error)
        return None, response, (tin, tout), usd, error, kind, attempt

    def _trace_verdict(self, experiment: str, parent: Program, code: str, horizon: int | None,
                       references: Sequence[Program]) -> str | None:
        """Why ``code`` need not be backtested (``decision_trace``: it would repeat a program), or None."""
        if self.tracer is None:
            return None
        try:
            if experiment not in self.tracer.indexed:  # a resumed run: index what the store already holds
                self.tracer.indexed.add(experiment)
                for program in self.store.evaluated_programs(experiment)[-_TRACE_RESUME_PROGRAMS:]:
                    self.tracer.remember(int(program.duplicate_of or program.id or 0), program.code, program.stage)
            others = [parent, *self.store.children(experiment, int(parent.id or 0), max_id=horizon), *references]
            return self.tracer.verdict(code, [(int(p.duplicate_of or p.id or 0), p.code) for p in others
                                              if p.status in ("ok", "screened")],
                                       self.store.first_without_trades(experiment, max_id=horizon))
        except Exception as exc:  # a pre-check is an economy, never a reason to lose the iteration
            logger.warning("decision pre-check failed (%s); the candidate is backtested", one_line(exc))
            return None

    async def _ensure_metric_hook(self) -> None:
        if self._hook_checked or self.metric_hook is not None:
            return
        self._hook_checked = True
        from alpha_evolve.folds import fitness_hook, needs_hook
        from alpha_evolve.strategies import seed_source

        if needs_hook(self.config):
            bench = await self.evaluator.aevaluate(seed_source("buy_and_hold"), "train", "full", screen=False)
            self.metric_hook = fitness_hook(self.config, list(bench.equity) if bench.ok else [])

    def _record_attempt(
        self, request: MutationRequest, attempt: int, response: MutationResponse, kind: str | None, error: str | None
    ) -> None:
        """One row per mutation attempt (failed ones too): the iteration's program row shows only the last."""
        try:
            self.store.record_attempt(
                experiment=request.experiment,
                iteration=request.iteration,
                attempt=attempt,
                request_id=response.request_id or request.request_id,
                mutator=response.mutator or getattr(self.mutator, "name", None),
                model=response.model,
                status=kind or "ok",
                error=error,
                blocks=dict(response.blocks),
                input_tokens=response.input_tokens + response.cache_read_tokens + response.cache_creation_tokens,
                output_tokens=response.output_tokens,
                cost_usd=response.cost_usd,
                elapsed_s=response.elapsed,
            )
        except Exception as exc:  # the attempt log is a record, never a reason to lose the iteration
            logger.warning("iteration %d: attempt %d not recorded: %s", request.iteration, attempt, one_line(exc))

    # ------------------------------------------------------------------------------------- contract names

    def _select_parent(self, experiment: str) -> Program:
        """Draw one parent the way the loop does (elite / exploit / explore by the configured ratios).

        The controller contract's name for it; the loop itself draws in ``_prepare`` with a per-iteration random
        generator so that runs are reproducible. Raises RuntimeError when the experiment has no eligible parent.
        """
        rng = self.__dict__.setdefault("_contract_rng", random.Random(self.config.random_seed))
        parent, mode = self._draw_parent(experiment, rng)
        logger.debug("_select_parent(%s): %s by %s", experiment, parent.id, mode)
        return parent

    async def _request_mutation(
        self, parent: Program, retry_count: int = 0, *, previous_error: str | None = None
    ) -> MutationResponse:
        """Ask the mutator once for a child of ``parent`` (the contract's single-mutation call).

        ``retry_count`` is the number of attempts already made (0 = first; at most ``max_retries - 1``);
        ``previous_error`` is what was wrong with the last one. The candidate is checked like the loop's own
        (a failed check is returned as ``failure_kind``/``error``, never raised) and the attempt is recorded in
        the store. The mutator defaults to the configured one, as in ``run``.
        """
        if not 0 <= retry_count < self.config.max_retries:
            raise ValueError(f"retry_count {retry_count}: expected 0..{self.config.max_retries - 1} (max_retries)")
        if self.mutator is None:
            self.mutator = self._default_mutator(parent.experiment)
        iteration = (self.store.max_iteration(parent.experiment) or 0) + 1
        request = self._request(parent.experiment, iteration, parent).with_error(previous_error, retry_count + 1)
        response = await self.mutator.mutate(request)
        kind, error = response.failure_kind, response.error
        if response.ok and response.code is not None:
            try:
                validate_candidate(parent.code, response.code)
            except CandidateError as exc:
                kind, error = exc.kind, one_line(exc)
                response = dataclasses.replace(response, code=None, failure_kind=kind, error=error)
        self._record_attempt(request, retry_count + 1, response, kind if error else None, error)
        return response

    async def _evaluate(self, code: str, parent_code: str | None, screen: bool = True) -> EvalResult:
        await self._ensure_metric_hook()
        # The seed skips the screen: it is the reference parent and must be scored on the whole train split.
        return await self.evaluator.aevaluate(code, "train", "full", parent_code=parent_code, screen=screen)

    def _apply_result(self, program: Program, result: EvalResult) -> None:
        program.stage = result.stage
        program.metrics = dict(result.metrics)
        if result.status != "ok":
            program.status = result.status if result.status in FAILURE_KINDS else "crash"
            program.failure_message = result.error or result.status
            program.metrics = {}
            return
        program.behavior = behavior_descriptor(result)
        program.behavior_key = result_behavior_key(result)
        if not result.passed:
            program.status = "screened"
            program.failure_message = result.reason or "screened out"
            return
        extras = self.metric_hook(result) if self.metric_hook is not None else {}
        program.metrics.update({k: v for k, v in extras.items() if k != "fitness"})
        if "fitness" in extras:
            fitness = finite_or_none(extras["fitness"])
        else:
            fitness = fitness_from_metrics(program.metrics, self.config.fitness_metric)
        if fitness is None:
            program.status = "screened"
            program.failure_message = f"train {self.config.fitness_metric} is not a finite number"
            return
        program.status = "ok"
        program.fitness = fitness

    # ------------------------------------------------------------------------------------- result

    def _result(self, s: _Session, status: EvolutionStatus, reason: str | None) -> EvolutionResult:
        exp = self.store.require_experiment(s.experiment)
        stats = experiment_stats(self.store, s.experiment)
        best = self.store.top_k(s.experiment, 1)
        return EvolutionResult(
            experiment=s.experiment,
            status=status,
            iterations_completed=exp.completed_iterations,
            best_strategy=best[0] if best else None,
            final_population_size=int(stats["population_size"]),
            elapsed_seconds=time.monotonic() - s.started,
            total_mutations=int(stats["total_mutations"]),
            successful_mutations=int(stats["successful_mutations"]),
            total_evaluations=int(stats["total_evaluations"]),
            successful_evaluations=int(stats["successful_evaluations"]),
            stop_reason=reason,
            target_iterations=exp.target_iterations,
            best_fitness=best[0].fitness if best else None,
            iterations_run=s.recorded,
            cache_hits=int(stats["cache_hits"]),
            behavior_duplicates=int(stats["behavior_duplicates"]),
        )


def sibling_of(program: Program) -> Sibling:
    """What an evaluated child of a parent bought, as its next mutation is told (``MutationRequest.siblings``)."""
    trades = program.metrics.get("Trades") if program.status in ("ok", "screened") else None
    try:
        count = None if trades is None else float(trades)
    except (TypeError, ValueError):
        count = None
    if program.status not in ("ok", "screened"):
        outcome = "failed"
    elif count == 0:
        outcome = "no_trades"  # more telling than "duplicate": its gates blocked every entry
    elif program.duplicate_of is not None:
        outcome = "duplicate"
    else:
        outcome = "new"
    return Sibling(blocks=dict(program.blocks or extract_blocks(program.code)), outcome=outcome, trades=count)


def _reuse_result(program: Program, cached: Program) -> None:
    """Give ``program`` the stored evaluation of the identical ``cached`` program (a cache hit, no backtest)."""
    program.stage = cached.stage
    program.status = cached.status
    program.metrics = dict(cached.metrics)
    program.fitness = cached.fitness
    program.failure_message = cached.failure_message
    program.behavior = None if cached.behavior is None else dict(cached.behavior)
    program.behavior_key = cached.behavior_key
    program.duplicate_of = cached.duplicate_of or cached.id
    program.duplicate_kind = "code"


def _tokens(response: MutationResponse) -> int:
    return int(
        response.input_tokens + response.output_tokens + response.cache_read_tokens + response.cache_creation_tokens
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None

