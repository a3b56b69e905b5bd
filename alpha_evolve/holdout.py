"""The sealed holdout: opened deliberately, once per run, and every look written to a ledger.

A holdout figure is only honest if nobody tuned against it. Nothing in a run touches the holdout bars; this
module rebuilds the run's data from its config snapshot, refuses if the data changed since the run (a
different holdout would be a different experiment), evaluates ``best_strategy.py`` once, and appends the
opening to two ledgers — the run's own and the base folder's — so that every look is counted and visible.
Looking again needs ``force`` and is counted too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alpha_evolve.config import METRIC_NAMES, load_config
from alpha_evolve.files import atomic_write_json, read_json
from alpha_evolve.holdout_door import GLOBAL_LEDGER, RUN_LEDGER, looks, record_look
from alpha_evolve.pipeline import SUMMARY_NAME, PipelineError

logger = logging.getLogger("alpha_evolve.holdout")

LEDGER_NAME = RUN_LEDGER
GLOBAL_LEDGER_NAME = GLOBAL_LEDGER


class HoldoutError(PipelineError):
    """The holdout cannot (or should not) be opened; one line saying why."""


def result_metrics(result: Any) -> dict[str, float]:
    from alpha_evolve.references import metrics_of

    return metrics_of(result)


def _reference_figures(best: dict[str, float], bh: dict[str, float], others: dict[str, Any]) -> dict[str, Any]:
    """holdout.json fields: one Sharpe row (winner, seed, buy-and-hold, oracle) and the oracle's metrics."""
    from alpha_evolve.references import gap_closed, sharpe_row

    row = {"winner": best, "seed": result_metrics(others.get("seed")), "buy_and_hold": bh}
    out: dict[str, Any] = {}
    if "oracle" in others:
        row["oracle"] = out["oracle_metrics"] = result_metrics(others["oracle"])
    out["sharpe"] = sharpe_row(row)
    if "oracle" in others:
        s = out["sharpe"]
        out["gap_closed"] = gap_closed(s["winner"], s["seed"], s["oracle"])
    return out


def openings(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every look at this run's holdout, through any door (``holdout``, ``backtest --open-holdout``, the API)."""
    return looks(run_dir)


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
    from alpha_evolve.references import ORACLE, oracle_applies
    from alpha_evolve.strategies import seed_source

    data = load_run_data(config)
    expected_hash = (summary.get("data") or {}).get("hash")
    if expected_hash and data.dataset.content_hash != expected_hash:
        raise HoldoutError(
            f"{run}: the data differs from the run's (hash {data.dataset.content_hash[:12]} != "
            f"{expected_hash[:12]}); a holdout on other data would not test this run"
        )
    code = code_path.read_text(encoding="utf-8")
    seed_code = _seed_code(run, summary)
    references = {"seed": seed_code} if seed_code else {}
    if oracle_applies(summary.get("data")):
        references[ORACLE] = seed_source(ORACLE)
    codes = [code, seed_source("buy_and_hold"), *references.values()]
    with build_evaluator(config, data=data, include=("holdout",), max_concurrent=2, unseal=True) as evaluator:
        results = evaluator.evaluate_many(codes, split="holdout", stage="full")
    best, bh = results[0], results[1]
    others = dict(zip(references, results[2:], strict=True))
    seed = others.get("seed")
    program_id = (summary.get("best_program") or {}).get("id")
    entry = record_look(code=code, via="holdout", metrics=best.metrics, status=best.status, run_dir=run,
                        program_id=program_id, forced=bool(previous), who=who)
    if not best.ok:
        raise HoldoutError(f"{run}: the best program failed on the holdout ({best.status}: {best.error})")
    result = {
        "schema_version": 1,
        "run_dir": str(run),
        "opened_at": entry["opened_at"],
        "opening": entry["opening"],
        "forced": bool(previous),
        "program_id": program_id,
        "program_hash": entry["program_hash"],
        "split": "holdout",
        "period": {s: info.get("holdout") for s, info in data.describe()["splits"].items()},
        "bars": best.bars,
        "metrics": {m: best.metrics.get(m, 0.0) for m in METRIC_NAMES},
        "per_instrument": best.per_instrument,
        "buy_and_hold_metrics": {m: bh.metrics.get(m, 0.0) for m in METRIC_NAMES} if bh.ok else {},
        "seed_metrics": {m: seed.metrics.get(m, 0.0) for m in METRIC_NAMES} if seed is not None and seed.ok else {},
        **_reference_figures(result_metrics(best), result_metrics(bh), others),
        "validation_metrics": summary.get("best_metrics", {}),
        "warnings": [f"best: {w}" for w in best.warnings] + [f"buy_and_hold: {w}" for w in bh.warnings],
    }
    result["verdict"] = _holdout_verdict(summary, result)
    atomic_write_json(run / "holdout.json", result)
    summary = read_json(summary_path)  # record_look updated the count
    summary["holdout"] = {**(summary.get("holdout") or {}), "sealed": False, "result": "holdout.json",
                          "verdict": result["verdict"], "sharpe": result["sharpe"]}
    summary["figures"] = [f for f in summary.get("figures") or [] if f.get("period") != "holdout"]
    summary["figures"] += _holdout_figures(result, program_id)
    atomic_write_json(summary_path, summary)
    logger.info("holdout of %s opened (look #%d)", run, entry["opening"])
    return result


def _holdout_figures(result: dict[str, Any], program_id: Any) -> list[dict[str, Any]]:
    """The holdout figures with buy-and-hold's on the same period beside them, for SUMMARY.json ``figures``."""
    from alpha_evolve.crowning import figure

    bh = result.get("buy_and_hold_metrics") or {}
    out = [figure("winner", "holdout", result["metrics"], bh, program_id=program_id)]
    if result.get("seed_metrics"):
        out.append(figure("seed", "holdout", result["seed_metrics"], bh))
    return out


def _seed_code(run: Path, summary: dict[str, Any]) -> str | None:
    """The seed the run evolved from, as its store recorded it (a seed file may have changed since)."""
    db = run / "programs.sqlite"
    if not db.is_file():
        return None
    from alpha_evolve.store import ProgramStore

    try:
        with ProgramStore(db, create=False, check=False) as store:
            seed = store.seed(str(summary.get("experiment") or ""))
    except Exception:
        return None
    return seed.code if seed is not None else None


def _holdout_verdict(summary: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The run's verdict restated on the holdout, with the gap between the reported and the holdout figure."""
    from alpha_evolve.crowning import verdict

    objective = (summary.get("objective") or {}).get("metric") or "Sharpe"
    best = summary.get("best_program") or {}
    is_seed = bool(best.get("is_seed"))
    crowned = best.get("crowned", True)
    evolved = None if is_seed or not crowned else result["metrics"]
    basis = ("the crowned program; the holdout took no part in choosing it" if evolved is not None else
             "the run crowned the seed or nothing" if is_seed or not crowned else "")
    out = verdict(objective, period="holdout", evolved=evolved, evolved_id=best.get("id"),
                  seed=result.get("seed_metrics") or {}, bh=result.get("buy_and_hold_metrics") or {}, basis=basis)
    reported = float((summary.get("best_metrics") or {}).get("Sharpe", 0.0) or 0.0)
    deflated = (summary.get("overfitting") or {}).get("sharpe_validation_deflated")
    holdout_sharpe = float(result["metrics"].get("Sharpe", 0.0) or 0.0)
    out["reported_sharpe"] = reported
    out["reported_sharpe_deflated"] = deflated
    out["holdout_sharpe"] = holdout_sharpe
    out["optimism"] = reported - holdout_sharpe
    return out
