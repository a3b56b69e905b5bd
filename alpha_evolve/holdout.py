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


def result_metrics(result: Any) -> dict[str, float]:
    from alpha_evolve.references import metrics_of

    return metrics_of(result)


def _reference_codes(config: Any, summary: dict[str, Any]) -> dict[str, str]:
    """The seed (when its source can still be read) and, on the planted market, the oracle: compared on the holdout."""
    from alpha_evolve.controller import load_seed
    from alpha_evolve.references import ORACLE, oracle_applies
    from alpha_evolve.strategies import seed_source

    codes: dict[str, str] = {}
    try:
        codes["seed"] = load_seed(config.evolution.seed_strategy)[1]
    except ValueError as exc:  # a seed file moved or edited since the run: report the rest
        logger.warning("the seed's holdout figures are left out: %s", exc)
    if oracle_applies(summary.get("data")):
        codes[ORACLE] = seed_source(ORACLE)
    return codes


def _reference_figures(best: dict[str, float], bh: dict[str, float], others: dict[str, Any]) -> dict[str, Any]:
    """holdout.json fields: the seed's and oracle's metrics and one Sharpe row with the winner and buy-and-hold."""
    from alpha_evolve.references import gap_closed, sharpe_row

    seed = result_metrics(others.get("seed"))
    row = {"winner": best, "seed": seed, "buy_and_hold": bh}
    out: dict[str, Any] = {"seed_metrics": seed}
    if "oracle" in others:
        row["oracle"] = out["oracle_metrics"] = result_metrics(others["oracle"])
    out["sharpe"] = sharpe_row(row)
    if "oracle" in others:
        s = out["sharpe"]
        out["gap_closed"] = gap_closed(s["winner"], s["seed"], s["oracle"])
    return out


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
    references = _reference_codes(config, summary)
    with build_evaluator(config, data=data, include=("holdout",), max_concurrent=2) as evaluator:
        best, bh, *others = evaluator.evaluate_many([code, seed_source("buy_and_hold"), *references.values()],
                                                    split="holdout", stage="full")
    reference_results = dict(zip(references, others, strict=True))
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
        **_reference_figures(result_metrics(best), result_metrics(bh), reference_results),
        "validation_metrics": summary.get("best_metrics", {}),
    }
    atomic_write_json(run / "holdout.json", result)
    entry = {"run_dir": str(run), "opened_at": opened_at, "opening": number, "forced": bool(previous),
             "by": who or os.environ.get("USER", "unknown"), "Sharpe": result["metrics"].get("Sharpe")}
    append_jsonl(run / LEDGER_NAME, entry)
    append_jsonl(run.parent / GLOBAL_LEDGER_NAME, entry)
    summary["holdout"] = {"sealed": False, "openings": number, "result": "holdout.json",
                          "sharpe": result["sharpe"]}
    atomic_write_json(summary_path, summary)
    logger.warning("holdout of %s opened (look #%d)", run, number)
    return result
