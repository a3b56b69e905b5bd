"""An independent, vectorised re-implementation of the oracle, the trend_filter seed and buy-and-hold.

It shares no code with the engine path: indicators, signals, integer-unit cash-account fills at the bar's close
(with the base strategy's cash head-room and fees) and the Sharpe ratio are recomputed from the raw closes with
numpy, so agreement with the engine checks both the planted rule and the engine's figures.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def efficiency_ratio(close: np.ndarray, period: int) -> np.ndarray:
    """Kaufman's ratio as NautilusTrader computes it: net move over ``period - 1`` bars / ``period`` absolute moves."""
    moves = np.abs(np.diff(close, prepend=close[0]))
    path = np.cumsum(moves)
    out = np.full(len(close), np.nan)
    idx = np.arange(period - 1, len(close))
    den = path[idx] - path[np.maximum(idx - period, 0)]
    net = np.abs(close[idx] - close[idx - period + 1])
    out[idx] = np.divide(net, den, out=np.zeros_like(net), where=den > 0)
    return out


def sma(close: np.ndarray, period: int) -> np.ndarray:
    out = np.full(len(close), np.nan)
    csum = np.cumsum(np.insert(close, 0, 0.0))
    out[period - 1:] = (csum[period:] - csum[:-period]) / period
    return out


def _hold(enter: np.ndarray, leave: np.ndarray) -> np.ndarray:
    """Position 1 from an ``enter`` bar until the next ``leave`` bar (enter wins on a bar with both)."""
    state = np.where(enter, 1.0, np.where(leave, 0.0, np.nan))
    return pd.Series(state).ffill().fillna(0.0).to_numpy()


def oracle_targets(close: np.ndarray, er_period: int, ma_period: int, threshold: float, dip: float,
                   warmup: int = 0) -> np.ndarray:
    """Position per scored bar; the first ``warmup`` closes only warm the indicators up (no decisions)."""
    er, ma = efficiency_ratio(close, er_period), sma(close, ma_period)
    ready = ~(np.isnan(er) | np.isnan(ma))
    trend = ready & (er > threshold)
    enter = (trend & (close > ma)) | (ready & ~trend & (close < ma * (1.0 - dip)))
    leave = (trend & ~(close > ma)) | (ready & ~trend & ~(close < ma * (1.0 - dip)) & (close >= ma))
    return _hold(enter[warmup:], leave[warmup:])


def trend_filter_targets(close: np.ndarray, er_period: int = 15, ma_period: int = 10,
                         threshold: float = 0.17, warmup: int = 0) -> np.ndarray:
    er, ma = efficiency_ratio(close, er_period), sma(close, ma_period)
    ready = ~(np.isnan(er) | np.isnan(ma))
    enter = ready & (er > threshold) & (close > ma)
    leave = ready & ~enter & (close < ma)
    return _hold(enter[warmup:], leave[warmup:])


def cash_account(close: np.ndarray, target: np.ndarray, capital: float = 100_000.0, fraction: float = 0.95,
                 fee: float = 0.001, tick: float = 0.01) -> tuple[np.ndarray, int]:
    """Equity per bar and number of entries; everything still held is sold at the last close."""
    cash, units, entries = capital, 0, 0
    equity = np.empty(len(close))
    for i, price in enumerate(close):
        want = target[i] if i < len(close) - 1 else 0.0
        if want > 0 and units == 0:
            budget = min(fraction * cash, cash * 0.995 * price / ((price + tick) * (1.0 + fee)))
            units = math.floor(budget / price)
            cash -= units * price * (1.0 + fee)
            entries += 1
        elif want == 0 and units > 0:
            cash += units * price * (1.0 - fee)
            units = 0
        equity[i] = cash + units * price
    return equity, entries


def sharpe(equity: np.ndarray, periods_per_year: float) -> float:
    returns = equity[1:] / equity[:-1] - 1.0
    std = returns.std(ddof=1)
    return float(returns.mean() / std * math.sqrt(periods_per_year)) if std > 0 else 0.0
