"""``alpha-evolve backtest``: score one strategy on one period, for people and for scripts (``--json``).

With ``--json`` stdout carries exactly one JSON object, whatever happens (a bad strategy is a result with a
failure ``status``, not a crash); input errors (missing file, bad config or data) exit non-zero with one line
on stderr. The holdout is used only when ``--split holdout`` is asked for explicitly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alpha_evolve.cli import UserError
from alpha_evolve.config import METRIC_NAMES, RunConfig, load_config

SPLITS = ("train", "validation", "holdout", "all")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backtest", help="backtest one strategy on NautilusTrader's engine",
        description="Backtest a seed strategy or a strategy file on the configured data (or the embedded "
        "synthetic series). --split all covers train and validation as one period; the holdout is sealed: "
        "--split holdout is refused unless --open-holdout is given, and every such look is ledgered.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--strategy", default=None, help="seed strategy name (default: momentum)")
    src.add_argument("--strategy-file", help="path to a strategy file (e.g. a run's best_strategy.py)")
    p.add_argument("--data", help="CSV/Parquet file, folder of per-symbol files, or catalog (overrides the config)")
    p.add_argument("--config", help="TOML run config (default: built-in defaults)")
    p.add_argument("--split", choices=SPLITS, default="train", help="period to test (default: train)")
    p.add_argument("--open-holdout", action="store_true",
                   help="with --split holdout: look at the sealed holdout anyway; the look is written to "
                   "HOLDOUT_LEDGER.jsonl (and to the run's ledger when the strategy file is a run's)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.set_defaults(func=_backtest)


def _strategy_code(args: argparse.Namespace) -> tuple[str, str]:
    from alpha_evolve.strategies import seed_source

    if args.strategy_file:
        from alpha_evolve.files import read_text_file

        path = Path(args.strategy_file)
        code = read_text_file(path, what="strategy file", expected="a Python strategy file", error=UserError)
        return code, str(path)
    name = args.strategy or "momentum"
    return seed_source(name), name


def run_backtest_command(config: RunConfig, code: str, split: str, *, open_holdout: bool = False,
                         strategy_path: str | Path | None = None, via: str = "api") -> dict[str, Any]:
    """Evaluate ``code`` on ``split`` and return the JSON-ready result (also used by tests and the dashboard).

    The holdout goes through the door (``holdout_door``): refused without ``open_holdout``, ledgered with it —
    in the run's ledger when ``strategy_path`` is a run's file, and in the base folder's ``HOLDOUT_LEDGER.jsonl``.
    """
    import pandas as pd

    from alpha_evolve.data import DataSplits
    from alpha_evolve.evaluation_setup import backtest_settings, build_evaluator, load_run_data, market_description
    from alpha_evolve.holdout_door import default_ledger_dir, record_look, refuse, run_dir_of

    if split == "holdout" and not open_holdout:
        raise refuse(f"backtest --split holdout ({via})")
    data = load_run_data(config)
    if split == "all":
        # One contiguous period from the first train bar to the last validation bar; never the holdout.
        merged = {
            s: DataSplits(train=pd.concat([d.train, d.validation]), validation=d.validation, holdout=d.holdout)
            for s, d in data.splits.items()
        }
        data = type(data)(data.dataset, merged)
    eval_split = "train" if split == "all" else split
    settings = backtest_settings(config, screen_fraction=0.0)
    with build_evaluator(config, data=data, include=(eval_split,), max_concurrent=1, settings=settings,
                         unseal=split == "holdout") as ev:
        result = ev.evaluate(code, split=eval_split, stage="full")
        instruments = {symbol: spec.to_dict() for symbol, spec in getattr(ev, "instruments", {}).items()}
    info = data.describe()
    look = None
    if split == "holdout":
        run = run_dir_of(strategy_path)
        look = record_look(code=code, via=via, metrics=result.metrics, status=result.status, run_dir=run,
                           ledger_dir=None if run else default_ledger_dir(config),
                           extra={"strategy": str(strategy_path) if strategy_path else None,
                                  "data_hash": info.get("hash")})
    return {
        "holdout_look": look,
        "status": result.status,
        "error": result.error,
        "stage": result.stage,
        "split": split,
        "bars": result.bars,
        "metrics": {m: result.metrics.get(m) for m in METRIC_NAMES} if result.ok else {},
        "worst_metrics": {k: v for k, v in result.metrics.items() if k.startswith("worst_")} if result.ok else {},
        "per_instrument": result.per_instrument,
        "elapsed_seconds": round(result.elapsed, 4),
        # What the strategy printed: captured in its confined process (bounded), never on this command's stdout.
        "log": result.log,
        "data": {k: info[k] for k in ("source", "synthetic", "symbols", "start", "end", "interval", "hash")},
        "periods": {s: (d["train"] if split == "all" else d.get(eval_split)) for s, d in info["splits"].items()},
        "market": market_description(settings, instruments),
        "warnings": list(result.warnings),
    }


def _backtest(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.data:
        if not Path(args.data).exists():
            raise UserError(f"{args.data}: data file or folder not found")
        config = config.with_updates({"backtest.data": args.data}, source=args.config or "--data")
    code, label = _strategy_code(args)
    if args.split == "holdout" and not args.open_holdout:
        raise UserError(str(_refusal()))
    out = run_backtest_command(config, code, args.split, open_holdout=args.open_holdout,
                               strategy_path=args.strategy_file, via="backtest")
    out["strategy"] = label
    if args.json:
        print(json.dumps(out))
        return 0 if out["status"] == "ok" else 1
    console = Console()
    if out["status"] != "ok":
        from alpha_evolve.cli import fail

        return fail(f"{label}: {out['status']} failure at the {out['stage']} stage: {out['error']}", 1)
    for warning in out["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    table = Table(title=f"{label} on {out['split']} ({out['bars']} bars, {out['data']['source']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in out["metrics"].items():
        pct = name in ("MaxDD", "CAGR", "TotalReturn", "AnnVol", "WinRate", "Exposure")
        table.add_row(name, f"{value:.2%}" if pct else f"{value:.3f}" if name != "Trades" else f"{value:.0f}")
    console.print(table)
    look = out.get("holdout_look")
    if look:
        where = look.get("run_dir") or "the base folder's HOLDOUT_LEDGER.jsonl"
        console.print(f"holdout look recorded (program {look['program_hash'][:12]}, via {look['via']}) in {where}")
    return 0


def _refusal() -> Exception:
    from alpha_evolve.holdout_door import refuse

    return refuse("backtest --split holdout")
