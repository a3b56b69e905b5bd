"""Seeded synthetic market data with regimes, so evolved strategies have real structure to find.

A pure random walk would make every strategy's edge noise, and the evolutionary loop would reward luck. The
generator therefore switches between three hidden regimes with a Markov chain — trending up, trending down and a
choppy, mean-reverting market — and layers GARCH(1,1) volatility clustering on top. The dynamics are defined
*per bar*, not per unit of time, so a 2,000-bar series has the same structure whatever its frequency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["REGIME_NAMES", "SyntheticPath", "simulate", "synthetic_bars"]

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

    close = np.exp(log_close)
    prev_close = np.concatenate(([start_price], close[:-1]))
    open_ = prev_close * np.exp(rng.normal(0.0, 0.15, n_bars) * sigmas)
    body_high = np.maximum(open_, close)
    body_low = np.minimum(open_, close)
    high = body_high * np.exp(np.abs(rng.normal(0.0, 0.6, n_bars)) * sigmas)
    low = body_low * np.exp(-np.abs(rng.normal(0.0, 0.6, n_bars)) * sigmas)
    abs_move = np.abs(np.log(close / prev_close))
    volume = np.round(1e6 * np.exp(rng.normal(0.0, 0.25, n_bars) + 25.0 * abs_move)) + 100.0

    bars = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index,
        dtype="float64",
    )
    bars.attrs["symbol"] = symbol
    return SyntheticPath(bars=bars, regimes=regimes)


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
