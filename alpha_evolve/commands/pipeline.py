"""``alpha-evolve pipeline`` (one run) and ``alpha-evolve holdout RUN_DIR`` (open the sealed holdout once)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from alpha_evolve.config import LOG_LEVELS, load_config
from alpha_evolve.evaluation_backend import add_backend_arguments, apply_backend_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline", help="evolve on train, validate the top programs, write a run directory",
        description="One pipeline run: evolve for [evolution] generations on the train period, re-test the top "
        "[backtest] bt_top programs on validation, and write SUMMARY.json, report.png and friends.",
    )
    p.add_argument("--config", required=True, help="TOML run config (e.g. configs/default.toml)")
    p.add_argument("--output-dir", help="base folder for runs (default: $AE_PIPELINE_DIR or pipeline_runs_cs/)")
    p.add_argument("--experiment", help="experiment name used in the run folder (default: the seed strategy)")
    p.add_argument("--log-level", dest="pipeline_log_level", choices=LOG_LEVELS, help="log level of the run")
    p.add_argument("--log-file", help="also write the run's log to this file")
    p.add_argument("--disable-align-cache", action="store_true", help="do not cache prepared data on disk")
    p.add_argument("--align-cache-dir", help="where prepared data is cached (default .cache/align)")
    p.add_argument("--json", action="store_true", help="print SUMMARY.json to stdout when done")
    add_backend_arguments(p)
    p.set_defaults(func=_pipeline)

    h = sub.add_parser(
        "holdout", help="open the sealed holdout of a run once, and record the look in the ledger",
        description="Evaluate a run's best program on the holdout period. Every opening is appended to "
        "holdout_ledger.jsonl in the run and HOLDOUT_LEDGER.jsonl beside it.",
    )
    h.add_argument("run_dir", help="a pipeline run directory")
    h.add_argument("--force", action="store_true", help="look again although the holdout was opened before")
    h.add_argument("--json", action="store_true", help="print holdout.json to stdout")
    h.set_defaults(func=_holdout)


def pipeline_options_from_args(args: argparse.Namespace, base: Any) -> Any:
    """Apply the CLI's PipelineOptions flags (shared with self-evolve) over a config's [pipeline] section."""
    changes: dict[str, Any] = {}
    for flag, name in (("pipeline_log_level", "log_level"), ("pipeline_log_file", "log_file"),
                       ("log_file", "log_file"), ("align_cache_dir", "align_cache_dir")):
        value = getattr(args, flag, None)
        if value:
            changes[name] = value
    if getattr(args, "disable_align_cache", False):
        changes["disable_align_cache"] = True
    return dataclasses.replace(base, **changes)


@contextmanager
def progress_reporter(total: int, label: str) -> Iterator[Callable[[Mapping[str, Any]], None] | None]:
    """A live progress bar when stdout is a terminal; nothing otherwise (logs and files tell the story)."""
    if not sys.stdout.isatty():
        yield None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("best {task.fields[best]}"), TimeElapsedColumn(), TextColumn("{task.fields[where]}"),
                  transient=False) as progress:
        task = progress.add_task(label, total=total, best="-", where="")

        def update(event: Mapping[str, Any] | Any) -> None:
            get = event.get if isinstance(event, Mapping) else (lambda k, d=None: getattr(event, k, d))
            done = get("iterations_completed", None) or get("iteration", None)
            best = get("best_fitness", None)
            where = get("placement", None) or ""  # a cluster backend: node in flight/slots (done) per node
            progress.update(task, completed=done or 0, best=f"{best:.3f}" if isinstance(best, float) else "-",
                            where=where)

        yield update


def _pipeline(args: argparse.Namespace) -> int:
    from alpha_evolve.cli import fail
    from alpha_evolve.config import ConfigError, PipelineOptions
    from alpha_evolve.pipeline import read_summary, record_failed_run, run_pipeline

    try:
        config = apply_backend_arguments(args, load_config(args.config))
    except ConfigError as exc:
        run_dir = record_failed_run(str(exc), experiment=args.experiment, output_dir=args.output_dir,
                                    options=pipeline_options_from_args(args, PipelineOptions()))
        return fail(f"{exc} (recorded in {run_dir / 'SUMMARY.json'})", 2)
    options = pipeline_options_from_args(args, config.pipeline)
    with progress_reporter(config.evolution.generations, "evolving") as on_progress:
        run_dir = run_pipeline(config, options, experiment=args.experiment, output_dir=args.output_dir,
                               on_progress=on_progress)
    summary = read_summary(run_dir)
    if args.json:
        print(json.dumps(summary, indent=2))
    console = Console(stderr=args.json)
    if summary["status"] != "ok":
        return fail(f"pipeline run failed: {summary['reason']} (see {Path(run_dir) / 'SUMMARY.json'})", 1)
    m = summary["best_metrics"]
    console.print(f"[green]run complete[/green] {run_dir}")
    console.print(
        f"best program #{summary['best_program']['id']} on validation: Sharpe {m['Sharpe']:.3f}, "
        f"CAGR {m['CAGR']:.2%}, MaxDD {m['MaxDD']:.2%}, trades {m['Trades']:.0f} "
        f"(DSR {summary['overfitting']['deflated_sharpe']:.2f}); report: {Path(run_dir) / 'report.png'}"
    )
    row = (summary.get("sharpe_by_split") or {}).get("validation")
    if row:
        console.print("validation Sharpe: " + ", ".join(
            f"{k.replace('_', ' ')} {v:.3f}" if v is not None else f"{k} failed" for k, v in row.items()
        ) + " (the holdout stays sealed: alpha-evolve holdout RUN_DIR)")
    return 0


def _holdout(args: argparse.Namespace) -> int:
    from alpha_evolve.holdout import open_holdout

    result = open_holdout(args.run_dir, force=args.force)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m = result["metrics"]
    Console().print(
        f"[yellow]holdout opened[/yellow] (look #{result['opening']}) for {args.run_dir}: Sharpe {m['Sharpe']:.3f}, "
        f"CAGR {m['CAGR']:.2%}, MaxDD {m['MaxDD']:.2%}, trades {m['Trades']:.0f}; written to holdout.json"
    )
    Console().print(_holdout_comparison(result))
    return 0


def _holdout_comparison(result: dict[str, Any]) -> str:
    """One line putting the winner's holdout Sharpe next to the seed's, buy-and-hold's and the oracle's."""
    names = {"winner": "winner", "seed": "seed", "buy_and_hold": "buy & hold", "oracle": "oracle (planted rule)"}
    parts = [f"{names.get(k, k)} {v:.3f}" if v is not None else f"{names.get(k, k)} failed"
             for k, v in (result.get("sharpe") or {}).items()]
    line = "holdout Sharpe: " + ", ".join(parts)
    if result.get("gap_closed") is not None:
        line += f"; the winner closed {result['gap_closed']:.0%} of the seed-to-oracle gap"
    return line
