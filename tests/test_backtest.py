"""One backtest on the real NautilusTrader engine, run in a forked child (never an engine in the test process,
which would leak into the evaluator workers forked later by other tests)."""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from alpha_evolve.backtest import (
    BacktestOutcome,
    BacktestSettings,
    PreparedBars,
    equity_curve,
    prepare_bars,
    round_trips,
    run_backtest,
)
from alpha_evolve.synthetic import synthetic_bars

MOMENTUM = (Path(__file__).parents[1] / "alpha_evolve" / "strategies" / "momentum.py").read_text()

ALL_IN = """
from decimal import Decimal
from nautilus_trader.model.enums import OrderSide
from alpha_evolve.strategies.base import EvolvableStrategy

class AllIn(EvolvableStrategy):
    def decide(self, bar):
        if self.bars_seen == 5:
            qty = self.instrument.make_qty(Decimal(int(100_000 / float(bar.close))))
            self.submit_order(self.order_factory.market(self.instrument_id, OrderSide.BUY, qty))
"""


@pytest.fixture(scope="module")
def child() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool


@pytest.fixture(scope="module")
def prepared() -> PreparedBars:
    return prepare_bars("SYN", synthetic_bars(700, seed=3), BacktestSettings())


def _run(pool, code: str, prepared: PreparedBars, settings: BacktestSettings | None = None) -> BacktestOutcome:
    return pool.submit(run_backtest, code, prepared, settings or BacktestSettings()).result(timeout=120)


def _run_without_policy(code: str, prepared: PreparedBars, settings: BacktestSettings) -> BacktestOutcome:
    from alpha_evolve import policy

    policy.check_policy = lambda code: []  # only in this throw-away child process
    return run_backtest(code, prepared, settings)


def test_equity_curve_and_round_trips_by_hand() -> None:
    # bars at t=1..4 closing 10, 11, 12, 9; buy 10 @ 10 (fee 1) at t=1, sell 10 @ 12 (fee 1.2) at t=3,
    # short 5 @ 9 (fee 0.45) at t=4 ... closed after the data at 8 (fee 0.4) -> attributed to the last bar.
    ts = np.array([1, 2, 3, 4])
    closes = np.array([10.0, 11.0, 12.0, 9.0])
    fills = np.array([[1, 10, 10.0, 1.0], [3, -10, 12.0, 1.2], [4, -5, 9.0, 0.45], [9, 5, 8.0, 0.4]])
    equity, position = equity_curve(ts, closes, fills, 1000.0)
    # t1: 1000 - 100 - 1 + 10*10 = 999 ; t2: 899 + 110 = 1009 ; t3: 899 + 120 - 1.2 = 1017.8
    # t4: 1017.8 + 45 - 0.45 (short) - 40 - 0.4 (buy back 5 @ 8) = 1021.95, flat
    assert equity.tolist() == pytest.approx([999.0, 1009.0, 1017.8, 1021.95])
    assert position.tolist() == [10, 10, 0, 0]
    # trips: (120 - 100 - 2.2) = 17.8 ; short: 45 - 40 - 0.85 = 4.15
    assert round_trips(fills, last_close=9.0) == pytest.approx([17.8, 4.15])
    # a reversal in one fill closes one trip and opens the next; an open trip is valued at the last close
    flip = np.array([[1, 10, 10.0, 0.0], [2, -20, 11.0, 2.0], [3, 10, 12.0, 0.0]])
    # long 10: +10 - 1 (half the fee) = 9 ; short 10 @ 11, cover @ 12: -10 - 1 = -11
    assert round_trips(flip, last_close=12.0) == pytest.approx([9.0, -11.0])
    assert round_trips(np.array([[1, 10, 10.0, 1.0]]), last_close=12.0) == pytest.approx([19.0])


def test_momentum_seed_sane(child, prepared: PreparedBars) -> None:
    out = _run(child, MOMENTUM, prepared)
    assert out.status == "ok", out.error
    m = out.metrics
    assert all(math.isfinite(v) for v in m.values())
    assert m["Trades"] >= 1 and 0.0 < m["Exposure"] < 1.0
    assert 0.0 <= m["MaxDD"] < 1.0 and m["AnnVol"] > 0.0
    assert out.bars == len(prepared)
    # the equity curve starts at the capital (no position before the EMAs warm up) and the realised PnL of all
    # round trips equals the final equity change (everything is closed at the end)
    assert out.equity_values[0] == pytest.approx(100_000.0)
    assert out.equity_values[-1] - 100_000.0 == pytest.approx(sum(out.trades), abs=1e-6)
    assert m["TotalReturn"] == pytest.approx(out.equity_values[-1] / 100_000.0 - 1.0)
    assert len(out.trades) == m["Trades"]


def test_fees_cost_money(child, prepared: PreparedBars) -> None:
    cheap = _run(child, MOMENTUM, prepared, BacktestSettings(taker_fee=0.0, maker_fee=0.0))
    dear = _run(child, MOMENTUM, prepared, BacktestSettings(taker_fee=0.01, maker_fee=0.01))
    assert cheap.status == dear.status == "ok"
    assert dear.equity_values[-1] < cheap.equity_values[-1]


def test_shorts_need_margin(child, prepared: PreparedBars) -> None:
    with pytest.raises(ValueError, match="margin"):
        BacktestSettings(allow_short=True)
    long_only = _run(child, MOMENTUM, prepared)
    both = _run(child, MOMENTUM, prepared, BacktestSettings(account_type="margin", allow_short=True))
    assert both.status == "ok", both.error
    assert both.metrics["Exposure"] > long_only.metrics["Exposure"]


@pytest.mark.parametrize(
    ("code", "kind", "fragment"),
    [
        ("class X(:\n  pass", "syntax", "line 1"),
        (MOMENTUM.replace("import Bar", "import NoSuchBar"), "import", "NoSuchBar"),
        (MOMENTUM + "\nclass Other(MomentumStrategy):\n    pass\n", "import", "exactly one"),
        ("x = 1\n", "import", "found none"),
        (MOMENTUM.replace("self.go_long()", "raise ValueError('boom')"), "runtime", "ValueError: boom (line 23)"),
    ],
)
def test_typed_failures(child, prepared: PreparedBars, code: str, kind: str, fragment: str) -> None:
    out = _run(child, code, prepared)
    assert out.status == kind
    assert fragment in (out.error or "")


def test_silent_truncation_is_incomplete(child, prepared: PreparedBars) -> None:
    # Buying with all the cash leaves nothing for the fee: the engine stops early and run() returns normally.
    out = child.submit(_run_without_policy, ALL_IN, prepared, BacktestSettings()).result(timeout=120)
    assert out.status == "incomplete"
    assert f"of {len(prepared)} bars" in (out.error or "")


def test_prepare_bars_rejects_bad_frames() -> None:
    frame = synthetic_bars(50)
    with pytest.raises(ValueError, match="columns"):
        prepare_bars("X", frame[["close", "open", "high", "low", "volume"]])
    with pytest.raises(ValueError, match="UTC"):
        prepare_bars("X", frame.tz_localize(None))
    sliced = prepare_bars("X", frame).slice(10, 20)
    assert len(sliced) == len(sliced.frame) == len(sliced.ts) == len(sliced.closes) == 10
