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
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from alpha_evolve.backtest import BacktestOutcome, BacktestSettings, PreparedBars, run_strategy
from alpha_evolve.strategies.base import ACTION_FLAT, ACTION_LONG, ACTION_SHORT, EvolvableStrategy

ACTIONS = (ACTION_FLAT, ACTION_LONG, ACTION_SHORT)
# A strategy may call the helpers several times a bar; more than this is no strategy, just a way to make us work.
MAX_DECISIONS_PER_BAR = 32


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


def fills_agree(claimed: Any, trusted: Any) -> bool:
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


# --------------------------------------------------------------------------------------------- fast path


class _Amount:
    def __init__(self, value: float) -> None:
        self.value = value

    def as_double(self) -> float:
        return self.value


class _ShadowAccount:
    def __init__(self, book: _ShadowBook) -> None:
        from nautilus_trader.model.enums import AccountType

        self.type = AccountType.CASH
        self._book = book

    def balance_free(self, currency: Any) -> _Amount:
        return _Amount(self._book.cash)

    def balance_total(self, currency: Any) -> _Amount:
        return _Amount(self._book.cash)


class _ShadowBook:
    """The slice of the portfolio API the base strategy's sizing reads, for a cash account with market orders."""

    def __init__(self, cash: float) -> None:
        self.cash = cash
        self.position = 0.0
        self.account_ = _ShadowAccount(self)

    def account(self, venue: Any) -> _ShadowAccount:
        return self.account_

    def net_position(self, instrument_id: Any) -> float:
        return self.position

    def unrealized_pnl(self, instrument_id: Any) -> None:  # pragma: no cover - cash accounts never ask
        return None


class _Shadow:
    """Stands in for the strategy when calling the base strategy's own sizing methods (so they cannot drift)."""

    def __init__(self, prepared: PreparedBars, settings: BacktestSettings, book: _ShadowBook) -> None:
        import types

        self.instrument = prepared.instrument
        self.instrument_id = prepared.instrument.id
        self.trade_fraction = float(settings.trade_fraction)
        self.portfolio = book
        self._last_close = float("nan")
        fills = getattr(settings, "fills", None)
        self._adverse_fraction = float(fills.adverse_fraction()) if fills is not None else 0.0
        self._equity = types.MethodType(EvolvableStrategy._equity, self)

    def units(self, side: Any) -> float:
        return float(EvolvableStrategy._order_quantity(self, side))  # type: ignore[arg-type]


def vector_fills(
    prepared: PreparedBars, settings: BacktestSettings, decisions: Sequence[tuple[int, int]]
) -> np.ndarray | None:
    """The fills of a decision log without an engine, for a long-only cash account (None = not this case).

    Same rules as the engine run (``market.fill_model``): a market order fills at the bar's close, or with the
    "volume" model up to ``volume_share`` of the bar's volume at the close and the rest at the slipped price;
    taker commission per fill rounded to the quote currency; sizing by the base strategy's own
    ``_order_quantity``; the position closed at the last bar when the run stops. It is only ever used to *confirm*
    a candidate's claimed fills: any disagreement falls back to the engine replay, which decides.
    """
    from nautilus_trader.model.enums import OrderSide

    fills_cfg = getattr(settings, "fills", None)
    model = getattr(fills_cfg, "model", "close")
    if settings.account_type != "cash" or settings.allow_short or len(prepared) < 2 or model not in (
            "close", "volume"):  # fmt: skip
        return None
    if model == "volume" and prepared.volume is None:
        return None
    inst = prepared.instrument
    mult = float(inst.multiplier)
    tick = float(inst.price_increment)
    fee = float(inst.taker_fee)
    increment = float(inst.size_increment)
    size_prec = int(inst.size_precision)
    money_prec = int(inst.quote_currency.precision)
    book = _ShadowBook(float(settings.starting_capital))
    shadow = _Shadow(prepared, settings, book)
    rows: list[tuple[float, float, float, float]] = []

    def priced(close: float, offset: float, sign: float) -> float:
        px = close * (1.0 + sign * offset)
        steps = math.ceil(px / tick - 1e-9) if sign > 0 else math.floor(px / tick + 1e-9)
        return round(steps * tick, inst.price_precision)

    def execute(i: int, qty: float) -> None:
        close = float(prepared.closes[i])
        sign = 1.0 if qty > 0 else -1.0
        size = round(abs(qty), size_prec)
        parts = [(0.0, size)]
        if model == "volume":
            assert prepared.volume is not None
            share = float(fills_cfg.volume_share)  # type: ignore[union-attr]
            level = math.floor(max(float(prepared.volume[i]) * share, 0.0) / increment + 1e-9) * increment
            at_close = round(min(size, level), size_prec)
            parts = [(0.0, at_close), (float(fills_cfg.slippage_bps) / 1e4, round(size - at_close, size_prec))]  # type: ignore[union-attr]
        for offset, part in parts:
            if part <= 0:
                continue
            px = priced(close, offset, sign)
            commission = round(part * px * mult * fee + 1e-12, money_prec)
            rows.append((float(prepared.ts[i]), sign * part, px, commission))
            book.cash -= sign * part * px * mult + commission
            book.position = round(book.position + sign * part, size_prec)

    try:
        for i, actions in sorted(plan_of(decisions).items()):
            # Orders submitted during a bar fill after ``decide`` returns, so every helper call of one bar sees
            # the position as it was when the bar arrived.
            shadow._last_close = float(prepared.closes[i])
            long_now = book.position > 0
            order: float | None = None
            for action in actions:
                if action == ACTION_LONG and not long_now:
                    units = shadow.units(OrderSide.BUY)
                    if units <= 0:
                        # A skipped order is a warning (or, with no fill at all, a failure) that only the
                        # engine path reports: leave it to the engine so both paths give one answer.
                        return None
                    if order is not None:
                        return None  # two orders in one bar: leave it to the engine
                    order = units
                elif action == ACTION_FLAT and long_now:
                    if order is not None:
                        return None
                    order = -book.position
            if order is not None:
                execute(i, order)
        if book.position != 0:
            execute(len(prepared.bars) - 1, -book.position)
    except (AttributeError, TypeError):  # the base strategy's sizing now reads something the shadow lacks
        return None
    if not rows:
        return np.zeros((0, 4))
    arr = np.asarray(rows, dtype=float)
    return arr[np.argsort(arr[:, 0], kind="stable")]
