"""Trusted scoring: replay a candidate's decision log through a fresh NautilusTrader engine.

A candidate's own process can fake anything it reports (purge its orders from the cache, push forged fills,
rebind the metrics function). What it cannot fake is the *meaning* of its decisions: the trusted base strategy
records every go_long/go_short/go_flat call as (bar index, action), and this module replays that plain-data log in
a process where no candidate code ever ran. ``ReplayStrategy`` is an ``EvolvableStrategy`` itself, so sizing,
fees, fills and the close at the end are the base strategy's own code: the replay cannot drift from a real run.

Also here: validation of the untrusted log, the fills comparison that turns a disagreement into ``tampered``, and
the look-ahead check's perturbed series and prefix comparison.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from alpha_evolve.backtest import BacktestOutcome, BacktestSettings, PreparedBars, run_strategy
from alpha_evolve.strategies.base import ACTION_FLAT, ACTION_LONG, ACTION_SHORT, EvolvableStrategy

ACTIONS = (ACTION_FLAT, ACTION_LONG, ACTION_SHORT)
# A strategy may call the helpers several times a bar; more than this is no strategy, just a way to make us work.
MAX_DECISIONS_PER_BAR = 8


class ReplayStrategy(EvolvableStrategy):
    """Calls the base helpers exactly as the log says, bar by bar; no indicators, no other logic."""

    def __init__(self, config: Any, plan: Mapping[int, Sequence[int]]) -> None:
        super().__init__(config)
        self._plan = plan

    def decide(self, bar: Any) -> None:
        for action in self._plan.get(self.bars_seen - 1, ()):
            if action == ACTION_LONG:
                self.go_long()
            elif action == ACTION_SHORT:
                self.go_short()
            else:
                self.go_flat()


def validate_decisions(raw: Any, n_bars: int) -> list[tuple[int, int]]:
    """The untrusted log as clean (bar index, action) pairs; raises ValueError when it is not a plausible log.

    Indexes must be in range and non-decreasing. Calls before the first bar (index -1, e.g. from
    ``setup_indicators``) cannot trade (no price yet) and are dropped.
    """
    if not isinstance(raw, list) or len(raw) > MAX_DECISIONS_PER_BAR * max(n_bars, 1):
        raise ValueError("the decision log is not a list of plausible length")
    out: list[tuple[int, int]] = []
    last = -1
    for item in raw:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ValueError("a decision is not a (bar, action) pair")
        index, action = item
        if type(index) is not int or type(action) is not int or action not in ACTIONS:
            raise ValueError("a decision is not a pair of small integers")
        if index < -1 or index >= n_bars or index < last:
            raise ValueError(f"decision bar index {index} out of order or out of range")
        last = index
        if index >= 0:
            out.append((index, action))
    return out


def plan_of(decisions: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    plan: dict[int, list[int]] = {}
    for index, action in decisions:
        plan.setdefault(index, []).append(action)
    return plan


def run_replay(
    prepared: PreparedBars, settings: BacktestSettings, decisions: Sequence[tuple[int, int]]
) -> BacktestOutcome:
    """The trusted figures of a decision log (run only where no candidate code has run)."""
    plan = plan_of(decisions)
    outcome = run_strategy(lambda config: ReplayStrategy(config, plan), prepared, settings)
    if outcome.status == "ok" and list(outcome.decisions) != list(decisions):  # pragma: no cover - a bug here
        raise RuntimeError("the replay did not reproduce its own decision log")
    return outcome


def fills_agree(claimed: Any, trusted: Sequence[Sequence[float]]) -> bool:
    """Whether the fills a candidate's process reported are the replay's fills (exact up to float noise)."""
    try:
        a = np.asarray(claimed, dtype=float)
    except (TypeError, ValueError):
        return False
    b = np.asarray(trusted, dtype=float).reshape(-1, 4)
    if a.size == 0 and b.size == 0:
        return True
    if a.shape != b.shape:
        return False
    return bool(np.array_equal(a[:, 0], b[:, 0]) and np.allclose(a[:, 1:], b[:, 1:], rtol=1e-9, atol=1e-9))


def first_divergence(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]], cut: int) -> int | None:
    """Bar index of the first difference between two logs restricted to bars before ``cut`` (None = same)."""
    pa = [d for d in a if d[0] < cut]
    pb = [d for d in b if d[0] < cut]
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            return min(x[0], y[0])
    if len(pa) != len(pb):
        longer = pa if len(pa) > len(pb) else pb
        return longer[min(len(pa), len(pb))][0]
    return None


def perturbed(prepared: PreparedBars, cut: int) -> PreparedBars:
    """The same bars up to ``cut`` (exclusive); after it, the price path mirrored around the close at ``cut - 1``.

    Every future up-move becomes a down-move (high and low swap roles), volumes unchanged, same length and
    timestamps: a causal strategy decides exactly as before up to the cut; one that peeks ahead sees a different
    future and, in general, decides differently before it.
    """
    frame = prepared.frame.copy()
    pivot = float(frame["close"].iloc[cut - 1])
    tail = frame.iloc[cut:]
    mirrored = pd.DataFrame(
        {
            "open": pivot * pivot / tail["open"],
            "high": pivot * pivot / tail["low"],
            "low": pivot * pivot / tail["high"],
            "close": pivot * pivot / tail["close"],
            "volume": tail["volume"],
        },
        index=tail.index,
    )
    from nautilus_trader.persistence.wranglers import BarDataWrangler

    tail_bars = BarDataWrangler(prepared.bar_type, prepared.instrument).process(mirrored)
    bars = list(prepared.bars[:cut]) + list(tail_bars)
    return dataclasses.replace(
        prepared,
        bars=bars,
        frame=pd.concat([frame.iloc[:cut], mirrored]),
        closes=np.asarray([float(bar.close) for bar in bars], dtype=float),
    )
