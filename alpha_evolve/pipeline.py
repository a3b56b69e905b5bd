"""One pipeline run: evolve on train, re-test the top programs on validation, write the run directory.

The run directory is the contract with the outer self-evolution loop and with people: ``SUMMARY.json``
(validated against ``schemas/summary.schema.json``) always exists when ``run_pipeline`` returns — with
``status: "failed"`` and a one-line reason when something went wrong — so a caller records the failure and
moves on instead of losing the step. The holdout period is never loaded here; ``holdout.open_holdout`` is the
only way to look at it, and every look is written to a ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import platform
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from alpha_evolve import __version__
from alpha_evolve.command_hint import cli
from alpha_evolve.config import (
    PipelineOptions,
    RunConfig,
    resolve_base_dir,
    write_toml_snapshot,
)
from alpha_evolve.crowning import RankedProgram, crown_key
from alpha_evolve.faults import as_infrastructure
from alpha_evolve.files import atomic_write_json, atomic_write_text, cleanup_stale_temp_files, schema_errors
from alpha_evolve.metric_names import INFO_RATIO, LOWER_IS_BETTER_METRICS, METRIC_NAMES
from alpha_evolve.values import one_line

logger = logging.getLogger("alpha_evolve.pipeline")

SCHEMA_VERSION = 1
SUMMARY_NAME = "SUMMARY.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ProgressCallback = Callable[[Any], None]


class PipelineError(Exception):
    """A reason to stop a run early; its message becomes SUMMARY.json's one-line ``reason``."""


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")


def new_run_dir(base: Path, experiment: str) -> Path:
    """``run_<experiment>_<YYYYmmdd_HHMMSS>``, with a numeric suffix if two runs start in the same second."""
    base.mkdir(parents=True, exist_ok=True)
    stamp = _now().strftime("%Y%m%d_%H%M%S")
    for n in range(1000):
        name = f"run_{experiment}_{stamp}" + (f"_{n}" if n else "")
        try:
            (base / name).mkdir()
        except FileExistsError:
            continue
        return base / name
    raise PipelineError(f"{base}: cannot create a new run directory for {experiment!r}")


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    from alpha_evolve.files import read_json

    data = read_json(Path(run_dir) / SUMMARY_NAME)
    if not isinstance(data, dict):
        raise PipelineError(f"{Path(run_dir) / SUMMARY_NAME}: expected a JSON object")
    return data


def latest_run(base: str | Path) -> Path | None:
    """The run the ``LATEST`` file of a base folder points at, if it still exists."""
    marker = Path(base) / "LATEST"
    if not marker.is_file():
        return None
    run = Path(base) / marker.read_text(encoding="utf-8").strip()
    return run if run.is_dir() else None


class _LogFile(logging.FileHandler):
    """A log file that goes quiet when the disk is full or read-only: logging's default prints a traceback per
    record on stderr, and the run itself reports the machine's failure once, in one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class _OtherRunsFilter(logging.Filter):
    """Keeps another run's lines out of this run's log when runs share a process (``self-evolve
    --parallel-runs``): records logged on another run's thread are dropped; helper threads' records are kept."""

    _run_threads: ClassVar[set[int]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        with self._lock:
            self._run_threads.add(self.thread)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread or record.thread not in self._run_threads

    def close(self) -> None:
        with self._lock:
            self._run_threads.discard(self.thread)


@contextlib.contextmanager
def _run_logging(run_dir: Path, options: PipelineOptions) -> Iterator[None]:
    """Log the run into ``pipeline.log`` (and ``--log-file``) at the requested level, for this run only."""
    root = logging.getLogger("alpha_evolve")
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [_LogFile(run_dir / "pipeline.log", encoding="utf-8")]
    if options.log_file:
        Path(options.log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_LogFile(options.log_file, encoding="utf-8"))
    previous = root.level
    level = logging.getLevelName(options.log_level)
    own = _OtherRunsFilter()
    for h in handlers:
        h.setFormatter(fmt)
        h.setLevel(level)
        h.addFilter(own)
        root.addHandler(h)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    try:
        yield
    finally:
        own.close()
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(previous)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    try:
        nt = version("nautilus_trader")
    except Exception:  # pragma: no cover - nautilus is a hard dependency
        nt = "unknown"
    return {"alpha_evolve": __version__, "nautilus_trader": nt, "python": platform.python_version()}


def _metrics_only(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {name: float(metrics.get(name, 0.0) or 0.0) for name in METRIC_NAMES}
    if INFO_RATIO in metrics:
        out[INFO_RATIO] = float(metrics[INFO_RATIO] or 0.0)
    return out


def _equity_series(points: Sequence[tuple[str, float]] | Sequence[Sequence[Any]]) -> pd.Series:
    if not points:
        return pd.Series(dtype=float)
    index = pd.to_datetime([p[0] for p in points], utc=True)
    return pd.Series([float(p[1]) for p in points], index=index)


def _objective_key(metric: str) -> Callable[[RankedProgram], tuple[int, int, float]]:
    return crown_key(metric)


def _failed_summary(run_dir: Path, experiment: str, started: datetime, reason: str,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    finished = _now()
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "status": "failed",
        "reason": one_line(reason),
        "run_dir": str(run_dir),
        "experiment": experiment,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "elapsed_seconds": round((finished - started).total_seconds(), 3),
        "versions": _versions(),
        "best_metrics": {},
        "train_metrics": {},
        "counts": {"iterations": 0, "mutations": 0, "evaluations": 0, "failures": {}},
        "holdout": {"sealed": True, "openings": 0},
    }
    summary.update(extra or {})
    summary["status"] = "failed"
    return summary


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    problems = schema_errors("summary", summary)
    if problems:  # a bug on our side; keep the run's record anyway, and say so loudly
        logger.error("SUMMARY.json does not match its schema: %s", "; ".join(problems[:3]))
    atomic_write_json(run_dir / SUMMARY_NAME, summary)


def _mark_latest(base: Path, run_dir: Path) -> None:
    atomic_write_text(base / "LATEST", run_dir.name + "\n")


def with_absolute_data_path(config: RunConfig) -> RunConfig:
    """A relative ``[backtest] data`` is relative to the working directory of the run; the config snapshot must
    name the same file from anywhere (``alpha-evolve holdout``, a resumed session started elsewhere)."""
    data = config.backtest.data
    if not data or Path(data).is_absolute():
        return config
    return config.with_updates({"backtest.data": str(Path(data).absolute())})


def run_pipeline(
    config: RunConfig,
    options: PipelineOptions | None = None,
    *,
    experiment: str | None = None,
    output_dir: str | Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Run evolution + validation and write a complete run directory; returns it even when the run failed."""
    options = options or config.pipeline
    # Default name: the seed's (a seed given as a file path contributes its stem).
    experiment = experiment or re.sub(r"[^A-Za-z0-9_-]", "_", Path(config.evolution.seed_strategy).stem)[:64]
    if not _NAME_RE.match(experiment):
        raise ValueError(f"experiment name {experiment!r}: expected 1-64 letters, digits, '-' or '_'")
    base = resolve_base_dir(options, output_dir).absolute()  # SUMMARY.json's run_dir must work from any cwd
    run_dir = new_run_dir(base, experiment)
    config = with_absolute_data_path(config)
    started = _now()
    with _run_logging(run_dir, options):
        logger.info("pipeline run %s started", run_dir)
        try:
            summary = _run(config, options, experiment, run_dir, started, on_progress)
        except Exception as exc:  # every failure must still leave a SUMMARY.json for the outer loop
            fault = as_infrastructure(exc)
            if fault is not None:
                # The machine failed, not the settings: no "failed" SUMMARY (the outer loop would record it as
                # the proposal's failure); the caller stops and a resume runs this again.
                logger.info("pipeline run %s stopped: %s", run_dir, fault)
                raise fault from None
            reason = str(exc).strip() or type(exc).__name__
            if not isinstance(exc, PipelineError | ValueError | OSError | LookupError):
                logger.exception("pipeline run failed unexpectedly")
                reason = f"{type(exc).__name__}: {reason}"
            else:
                logger.info("pipeline run failed: %s", reason)  # the caller reports it; pipeline.log keeps it
            summary = _failed_summary(run_dir, experiment, started, reason, {"config": config.to_dict()})
        _write_summary(run_dir, summary)
        _mark_latest(base, run_dir)
        logger.info("pipeline run %s finished with status %s", run_dir, summary["status"])
    return run_dir


def record_failed_run(reason: str, *, experiment: str | None = None, options: PipelineOptions | None = None,
                      output_dir: str | Path | None = None, config: RunConfig | None = None) -> Path:
    """Write a run directory holding only a failed SUMMARY.json, for failures before a run can start
    (e.g. a config that does not load), so that an outer loop still finds a record of the attempt."""
    name = experiment if experiment and _NAME_RE.match(experiment) else "pipeline"
    base = resolve_base_dir(options, output_dir).absolute()
    run_dir = new_run_dir(base, name)
    summary = _failed_summary(run_dir, name, _now(), reason, {"config": config.to_dict()} if config else None)
    _write_summary(run_dir, summary)
    _mark_latest(base, run_dir)
    return run_dir


def _run(config: RunConfig, options: PipelineOptions, experiment: str, run_dir: Path, started: datetime,
         on_progress: ProgressCallback | None) -> dict[str, Any]:
    from alpha_evolve.controller import EvolutionController
    from alpha_evolve.evaluation_setup import (
        build_evaluator,
        load_run_data,
        load_seed,
        loop_wiring,
        mutator_from_config,
    )
    from alpha_evolve.store import ProgramStore

    cleanup_stale_temp_files(run_dir)
    write_toml_snapshot(config, run_dir / "config.toml", header=f"config used by {run_dir.name}")
    _, seed_code = load_seed(config.evolution.seed_strategy)
    data = load_run_data(config, options)
    data_info = data.describe()
    t0 = time.perf_counter()
    store = ProgramStore(run_dir / "programs.sqlite")
    from alpha_evolve.evaluation_backend import NODES_FILE, placement, with_placement

    evaluator = build_evaluator(config, data=data, status_path=run_dir / NODES_FILE)
    on_progress = with_placement(on_progress, evaluator)
    try:
        from alpha_evolve.strategies import seed_source

        bh_code = seed_source("buy_and_hold")
        bh_train = evaluator.evaluate(bh_code, "train", "full", screen=False)
        mutator = mutator_from_config(config, run_dir=run_dir)
        controller = EvolutionController(config.evolution, store, evaluator, mutator, wiring=loop_wiring(config))
        controller.data_hash = data.dataset.content_hash
        _search_aids(config, data, controller, mutator)
        hook = _fitness_hook(config, bh_train)
        if hook is not None:
            controller.metric_hook = hook
        result = asyncio.run(
            controller.run(config.evolution.seed_strategy, experiment, config.evolution.generations,
                           on_progress=on_progress)
        )
        evolve_seconds = time.perf_counter() - t0
        ranked, seed_val, bh_val, n_val, overfit = select_winner(config, store, evaluator, experiment, seed_code,
                                                                 data, bh_train=bh_train)
        market_info = _market_summary(evaluator, ranked, seed_val, bh_val)
        security = _evaluation_security(evaluator)
        references = _reference_runs(evaluator, data_info, bh_train)
    finally:
        evaluator.close()
    where = placement(evaluator)
    logger.info("candidates evaluated on %s", ", ".join(
        f"{n.get('host')} ({n.get('done', '-')} done)" for n in where["nodes"]))
    counts = _counts(store, experiment, result, n_val)
    for r in ranked:  # refusals found while validating (causality check, replay) count as failures too
        if r.status in _SECURITY_KINDS:
            counts["failures"][r.status] = counts["failures"].get(r.status, 0) + 1
    counts["trials"] = store.trial_counts(experiment)
    # Candidates the decision trace showed would repeat a program: sent back before any backtest (no trial).
    counts["traced_duplicates"] = int(controller.traced_duplicates)
    store.close()
    best = ranked[0]
    oracle = references.get("oracle") or {}
    oracle_val = oracle.get("validation")
    artifacts = _write_artifacts(run_dir, config, ranked, seed_val, bh_val, data_info,
                                 oracle=RankedProgram(None, {}, dict(oracle_val.metrics), list(oracle_val.equity),
                                                      oracle_val.status, oracle_val.error) if oracle_val else None)
    honest = _honest_report(config, ranked, seed_val, bh_val, dict(bh_train.metrics) if bh_train.ok else {},
                            overfit)
    finished = _now()
    objective = config.backtest.objective
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "reason": None,
        "run_dir": str(run_dir),
        "experiment": experiment,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "elapsed_seconds": round((finished - started).total_seconds(), 3),
        "timings": {"evolution_seconds": round(evolve_seconds, 3)},
        "versions": _versions(),
        "config": config.to_dict(),
        "config_file": "config.toml",
        "data": data_info,
        "objective": {"metric": objective, "split": "validation", "maximize": objective not in LOWER_IS_BETTER_METRICS},
        "counts": counts,
        "evaluation_security": security,
        "evaluation": where,
        "stop_reason": getattr(result, "stop_reason", None),
        "best_program": {
            "id": int(best.program.id),
            "iteration": int(best.program.iteration or 0),
            "generation": int(best.program.generation or 0),
            "parent_id": best.program.parent_id,
            "code_path": "best_strategy.py",
            "mutator": best.program.mutator,
            "is_seed": best.is_seed,
            "crowned": best.crownable,
            "flags": list(best.flags),
        },
        "best_metrics": _metrics_only(best.validation),
        "train_metrics": _metrics_only(best.train),
        "seed_metrics": {"train": _metrics_only(seed_val.train), "validation": _metrics_only(seed_val.validation)},
        "buy_and_hold_metrics": _metrics_only(bh_val.validation),
        **_reference_summary(best, seed_val, bh_val, references),
        "overfitting": overfit,
        "market": market_info,
        **honest,
        "top_programs": "top_programs.json",
        "artifacts": artifacts,
        "holdout": {"sealed": True, "openings": 0},
    }


def _validate_top(config: RunConfig, store: Any, evaluator: Any, experiment: str, seed_code: str,
                  bh_train: Mapping[str, Any] | None = None
                  ) -> tuple[list[RankedProgram], RankedProgram, RankedProgram, int]:
    """Re-test the ``bt_top`` best distinct train programs (plus seed and buy-and-hold) on validation.

    Finalists are ranked by the objective on validation, those failing the minimum-trades rule after all others
    (flagged, never crowned). The seed is a finalist too: if evolution found nothing better, it is the answer.
    """
    from alpha_evolve.crowning import draw_finalists, round_trip_flags, seed_gate, with_info_ratio
    from alpha_evolve.strategies import seed_source

    k = config.backtest.bt_top
    seed_program = store.seed(experiment)
    distinct = draw_finalists(store.top_k(experiment, max(k * 4, k + 10)), seed_program, k)
    bh_code = seed_source("buy_and_hold")
    codes = [p.code for p in distinct] + [seed_code, bh_code]
    logger.info("validating %d distinct top programs on the validation period", len(distinct))
    results = evaluator.evaluate_many(codes, split="validation", stage="full")
    seed_res, bh_res = results[-2], results[-1]
    bh_equity = list(bh_res.equity) if bh_res.ok else []
    minimum = config.backtest.min_round_trips
    ranked = []
    for position, (p, r) in enumerate(zip(distinct, results[: len(distinct)], strict=True)):
        validation = with_info_ratio(r.metrics, r.equity, bh_equity) if r.ok else dict(r.metrics)
        flags = round_trip_flags(p.metrics, validation, minimum) if r.ok else []
        ranked.append(RankedProgram(p, dict(p.metrics), validation, list(r.equity), r.status, r.error, flags,
                                    list(r.warnings), dict(r.return_stats), train_position=position))
    seed_gate(ranked, config.backtest.crown_confidence)  # an evolved finalist must beat the seed, paired test
    ranked.sort(key=_objective_key(config.backtest.objective), reverse=True)
    seed_train = dict(seed_program.metrics) if seed_program is not None else {}
    seed_validation = with_info_ratio(seed_res.metrics, seed_res.equity, bh_equity) if seed_res.ok else {}
    seed_val = RankedProgram(seed_program, seed_train, seed_validation, list(seed_res.equity),
                             seed_res.status, seed_res.error, warnings=list(seed_res.warnings))
    bh_val = RankedProgram(None, dict(bh_train or {}), dict(bh_res.metrics), bh_equity, bh_res.status, bh_res.error,
                           warnings=list(bh_res.warnings))
    return ranked, seed_val, bh_val, len(codes)


def _reference_runs(evaluator: Any, data_info: Mapping[str, Any], bh_train: Any) -> dict[str, Any]:
    """Buy-and-hold on train and, on the planted market, the oracle on train and validation (never the holdout)."""
    from alpha_evolve.references import evaluate_oracle, oracle_applies

    runs: dict[str, Any] = {"buy_and_hold_train": bh_train}
    if oracle_applies(data_info):
        runs["oracle"] = evaluate_oracle(evaluator, ("train", "validation"))
    return runs


def _reference_summary(best: RankedProgram, seed: RankedProgram, bh: RankedProgram,
                       references: Mapping[str, Any]) -> dict[str, Any]:
    """SUMMARY fields putting the winner next to the seed, buy-and-hold and (planted market) the oracle."""
    from alpha_evolve.references import gap_closed, metrics_of, sharpe_row

    oracle = references.get("oracle")
    oracle_metrics = {split: metrics_of(r) for split, r in oracle.items()} if oracle else None
    table: dict[str, dict[str, float | None]] = {}
    for split, winner, seed_m, bh_m in (
        ("train", best.train, seed.train, metrics_of(references.get("buy_and_hold_train"))),
        ("validation", best.validation, seed.validation, bh.validation if bh.status == "ok" else {}),
    ):
        row = {"winner": _metrics_only(winner) if winner else {}, "seed": _metrics_only(seed_m) if seed_m else {},
               "buy_and_hold": _metrics_only(bh_m) if bh_m else {}}
        if oracle_metrics is not None:
            row["oracle"] = oracle_metrics.get(split, {})
        table[split] = sharpe_row(row)
    out: dict[str, Any] = {"oracle_metrics": oracle_metrics, "sharpe_by_split": table}
    if oracle_metrics is not None:
        out["gap_closed"] = {split: gap_closed(r["winner"], r["seed"], r.get("oracle")) for split, r in table.items()}
    return out


_SECURITY_KINDS = ("tampered", "lookahead")


def _evaluation_security(evaluator: Any) -> dict[str, Any]:
    """How candidates were contained and scored (the opt-out, when used, is visible here)."""
    return {
        "confinement": str(getattr(evaluator, "confinement", "unknown")),
        "scoring": "trusted engine replay of each candidate's decision log",
        "causality_splits": sorted(getattr(evaluator, "causality_splits", ())),
    }


def select_winner(config: RunConfig, store: Any, evaluator: Any, experiment: str, seed_code: str, data: Any,
                  *, bh_train: Any) -> tuple[list[RankedProgram], RankedProgram, RankedProgram, int, dict[str, Any]]:
    """Compare the finalists on validation, write the trial ledger, and deflate the crowned program.

    Returns the ranked finalists (winner first), the seed's and buy-and-hold's figures, how many programs were
    run on validation and the ``overfitting`` block of SUMMARY.json.
    """
    from alpha_evolve.strategies import seed_source

    ranked, seed_val, bh_val, n_val = _validate_top(config, store, evaluator, experiment, seed_code,
                                                    bh_train=bh_train.metrics if bh_train.ok else {})
    if not ranked or ranked[0].status != "ok":
        errors = "; ".join(f"#{r.program.id}: {r.error}" for r in ranked[:3] if r.error)
        raise PipelineError("no valid program survived validation" + (f" ({errors})" if errors else ""))
    ppy = _bars_per_year(data)
    bars = _split_bars(data.describe())
    _record_trials(store, experiment, ranked, seed_val, bh_val, seed_source("buy_and_hold"), ppy, bars)
    overfit = _overfitting(ranked, store.trials(experiment), ppy, bars, config)
    return ranked, seed_val, bh_val, n_val, overfit


def _bars_per_year(data: Any) -> float:
    from alpha_evolve.data import periods_per_year

    values = [periods_per_year(pd.DatetimeIndex(bars.index)) for bars in data.dataset.instruments.values()]
    return float(np.mean(values)) if values else 252.0


def _split_bars(data_info: Mapping[str, Any]) -> dict[str, int]:
    """Bars per period (the smallest over instruments: the sample every figure rests on)."""
    out: dict[str, int] = {}
    for info in (data_info.get("splits") or {}).values():
        for period in ("train", "validation", "holdout"):
            bars = int((info.get(period) or {}).get("bars") or 0)
            out[period] = min(out.get(period, bars), bars)
    return out


def _record_trials(store: Any, experiment: str, ranked: Sequence[RankedProgram], seed: RankedProgram,
                   bh: RankedProgram, bh_code: str, ppy: float, bars: Mapping[str, int]) -> None:
    """Write the run's trial ledger: every train evaluation, every fold figure, every validation comparison."""
    from alpha_evolve.crowning import validation_rows
    from alpha_evolve.trials import behavior_key_of, trial_row

    rows = []
    for p in store.evaluated_programs(experiment):
        role = "seed" if p.is_seed else "candidate"
        bkey = p.behavior_key or behavior_key_of(p.behavior)  # the store's key: stage, metrics and equity
        rows.append(trial_row(p.code, "train", metrics=p.metrics, status=p.status, program_id=p.id, role=role,
                              periods_per_year=ppy, n_obs=bars.get("train", 0), behavior_key=bkey))
        for fold, sharpe in _fold_sharpes(p.metrics):
            rows.append(trial_row(p.code, f"train_fold{fold}", metrics={"Sharpe": sharpe}, status=p.status,
                                  program_id=p.id, role=role, periods_per_year=ppy, behavior_key=bkey))
    rows += validation_rows(ranked, periods_per_year=ppy, n_obs=bars.get("validation", 0))
    if bh.status == "ok":
        rows.append(trial_row(bh_code, "validation", metrics=bh.validation, role="benchmark", periods_per_year=ppy,
                              n_obs=bars.get("validation", 0)))
    store.record_trials(experiment, rows)


def _fold_sharpes(metrics: Mapping[str, Any]) -> list[tuple[int, float]]:
    out = []
    for key, value in metrics.items():
        m = re.fullmatch(r"fold(\d+)_Sharpe", str(key))
        if m and isinstance(value, int | float):
            out.append((int(m.group(1)), float(value)))
    return sorted(out)


def _market_summary(evaluator: Any, ranked: Sequence[RankedProgram], seed: RankedProgram,
                    bh: RankedProgram) -> dict[str, Any]:
    """The market model the run used (instruments, fills, fees, warm-up) and every market warning raised while
    validating the best program, the seed and buy-and-hold: figures a reader should not take at face value."""
    from alpha_evolve.evaluation_setup import market_description

    instruments = {s: spec.to_dict() for s, spec in getattr(evaluator, "instruments", {}).items()}
    warnings: list[str] = []
    for label, r in (("best", ranked[0] if ranked else None), ("seed", seed), ("buy_and_hold", bh)):
        if r is None:
            continue
        warnings += [f"{label}: {w}" for w in r.warnings]
        if r.status != "ok":
            warnings.append(f"{label}: {r.status} on validation: {r.error}")
    out = market_description(evaluator.settings, instruments)
    out["warnings"] = warnings
    return out


def _search_aids(config: RunConfig, data: Any, controller: Any, mutator: Any) -> None:
    """The train bars, worked into the decision-trace pre-check and the offline mutator's filter thresholds."""
    from alpha_evolve.decision_trace import DecisionTracer, train_bars
    from alpha_evolve.evaluation_setup import backtest_settings, instrument_specs
    from alpha_evolve.mutators.calibration import ThresholdCalibrator
    from alpha_evolve.mutators.offline import OfflineMutator

    settings = backtest_settings(config)
    bars = train_bars(data, settings, instrument_specs(data, settings))
    if bars is None:
        return
    if config.evolution.trace_precheck:
        controller.tracer = DecisionTracer(bars, allow_short=config.backtest.allow_short,
                                           screen_fraction=config.backtest.screen_fraction)
    if isinstance(mutator, OfflineMutator):
        mutator.calibration = ThresholdCalibrator(bars)


def _counts(store: Any, experiment: str, result: Any, n_validation: int) -> dict[str, Any]:
    from alpha_evolve.experiment_status import experiment_stats

    by_status: dict[str, int] = store.count_by_status(experiment)
    failures = {k: 0 for k in _SECURITY_KINDS}  # always shown: "0 tampered" is a figure too
    failures.update({k: v for k, v in by_status.items() if k not in ("ok", "screened")})
    stats = experiment_stats(store, experiment)  # tokens and cost of every program, failed ones included
    return {
        "iterations": int(getattr(result, "iterations_completed", 0)),
        "mutations": int(getattr(result, "total_mutations", 0)),
        "successful_mutations": int(getattr(result, "successful_mutations", 0)),
        "evaluations": int(getattr(result, "total_evaluations", 0)),
        "successful_evaluations": int(getattr(result, "successful_evaluations", 0)),
        "validation_evaluations": n_validation,
        "screened_out": int(by_status.get("screened", 0)),
        # Never evaluate the same thing twice: identical code reused a stored result (no backtest); behaviour
        # duplicates were backtested and traded exactly like an earlier program (the wasted evaluations).
        "cache_hits": int(stats["cache_hits"]),
        "behavior_duplicates": int(stats["behavior_duplicates"]),
        "wasted_evaluation_share": round(
            int(stats["behavior_duplicates"]) / max(1, int(stats["total_evaluations"]) - 1), 6),
        "failures": failures,
        "input_tokens": int(stats["input_tokens"]),
        "output_tokens": int(stats["output_tokens"]),
        "cost_usd": round(float(stats["cost_usd"]), 6),
    }


def _overfitting(ranked: Sequence[RankedProgram], trial_rows: Sequence[Mapping[str, Any]], ppy: float,
                 bars: Mapping[str, int], config: RunConfig) -> dict[str, Any]:
    """PSR and DSR of the crowned program, deflated for every trial of the run at both selection stages."""
    from alpha_evolve.crowning import deflate_crowned

    best = ranked[0]
    tr, va = float(best.train.get("Sharpe", 0.0)), float(best.validation.get("Sharpe", 0.0))
    deflation = deflate_crowned(
        ranked, trial_rows, objective=config.backtest.objective, validation_obs=bars.get("validation", 0),
        train_obs=bars.get("train", 0), periods_per_year=ppy,
        train_period="train_folds" if config.evolution.fitness_folds > 1 else "train")
    return {
        **deflation.to_dict(),
        "sharpe_train": tr,
        "sharpe_validation": va,
        "sharpe_gap": tr - va,
        "note": "DSR = the smallest of the deflated Sharpe ratios (Bailey & Lopez de Prado) of the run's "
                "selections: the winner's validation returns against the best Sharpe luck gives among the distinct "
                "programs compared on validation (and the same for every nested top-j set of finalists, so the "
                "figure cannot rise with bt_top), and the first train program's Sharpe against the best luck gives "
                "among the distinct train trials; a DSR below 0.95 means the edge may be luck (see "
                "docs/honest-selection.md)",
    }


def _honest_report(config: RunConfig, ranked: Sequence[RankedProgram], seed: RankedProgram, bh: RankedProgram,
                   bh_train: Mapping[str, Any], overfit: Mapping[str, Any]) -> dict[str, Any]:
    """What the validation pick is worth: figures beside buy-and-hold, an out-of-sample verdict, the flags."""
    from alpha_evolve.crowning import figure, train_order, verdict

    best = ranked[0]
    objective = config.backtest.objective
    by_train = [r for r in train_order(ranked) if r.status == "ok"]
    best_on_train = by_train[0] if by_train else None
    # The out-of-sample verdict rests on the best-on-train evolved program that may be crowned at all.
    evolved = next((r for r in by_train if not r.is_seed and r.crownable), None)
    figures = [
        figure("winner (ranked on validation: optimistic)", "validation", best.validation, bh.validation,
               program_id=best.program.id),
        figure("winner", "train", best.train, bh_train, program_id=best.program.id),
    ]
    if best_on_train is not None:
        figures.append(figure("best-on-train program (validation took no part in choosing it)", "validation",
                              best_on_train.validation, bh.validation, program_id=best_on_train.program.id))
    figures.append(figure("seed", "validation", seed.validation, bh.validation,
                          program_id=getattr(seed.program, "id", None)))
    figures.append(figure("seed", "train", seed.train, bh_train, program_id=getattr(seed.program, "id", None)))
    basis = "best-on-train evolved program; validation took no part in choosing it"
    oos = verdict(objective, period="validation", evolved=evolved.validation if evolved else None,
                  evolved_id=evolved.program.id if evolved else None, seed=seed.validation, bh=bh.validation,
                  basis=basis)
    flagged = [{"program_id": r.program.id, "flags": r.flags} for r in ranked if r.flags]
    crowned = best.crownable
    if not crowned:
        oos["statement"] += (f"; no finalist met the minimum of {config.backtest.min_round_trips} round trips, "
                             "so nothing was crowned")
    return {
        "selection": {
            "ranked_on": "validation",
            "objective": objective,
            "finalists": len(ranked),
            "min_round_trips": config.backtest.min_round_trips,
            "crowned": crowned,
            "winner_id": best.program.id,
            "winner_is_seed": best.is_seed,
            "winner_validation": {objective: best.validation.get(objective, 0.0),
                                  "Sharpe": best.validation.get("Sharpe", 0.0),
                                  "Sharpe_deflated": overfit.get("sharpe_validation_deflated"),
                                  INFO_RATIO: best.validation.get(INFO_RATIO, 0.0)},
            "best_on_train_id": best_on_train.program.id if best_on_train else None,
            "best_on_train_validation": dict(best_on_train.validation) if best_on_train else {},
            "flagged": flagged,
            "seed_test": _seed_test_report(ranked, config.backtest.crown_confidence, objective),
            "note": "the winner's validation figure is the best of the finalists and beats the seed by "
                    "construction; judge the run by the deflated figure, the best-on-train program's validation "
                    "figure and, once opened, the holdout",
        },
        "figures": figures,
        "verdict": oos,
        "buy_and_hold_train_metrics": _metrics_only(bh_train) if bh_train else {},
    }


def _seed_test_report(ranked: Sequence[RankedProgram], confidence: float, objective: str) -> dict[str, Any]:
    """How the seed gate decided (``crowning.seed_gate``): each evolved finalist's paired test against the seed."""
    from alpha_evolve.crowning import NO_BEAT_SEED, objective_value

    best = ranked[0]
    tested = [r for r in ranked if r.seed_test]
    held = (best.is_seed and confidence > 0.0
            and any(not r.admitted and r.crownable
                    and objective_value(r.validation, objective) > objective_value(best.validation, objective)
                    for r in tested))
    if not tested:
        words = "no paired test against the seed was run (the seed has no validation curve or no evolved finalist)"
    elif best.is_seed:
        words = (f"{NO_BEAT_SEED} on validation: no evolved finalist was better than the seed at "
                 f"{confidence:.0%} confidence (paired Sharpe test), so the seed stays crowned")
    else:
        words = (f"program #{best.program.id} beat the seed on validation "
                 f"(paired Sharpe test p = {best.seed_test.get('p_value', 1.0):.3g}"
                 + (f" <= {1.0 - confidence:.3g})" if confidence > 0.0 else "; the gate is off)"))
    return {
        "method": "one-sided Jobson-Korkie test with Memmel's correction on the per-bar validation returns "
                  "(finalist vs seed, same bars)",
        "confidence": confidence,
        "seed_kept_by_the_test": bool(held),
        "statement": words,
        "finalists": [{"program_id": r.program.id, **{k: round(float(v), 6) for k, v in r.seed_test.items()},
                       "admitted": r.admitted} for r in tested],
    }


def _fitness_hook(config: RunConfig, bh_train: Any) -> Callable[[Any], dict[str, float]] | None:
    """Extra train figures (information ratio, fold fitness) the controller folds into a candidate's fitness."""
    from alpha_evolve.folds import fitness_hook

    return fitness_hook(config.evolution, list(bh_train.equity) if bh_train.ok else [])


def _span_years(points: Sequence[Any]) -> float:
    if len(points) < 2:
        return 1.0
    t0, t1 = pd.Timestamp(points[0][0]), pd.Timestamp(points[-1][0])
    return max((t1 - t0).total_seconds() / (365.25 * 86400.0), 1e-9)


def _write_artifacts(run_dir: Path, config: RunConfig, ranked: Sequence[RankedProgram], seed: RankedProgram,
                     bh: RankedProgram, data_info: Mapping[str, Any],
                     oracle: RankedProgram | None = None) -> dict[str, str]:
    from alpha_evolve.report import render_report

    best = ranked[0]
    header = (
        f"# Best strategy of {run_dir.name} (program #{best.program.id}, iteration {best.program.iteration}).\n"
        f"# Validation {config.backtest.objective}: {best.validation.get(config.backtest.objective, 0.0):.4f}; "
        f"train fitness {best.program.fitness}.\n"
        f"# Backtest it with: {cli('backtest', '--strategy-file', 'best_strategy.py', '--split', 'validation')}\n"
    )
    atomic_write_text(run_dir / "best_strategy.py", header + best.program.code)

    rows = []
    for rank, r in enumerate(ranked, start=1):
        p = r.program
        row: dict[str, Any] = {"rank": rank, "program_id": p.id, "iteration": p.iteration,
                               "generation": p.generation, "parent_id": p.parent_id, "mutator": p.mutator,
                               "fitness": p.fitness, "validation_status": r.status, "validation_error": r.error,
                               "is_seed": r.is_seed, "crownable": r.crownable, "flags": "; ".join(r.flags),
                               "seed_test_p_value": r.seed_test.get("p_value"), "admitted_by_seed_test": r.admitted}
        row.update({f"train_{m}": r.train.get(m) for m in METRIC_NAMES})
        row.update({f"validation_{m}": r.validation.get(m) for m in (*METRIC_NAMES, INFO_RATIO)})
        rows.append(row)
    atomic_write_json(run_dir / "top_programs.json", rows)
    with open(run_dir / "top_programs.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    curves: dict[str, pd.Series] = {}
    labels: dict[str, str] = {}
    obj = config.backtest.objective
    for rank, r in enumerate(ranked, start=1):
        if r.status == "ok" and r.equity:
            key = f"rank{rank}_program{r.program.id}"
            curves[key] = _equity_series(r.equity)
            labels[key] = f"#{rank} program {r.program.id} ({obj} {r.validation.get(obj, 0.0):.2f})"
    refs = [("seed", seed, "seed"), ("buy_and_hold", bh, "buy & hold")]
    if oracle is not None:
        refs.append(("oracle", oracle, "oracle (planted rule)"))
    for key, ref, text in refs:
        if ref.status == "ok" and ref.equity:
            curves[key] = _equity_series(ref.equity)
            labels[key] = f"{text} ({obj} {ref.validation.get(obj, 0.0):.2f})"
    frame = pd.DataFrame(curves)
    frame.index.name = "timestamp"
    frame.to_csv(run_dir / "equity_curves.csv")
    symbols = ", ".join(data_info.get("symbols", []))
    render_report(
        curves, run_dir / "report.png", labels=labels,
        title=f"{run_dir.name}: validation period, top {len(ranked)} programs vs seed and buy & hold"
        + (" (and the oracle)" if oracle is not None else ""),
        subtitle=f"{data_info.get('source', '')} [{symbols}] — costs included; the holdout is sealed",
    )
    return {
        "best_strategy": "best_strategy.py",
        "top_programs_json": "top_programs.json",
        "top_programs_csv": "top_programs.csv",
        "equity_curves": "equity_curves.csv",
        "report": "report.png",
        "config": "config.toml",
        "programs_db": "programs.sqlite",
        "log": "pipeline.log",
    }
