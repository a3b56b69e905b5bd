"""Session-level honesty: every trial of every pipeline run of a session counted, and the final best confirmed
on data the session never ranked on.

A self-evolution session optimises the validation figure over many pipeline runs, so its best is the maximum of
many validation comparisons. This module keeps the session's trial ledger (``session_trials.jsonl`` in the
session's artifact folder: every row of every run's ledger, tagged with the run), deflates the session's best
with the session-level count and Sharpe variance (``trials.deflate_winner``; the reported DSR never rises as the
session compares more runs), and, when the session completes, opens the sealed holdout of the best run **once**
through the holdout door (``holdout.open_holdout``, ledgered) — the confirmation figure is the first and only
look at data nothing in the session was chosen on. See docs/honest-selection.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alpha_evolve.files import append_jsonl, read_json, read_jsonl
from alpha_evolve.values import one_line

logger = logging.getLogger("alpha_evolve.session_trials")

LEDGER_NAME = "session_trials.jsonl"


def _summary(run_dir: str | Path | None) -> dict[str, Any]:
    if not run_dir:
        return {}
    try:
        data = read_json(Path(run_dir) / "SUMMARY.json")
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


def crowned(run_dir: str | Path | None) -> bool:
    """Whether the run crowned a program (False when its winner failed the minimum-trades rule)."""
    best = _summary(run_dir).get("best_program") or {}
    return bool(best.get("crowned", True))


def absorb_run(artifact_dir: str | Path, iteration: int, run_dir: str | Path | None) -> int:
    """Copy a finished run's trial ledger into the session's, once per run; returns the rows added."""
    if not run_dir:
        return 0
    ledger = Path(artifact_dir) / LEDGER_NAME
    run = str(Path(run_dir).resolve())
    if any(isinstance(r, dict) and r.get("run_dir") == run for r in read_jsonl(ledger)):
        return 0
    db = Path(run) / "programs.sqlite"
    experiment = _summary(run).get("experiment")
    if not db.is_file() or not experiment:
        return 0
    from alpha_evolve.store import ProgramStore

    try:
        with ProgramStore(db, create=False, check=False) as store:
            rows = store.trials(str(experiment))
    except Exception as exc:  # a damaged run store loses its rows, not the session
        logger.warning("session ledger: cannot read the trials of %s: %s", run, exc)
        return 0
    for row in rows:
        append_jsonl(ledger, {**{k: row[k] for k in row if k != "id"}, "run_dir": run, "iteration": iteration})
    return len(rows)


def absorb_history(artifact_dir: str | Path, history: list[dict[str, Any]]) -> int:
    """Absorb every recorded run not yet in the session's ledger (a crash between recording an iteration and
    counting its trials must not lose them); returns the rows added."""
    done = {r.get("run_dir") for r in session_rows(artifact_dir)}
    added = 0
    for record in history:
        run_dir = record.get("run_dir")
        if run_dir and str(Path(run_dir).resolve()) not in done:
            added += absorb_run(artifact_dir, int(record.get("iteration", -1)), run_dir)
    return added


def session_rows(artifact_dir: str | Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(Path(artifact_dir) / LEDGER_NAME) if isinstance(r, dict)]


def session_selection(artifact_dir: str | Path, best: Mapping[str, Any] | None,
                      previous: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The session best deflated with every trial of the session (None before a best exists)."""
    if not best or not best.get("run_dir"):
        return None
    from alpha_evolve.trials import deflate_winner

    rows = session_rows(artifact_dir)
    summary = _summary(best.get("run_dir"))
    metrics = dict(best.get("metrics") or summary.get("best_metrics") or {})
    bars = {p: int((info.get(p) or {}).get("bars") or 0) for info in ((summary.get("data") or {}).get("splits")
                                                                      or {}).values() for p in ("train", "validation")}
    ppy = float(_bars_per_year(summary))

    def deflate(subset: list[dict[str, Any]]) -> dict[str, Any]:
        train_sharpes = [float(r["sharpe"]) for r in subset
                         if r.get("period") == "train" and r.get("sharpe") is not None]
        return deflate_winner(
            subset, validation_sharpe=float(metrics.get("Sharpe", 0.0) or 0.0),
            validation_obs=bars.get("validation", 0), validation_returns=[],
            train_sharpe=max(train_sharpes, default=0.0), train_obs=bars.get("train", 0), periods_per_year=ppy,
        ).to_dict()

    out = deflate(rows)
    # Nested rule at session level: the session after iteration t compared a subset of what it compares now, so
    # its reported DSR is the smallest over every state so far — recomputed from the ledger for every iteration
    # since this best was found (a summary lost in a crash cannot lift it), and the previous report for the
    # states before (earlier bests).
    current = out["deflated_sharpe"]
    since = best.get("iteration")
    stamps = sorted({int(r["iteration"]) for r in rows if isinstance(r.get("iteration"), int)})
    floors = [current]
    for t in stamps[:-1]:
        if isinstance(since, int) and t < since:
            continue
        floors.append(deflate([r for r in rows if not isinstance(r.get("iteration"), int) or r["iteration"] <= t])
                      ["deflated_sharpe"])
    prev = (previous or {}).get("deflated_sharpe")
    if isinstance(prev, int | float):
        floors.append(float(prev))
    out["deflated_sharpe"] = round(min(floors), 6)
    out["deflated_sharpe_current"] = current
    out["runs"] = len({r.get("run_dir") for r in rows})
    out["ledger"] = LEDGER_NAME
    out["best_run_dir"] = best.get("run_dir")
    out["note"] = ("session-level DSR: the session best's validation Sharpe against the best luck gives among every "
                   "distinct program compared on validation in the session's runs; confirmed on the holdout at the "
                   "end")
    return out


def _bars_per_year(summary: Mapping[str, Any]) -> float:
    """Bars per year of the run's data, from its validation span (252 when unknown)."""
    import pandas as pd

    for info in ((summary.get("data") or {}).get("splits") or {}).values():
        part = info.get("validation") or {}
        try:
            span = (pd.Timestamp(part["end"]) - pd.Timestamp(part["start"])).total_seconds() / (365.25 * 86400)
            bars = int(part["bars"])
        except (KeyError, TypeError, ValueError):
            continue
        if span > 0 and bars > 1:
            return (bars - 1) / span
    return 252.0


def confirm_on_holdout(best: Mapping[str, Any] | None) -> dict[str, Any]:
    """Open the best run's sealed holdout once (ledgered) and report the confirmation figure."""
    if not best or not best.get("run_dir"):
        return {"status": "skipped", "reason": "the session has no crowned best"}
    from alpha_evolve.holdout import HoldoutError, open_holdout, openings

    run = Path(str(best["run_dir"]))
    previous = openings(run) if run.is_dir() else []
    if previous:
        return {"status": "already_opened", "run_dir": str(run), "openings": len(previous),
                "reason": "the holdout of this run was opened before; the earlier look stands (see holdout.json)"}
    try:
        result = open_holdout(run, who="self-evolution session")
    except (HoldoutError, OSError, ValueError, LookupError) as exc:
        return {"status": "failed", "run_dir": str(run), "reason": one_line(str(exc))}
    verdict = result.get("verdict") or {}
    return {
        "status": "confirmed",
        "run_dir": str(run),
        "holdout_metrics": result.get("metrics"),
        "seed_metrics": result.get("seed_metrics"),
        "buy_and_hold_metrics": result.get("buy_and_hold_metrics"),
        "statement": verdict.get("statement"),
        "reported_sharpe": verdict.get("reported_sharpe"),
        "holdout_sharpe": verdict.get("holdout_sharpe"),
        "optimism": verdict.get("optimism"),
    }
