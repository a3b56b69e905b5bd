"""The one door to the holdout: every look is refused unless asked for explicitly, and every look is ledgered.

A holdout figure is only worth something if nobody chose anything by it; counting the looks is what makes that
checkable. Every path that can evaluate a program on the holdout — ``alpha-evolve holdout``, ``alpha-evolve
backtest --split holdout --open-holdout``, ``run_backtest_command`` (used by scripts and the dashboard) and
``evaluation_setup.build_evaluator`` — goes through this module:

* without an explicit flag the request is refused with one line (``HoldoutRefused``);
* with it, the look is appended (with the program's SHA-256, who, when, through which path, and its Sharpe) to
  ``HOLDOUT_LEDGER.jsonl`` of the runs' base folder and, when the program belongs to a run, to the run's
  ``holdout_ledger.jsonl`` and the run's trial ledger (``programs.sqlite``, period ``holdout``), and the run's
  ``SUMMARY.json`` ``holdout.openings`` counts it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alpha_evolve.files import append_jsonl, read_json, read_jsonl

logger = logging.getLogger("alpha_evolve.holdout_door")

RUN_LEDGER = "holdout_ledger.jsonl"
GLOBAL_LEDGER = "HOLDOUT_LEDGER.jsonl"
SUMMARY_NAME = "SUMMARY.json"


class HoldoutRefused(ValueError):
    """A holdout evaluation was asked for without the explicit flag that records it."""


def refuse(where: str) -> HoldoutRefused:
    from alpha_evolve.command_hint import cli

    return HoldoutRefused(
        f"{where}: the holdout is sealed; open a run's holdout once with `{cli('holdout', 'RUN_DIR')}`, or pass "
        "--open-holdout (open_holdout=True) to look anyway — the look is written to HOLDOUT_LEDGER.jsonl"
    )


def run_dir_of(strategy_path: str | os.PathLike[str] | None) -> Path | None:
    """The pipeline run a strategy file belongs to (its folder holds SUMMARY.json), if any."""
    if not strategy_path:
        return None
    folder = Path(strategy_path).resolve().parent
    return folder if (folder / SUMMARY_NAME).is_file() else None


def looks(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(Path(run_dir) / RUN_LEDGER) if isinstance(r, dict)]


def record_look(*, code: str, via: str, metrics: Mapping[str, Any] | None, status: str = "ok",
                run_dir: str | os.PathLike[str] | None = None, ledger_dir: str | os.PathLike[str] | None = None,
                program_id: int | None = None, forced: bool = False, who: str | None = None,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Append one look to every ledger it belongs in; returns the ledger entry (with ``opening`` = its number)."""
    from alpha_evolve.trials import program_hash

    run = Path(run_dir).resolve() if run_dir else None
    number = len(looks(run)) + 1 if run else None
    sharpe = (metrics or {}).get("Sharpe") if status == "ok" else None
    entry: dict[str, Any] = {
        "opened_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "via": via,
        "program_hash": program_hash(code),
        "program_id": program_id,
        "run_dir": str(run) if run else None,
        "opening": number,
        "forced": bool(forced),
        "by": who or os.environ.get("USER", "unknown"),
        "status": status,
        "Sharpe": sharpe,
        **dict(extra or {}),
    }
    targets = []
    if run is not None:
        targets.append(run / RUN_LEDGER)
        targets.append(run.parent / GLOBAL_LEDGER)
    if ledger_dir is not None:
        Path(ledger_dir).mkdir(parents=True, exist_ok=True)
        path = Path(ledger_dir).resolve() / GLOBAL_LEDGER
        if path not in targets:
            targets.append(path)
    for path in targets:
        append_jsonl(path, entry)
    if run is not None:
        _record_in_run(run, code, entry, metrics or {}, status)
    logger.warning("holdout look via %s (program %s, %s)", via, entry["program_hash"][:12], run or ledger_dir)
    return entry


def _record_in_run(run: Path, code: str, entry: Mapping[str, Any], metrics: Mapping[str, Any], status: str) -> None:
    """The run's trial ledger and SUMMARY.json count the look too."""
    from alpha_evolve.files import atomic_write_json

    summary_path = run / SUMMARY_NAME
    summary: Any = None
    try:
        summary = read_json(summary_path)
    except Exception:  # a run without a readable summary still has its jsonl ledger
        summary = None
    if isinstance(summary, dict):
        holdout = dict(summary.get("holdout") or {})
        holdout["sealed"] = False
        holdout["openings"] = len(looks(run))
        holdout["ledger"] = RUN_LEDGER
        summary["holdout"] = holdout
        atomic_write_json(summary_path, summary)
    db = run / "programs.sqlite"
    if db.is_file() and isinstance(summary, dict):
        from alpha_evolve.store import ProgramStore
        from alpha_evolve.trials import trial_row

        with ProgramStore(db, check=False) as store:
            row = trial_row(code, "holdout", metrics=metrics, status=status, program_id=entry.get("program_id"),
                            role="look", via=str(entry.get("via")))
            store.record_trials(str(summary.get("experiment") or "unknown"), [row])


def default_ledger_dir(config: Any) -> Path:
    """Where a look at a program outside any run is ledgered: the configured base folder of runs."""
    from alpha_evolve.config import resolve_base_dir

    return resolve_base_dir(getattr(config, "pipeline", None)).absolute()
