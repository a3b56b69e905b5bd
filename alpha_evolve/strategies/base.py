"""Trusted base class for every evolvable strategy.

Evolved code only fills two hooks (``setup_indicators`` and ``decide``); everything that can break a
backtest silently (subscriptions, warm-up, order sizing, cash limits, closing at the end) lives here, out of
the reach of mutations, so a candidate's figures are comparable with its parent's.
"""

from __future__ import annotations

import math
from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.indicators import Indicator
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OrderSide, TimeInForce
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.trading.strategy import Strategy

# Share of a cash account's free balance an order may use (after fees and the fill model's worst concession):
# a small margin so that commission rounding never pushes the balance below zero (which stops the engine early).
_CASH_SAFETY = 0.999
# Codes of the decision log (see ``EvolvableStrategy.decision_log``).
ACTION_FLAT, ACTION_LONG, ACTION_SHORT = 0, 1, 2


class EvolvableStrategyConfig(StrategyConfig, frozen=True):
    """Configuration shared by all evolvable strategies; seeds add no fields so any seed runs with it."""

    instrument_id: InstrumentId
    bar_type: BarType
    trade_fraction: float = 0.95
    allow_short: bool = False
    trade_start_ns: int = 0  # bars before this are indicator warm-up only: no decisions, no orders
    adverse_fraction: float = 0.0  # worst fill concession of the fill model (sizing keeps head-room for it)


class EvolvableStrategy(Strategy):
    """A NautilusTrader strategy whose signal logic is isolated in two overridable hooks.

    Subclasses override ``setup_indicators`` (create native indicators as attributes of ``self``) and
    ``decide`` (call ``go_long``/``go_short``/``go_flat``). They never define ``__init__``: the static policy
    forbids dunder names in evolved code.
    """

    def __init__(self, config: EvolvableStrategyConfig) -> None:
        super().__init__(config)
        self.instrument_id: InstrumentId = config.instrument_id
        self.bar_type: BarType = config.bar_type
        self.trade_fraction: float = float(config.trade_fraction)
        self.allow_short: bool = bool(config.allow_short)
        self.bars_seen: int = 0
        self.instrument: Instrument | None = None
        self._indicators: list[Indicator] = []
        self._last_close: float = math.nan
        self._short_refusals: int = 0
        self.trade_start_ns: int = int(config.trade_start_ns)
        self._adverse_fraction: float = float(config.adverse_fraction)
        self.sizing_refusals: int = 0  # opens skipped because not even one order step was affordable
        self.first_sizing_refusal: str = ""
        # The decision log (bar index, action): plain data the trusted side replays in a clean process to score
        # the candidate, so nothing the candidate does to its own engine can change its figures.
        self._decisions: list[tuple[int, int]] = []

    # ---------------------------------------------------------------- hooks for seeds (EVOLVE-BLOCK bodies)

    def setup_indicators(self) -> None:
        """Create native NautilusTrader indicators as attributes of ``self``."""

    def decide(self, bar: Bar) -> None:
        """Called on every bar once all indicators are initialized."""

    # ---------------------------------------------------------------- lifecycle (trusted)

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(self.instrument_id)
        if self.instrument is None:
            self.log.error(f"Instrument {self.instrument_id} not found in cache; stopping")
            self.stop()
            return
        self.setup_indicators()
        self._indicators = [value for value in vars(self).values() if isinstance(value, Indicator)]
        for indicator in self._indicators:
            self.register_indicator_for_bars(self.bar_type, indicator)
        self.subscribe_bars(self.bar_type)

    def on_bar(self, bar: Bar) -> None:
        self.bars_seen += 1
        self._last_close = float(bar.close)
        if bar.ts_event < self.trade_start_ns:
            return  # warm-up: the registered indicators have seen the bar; the strategy does not act on it
        if all(indicator.initialized for indicator in self._indicators):
            self.decide(bar)

    def on_stop(self) -> None:
        """Close everything so the final equity is realised and the run's figures include the last trade."""
        self.cancel_all_orders(self.instrument_id)
        self.close_all_positions(self.instrument_id)
        self.unsubscribe_bars(self.bar_type)

    def on_reset(self) -> None:
        for indicator in self._indicators:
            indicator.reset()
        self.bars_seen = 0
        self._last_close = math.nan

    # ---------------------------------------------------------------- position state

    @property
    def is_long(self) -> bool:
        return bool(self.portfolio.is_net_long(self.instrument_id))

    @property
    def is_short(self) -> bool:
        return bool(self.portfolio.is_net_short(self.instrument_id))

    @property
    def is_flat(self) -> bool:
        return bool(self.portfolio.is_flat(self.instrument_id))

    # ---------------------------------------------------------------- trading helpers

    def go_long(self) -> None:
        """Hold a long position of ``trade_fraction`` of equity (closing any short first); no-op when long."""
        self._decisions.append((self.bars_seen - 1, ACTION_LONG))
        if self.is_long:
            return
        if self.is_short:
            self.close_all_positions(self.instrument_id)
        self._open(OrderSide.BUY)

    def go_short(self) -> None:
        """Hold a short position (closing any long first); refused (and logged) unless ``allow_short``."""
        self._decisions.append((self.bars_seen - 1, ACTION_SHORT))
        if not self.allow_short:
            self._short_refusals += 1
            if self._short_refusals == 1:
                self.log.warning("go_short ignored: allow_short is False")
            return
        if self.is_short:
            return
        if self.is_long:
            self.close_all_positions(self.instrument_id)
        self._open(OrderSide.SELL)

    def go_flat(self) -> None:
        """Close any open position."""
        self._decisions.append((self.bars_seen - 1, ACTION_FLAT))
        if not self.is_flat:
            self.close_all_positions(self.instrument_id)

    def decision_log(self) -> list[tuple[int, int]]:
        """Every go_long/go_short/go_flat call in order as (0-based bar index, ACTION_*)."""
        return list(self._decisions)

    @property
    def short_refusals(self) -> int:
        """How many times ``go_short`` was ignored because shorting is disabled."""
        return self._short_refusals

    def _equity(self) -> float:
        """Mark-to-market equity at the last close, in the instrument's quote currency."""
        account = self.portfolio.account(self.instrument_id.venue)
        instrument = self.instrument
        if account is None or instrument is None:
            return 0.0
        currency = instrument.quote_currency
        balance = account.balance_total(currency)
        cash = float(balance.as_double()) if balance is not None else 0.0
        net = float(self.portfolio.net_position(self.instrument_id))
        if net == 0.0:
            return cash
        multiplier = float(instrument.multiplier)
        if account.type == AccountType.CASH:
            # A cash account's balance already paid for the holding: add its value at the last close.
            return cash + net * self._last_close * multiplier
        unrealized = self.portfolio.unrealized_pnl(self.instrument_id)
        return cash + (float(unrealized.as_double()) if unrealized is not None else 0.0)

    def _order_quantity(self, side: OrderSide) -> Decimal:
        """Units to trade, by the market model's single sizing rule (``alpha_evolve.market.order_quantity``)."""
        from alpha_evolve.market import order_quantity

        instrument = self.instrument
        price = self._last_close
        if instrument is None or not math.isfinite(price) or price <= 0.0:
            return Decimal(0)
        account = self.portfolio.account(self.instrument_id.venue)
        free_cash: float | None = None
        if account is not None and account.type == AccountType.CASH and side == OrderSide.BUY:
            # Never over-buy a cash account: the engine would log AccountBalanceNegative and stop early.
            free = account.balance_free(instrument.quote_currency)
            free_cash = float(free.as_double()) if free is not None else 0.0
        lot = instrument.lot_size
        step = max(Decimal(str(instrument.size_increment)), Decimal(str(lot)) if lot is not None else Decimal(0))
        return order_quantity(
            price=price,
            equity=self._equity(),
            trade_fraction=self.trade_fraction,
            spec_step=step,
            multiplier=float(instrument.multiplier),
            free_cash=free_cash,
            fee_rate=float(instrument.taker_fee),
            adverse_fraction=self._adverse_fraction,
            cash_headroom=_CASH_SAFETY,
        )

    def _refuse(self, message: str) -> None:
        self.sizing_refusals += 1
        if self.sizing_refusals == 1:
            self.first_sizing_refusal = message
            self.log.warning(message)

    def _open(self, side: OrderSide) -> None:
        instrument = self.instrument
        if instrument is None:
            return
        units = self._order_quantity(side)
        if units <= 0:
            step = max(float(instrument.size_increment), float(instrument.lot_size or 0))
            self._refuse(f"{side.name} skipped: equity {self._equity():,.2f} buys less than one order step "
                         f"({step:g} units at {self._last_close:g})")
            return
        try:
            quantity = instrument.make_qty(Decimal(units), round_down=True)
        except ValueError:
            self._refuse(f"{side.name} skipped: {units} units round to zero for {self.instrument_id}")
            return
        order = self.order_factory.market(
            instrument_id=self.instrument_id,
            order_side=side,
            quantity=quantity,
            time_in_force=TimeInForce.GTC,
        )
        self.submit_order(order)
