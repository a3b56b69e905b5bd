"""Robust fitness: a candidate's train figure as the mean or the worst over contiguous sub-periods (folds).

Why: a program tuned to one long train period can owe its Sharpe to one regime (a crash it sat out, a rally it
rode). With ``[evolution] fitness_folds = K > 1`` the train curve is cut into K contiguous folds and the fitness is
the mean (``fitness_fold_aggregate = "mean"``) or the worst (``"worst"``) of the fitness metric over the folds,
so a program must work in more than one regime to be selected.

How: the candidate is backtested once over the whole train period (so indicators are warm at every fold start)
and each fold's figure is computed from its slice of that equity curve. A position open across a fold boundary
carries its profit or loss into the next fold; the *purge gap* (``fitness_fold_purge``, a fraction of the train
curve) drops the first part of every fold after the first so that a boundary trade does not count twice. Fold
figures are stored with the program (``fold<k>_<metric>``) and written to the run's trial ledger as periods
``train_fold<k>``. The train curve is the one the evaluator returns (sampled at up to ``equity_points`` points per
instrument): with fewer bars than that the fold figures are exact, otherwise they use the sampled returns.

``fitness_metric = "InfoRatio"`` (excess return over buy-and-hold on the same bars, per unit of tracking error)
needs buy-and-hold's train curve, which the hook receives once per run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from alpha_evolve.crowning import INFO_RATIO, information_ratio
from alpha_evolve.metric_names import LOWER_IS_BETTER_METRICS
from alpha_evolve.metrics import compute_metrics

MetricHook = Callable[[Any], dict[str, float]]


def needs_hook(evolution: Any) -> bool:
    return int(getattr(evolution, "fitness_folds", 1)) > 1 or getattr(evolution, "fitness_metric", "") == INFO_RATIO


def fold_bounds(n: int, folds: int, purge: float) -> list[tuple[int, int]]:
    """``[start, stop)`` point indices of ``folds`` contiguous folds over ``n`` points, with the purge gap.

    Each fold after the first starts ``round(purge * n)`` points after the previous fold's end; a fold keeps at
    least 3 points (two returns) or the split is refused with ``ValueError``.
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    edges = np.linspace(0, n, folds + 1).round().astype(int)
    gap = round(max(purge, 0.0) * n)
    out = []
    for i in range(folds):
        lo, hi = int(edges[i]) + (gap if i else 0), int(edges[i + 1])
        if i:
            lo -= 1  # the fold's first return starts from the last point before it
        if hi - lo < 3:
            raise ValueError(f"{n} curve points cannot make {folds} folds with a purge gap of {gap} points")
        out.append((lo, hi))
    return out


def fold_metrics(equity: Sequence[Sequence[Any]], folds: int, purge: float,
                 benchmark: Sequence[Sequence[Any]] = ()) -> list[dict[str, float]]:
    """Every contract metric (and the information ratio when a benchmark is given) on each fold of a curve."""
    if not equity:
        return []
    index = pd.to_datetime([p[0] for p in equity], utc=True)
    values = np.asarray([float(p[1]) for p in equity], dtype=float)
    out = []
    for lo, hi in fold_bounds(len(values), folds, purge):
        part = values[lo:hi]
        span = (index[hi - 1] - index[lo]).total_seconds() / (365.25 * 86400.0)
        per_year = (len(part) - 1) / span if span > 0 else 252.0
        metrics = compute_metrics(part, per_year)
        metrics.pop("Trades", None)  # trades and exposure are not in the curve; the whole-train values stand
        metrics.pop("Exposure", None)
        metrics.pop("WinRate", None)
        if benchmark:
            metrics[INFO_RATIO] = information_ratio([equity[i] for i in range(lo, hi)], _window(benchmark,
                                                                                                  index[lo],
                                                                                                  index[hi - 1]))
        out.append(metrics)
    return out


def _window(points: Sequence[Sequence[Any]], start: pd.Timestamp, end: pd.Timestamp) -> list[Sequence[Any]]:
    return [p for p in points if start <= pd.Timestamp(p[0]) <= end]


def fold_fitness(per_fold: Sequence[Mapping[str, float]], metric: str, aggregate: str) -> float | None:
    """Mean or worst of the metric over the folds, signed so that larger is better; None if not finite."""
    sign = -1.0 if metric in LOWER_IS_BETTER_METRICS else 1.0
    values = [sign * float(f.get(metric, 0.0)) for f in per_fold]
    if not values:
        return None
    value = min(values) if aggregate == "worst" else float(np.mean(values))
    return value if math.isfinite(value) else None


def fitness_hook(evolution: Any, benchmark: Sequence[Sequence[Any]]) -> MetricHook | None:
    """The controller's ``metric_hook`` for this config, or None when plain train fitness applies."""
    if not needs_hook(evolution):
        return None
    folds = int(getattr(evolution, "fitness_folds", 1))
    purge = float(getattr(evolution, "fitness_fold_purge", 0.0))
    aggregate = str(getattr(evolution, "fitness_fold_aggregate", "mean"))
    metric = str(evolution.fitness_metric)
    bench = list(benchmark)

    def hook(result: Any) -> dict[str, float]:
        equity = list(result.equity)
        extras: dict[str, float] = {}
        if metric == INFO_RATIO or bench:
            extras[INFO_RATIO] = information_ratio(equity, bench) if bench else 0.0
        if folds > 1:
            try:
                per_fold = fold_metrics(equity, folds, purge, bench if metric == INFO_RATIO else ())
            except ValueError:
                extras["fitness"] = math.nan  # too short a curve for folds: the controller screens it out
                return extras
            for k, fm in enumerate(per_fold, start=1):
                extras[f"fold{k}_Sharpe"] = fm.get("Sharpe", 0.0)
                if metric != "Sharpe" and metric in fm:
                    extras[f"fold{k}_{metric}"] = fm[metric]
            value = fold_fitness(per_fold, metric, aggregate)
            if value is not None:
                extras["fitness"] = value
        elif metric == INFO_RATIO:
            extras["fitness"] = extras[INFO_RATIO]
        return extras

    return hook
