"""Seeded synthetic markets with structure, so evolved strategies have something real to find.

A pure random walk would make every strategy's edge noise, and the evolutionary loop would reward luck. Two
generators live here; the dynamics of both are defined *per bar*, not per unit of time, so a 2,000-bar series has
the same structure whatever its frequency.

``planted`` (the default data; ``planted_market``) has a documented, exploitable rule whose strength is a knob, so
a run can be measured against a known ceiling (``strategies/oracle.py`` trades the rule):

- Hidden **trend** and **chop** regimes alternate, each lasting between 0.5 and 1.5 times ``regime_bars`` (40
  by default), so train, validation and holdout all see several of both. A trend has a direction drawn at its
  start (up or down with equal probability) and a drift of ``signal x 0.7`` of the bar's volatility in that
  direction: trends persist. Chop pulls the log price back towards the level where the chop began by
  ``signal x 0.6`` of the distance each bar: moves revert.
- Volatility clusters: a GARCH(1,1) shock (long-run 1 % a bar) scaled by 0.7 in trends and 2.0 in chop.
- What native NautilusTrader indicators see: Kaufman's ``EfficiencyRatio`` is high in trends and low in chop, so
  "follow the trend when the efficiency ratio is high, buy dips below a short moving average when it is low"
  trades the rule; noise (the regime is hidden, detection lags, regimes switch at random) keeps it from being
  trivial. ``signal = 0`` removes the edge (volatility clustering stays): a control with nothing to find.

``regimes`` (``simulate``, the original default) switches between trending up, trending down and a choppy,
mean-reverting market with a Markov chain and layers GARCH(1,1) volatility clustering on top; it stays available
as ``[backtest] synthetic_generator = "regimes"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "GENERATORS",
    "PLANTED_REGIME_NAMES",
    "REGIME_NAMES",
    "SyntheticPath",
    "generate_bars",
    "generator_parameters",
    "planted_market",
    "simulate",
    "synthetic_bars",
]

REGIME_NAMES = ("trend_up", "trend_down", "mean_revert")

# Per-bar drift of the log price and volatility multiplier in each regime.
_DRIFT = np.array([0.0025, -0.0025, 0.0])
_VOL_MULT = np.array([0.85, 1.25, 1.0])
# Pull of the log price towards the level at which a mean-reverting regime started.
_KAPPA = 0.12
# Regime transition matrix (rows: from, columns: to); expected regime length ~100-125 bars.
_TRANSITIONS = np.array(
    [
        [0.992, 0.003, 0.005],
        [0.004, 0.990, 0.006],
        [0.004, 0.004, 0.992],
    ]
)
# Long series (hundreds of thousands of minute bars) would compound regime drifts into prices no exchange can
# represent: beyond a band of ±_BAND log units (~20x) around the start price a soft pull brings the price back.
# Inside the band — every series of a few thousand bars in practice — the dynamics are untouched.
_BAND = 3.0
_BAND_PULL = 0.01
# GARCH(1,1) on the per-bar shock: long-run per-bar volatility of about 1 %.
_GARCH_ALPHA = 0.08
_GARCH_BETA = 0.86
_GARCH_OMEGA = 0.01**2 * (1.0 - _GARCH_ALPHA - _GARCH_BETA)


@dataclass(frozen=True, eq=False)
class SyntheticPath:
    """Bars plus the hidden regime of each bar (0 up, 1 down, 2 mean-reverting), for tests and diagnostics."""

    bars: pd.DataFrame
    regimes: np.ndarray


def simulate(
    n_bars: int = 2000,
    seed: int = 7,
    freq: str = "1D",
    start: str = "2015-01-02",
    symbol: str = "SYN",
    start_price: float = 100.0,
) -> SyntheticPath:
    """Generate bars and their hidden regimes; identical for identical arguments on any machine."""
    if n_bars < 2:
        raise ValueError(f"n_bars must be at least 2, got {n_bars}")
    rng = np.random.default_rng(seed)
    index = pd.date_range(start=pd.Timestamp(start, tz="UTC"), periods=n_bars, freq=freq, name="timestamp")

    regimes = np.empty(n_bars, dtype=np.int64)
    regimes[0] = rng.integers(0, 3)
    uniforms = rng.random(n_bars)
    cumulative = np.cumsum(_TRANSITIONS, axis=1)
    for i in range(1, n_bars):
        regimes[i] = min(int(np.searchsorted(cumulative[regimes[i - 1]], uniforms[i])), 2)

    shocks = rng.standard_normal(n_bars)
    log_close = np.empty(n_bars)
    sigmas = np.empty(n_bars)
    variance = _GARCH_OMEGA / (1.0 - _GARCH_ALPHA - _GARCH_BETA)
    x = float(np.log(start_price))
    x0 = anchor = x
    prev_eps = 0.0
    for i in range(n_bars):
        variance = _GARCH_OMEGA + _GARCH_ALPHA * prev_eps**2 + _GARCH_BETA * variance
        sigma = float(np.sqrt(variance)) * _VOL_MULT[regimes[i]]
        eps = sigma * shocks[i]
        if i > 0 and regimes[i] == 2 and regimes[i - 1] != 2:
            anchor = x
        pull = -_KAPPA * (x - anchor) if regimes[i] == 2 else 0.0
        excess = x - x0
        if abs(excess) > _BAND:
            pull -= _BAND_PULL * (excess - np.sign(excess) * _BAND)
        x = x + _DRIFT[regimes[i]] + pull + eps
        log_close[i] = x
        sigmas[i] = sigma
        prev_eps = eps / _VOL_MULT[regimes[i]]

    bars = _ohlcv(rng, index, np.exp(log_close), sigmas, start_price)
    bars.attrs["symbol"] = symbol
    return SyntheticPath(bars=bars, regimes=regimes)


def _ohlcv(rng: np.random.Generator, index: pd.DatetimeIndex, close: np.ndarray, sigmas: np.ndarray,
           start_price: float) -> pd.DataFrame:
    """Open, high, low and volume around given closes (wicks and volume grow with the bar's volatility)."""
    n_bars = len(close)
    prev_close = np.concatenate(([start_price], close[:-1]))
    open_ = prev_close * np.exp(rng.normal(0.0, 0.15, n_bars) * sigmas)
    body_high = np.maximum(open_, close)
    body_low = np.minimum(open_, close)
    high = body_high * np.exp(np.abs(rng.normal(0.0, 0.6, n_bars)) * sigmas)
    low = body_low * np.exp(-np.abs(rng.normal(0.0, 0.6, n_bars)) * sigmas)
    abs_move = np.abs(np.log(close / prev_close))
    volume = np.round(1e6 * np.exp(rng.normal(0.0, 0.25, n_bars) + 25.0 * abs_move)) + 100.0
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index,
        dtype="float64",
    )


# ------------------------------------------------------------------------------------------ planted market

PLANTED_REGIME_NAMES = ("trend", "chop")
GENERATORS = ("planted", "regimes")
"""Names of the synthetic generators, for ``[backtest] synthetic_generator``."""

# Drift of a trend and pull of a chop, per unit of ``signal`` (see the module docstring).
_PLANTED_DRIFT = 0.7  # x the bar's volatility, in the trend's direction
_PLANTED_PULL = 0.6  # share of the distance to the chop's anchor (log price) recovered per bar
_PLANTED_VOL_MULT = np.array([0.7, 2.0])  # trend, chop: chop is the volatile regime
_PLANTED_P_UP = 0.5  # probability that a new trend points up
_PLANTED_LENGTH_SPREAD = (0.5, 1.5)  # a regime lasts uniformly between these multiples of regime_bars


def planted_market(
    n_bars: int = 1500,
    seed: int = 7,
    freq: str = "1D",
    start: str = "2015-01-02",
    symbol: str = "SYN",
    start_price: float = 100.0,
    signal: float = 1.0,
    regime_bars: float = 40.0,
) -> SyntheticPath:
    """Bars of the planted market and the hidden regime of each bar (0 trend, 1 chop); deterministic per seed.

    ``signal`` scales the exploitable part (trend drift and chop pull) and leaves the noise alone;
    ``regime_bars`` is the mean length of a regime in bars.
    """
    if n_bars < 2:
        raise ValueError(f"n_bars must be at least 2, got {n_bars}")
    if signal < 0 or not np.isfinite(signal):
        raise ValueError(f"signal must be a finite number >= 0, got {signal}")
    if not regime_bars >= 2:
        raise ValueError(f"regime_bars must be at least 2, got {regime_bars}")
    rng = np.random.default_rng(seed)
    index = pd.date_range(start=pd.Timestamp(start, tz="UTC"), periods=n_bars, freq=freq, name="timestamp")

    # Regimes alternate; each lasts between half and one and a half times ``regime_bars`` (not a memoryless
    # length, whose long tail can leave a 300-bar validation period inside one regime).
    regimes = np.empty(n_bars, dtype=np.int64)
    directions = np.empty(n_bars)
    regime = int(rng.integers(0, 2))
    i = 0
    while i < n_bars:
        length = max(2, round(rng.uniform(_PLANTED_LENGTH_SPREAD[0], _PLANTED_LENGTH_SPREAD[1]) * regime_bars))
        direction = 1.0 if rng.random() < _PLANTED_P_UP else -1.0
        regimes[i : i + length] = regime
        directions[i : i + length] = direction
        regime = 1 - regime
        i += length

    shocks = rng.standard_normal(n_bars)
    log_close = np.empty(n_bars)
    sigmas = np.empty(n_bars)
    variance = _GARCH_OMEGA / (1.0 - _GARCH_ALPHA - _GARCH_BETA)
    x = float(np.log(start_price))
    x0 = anchor = x
    prev_eps = 0.0
    for i in range(n_bars):
        variance = _GARCH_OMEGA + _GARCH_ALPHA * prev_eps**2 + _GARCH_BETA * variance
        mult = _PLANTED_VOL_MULT[regimes[i]]
        sigma = float(np.sqrt(variance)) * mult
        if regimes[i] == 0:
            mu = directions[i] * signal * _PLANTED_DRIFT * sigma
        else:
            if i == 0 or regimes[i - 1] != 1:
                anchor = x
            mu = -signal * _PLANTED_PULL * (x - anchor)
        excess = x - x0
        if abs(excess) > _BAND:
            mu -= _BAND_PULL * (excess - np.sign(excess) * _BAND)
        eps = sigma * shocks[i]
        x = x + mu + eps
        log_close[i] = x
        sigmas[i] = sigma
        prev_eps = eps / mult
    bars = _ohlcv(rng, index, np.exp(log_close), sigmas, start_price)
    # Quoted in cents like a real market: the venue infers a 0.01 tick from the data, and a replica that rounds
    # to cents sees exactly the prices the engine trades (rounding keeps high >= open, close >= low).
    prices = ["open", "high", "low", "close"]
    bars[prices] = bars[prices].round(2)
    bars.attrs["symbol"] = symbol
    return SyntheticPath(bars=bars, regimes=regimes)


def generator_parameters(generator: str, *, n_bars: int, seed: int, freq: str, signal: float,
                         regime_bars: float) -> dict[str, Any]:
    """What a run records about its synthetic data: enough to regenerate it and to read its structure."""
    params: dict[str, Any] = {"generator": generator, "bars": n_bars, "seed": seed, "freq": freq}
    if generator == "planted":
        params.update({
            "signal": signal,
            "regime_bars": regime_bars,
            "regimes": list(PLANTED_REGIME_NAMES),
            "trend_drift_sigmas": _PLANTED_DRIFT * signal,
            "chop_pull": _PLANTED_PULL * signal,
            "volatility_multipliers": {"trend": float(_PLANTED_VOL_MULT[0]), "chop": float(_PLANTED_VOL_MULT[1])},
            "p_trend_up": _PLANTED_P_UP,
            "tick": 0.01,
            "rule": "trends persist (EfficiencyRatio high), chop reverts to its anchor (EfficiencyRatio low)",
            "oracle": "oracle",
        })
    else:
        params["regimes"] = list(REGIME_NAMES)
    return params


def generate_bars(
    generator: str = "planted",
    n_bars: int = 1500,
    seed: int = 7,
    freq: str = "1D",
    symbol: str = "SYN",
    *,
    signal: float = 1.0,
    regime_bars: float = 40.0,
    start: str = "2015-01-02",
) -> pd.DataFrame:
    """Bars of the named generator (``planted`` or ``regimes``) in the project's standard shape."""
    if generator == "planted":
        return planted_market(n_bars=n_bars, seed=seed, freq=freq, start=start, symbol=symbol, signal=signal,
                              regime_bars=regime_bars).bars
    if generator == "regimes":
        return simulate(n_bars=n_bars, seed=seed, freq=freq, start=start, symbol=symbol).bars
    raise ValueError(f"unknown synthetic generator {generator!r}; expected one of: {', '.join(GENERATORS)}")


def synthetic_bars(
    n_bars: int = 2000,
    seed: int = 7,
    freq: str = "1D",
    start: str = "2015-01-02",
    symbol: str = "SYN",
) -> pd.DataFrame:
    """Bars in the project's standard shape (UTC index; float open, high, low, close, volume).

    `freq` is a pandas frequency taken literally ("1D" is calendar days, "B" business days, "1h", "1min").
    """
    return simulate(n_bars=n_bars, seed=seed, freq=freq, start=start, symbol=symbol).bars
