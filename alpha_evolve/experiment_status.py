"""What an experiment is doing, read from its store: valid from any process, alive or not.

The controller writes the store; ``evolve status`` / ``evolve stop`` / ``evolve resume`` and the pipeline read it
from other processes. The status types, the run lock's liveness probe and the stop request live here so that
those readers need not import the loop (``controller``) to ask about it.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import tomlkit
import tomlkit.exceptions

from alpha_evolve.config import RunConfig, from_mapping
from alpha_evolve.metric_names import RANKING_METRICS
from alpha_evolve.store import Program, ProgramStore

__all__ = [
    "STOP_REQUESTED",
    "EvolutionProgress",
    "EvolutionResult",
    "EvolutionStatus",
    "ProgressEvent",
    "StopReason",
    "config_from_experiment",
    "experiment_is_live",
    "experiment_stats",
    "lock_path",
    "progress_from_store",
    "request_stop",
]

STOP_REQUESTED = "stop_requested"
"""Marker written to the experiment row's ``stop_reason`` (status still ``running``) by ``request_stop``."""


class EvolutionStatus(enum.StrEnum):
    """Experiment status as persisted in the store."""

    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"


class StopReason(enum.StrEnum):
    """Why a run ended; the value is what ``EvolutionResult.stop_reason`` and the store hold."""

    ITERATIONS = "iterations"
    TARGET_FITNESS = "target_fitness"
    WALL_CLOCK = "max_wall_seconds"
    PATIENCE = "patience"
    BUDGET = "budget"
    STOPPED = "stopped"
    MUTATOR = "mutator"
    ERROR = "error"


@dataclass(frozen=True)
class ProgressEvent:
    """Emitted after the seed and after every recorded iteration."""

    experiment: str
    kind: str  # "seed" | "iteration"
    iteration: int
    iterations_completed: int
    target_iterations: int
    program_id: int | None
    parent_id: int | None
    selection_mode: str | None
    status: str
    fitness: float | None
    best_fitness: float | None
    new_best: bool
    elapsed_seconds: float
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EvolutionProgress:
    """A snapshot of an experiment, read from the store (valid from any process)."""

    experiment: str
    status: str
    iterations_completed: int
    target_iterations: int
    best_fitness: float | None
    best_program_id: int | None
    fitness_metric: str | None
    population_size: int
    total_programs: int
    total_mutations: int
    successful_mutations: int
    total_evaluations: int
    successful_evaluations: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    stop_reason: str | None
    elapsed_seconds: float | None = None
    stop_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvolutionResult:
    """Final result from an evolution run (or resume)."""

    experiment: str
    status: EvolutionStatus
    iterations_completed: int
    best_strategy: Program | None
    final_population_size: int
    elapsed_seconds: float

    total_mutations: int
    successful_mutations: int
    total_evaluations: int
    successful_evaluations: int

    stop_reason: str | None = None
    target_iterations: int = 0
    best_fitness: float | None = None
    iterations_run: int = 0  # recorded by this call (run or resume)
    cache_hits: int = 0  # candidates whose code was already evaluated: result reused, no backtest
    behavior_duplicates: int = 0  # backtests that traded exactly like an earlier program (wasted)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["status"] = self.status.value
        best = self.best_strategy
        out["best_strategy"] = (
            None
            if best is None
            else {
                "id": best.id,
                "iteration": best.iteration,
                "generation": best.generation,
                "fitness": best.fitness,
                "metrics": dict(best.metrics),
                "is_seed": best.is_seed,
            }
        )
        return out


def lock_path(store: ProgramStore, experiment: str) -> Path:
    return store.path.with_name(f"{store.path.name}.{experiment}.lock")


def experiment_is_live(store: ProgramStore, experiment: str) -> bool:
    """True when some process holds the experiment's run lock (a controller is running it right now)."""
    lock = filelock.FileLock(lock_path(store, experiment), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        return True
    lock.release()
    return False


def request_stop(store: ProgramStore, experiment: str) -> str:
    """Ask the controller running ``experiment`` (maybe in another process) to stop gracefully.

    The request is ``stop_reason = "stop_requested"`` on the experiment row while its status stays ``running``;
    the controller polls it every ~0.5 s and between iterations, finishes the iterations in flight and marks the
    experiment ``paused``. If no process holds the experiment's run lock (the run was killed), the experiment is
    marked ``paused`` at once. Returns "requested", "paused" (no live run) or raises ValueError.
    """
    exp = store.get_experiment(experiment)
    if exp is None:
        raise ValueError(f"experiment {experiment!r} not found in store {store.path}")
    if exp.status != EvolutionStatus.RUNNING.value:
        raise ValueError(f"experiment {experiment!r} is not running (status {exp.status})")
    if not experiment_is_live(store, experiment):
        store.update_experiment(experiment, status=EvolutionStatus.PAUSED.value, stop_reason=StopReason.STOPPED.value)
        return "paused"
    store.set_stop_reason(experiment, STOP_REQUESTED)
    return "requested"


def experiment_stats(store: ProgramStore, experiment: str) -> dict[str, int | float]:
    """Counters derived from the store, so they survive crashes and agree between processes."""
    return store.experiment_counters(experiment)


def progress_from_store(store: ProgramStore, experiment: str, elapsed: float | None = None) -> EvolutionProgress:
    exp = store.get_experiment(experiment)
    if exp is None:
        raise ValueError(f"experiment {experiment!r} not found in store {store.path}")
    stats = experiment_stats(store, experiment)
    best = store.top_k(experiment, 1)
    metric = _metric_from_toml(exp.config_toml)
    return EvolutionProgress(
        experiment=experiment,
        status=exp.status,
        iterations_completed=exp.completed_iterations,
        target_iterations=exp.target_iterations,
        best_fitness=best[0].fitness if best else None,
        best_program_id=best[0].id if best else None,
        fitness_metric=metric,
        population_size=int(stats["population_size"]),
        total_programs=int(stats["total_programs"]),
        total_mutations=int(stats["total_mutations"]),
        successful_mutations=int(stats["successful_mutations"]),
        total_evaluations=int(stats["total_evaluations"]),
        successful_evaluations=int(stats["successful_evaluations"]),
        input_tokens=int(stats["input_tokens"]),
        output_tokens=int(stats["output_tokens"]),
        cost_usd=float(stats["cost_usd"]),
        stop_reason=None if exp.stop_reason in ("", STOP_REQUESTED) else exp.stop_reason,
        elapsed_seconds=elapsed,
        stop_requested=exp.stop_reason == STOP_REQUESTED and exp.status == EvolutionStatus.RUNNING.value,
    )


def config_from_experiment(store: ProgramStore, experiment: str) -> RunConfig:
    """The RunConfig an experiment was started with (stored as TOML in its row); defaults if none was stored."""
    exp = store.get_experiment(experiment)
    if exp is None:
        raise ValueError(f"experiment {experiment!r} not found in store {store.path}")
    if not exp.config_toml.strip():
        return RunConfig()
    return from_mapping(tomlkit.parse(exp.config_toml).unwrap(), source=f"{store.path}:{experiment}")


def _metric_from_toml(text: str) -> str | None:
    """The ``[evolution] fitness_metric`` of a stored config; None if absent, unknown or the TOML is unreadable."""
    try:
        evolution = tomlkit.parse(text).unwrap().get("evolution")
    except tomlkit.exceptions.TOMLKitError:
        return None
    name = evolution.get("fitness_metric") if isinstance(evolution, dict) else None
    return name if isinstance(name, str) and name in RANKING_METRICS else None
