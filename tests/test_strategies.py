"""Every seed runs on NautilusTrader's real BacktestEngine and trades through the base class helpers."""

from __future__ import annotations

import ast
import importlib
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import MakerTakerFeeModel
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import Equity
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.persistence.wranglers import BarDataWrangler

from alpha_evolve.strategies import SEEDS, list_seeds, seed_source
from alpha_evolve.strategies.base import EvolvableStrategy, EvolvableStrategyConfig

VENUE = Venue("XNAS")
INSTRUMENT = Equity(
    instrument_id=InstrumentId(Symbol("TEST"), VENUE),
    raw_symbol=Symbol("TEST"),
    currency=USD,
    price_precision=2,
    price_increment=Price.from_str("0.01"),
    lot_size=Quantity.from_int(1),
    maker_fee=Decimal("0.001"),
    taker_fee=Decimal("0.001"),
    ts_event=0,
    ts_init=0,
)
BAR_TYPE = BarType.from_str("TEST.XNAS-1-DAY-LAST-EXTERNAL")
N_BARS = 300
START_CASH = 100_000


def synthetic_bars(n: int = N_BARS, seed: int = 7, volume: float = 1e6) -> pd.DataFrame:
    """A noisy random walk with slow cycles, so trend and mean-reversion rules both fire."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.015, n) + 0.25 * np.diff(np.sin(np.arange(n + 1) / 12.0))
    close = 100.0 * np.exp(np.cumsum(steps))
    open_ = np.r_[close[0], close[:-1]]
    index = pd.date_range("2021-01-04", periods=n, freq="1D", tz="UTC")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.004,
            "low": np.minimum(open_, close) * 0.996,
            "close": close,
            "volume": np.full(n, volume),
        },
        index=index,
    )


def run_backtest(
    strategy_cls: type[EvolvableStrategy],
    account_type: AccountType = AccountType.CASH,
    allow_short: bool = False,
    trade_fraction: float = 0.95,
    bars: pd.DataFrame | None = None,
) -> tuple[BacktestEngine, EvolvableStrategy]:
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    engine.add_venue(
        VENUE,
        oms_type=OmsType.NETTING,
        account_type=account_type,
        base_currency=USD,
        starting_balances=[Money(START_CASH, USD)],
        fee_model=MakerTakerFeeModel(),
    )
    engine.add_instrument(INSTRUMENT)
    engine.add_data(BarDataWrangler(BAR_TYPE, INSTRUMENT).process(bars if bars is not None else synthetic_bars()))
    strategy = strategy_cls(
        EvolvableStrategyConfig(
            instrument_id=INSTRUMENT.id,
            bar_type=BAR_TYPE,
            allow_short=allow_short,
            trade_fraction=trade_fraction,
        )
    )
    engine.add_strategy(strategy)
    engine.run()
    return engine, strategy


def seed_class(name: str) -> type[EvolvableStrategy]:
    module = importlib.import_module(f"alpha_evolve.strategies.{SEEDS[name].removesuffix('.py')}")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, EvolvableStrategy) and value is not EvolvableStrategy
    ]
    assert len(classes) == 1
    return classes[0]


def filled_orders(engine: BacktestEngine) -> list:
    return [order for order in engine.cache.orders() if order.filled_qty.as_double() > 0]


@pytest.mark.parametrize("name", list_seeds())
def test_seed_trades_and_processes_every_bar(name: str) -> None:
    engine, strategy = run_backtest(seed_class(name))
    assert engine.iteration == N_BARS
    assert strategy.bars_seen == N_BARS
    fills = filled_orders(engine)
    assert len(fills) >= 2
    assert all(order.side == OrderSide.BUY for order in fills[::2])  # long-only: buy, sell, buy, ...
    # on_stop closed the last position, so the final balance is realised equity
    assert engine.cache.positions_open() == []
    balance = engine.portfolio.account(VENUE).balance_total(USD).as_double()
    assert balance > 0 and balance != START_CASH


@pytest.mark.parametrize("name", list_seeds())
def test_seed_goes_short_on_a_margin_account_when_allowed(name: str) -> None:
    engine, _ = run_backtest(seed_class(name), account_type=AccountType.MARGIN, allow_short=True)
    assert engine.iteration == N_BARS
    net, lowest = 0.0, 0.0
    for order in sorted(filled_orders(engine), key=lambda o: o.ts_last):
        net += order.filled_qty.as_double() * (1 if order.side == OrderSide.BUY else -1)
        lowest = min(lowest, net)
    assert lowest < 0  # held a short position at some point
    assert net == 0  # and was flat at the end


def test_orders_are_sized_from_trade_fraction_of_equity() -> None:
    engine, _ = run_backtest(seed_class("momentum"), trade_fraction=0.5)
    first = filled_orders(engine)[0]
    notional = first.filled_qty.as_double() * first.avg_px
    assert 0.49 * START_CASH <= notional <= 0.5 * START_CASH


class AlwaysShort(EvolvableStrategy):
    def decide(self, bar: Bar) -> None:
        self.go_short()


def test_go_short_is_refused_without_allow_short() -> None:
    engine, strategy = run_backtest(AlwaysShort, account_type=AccountType.MARGIN, allow_short=False)
    assert filled_orders(engine) == []
    assert strategy.short_refusals == N_BARS
    engine, strategy = run_backtest(AlwaysShort, account_type=AccountType.MARGIN, allow_short=True)
    assert [order.side for order in filled_orders(engine)] == [OrderSide.SELL, OrderSide.BUY]  # open, on_stop close


class FlipFlop(EvolvableStrategy):
    """Reverses every bar with the whole account: the harshest test of cash limits and netting reversals."""

    def setup_indicators(self) -> None:
        from nautilus_trader.indicators import SimpleMovingAverage

        self.sma = SimpleMovingAverage(3)

    def decide(self, bar: Bar) -> None:
        if self.bars_seen % 2:
            self.go_long()
        elif self.allow_short:
            self.go_short()
        else:
            self.go_flat()


def test_full_cash_account_is_never_overbought() -> None:
    # Thin volume makes every large order fill partly one tick worse, and fees apply on top.
    bars = synthetic_bars(n=80, volume=400.0)
    engine, strategy = run_backtest(FlipFlop, trade_fraction=1.0, bars=bars)
    assert engine.iteration == 80  # the engine did not stop early on a negative balance
    assert strategy.bars_seen == 80
    assert len(filled_orders(engine)) >= 80 - 5


def test_reversal_closes_then_opens_with_netting() -> None:
    engine, _ = run_backtest(
        FlipFlop, account_type=AccountType.MARGIN, allow_short=True, bars=synthetic_bars(n=60)
    )
    assert engine.iteration == 60
    fills = sorted(filled_orders(engine), key=lambda o: o.ts_last)
    by_bar: dict[int, list] = {}
    for order in fills:
        by_bar.setdefault(order.ts_last, []).append(order)
    reversals = [orders for orders in by_bar.values() if len(orders) == 2]
    assert len(reversals) >= 25
    for close, open_ in reversals:  # a close of the whole position, then an open on the same side
        assert close.side == open_.side
        assert close.is_reduce_only and not open_.is_reduce_only
    assert engine.cache.positions_open() == []


class WarmupProbe(EvolvableStrategy):
    def setup_indicators(self) -> None:
        from nautilus_trader.indicators import ExponentialMovingAverage

        self.slow = ExponentialMovingAverage(30)
        self.first_decision = 0

    def decide(self, bar: Bar) -> None:
        if not self.first_decision:
            self.first_decision = self.bars_seen
        assert self.slow.initialized


def test_decide_waits_for_every_indicator() -> None:
    _, strategy = run_backtest(WarmupProbe)
    assert strategy.first_decision == 30


def test_seed_source_reads_text_and_rejects_unknown_names() -> None:
    for name in list_seeds():
        tree = ast.parse(seed_source(name))
        classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
        assert len(classes) == 1 and ast.unparse(classes[0].bases[0]) == "EvolvableStrategy"
        assert ast.get_docstring(tree)
    with pytest.raises(ValueError, match="momentum"):
        seed_source("nope")
