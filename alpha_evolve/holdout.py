"""The sealed holdout: opened deliberately, once per run, and every look written to a ledger.

A holdout figure is only honest if nobody tuned against it. Nothing in a run touches the holdout bars; this
module rebuilds the run's data from its config snapshot, refuses if the data changed since the run (a
different holdout would be a different experiment), evaluates ``best_strategy.py`` once, and appends the
opening to two ledgers — the run's own and the base folder's — so that every look is counted and visible.
Looking again needs ``force`` and is counted too.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alpha_evolve.config import METRIC_NAMES, load_config
from alpha_evolve.files import append_jsonl, atomic_write_json, read_json, read_jsonl
from alpha_evolve.pipeline import SUMMARY_NAME, PipelineError

logger = logging.getLogger("alpha_evolve.holdout")

LEDGER_NAME = "holdout_ledger.jsonl"
GLOBAL_LEDGER_NAME = "HOLDOUT_LEDGER.jsonl"


class HoldoutError(PipelineError):
    """The holdout cannot (or should not) be opened; one line saying why."""


def openings(run_dir: str | Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(Path(run_dir) / LEDGER_NAME) if isinstance(r, dict)]


def open_holdout(run_dir: str | Path, *, force: bool = False, who: str | None = None) -> dict[str, Any]:
    """Evaluate the run's best program on the holdout, write ``holdout.json`` and record the opening."""
    run = Path(run_dir)
    summary_path = run / SUMMARY_NAME
    if not summary_path.is_file():
        raise HoldoutError(f"{run}: not a pipeline run directory (no {SUMMARY_NAME})")
    summary = read_json(summary_path)
    if summary.get("status") != "ok":
        raise HoldoutError(f"{run}: the run failed ({summary.get('reason')}); there is no best program to test")
    previous = openings(run)
    if previous and not force:
        first = previous[0].get("opened_at", "?")
        raise HoldoutError(
            f"{run}: the holdout was already opened {len(previous)} time(s), first at {first} (see holdout.json); "
            "pass --force to look again — the look will be counted in the ledger"
        )
    code_path = run / "best_strategy.py"
    config_path = run / (summary.get("config_file") or "config.toml")
    if not code_path.is_file() or not config_path.is_file():
        raise HoldoutError(f"{run}: best_strategy.py or the config snapshot is missing")
    config = load_config(config_path)

    from alpha_evolve.evaluation_setup import build_evaluator, load_run_data
    from alpha_evolve.strategies import seed_source

    data = load_run_data(config)
    expected_hash = (summary.get("data") or {}).get("hash")
    if expected_hash and data.dataset.content_hash != expected_hash:
        raise HoldoutError(
            f"{run}: the data differs from the run's (hash {data.dataset.content_hash[:12]} != "
            f"{expected_hash[:12]}); a holdout on other data would not test this run"
        )
    code = code_path.read_text(encoding="utf-8")
    with build_evaluator(config, data=data, include=("holdout",), max_concurrent=2) as evaluator:
        best, bh = evaluator.evaluate_many([code, seed_source("buy_and_hold")], split="holdout", stage="full")
    if not best.ok:
        raise HoldoutError(f"{run}: the best program failed on the holdout ({best.status}: {best.error})")
    opened_at = datetime.now(UTC).isoformat(timespec="seconds")
    number = len(previous) + 1
    result = {
        "schema_version": 1,
        "run_dir": str(run),
        "opened_at": opened_at,
        "opening": number,
        "forced": bool(previous),
        "program_id": (summary.get("best_program") or {}).get("id"),
        "split": "holdout",
        "period": {s: info.get("holdout") for s, info in data.describe()["splits"].items()},
        "bars": best.bars,
        "metrics": {m: best.metrics.get(m, 0.0) for m in METRIC_NAMES},
        "per_instrument": best.per_instrument,
        "buy_and_hold_metrics": {m: bh.metrics.get(m, 0.0) for m in METRIC_NAMES} if bh.ok else {},
        "validation_metrics": summary.get("best_metrics", {}),
        "warnings": [f"best: {w}" for w in best.warnings] + [f"buy_and_hold: {w}" for w in bh.warnings],
    }
    atomic_write_json(run / "holdout.json", result)
    entry = {"run_dir": str(run), "opened_at": opened_at, "opening": number, "forced": bool(previous),
             "by": who or os.environ.get("USER", "unknown"), "Sharpe": result["metrics"].get("Sharpe")}
    append_jsonl(run / LEDGER_NAME, entry)
    append_jsonl(run.parent / GLOBAL_LEDGER_NAME, entry)
    summary["holdout"] = {"sealed": False, "openings": number, "result": "holdout.json"}
    atomic_write_json(summary_path, summary)
    logger.warning("holdout of %s opened (look #%d)", run, number)
    return result
