"""What the dashboard shows of pipeline runs (run directories with SUMMARY.json) and evolution experiments
(a run's ``programs.sqlite``).

A browser names a run by its path, so every read goes through ``RunIndex.resolve``: only run directories the
registry recorded or that sit directly under a configured runs folder are served — never an arbitrary file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from alpha_evolve.values import finite_or_none

logger = logging.getLogger("alpha_evolve.dashboard.runs")

MAX_CURVE_POINTS = 800
MAX_CODE_CHARS = 200_000
MAX_LINEAGE = 200


class RunNotFound(LookupError):
    """The path is not a run this dashboard serves; one line."""


class _Unreadable(OSError):
    """A run file that is not a regular file (a FIFO, a device link) or too big; read without blocking."""


_MAX_RUN_FILE_BYTES = 64 * 1024 * 1024


def _read_bytes(path: Path) -> bytes:
    from alpha_evolve.files import read_regular_file

    return read_regular_file(path, max_bytes=_MAX_RUN_FILE_BYTES, what="file", error=_Unreadable)


def _read_json(path: Path) -> Any:
    return orjson.loads(_read_bytes(path))


class RunIndex:
    """Known run directories: those recorded in registry iterations, plus ``run_*`` folders under ``roots``."""

    def __init__(self, roots: Sequence[str | os.PathLike[str]], recorded: Iterable[str | None]) -> None:
        self.roots = [Path(r) for r in roots]
        self._recorded = recorded

    def known(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for raw in self._recorded:
            if raw:
                p = Path(raw).resolve()
                if (p / "SUMMARY.json").is_file():
                    found[str(p)] = p
        for root in self.roots:
            with contextlib.suppress(OSError):
                for child in root.iterdir():
                    if child.name.startswith("run_") and (child / "SUMMARY.json").is_file():
                        p = child.resolve()
                        found[str(p)] = p
        return found

    def placements(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """Where candidates run: ``evaluation_nodes.json`` of runs under the roots and beside recorded runs (a
        session's ``pipeline_runs/``), running ones included (they have no SUMMARY.json yet); newest first."""
        from alpha_evolve.evaluation_backend import NODES_FILE

        folders = {r.resolve() for r in self.roots}
        for raw in self._recorded:
            if raw:
                folders.add(Path(raw).resolve().parent)
        found: list[tuple[float, Path]] = []
        for folder in folders:
            with contextlib.suppress(OSError):
                for child in folder.iterdir():
                    status = child / NODES_FILE
                    if child.name.startswith("run_") and status.is_file():
                        found.append((status.stat().st_mtime, child))
        out = []
        for _, run_dir in sorted(found, reverse=True)[:limit]:
            try:
                data = _read_json(run_dir / NODES_FILE)
            except (OSError, orjson.JSONDecodeError, _Unreadable):
                continue
            if isinstance(data, dict):
                running = not data.get("closed") and not (run_dir / "SUMMARY.json").is_file()
                out.append({"run": run_dir.name, "path": str(run_dir), "running": running,
                            "finished": (run_dir / "SUMMARY.json").is_file(), **data})
        return out

    def resolve(self, path: str | None) -> Path:
        if not path:
            raise RunNotFound("missing ?path= (a run directory)")
        p = Path(path).resolve()
        if str(p) not in self.known():
            raise RunNotFound(f"{path}: not a pipeline run known to this dashboard")
        return p


def run_headline(run_dir: Path) -> dict[str, Any]:
    try:
        s = _read_json(run_dir / "SUMMARY.json")
    except (OSError, orjson.JSONDecodeError) as exc:
        return {"path": str(run_dir), "name": run_dir.name, "status": "unreadable", "reason": str(exc)}
    objective = (s.get("objective") or {}).get("metric") or "Sharpe"
    best = s.get("best_metrics") or {}
    return {
        "path": str(run_dir),
        "name": run_dir.name,
        "status": s.get("status"),
        "reason": s.get("reason"),
        "experiment": s.get("experiment"),
        "started_at": s.get("started_at"),
        "elapsed_seconds": s.get("elapsed_seconds"),
        "objective": objective,
        "objective_value": best.get(objective),
        "has_programs": (run_dir / "programs.sqlite").is_file(),
        "holdout_openings": _holdout_looks(run_dir),
        "crowned": (s.get("best_program") or {}).get("crowned"),
        "verdict": (s.get("verdict") or {}).get("statement"),
    }


def _holdout_looks(run_dir: Path) -> int:
    """Looks at the run's holdout through any door, from its ledger (SUMMARY.json may lag a crashed write)."""
    from alpha_evolve.holdout_door import looks

    with contextlib.suppress(OSError, ValueError):
        return len(looks(run_dir))
    return 0


def run_detail(run_dir: Path) -> dict[str, Any]:
    summary = _read_json(run_dir / "SUMMARY.json")
    top: Any = []
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        top = _read_json(run_dir / "top_programs.json")
    code = None
    with contextlib.suppress(OSError, UnicodeDecodeError):
        code = _read_bytes(run_dir / "best_strategy.py").decode("utf-8")[:MAX_CODE_CHARS]
    return {
        "headline": run_headline(run_dir),
        "summary": summary,
        "top_programs": top if isinstance(top, list) else [],
        "best_code": code,
        "has_equity": (run_dir / "equity_curves.csv").is_file(),
        "has_programs": (run_dir / "programs.sqlite").is_file(),
    }


def _clean(values: Iterable[Any]) -> list[float | None]:
    return [finite_or_none(v) for v in values]


def equity_curves(run_dir: Path) -> dict[str, Any]:
    """``equity_curves.csv`` as chart series, thinned to at most ``MAX_CURVE_POINTS`` points (last one kept)."""
    import pandas as pd

    path = run_dir / "equity_curves.csv"
    if not path.is_file():
        raise RunNotFound(f"{run_dir.name}: no equity_curves.csv")
    frame = pd.read_csv(path, index_col=0)
    n = len(frame)
    if n > MAX_CURVE_POINTS:
        step = math.ceil(n / MAX_CURVE_POINTS)
        idx = list(range(0, n, step))
        if idx[-1] != n - 1:
            idx.append(n - 1)
        frame = frame.iloc[idx]
    stamps = pd.to_datetime(frame.index, utc=True, errors="coerce")
    times = [None if pd.isna(t) else int(t.value // 1_000_000) for t in stamps]
    return {
        "timestamps": times,
        "series": [{"name": str(col), "values": _clean(frame[col].astype(float))} for col in frame.columns],
        "points": n,
    }


def evolution(run_dir: Path) -> dict[str, Any]:
    """For each experiment in ``programs.sqlite``: fitness per program over iterations, and the best's lineage."""
    from alpha_evolve.store import ProgramStore, StoreError

    path = run_dir / "programs.sqlite"
    if not path.is_file():
        raise RunNotFound(f"{run_dir.name}: no programs.sqlite")
    try:
        store = ProgramStore(path, create=False, check=False)
    except StoreError as exc:
        raise RunNotFound(str(exc)) from None
    try:
        out = []
        for exp in store.list_experiments():
            points = store.fitness_points(exp.name)
            top = store.top_k(exp.name, 1)
            best = top[0] if top else None
            lineage = []
            if best is not None and best.id is not None:
                for p in reversed(store.lineage(best.id)[:MAX_LINEAGE]):  # root first
                    lineage.append(
                        {
                            "id": p.id,
                            "parent_id": p.parent_id,
                            "iteration": p.iteration,
                            "generation": p.generation,
                            "fitness": p.fitness,
                            "status": p.status,
                            "mutator": p.mutator,
                            "metrics": p.metrics,
                            "code": p.code[:MAX_CODE_CHARS],
                        }
                    )
            out.append(
                {
                    "name": exp.name,
                    "status": exp.status,
                    "completed_iterations": exp.completed_iterations,
                    "target_iterations": exp.target_iterations,
                    "counts": store.count_by_status(exp.name),
                    "points": points,
                    "best_id": None if best is None else best.id,
                    "lineage": lineage,
                }
            )
        return {"experiments": out}
    finally:
        store.close()
