"""Reference strategies beside a run's winner: the seed, buy-and-hold and, on the planted market, the oracle.

A winner's Sharpe means little alone. Next to the seed it says whether evolution helped; next to buy-and-hold,
whether it beats doing nothing clever; and on the planted synthetic market (whose rule ``strategies/oracle.py``
trades) next to the oracle, how much of the reachable edge the search found. The pipeline records train and
validation figures; the holdout door adds the holdout row when it is opened, so the holdout stays sealed until then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alpha_evolve.metric_names import METRIC_NAMES

ORACLE = "oracle"


def oracle_applies(data_info: Mapping[str, Any] | None) -> bool:
    """True when the run's data is the planted synthetic market (the only market the oracle knows the rule of)."""
    if not data_info or not data_info.get("synthetic"):
        return False
    generator = data_info.get("generator") or {}
    return isinstance(generator, Mapping) and generator.get("generator") == "planted"


def metrics_of(result: Any) -> dict[str, float]:
    """The standard metrics of an evaluation, or ``{}`` when it failed (a missing figure is not a zero)."""
    if result is None or not getattr(result, "ok", False):
        return {}
    return {name: float(result.metrics.get(name, 0.0) or 0.0) for name in METRIC_NAMES}


def sharpe_row(figures: Mapping[str, Mapping[str, float]]) -> dict[str, float | None]:
    """``{"winner": 1.2, "seed": 0.3, ...}``: each strategy's Sharpe on one split (None when it failed)."""
    return {name: (float(m["Sharpe"]) if m and "Sharpe" in m else None) for name, m in figures.items()}


def gap_closed(winner: float | None, seed: float | None, oracle: float | None) -> float | None:
    """Share of the seed-to-oracle Sharpe gap the winner closed (1 = reached the oracle; < 0 = worse than seed)."""
    if winner is None or seed is None or oracle is None or oracle - seed <= 1e-9:
        return None
    return round((winner - seed) / (oracle - seed), 4)


def evaluate_oracle(evaluator: Any, splits: tuple[str, ...]) -> dict[str, Any]:
    """The oracle's evaluation on each split the evaluator holds, in one batch per split."""
    from alpha_evolve.strategies import seed_source

    code = seed_source(ORACLE)
    return {split: evaluator.evaluate_many([code], split=split, stage="full")[0] for split in splits}
