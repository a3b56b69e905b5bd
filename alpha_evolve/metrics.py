"""Performance metrics from a mark-to-market equity curve.

Why this exists: NautilusTrader's portfolio analyzer treats one return per *closed position* as a daily
return (see FIELD_NOTES), which inflates Sharpe by an order of magnitude. Every figure here is computed from
the periodic simple returns of an equity curve sampled once per bar (fills + bar closes, fees included),
annualised by the bar frequency, so numbers are comparable across candidates, instruments and timeframes.

All functions return finite floats: degenerate inputs (flat equity, one bar, no trades) yield 0, never
NaN/inf, because these numbers are stored, ranked and serialised (orjson silently writes NaN as null).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import numpy as np
import pandas as pd

from alpha_evolve.metric_names import METRIC_NAMES, WORST_IS_MAX, WORST_IS_MIN
from alpha_evolve.values import finite_or_zero

_EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


def _as_array(values: pd.Series | np.ndarray | Sequence[float]) -> np.ndarray:
    arr = values.to_numpy(dtype=float) if isinstance(values, pd.Series) else np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def simple_returns(equity: pd.Series | np.ndarray | Sequence[float]) -> np.ndarray:
    """Periodic simple returns; a non-positive previous equity (a blown account) gives a -100 % period."""
    eq = _as_array(equity)
    if eq.size < 2:
        return np.zeros(0)
    prev = eq[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = np.where(prev > 0, eq[1:] / prev - 1.0, -1.0)
    return np.asarray(rets, dtype=float)


def max_drawdown(equity: pd.Series | np.ndarray | Sequence[float]) -> float:
    """Largest peak-to-trough fall as a positive fraction of the peak (0.25 = 25 %)."""
    eq = _as_array(equity)
    if eq.size < 2:
        return 0.0
    peaks = np.maximum.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peaks > 0, 1.0 - eq / peaks, 0.0)
    return finite_or_zero(min(max(float(dd.max()), 0.0), 1.0)) if dd.size else 0.0


def compute_metrics(
    equity: pd.Series | np.ndarray | Sequence[float],
    periods_per_year: float,
    trades: Sequence[float] = (),
    exposure: float = 0.0,
    risk_free: float = 0.0,
) -> dict[str, float]:
    """Every CONTRACTS.md metric from one equity curve sampled once per bar.

    `trades` are round-trip PnLs after costs (only their sign and count matter here); `exposure` is the
    fraction of bars with an open position; `risk_free` is an annual rate, spread evenly over the periods.
    """
    eq = _as_array(equity)
    rets = simple_returns(eq)
    ppy = float(periods_per_year) if periods_per_year and periods_per_year > 0 else 252.0
    excess = rets - risk_free / ppy

    sharpe = sortino = ann_vol = 0.0
    if rets.size >= 2:
        std = float(np.std(rets, ddof=1))
        ann_vol = std * math.sqrt(ppy)
        if std > 1e-15:
            sharpe = float(np.mean(excess)) / std * math.sqrt(ppy)
        downside = float(np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2)))
        if downside > 1e-15:
            sortino = float(np.mean(excess)) / downside * math.sqrt(ppy)

    total_return = cagr = 0.0
    if eq.size >= 2 and eq[0] > 0:
        total_return = float(eq[-1] / eq[0] - 1.0)
        years = (eq.size - 1) / ppy
        if eq[-1] <= 0:
            cagr = -1.0
        elif years > 0:
            # Clamp the exponent: a tiny span with a big move would overflow; such a CAGR means nothing.
            cagr = math.expm1(min(math.log(eq[-1] / eq[0]) / years, 50.0))
    mdd = max_drawdown(eq)
    calmar = cagr / mdd if mdd > 0 else 0.0

    pnls = np.asarray(list(trades), dtype=float)
    n_trades = int(pnls.size)
    win_rate = float(np.count_nonzero(pnls > 0)) / n_trades if n_trades else 0.0

    out = {
        "Sharpe": sharpe,
        "Sortino": sortino,
        "Calmar": calmar,
        "MaxDD": mdd,
        "CAGR": cagr,
        "TotalReturn": total_return,
        "AnnVol": ann_vol,
        "WinRate": win_rate,
        "Trades": float(n_trades),
        "Exposure": min(max(float(exposure), 0.0), 1.0),
    }
    return {k: finite_or_zero(v) for k, v in out.items()}


def aggregate(per_instrument: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Universe metrics: the mean of each metric plus its worst case under `worst_<name>`.

    The mean rewards a strategy that works on average; the worst case (min of Sharpe, Sortino, Calmar, CAGR,
    TotalReturn, WinRate; max of MaxDD, AnnVol) exposes one that only works on a lucky instrument. `Trades` is
    the mean per instrument (not the sum) so the screen thresholds mean the same for one or many instruments.
    With a single instrument the result equals its metrics (and worst_* equal the metric).
    """
    if not per_instrument:
        return {name: 0.0 for name in METRIC_NAMES}
    rows = list(per_instrument.values())
    out: dict[str, float] = {}
    for name in METRIC_NAMES:
        vals = [float(r.get(name, 0.0)) for r in rows]
        out[name] = finite_or_zero(float(np.mean(vals)))
        if name in WORST_IS_MIN:
            out[f"worst_{name}"] = finite_or_zero(min(vals))
        elif name in WORST_IS_MAX:
            out[f"worst_{name}"] = finite_or_zero(max(vals))
    return out


# ----------------------------------------------------------------------------------------------------
# Probabilistic and Deflated Sharpe ratio (Bailey & López de Prado 2012, 2014).
# Sharpe ratios here are *per period* (not annualised), as in the papers; skew and kurtosis are the (biased)
# sample moments, kurtosis non-excess (3 for a normal distribution).
# ----------------------------------------------------------------------------------------------------


def probabilistic_sharpe_from_stats(
    sr: float, sr_benchmark: float, n_obs: int, skew: float, kurt: float
) -> float:
    """P(true SR > sr_benchmark) given an observed per-period SR over n_obs returns with these moments."""
    if n_obs < 2:
        return 0.0
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if not math.isfinite(var) or var <= 0:
        return 0.0
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var)
    return finite_or_zero(_NORMAL.cdf(z)) if math.isfinite(z) else (1.0 if z > 0 else 0.0)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected maximum per-period SR among n_trials unskilled strategies whose SRs have this variance."""
    if n_trials < 2 or sr_variance <= 0:
        return 0.0
    a = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    b = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(sr_variance) * ((1.0 - _EULER_GAMMA) * a + _EULER_GAMMA * b)


def _moments(returns: Sequence[float] | np.ndarray | pd.Series) -> tuple[float, int, float, float]:
    r = _as_array(returns)
    n = int(r.size)
    if n < 2:
        return 0.0, n, 0.0, 3.0
    sd = float(np.std(r, ddof=1))
    if sd <= 1e-15:
        return 0.0, n, 0.0, 3.0
    sr = float(np.mean(r)) / sd
    c = r - r.mean()
    m2 = float(np.mean(c**2))
    skew = float(np.mean(c**3)) / m2**1.5
    kurt = float(np.mean(c**4)) / m2**2
    return sr, n, skew, kurt


def probabilistic_sharpe(
    returns: Sequence[float] | np.ndarray | pd.Series, sr_benchmark: float = 0.0
) -> float:
    """PSR of a return series against a per-period benchmark Sharpe."""
    sr, n, skew, kurt = _moments(returns)
    if n < 2:
        return 0.0
    return probabilistic_sharpe_from_stats(sr, sr_benchmark, n, skew, kurt)


def deflated_sharpe(
    returns: Sequence[float] | np.ndarray | pd.Series, n_trials: int, sr_variance: float
) -> float:
    """DSR: the PSR against the SR that the best of n_trials unskilled trials would show by luck.

    `sr_variance` is the variance of the per-period SRs across the trials (e.g. across a population).
    """
    return probabilistic_sharpe(returns, expected_max_sharpe(n_trials, sr_variance))


def return_stats(equity: Sequence[float] | np.ndarray | pd.Series) -> dict[str, float]:
    """What PSR/DSR need from an equity curve sampled once per bar: the per-period Sharpe, the number of
    returns and their skew and (non-excess) kurtosis. Computed from every bar: a downsampled curve would
    understate the number of observations and change the moments."""
    sr, n, skew, kurt = _moments(simple_returns(equity))
    return {"n_obs": float(n), "sharpe_per_period": finite_or_zero(sr), "skew": finite_or_zero(skew),
            "kurtosis": finite_or_zero(kurt)}


def pooled_return_stats(per_instrument: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """A universe's return stats the way `aggregate` pools its metrics: the mean of each instrument's (the
    fewest observations for ``n_obs``). Empty if any instrument has none."""
    rows = list(per_instrument)
    if not rows or any(not r for r in rows):
        return {}
    if len(rows) == 1:
        return dict(rows[0])
    out = {k: finite_or_zero(float(np.mean([float(r.get(k, 0.0)) for r in rows]))) for k in rows[0]}
    out["n_obs"] = float(min(float(r.get("n_obs", 0.0)) for r in rows))
    return out
