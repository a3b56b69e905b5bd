"""Small generated bar series for the market-model tests: each stresses one way a fixed set-up goes wrong.

Deterministic (seeded) and exact at the decimals a real feed would carry, so the engine sees the same prices as
the independent replica in ``test_market.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def bars(
    n: int, start: float, decimals: int, step_vol: float, *, freq: str = "1h", seed: int = 1,
    volume: float | tuple[float, float] = (500.0, 1500.0), drift: float = 0.0, business_days: bool = False,
) -> pd.DataFrame:
    """A random-walk OHLCV series rounded to ``decimals`` (volumes uniform in a range, or constant)."""
    rng = np.random.default_rng(seed)
    log_close = np.log(start) + np.cumsum(rng.normal(drift, step_vol, n))
    # slow swings so an EMA cross trades a few dozen times
    log_close += 0.04 * np.sin(np.arange(n) / 37.0) * (step_vol / 0.01)
    close = np.round(np.exp(log_close), decimals)
    open_ = np.round(np.r_[start, close[:-1]], decimals)
    spread = np.abs(rng.normal(0.0, step_vol / 2, n))
    high = np.round(np.maximum(open_, close) * (1 + spread), decimals)
    low = np.round(np.minimum(open_, close) * (1 - spread), decimals)
    vol = np.round(rng.uniform(volume[0], volume[1], n)) if isinstance(volume, tuple) else np.full(n, float(volume))
    index = (pd.bdate_range("2021-01-04", periods=n, tz="UTC") if business_days
             else pd.date_range("2021-01-04", periods=n, freq=freq, tz="UTC"))
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": vol}, index=index)
    frame.index.name = "timestamp"
    return frame


def eurusd() -> pd.DataFrame:
    """EURUSD-like hourly bars: 5 decimals, tick volume ~1,000 (an order is ~90x a bar's volume)."""
    return bars(3000, 1.0712, 5, 0.0012, seed=11)


def btc() -> pd.DataFrame:
    """BTC-like hourly bars: ~60,000 with 2 decimals, a few coins of volume; one coin is 60 % of the account."""
    return bars(3000, 60_000.0, 2, 0.006, seed=12, volume=(2.0, 9.0))


def two_dollar_stock() -> pd.DataFrame:
    """A $2 stock, daily bars with cent prices."""
    return bars(1000, 2.0, 2, 0.02, seed=13, volume=(2e5, 8e5), business_days=True)


def micro_price() -> pd.DataFrame:
    """An asset priced near 1e-5 (8 decimals): 2 or 4 decimals round every price to zero."""
    return bars(3000, 2.0e-5, 9, 0.008, seed=14, volume=(1e9, 5e9))


def thin_volume() -> pd.DataFrame:
    """A $40 stock trading 1-3 shares a bar: every order is hundreds of times the bar's volume."""
    return bars(3000, 40.0, 2, 0.006, seed=15, volume=(1.0, 3.0))
