"""From a run config to the parts of a run: data, splits, venue settings, the evaluator, the seed, the mutator,
and what the evolution loop needs from outside its own section (``loop_wiring``).

The CLI's ``backtest``, the controller and the pipeline all need the same wiring, and the honesty rules live
in it: evolution gets an evaluator that holds **no holdout bars at all** (not merely one that promises not to
use them), and only the ``holdout`` command builds one that does. The controller takes its ``[evolution]``
section and a ``LoopWiring``, never the whole run config, so what the loop depends on is named here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from alpha_evolve.backtest import BacktestSettings
from alpha_evolve.blocks import CandidateError, extract_blocks, validate_candidate
from alpha_evolve.config import EvolutionConfig, PipelineOptions, RunConfig, render_toml
from alpha_evolve.data import DataError, Dataset, DataSplits, load_dataset, periods_per_year, split_bars
from alpha_evolve.evaluation_backend import Evaluator
from alpha_evolve.evaluator import StrategyEvaluator
from alpha_evolve.files import read_text_file
from alpha_evolve.market import InstrumentSpec, MarketError
from alpha_evolve.mutators.base import FitnessSpec, Mutator
from alpha_evolve.mutators.prompts import fitness_spec

logger = logging.getLogger("alpha_evolve.evaluation_setup")

__all__ = [
    "EVOLUTION_SPLITS",
    "LoopWiring",
    "RunData",
    "backtest_settings",
    "build_evaluator",
    "instrument_specs",
    "load_run_data",
    "load_seed",
    "loop_wiring",
    "market_description",
    "mutator_from_config",
]

EVOLUTION_SPLITS = ("train", "validation")


@dataclass(frozen=True)
class RunData:
    """A loaded dataset and its per-instrument splits, plus the description runs record."""

    dataset: Dataset
    splits: dict[str, DataSplits]

    def describe(self) -> dict[str, Any]:
        info = self.dataset.describe()
        info["splits"] = {symbol: s.describe() for symbol, s in self.splits.items()}
        return info


def load_run_data(config: RunConfig, options: PipelineOptions | None = None) -> RunData:
    """Load ``[backtest] data`` (or the synthetic default) and split every instrument chronologically."""
    bt = config.backtest
    opts = options or config.pipeline
    cache = None if opts.disable_align_cache else Path(opts.align_cache_dir)
    dataset = load_dataset(
        bt.data or None,
        symbols=bt.symbols,
        fmt=bt.data_format,
        use_adjusted=bt.use_adjusted,
        synthetic_bars=bt.synthetic_bars,
        synthetic_seed=bt.synthetic_seed,
        synthetic_freq=bt.synthetic_freq,
        synthetic_generator=bt.synthetic_generator,
        synthetic_signal=bt.synthetic_signal,
        synthetic_regime_bars=bt.synthetic_regime_bars,
        cache_dir=cache,
        max_bars=bt.max_bars,
    )
    splits: dict[str, DataSplits] = {}
    for symbol, bars in dataset.instruments.items():
        try:
            splits[symbol] = split_bars(
                bars,
                train=bt.train_fraction,
                validation=bt.validation_fraction,
                train_end=bt.train_end or None,
                validation_end=bt.validation_end or None,
            )
        except DataError as exc:  # name the data and symbol: the split rule alone does not say which file
            raise DataError(f"{dataset.source} [{symbol}]: {exc}") from None
    return RunData(dataset, splits)


def backtest_settings(config: RunConfig, **overrides: Any) -> BacktestSettings:
    return BacktestSettings.from_config(config.backtest, **overrides)


def build_evaluator(
    config: RunConfig,
    *,
    data: RunData | None = None,
    include: Iterable[str] = EVOLUTION_SPLITS,
    max_concurrent: int | None = None,
    settings: BacktestSettings | None = None,
    unseal: bool = False,
    status_path: str | Path | None = None,
) -> Evaluator:
    """An evaluator holding only the ``include`` splits; evolution never gets the holdout.

    Holdout bars are only loaded with ``unseal=True``, which the holdout door (``holdout_door``) passes after it
    has arranged for the look to be ledgered. ``[evaluation] backend`` picks where candidates run (``ray``: every
    node of a cluster, same figures); ``status_path`` is where a cluster backend keeps its live placement (node,
    in flight, done).
    """
    wanted = set(include)
    if "holdout" in wanted and not unseal:
        from alpha_evolve.holdout_door import refuse

        raise refuse("build_evaluator")
    run_data = data or load_run_data(config)
    settings = settings or backtest_settings(config)
    frames: dict[str, dict[str, pd.DataFrame | None]] = {}
    for symbol, s in run_data.splits.items():
        frames[symbol] = {}
        for name in ("train", "validation", "holdout"):
            if name in wanted:
                frames[symbol][name] = getattr(s, name)
                frames[symbol][f"{name}_warmup"] = s.warmup(name, settings.warmup_bars)
    # Annualise every split with the frequency of the whole series, so a short holdout is not mis-scaled.
    instruments = run_data.dataset.instruments
    ppy = {symbol: periods_per_year(pd.DatetimeIndex(bars.index)) for symbol, bars in instruments.items()}
    specs = instrument_specs(run_data, settings)
    if config.evaluation.backend == "ray":
        from alpha_evolve.ray_backend import RayEvaluator

        ev = config.evaluation
        return RayEvaluator(
            frames,
            settings or backtest_settings(config),
            max_concurrent=max_concurrent or config.evolution.max_concurrent,
            periods_per_year=ppy,
            address=ev.ray_address,
            workers_per_node=ev.workers_per_node,
            max_task_retries=ev.max_task_retries,
            status_path=status_path,
            instruments=specs,
        )
    return StrategyEvaluator(
        frames,
        settings,
        max_concurrent=max_concurrent or config.evolution.max_concurrent,
        periods_per_year=ppy,
        instruments=specs,
    )


def market_description(settings: BacktestSettings, instruments: dict[str, Any]) -> dict[str, Any]:
    """The market model a result used: per-symbol instrument specs, fill model, account and warm-up."""
    return {
        "instruments": instruments,
        "fill": settings.fills.describe(),
        "fees": {"taker": settings.taker_fee, "maker": settings.maker_fee},
        "account_type": settings.account_type,
        "warmup_bars": settings.warmup_bars,
    }


def instrument_specs(run_data: RunData, settings: BacktestSettings) -> dict[str, InstrumentSpec]:
    """Each symbol's instrument, from its train and validation bars (never the holdout's, which evolution must
    not see in any form) and the config's overrides: every period and every command trades the same one."""
    specs: dict[str, InstrumentSpec] = {}
    for symbol, s in run_data.splits.items():
        try:
            specs[symbol] = settings.spec_for(symbol, pd.concat([s.train, s.validation]))
        except MarketError as exc:
            raise DataError(f"{run_data.dataset.source}: {exc}") from None
    return specs


def load_seed(seed_strategy: str) -> tuple[str, str]:
    """(label, source) for a seed name or a path to a strategy file; ValueError if invalid or missing blocks."""
    from alpha_evolve.strategies import seed_source

    path = Path(seed_strategy)
    if seed_strategy.endswith(".py") and os.path.lexists(path):
        # read without blocking, regular files only, size-capped: a FIFO or /dev/zero here is one line
        code = read_text_file(path, what="seed strategy", expected="a Python strategy file", error=ValueError)
        label = str(path)
    else:
        code = seed_source(seed_strategy)  # ValueError listing the valid names
        label = seed_strategy
    try:
        blocks = extract_blocks(code)
    except CandidateError as exc:
        raise ValueError(f"seed strategy {label!r}: {exc}") from None
    if not blocks:
        raise ValueError(f"seed strategy {label!r} has no EVOLVE-BLOCK to mutate")
    try:
        validate_candidate(code, code)
    except CandidateError as exc:
        raise ValueError(f"seed strategy {label!r}: {exc}") from None
    return label, code


def mutator_from_config(
    config: RunConfig | EvolutionConfig, *, run_dir: Path | None = None, kind: str | None = None
) -> Mutator:
    """The configured mutator, through ``mutators.make_mutator`` (one place decides what "auto" means).

    Only the ``[evolution]`` section decides it, so the controller builds its default mutator from its own section.
    The LLM mutator gets ``max_retries=1``: the controller makes the ``max_retries`` attempts itself, each told
    the previous validation error, so the total number of attempts is the configured one, not its square.
    """
    from alpha_evolve.mutators import Budget, make_mutator

    ev = config.evolution if isinstance(config, RunConfig) else config
    return make_mutator(
        kind or ev.mutator,
        model=ev.model or None,  # not config.model: resolving the default imports the Anthropic SDK (seconds)
        max_tokens=ev.max_tokens,
        effort=ev.effort or None,
        max_retries=1,
        budget=Budget(ev.budget_tokens or None, ev.budget_usd or None),
        seed=ev.random_seed,
        max_inspirations=ev.inspirations,
        run_dir=run_dir,
        timeout=ev.agent_timeout_seconds,
    )


@dataclass(frozen=True)
class LoopWiring:
    """What the evolution loop needs from outside its ``[evolution]`` section, each thing named.

    ``EvolutionController`` takes its section and this: a reader of the loop sees exactly which other settings
    reach it (the fitness as mutators are told it, shorting, the backtest timeouts a seed's timeout message cites,
    and the whole config recorded in the experiment row so ``evolve resume`` rebuilds the same run).
    """

    fitness: FitnessSpec
    allow_short: bool
    soft_timeout_seconds: float
    hard_timeout_seconds: float
    record_config: Callable[[EvolutionConfig, Mapping[str, Any]], str]
    """TOML of the run's config with the loop's section and these dotted updates (invalid updates are dropped)."""


def loop_wiring(config: RunConfig | EvolutionConfig) -> LoopWiring:
    """The loop's wiring from a run config; an ``[evolution]`` section alone means every other section's
    defaults (what a bare ``EvolutionConfig`` has always meant to the controller)."""
    run = config if isinstance(config, RunConfig) else RunConfig(evolution=config)

    def record_config(evolution: EvolutionConfig, updates: Mapping[str, Any]) -> str:
        cfg = run if evolution == run.evolution else dataclasses.replace(run, evolution=evolution)
        with contextlib.suppress(ValueError):
            cfg = cfg.with_updates(updates)
        return render_toml(cfg)

    bt = run.backtest
    return LoopWiring(
        fitness=fitness_spec(run),
        allow_short=bool(bt.allow_short),
        soft_timeout_seconds=float(bt.soft_timeout_seconds),
        hard_timeout_seconds=float(bt.hard_timeout_seconds),
        record_config=record_config,
    )
