"""The market model against an independent vectorised replica, on series that break a one-size set-up.

The replica below shares nothing with ``alpha_evolve.market`` or ``alpha_evolve.backtest``: its own EMA, its own
sizing (whole multiples of the expected size step of ``trade_fraction`` of equity), fills at the bar close with
10 bp fees, its own equity curve, Sharpe and round-trip count. The engine must agree within 1 % and on the
exact number of trades for FX, crypto, a $2 stock, a 1e-5 asset and a thin-volume series.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from alpha_evolve import market
from alpha_evolve.backtest import (
    BacktestOutcome,
    BacktestSettings,
    PreparedBars,
    prepare_bars,
    round_trips,
    run_backtest,
    scored_outcome,
)
from alpha_evolve.config import ConfigError, from_mapping
from alpha_evolve.strategies import seed_source
from tests import market_samples as samples

FEE = 0.001
FRACTION = 0.95
CAPITAL = 100_000.0

EMA_RULE = '''
from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.data import Bar

from alpha_evolve.strategies.base import EvolvableStrategy


class EmaCross(EvolvableStrategy):
    def setup_indicators(self) -> None:
        # === EVOLVE-BLOCK: indicators ===
        self.fast_ema = ExponentialMovingAverage(10)
        self.slow_ema = ExponentialMovingAverage(30)
        # === END EVOLVE-BLOCK ===

    def decide(self, bar: Bar) -> None:
        # === EVOLVE-BLOCK: decision_logic ===
        if self.fast_ema.value > self.slow_ema.value:
            self.go_long()
        elif self.fast_ema.value < self.slow_ema.value:
            self.go_flat()
        # === END EVOLVE-BLOCK ===
'''


@pytest.fixture(scope="module")
def child() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """Engines run in a forked child: one built in the test process would leak into workers forked later."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool


def _run(pool: Any, code: str, prepared: PreparedBars, settings: BacktestSettings) -> BacktestOutcome:
    return pool.submit(run_backtest, code, prepared, settings).result(timeout=300)


def _engine_fills(prepared: PreparedBars, settings: BacktestSettings, adverse: float = 0.0) -> np.ndarray:
    """Every fill of the EMA rule (ts, signed qty, price, fee), straight from the engine (runs in the child)."""
    from alpha_evolve import backtest
    from alpha_evolve.strategies.base import EvolvableStrategyConfig

    engine = backtest._engine(settings, prepared)
    cls = backtest.load_strategy_class(EMA_RULE)
    engine.add_strategy(cls(EvolvableStrategyConfig(instrument_id=prepared.instrument.id,
                                                    bar_type=prepared.bar_type, adverse_fraction=adverse)))
    engine.run()
    fills = backtest._fills(engine)
    engine.dispose()
    return fills


# ------------------------------------------------------------------------------------------ the replica


def _ema(x: np.ndarray, period: int) -> np.ndarray:
    alpha = 2.0 / (period + 1.0)
    out = np.empty_like(x)
    out[0] = x[0]
    for i in range(1, len(x)):
        out[i] = alpha * x[i] + (1.0 - alpha) * out[i - 1]
    return out


def replica(frame: pd.DataFrame, step: float, *, start: int = 0, fast: int = 10, slow: int = 30) -> dict[str, float]:
    """EMA(fast) > EMA(slow): long ``FRACTION`` of equity in whole ``step``s at the close; else flat.

    Bars before ``start`` only feed the EMAs (warm-up); figures cover bars ``start:``.
    """
    close = frame["close"].to_numpy(dtype=float)
    f, s = _ema(close, fast), _ema(close, slow)
    ready = np.arange(len(close)) >= slow - 1
    cash, units, trips = CAPITAL, 0.0, 0
    equity = [CAPITAL]  # the period starts with the starting capital: the first bar's costs count
    for i in range(start, len(close)):
        px = close[i]
        if ready[i] and f[i] > s[i] and units == 0:
            units = math.floor(FRACTION * cash / px / step + 1e-9) * step
            cash -= units * px * (1 + FEE)
        elif ready[i] and f[i] < s[i] and units > 0:
            cash += units * px * (1 - FEE)
            units, trips = 0.0, trips + 1
        equity.append(cash + units * px)
    if units > 0:  # the run ends flat: the last position is sold at the last close
        equity[-1] = cash + units * close[-1] * (1 - FEE)
        trips += 1
    eq = np.asarray(equity)
    rets = eq[1:] / eq[:-1] - 1.0
    idx = frame.index[start:]
    years = (idx[-1] - idx[0]).total_seconds() / (365.25 * 86400)
    ppy = (len(idx) - 1) / years
    return {
        "Sharpe": float(rets.mean() / rets.std(ddof=1) * math.sqrt(ppy)),
        "TotalReturn": float(eq[-1] / eq[0] - 1.0),
        "Trades": float(trips),
    }


def _close(a: float, b: float, rel: float = 0.01) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-4


CASES = [
    # symbol, sample, expected asset class, expected price precision, expected size step
    ("EURUSD", samples.eurusd, "fx", 5, 1.0),
    ("BTCUSD", samples.btc, "crypto", 2, 0.01),
    ("PENNY", samples.two_dollar_stock, "equity", 2, 1.0),
    ("MICRO", samples.micro_price, "equity", 9, 1.0),
    ("THIN", samples.thin_volume, "equity", 2, 1.0),
]


@pytest.mark.parametrize(("symbol", "make", "klass", "precision", "step"), CASES, ids=[c[0] for c in CASES])
def test_engine_matches_the_independent_replica(child, symbol, make, klass, precision, step) -> None:
    frame = make()
    settings = BacktestSettings()
    prepared = prepare_bars(symbol, frame, settings)
    spec = prepared.spec
    assert spec is not None
    assert (spec.asset_class, spec.price_precision, spec.size_increment) == (klass, precision, step)
    # the engine sees the data's own prices: nothing was rounded away
    assert np.allclose(prepared.closes, frame["close"].to_numpy(), rtol=1e-13, atol=0)

    outcome = _run(child, EMA_RULE, prepared, settings)
    assert outcome.status == "ok", outcome.error
    assert outcome.warnings == []
    want = replica(frame, step)
    got = outcome.metrics
    assert want["Trades"] >= 10
    assert got["Trades"] == want["Trades"]
    assert _close(got["Sharpe"], want["Sharpe"]), (got["Sharpe"], want["Sharpe"])
    assert _close(got["TotalReturn"], want["TotalReturn"]), (got["TotalReturn"], want["TotalReturn"])


def test_default_fills_are_the_whole_order_at_the_close_even_on_thin_volume(child) -> None:
    """NautilusTrader's own bar fills quote volume/4 at the close and fill the rest a tick worse."""
    frame = samples.thin_volume()
    settings = BacktestSettings()
    prepared = prepare_bars("THIN", frame, settings)
    fills = child.submit(_engine_fills, prepared, settings).result(timeout=300)
    closes = dict(zip(prepared.ts.tolist(), prepared.closes.tolist(), strict=True))
    last = float(prepared.closes[-1])
    assert len(fills) >= 20
    assert np.all(np.abs(fills[:, 1]) > 100 * frame["volume"].max())  # orders dwarf every bar's volume
    for ts, _, px, _ in fills:
        assert px == closes.get(int(ts), last)


def test_volume_fill_model_charges_exactly_the_configured_slippage(child) -> None:
    frame = samples.thin_volume()
    settings = BacktestSettings(fill_model="volume", volume_share=0.5, slippage_bps=20.0)
    prepared = prepare_bars("THIN", frame, settings)
    fills = child.submit(_engine_fills, prepared, settings, 0.002).result(timeout=300)
    index = {t: i for i, t in enumerate(prepared.ts.tolist())}
    at_close = slipped = 0
    for ts, qty, px, _ in fills:
        i = index.get(int(ts), len(prepared.ts) - 1)
        close = float(prepared.closes[i])
        worse = close * (1.002 if qty > 0 else 0.998)
        worse = (math.ceil(worse * 100 - 1e-6) if qty > 0 else math.floor(worse * 100 + 1e-6)) / 100
        if px == close:
            at_close += 1
            assert abs(qty) <= 0.5 * prepared.volume[i]
        else:
            slipped += 1
            assert px == pytest.approx(worse)
    assert at_close > 0 and slipped > 0
    assert settings.fills.describe() == {"model": "volume", "volume_share": 0.5, "slippage_bps": 20.0}


@pytest.mark.parametrize(
    ("make", "scale"),
    [(samples.thin_volume, 1 / 600), (samples.thin_volume, 300.0), (samples.micro_price, 1 / 600),
     (samples.btc, 300.0)],
    ids=["stock-div600", "stock-x300", "micro-div600", "btc-x300"],
)
def test_sharpe_is_invariant_to_the_price_level(child, make, scale: float) -> None:
    frame = make()
    settings = BacktestSettings()
    base = _run(child, EMA_RULE, prepare_bars("LVL", frame, settings), settings)
    scaled_frame = frame.copy()
    scaled_frame[["open", "high", "low", "close"]] *= scale
    scaled = _run(child, EMA_RULE, prepare_bars("LVL", scaled_frame, settings), settings)
    assert base.status == scaled.status == "ok"
    assert scaled.metrics["Trades"] == base.metrics["Trades"]
    assert _close(scaled.metrics["Sharpe"], base.metrics["Sharpe"]), (scaled.metrics, base.metrics)


def test_validation_is_warmed_up_on_the_bars_before_it(child) -> None:
    frame = samples.eurusd()
    train, validation = frame.iloc[:2000], frame.iloc[2000:]
    settings = BacktestSettings(warmup_bars=250)
    prepared = prepare_bars("EURUSD", validation, settings, warmup=train)
    assert prepared.warmup == 250 and len(prepared) == len(validation)
    outcome = _run(child, EMA_RULE, prepared, settings)
    assert outcome.status == "ok", outcome.error
    assert outcome.bars == len(validation)
    assert pd.Timestamp(outcome.equity_index[0], tz="UTC") == validation.index[0]
    want = replica(frame.iloc[2000 - 250:], 1.0, start=250)
    assert outcome.metrics["Trades"] == want["Trades"]
    assert _close(outcome.metrics["Sharpe"], want["Sharpe"])
    assert _close(outcome.metrics["TotalReturn"], want["TotalReturn"])

    # buy-and-hold is invested from the first scored bar, as before, and not during the warm-up
    bh = _run(child, seed_source("buy_and_hold"), prepared, settings)
    assert bh.status == "ok"
    assert bh.metrics["Trades"] == 1 and bh.metrics["Exposure"] > 0.99
    close = validation["close"].to_numpy()
    units = math.floor(FRACTION * CAPITAL / close[0])
    expected = (CAPITAL - units * close[0] * FEE + units * (close[-1] * (1 - FEE) - close[0])) / CAPITAL - 1
    assert bh.metrics["TotalReturn"] == pytest.approx(expected, abs=2e-4)


def test_screen_slice_keeps_the_warm_up() -> None:
    frame = samples.eurusd()
    prepared = prepare_bars("EURUSD", frame.iloc[2000:], BacktestSettings(warmup_bars=100), warmup=frame.iloc[:2000])
    head = prepared.slice(0, 300)
    assert head.warmup == 100 and len(head) == 300 and head.ts[100] == prepared.ts[100]


# ------------------------------------------------------------------------------------------ refusals


def test_a_position_too_expensive_to_open_once_is_a_clear_failure(child) -> None:
    frame = samples.btc()
    settings = BacktestSettings(instruments={"BTCUSD": {"size_increment": 1.0}}, starting_capital=50_000.0)
    outcome = _run(child, EMA_RULE, prepare_bars("BTCUSD", frame, settings), settings)
    assert outcome.status == "incomplete"
    assert "no position could be opened" in (outcome.error or "")
    assert "size_increment" in (outcome.error or "")


def test_skipped_orders_after_losses_are_a_warning(child) -> None:
    # up (buy one whole coin), down (sell at a loss), then a gap to a price above what is left: refused opens
    path = np.r_[np.linspace(55_000, 60_000, 100), np.linspace(60_000, 20_000, 100), np.linspace(90_000, 95_000, 100)]
    close = np.round(path, 2)
    frame = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 5.0},
                         index=pd.date_range("2021-01-04", periods=len(close), freq="1h", tz="UTC"))
    settings = BacktestSettings(instruments={"BTCUSD": {"size_increment": 1.0}}, starting_capital=62_000.0)
    outcome = _run(child, EMA_RULE, prepare_bars("BTCUSD", frame, settings), settings)
    assert outcome.status == "ok", outcome.error
    assert outcome.metrics["Trades"] == 1
    assert len(outcome.warnings) == 1 and "skipped" in outcome.warnings[0] and "one order step" in outcome.warnings[0]


def test_a_price_that_rounds_to_zero_is_refused_with_one_line() -> None:
    frame = samples.micro_price()
    settings = BacktestSettings(instruments={"MICRO": {"price_precision": 4}})
    with pytest.raises(ValueError, match="rounds to zero"):
        prepare_bars("MICRO", frame, settings)


# ------------------------------------------------------------------------------------------ spec and sizing


def test_precision_inference_ignores_float_noise_and_caps() -> None:
    assert market.infer_price_precision(np.array([1.07123, 1.0712, 1.1]))[0] == 5
    noisy = np.array([65123.00000000001, 1.0700000000000001, 0.30000000000000004])
    assert market.infer_price_precision(noisy)[0] == 2
    rescaled = np.array([101.37, 100.46, 99.25]) / 600
    digits, how = market.infer_price_precision(rescaled)
    assert how == "significant digits" and digits == 8  # 8 significant digits of 0.165...
    assert market.infer_price_precision(np.array([0.1234567890123, 0.7]))[0] == 8  # noise: 8 significant digits
    # sub-micro prices keep 6 significant digits: the cap rises with them (never beyond the hard cap)
    assert market.infer_price_precision(np.array([2.0e-5, 2.1e-5]) / 600)[0] == 13
    assert market.infer_price_precision(np.array([1.23456789e-14]))[0] == market.HARD_PRICE_PRECISION


def test_asset_class_from_symbol_and_overrides() -> None:
    frame = samples.eurusd()
    assert market.split_pair("EUR/USD") == ("EUR", "USD")
    assert market.split_pair("BTC-USDT") == ("BTC", "USDT")
    assert market.split_pair("AAPL") is None
    # file names carry more than the pair
    assert market.split_pair("EURUSD_H1") == ("EUR", "USD")
    assert market.split_pair("btc-usdt-1h") == ("BTC", "USDT")
    assert market.split_pair("GBPJPY 2023") == ("GBP", "JPY")
    assert market.split_pair("SP_500") is None and market.split_pair("MSFT_daily") is None
    # Yahoo Finance file names: EURUSD=X is EUR/USD, JPY=X is USD/JPY, BTC-USD is crypto, ^GSPC and ES=F are not pairs
    assert market.split_pair("EURUSD=X") == ("EUR", "USD") and market.split_pair("jpy=x") == ("USD", "JPY")
    assert market.split_pair("BTC-USD") == ("BTC", "USD")
    assert market.split_pair("^GSPC") is None and market.split_pair("ES=F") is None
    spec = market.instrument_spec("USDJPY", frame * 140)
    assert (spec.asset_class, spec.base_currency, spec.quote_currency, spec.account_currency) == (
        "fx", "USD", "JPY", "JPY")
    es = market.instrument_spec("ES", frame * 4000, overrides={"asset_class": "future", "tick": 0.25,
                                                                "multiplier": 50.0})
    assert (es.instrument_type, es.tick, es.price_precision, es.size_increment, es.multiplier) == (
        "FuturesContract", 0.25, 2, 1.0, 50.0)
    q = market.quantize_prices(frame * 4000, es)
    assert np.allclose(q["close"] / 0.25, np.rint(q["close"] / 0.25))


def test_order_quantity_is_exact_multiples_of_the_step() -> None:
    q = market.order_quantity(price=1.07123, equity=100_000.0, trade_fraction=0.95, spec_step=Decimal(1000))
    assert q == Decimal(88000)
    q = market.order_quantity(price=60_000.0, equity=100_000.0, trade_fraction=0.95, spec_step=Decimal("0.01"))
    assert q == Decimal("1.58")
    q = market.order_quantity(price=4000.0, equity=100_000.0, trade_fraction=0.95, spec_step=Decimal(1),
                              multiplier=50.0)
    assert q == 0
    capped = market.order_quantity(price=10.0, equity=100_000.0, trade_fraction=1.0, spec_step=Decimal(1),
                                   free_cash=100_000.0, fee_rate=0.001)
    assert capped * Decimal(10) * Decimal("1.001") <= Decimal(100_000)


def test_round_trips_are_counted_in_whole_size_steps() -> None:
    fills = np.array([
        [1.0, 65123.0, 1.0, 1.0],
        [2.0, -65123.00000000001, 1.1, 1.0],  # a float residue must not leave a phantom open position
        [3.0, 10.0, 1.0, 0.0],
        [4.0, -5.0, 1.2, 0.0],
        [5.0, -4.999999999999, 1.3, 0.0],
    ])
    trips = round_trips(fills, 1.0, size_precision=0)
    assert len(trips) == 2
    assert trips[0] == pytest.approx(65123 * 0.1 - 2.0)
    assert trips[1] == pytest.approx(5 * 0.2 + 5 * 0.3)


def test_config_overrides_are_validated_with_one_line_errors() -> None:
    ok = from_mapping({"backtest": {"instruments": {"EURUSD": {"asset_class": "fx", "price_precision": 5}}}})
    assert ok.backtest.instruments == {"EURUSD": {"asset_class": "fx", "price_precision": 5}}
    with pytest.raises(ConfigError, match=r"did you mean 'size_increment'\?"):
        from_mapping({"backtest": {"instruments": {"EURUSD": {"size_incremnt": 1}}}})
    with pytest.raises(ConfigError, match=r"did you mean 'crypto'\?"):
        from_mapping({"backtest": {"instruments": {"BTC": {"asset_class": "crypt"}}}})
    with pytest.raises(ConfigError, match="expected a table"):
        from_mapping({"backtest": {"instruments": {"BTC": 3}}})
    with pytest.raises(ConfigError, match="whole multiple"):
        from_mapping({"backtest": {"instruments": {"BTC": {"size_increment": 0.3, "lot_size": 0.5}}}})
    with pytest.raises(ConfigError, match=r"did you mean 'volume'\?"):
        from_mapping({"backtest": {"fill_model": "volum"}})
    for err in ("size_incremnt",):
        try:
            from_mapping({"backtest": {"instruments": {"X": {err: 1}}}})
        except ConfigError as exc:
            assert "\n" not in str(exc)


# ------------------------------------------------------------------------------------------ wiring


def test_evaluator_warms_each_split_up_on_the_period_before_it() -> None:
    from alpha_evolve.config import RunConfig
    from alpha_evolve.evaluation_setup import build_evaluator, load_run_data

    config = RunConfig()
    data = load_run_data(config)
    splits = data.splits["SYN"]
    warm = splits.warmup("holdout", 300)
    assert warm is not None and len(warm) == 300 and warm.index[-1] < splits.holdout.index[0]
    assert warm.index[-1] == splits.validation.index[-1]
    assert splits.warmup("train", 300) is None
    with build_evaluator(config, data=data, include=("train", "validation"), max_concurrent=1) as ev:
        assert ("SYN", "holdout") not in ev._available  # evolution never holds a holdout bar, warm-up or not
        assert ev.instruments["SYN"].asset_class == "equity"
        bh = ev.evaluate(seed_source("buy_and_hold"), split="validation", stage="full")
        seed = ev.evaluate(seed_source("momentum"), split="validation", stage="full")
    assert bh.ok and bh.bars == len(splits.validation)
    # invested from the first validation bar (fee paid inside the period), never during the warm-up
    first = splits.validation.index[0].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert bh.metrics["Exposure"] > 0.99 and bh.equity[0][0] == first
    # the momentum seed is warm on the first validation bar: replicated here on the bars the evaluator used
    warm = splits.warmup("validation", 250)
    frame = pd.concat([warm, splits.validation])
    from alpha_evolve.market import quantize_prices

    frame = quantize_prices(frame, ev.instruments["SYN"])
    want = replica(frame, ev.instruments["SYN"].size_increment, start=len(warm))
    assert seed.ok, seed.error
    assert seed.metrics["Trades"] == want["Trades"]
    assert _close(seed.metrics["Sharpe"], want["Sharpe"]) and _close(seed.metrics["TotalReturn"], want["TotalReturn"])
    assert bh.return_stats["n_obs"] == len(splits.validation)  # every bar, not the plot's points
    assert bh.warnings == []


def test_volume_fills_on_data_without_volume_say_so_on_every_scoring_path() -> None:
    # Yahoo's FX files carry volume 0 on every bar: the volume model would slip every order without a word
    frame = samples.eurusd().assign(volume=0.0)
    said = {}
    for model in ("volume", "close"):
        settings = BacktestSettings(fill_model=model)
        prepared = prepare_bars("EURUSD=X", frame, settings)
        said[model] = scored_outcome(prepared, settings, np.zeros((0, 4)), 0.0).warnings  # every replay scores here
    assert said["close"] == []
    assert len(said["volume"]) == 1 and "volume is zero on 100% of bars" in said["volume"][0]


def test_the_numpy_replay_leaves_skipped_orders_to_the_engine() -> None:
    # the numpy replay must not score a run the engine would warn about or fail ("no position could be opened")
    from alpha_evolve.replay import ACTION_FLAT, ACTION_LONG, vector_fills

    path = np.r_[np.linspace(55_000, 60_000, 100), np.linspace(60_000, 20_000, 100), np.linspace(90_000, 95_000, 100)]
    close = np.round(path, 2)
    frame = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 5.0},
                         index=pd.date_range("2021-01-04", periods=len(close), freq="1h", tz="UTC"))
    settings = BacktestSettings(instruments={"BTCUSD": {"size_increment": 1.0}}, starting_capital=62_000.0)
    prepared = prepare_bars("BTCUSD", frame, settings)
    one_trip = [(10, ACTION_LONG), (190, ACTION_FLAT)]
    fills = vector_fills(prepared, settings, one_trip)
    assert fills is not None and len(fills) == 2
    assert vector_fills(prepared, settings, [*one_trip, (250, ACTION_LONG)]) is None  # 90k > what is left
