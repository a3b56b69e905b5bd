"""Metrics against numbers worked out by hand (written out here, not recomputed with the code under test)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from alpha_evolve.metrics import (
    METRIC_NAMES,
    aggregate,
    compute_metrics,
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
    probabilistic_sharpe_from_stats,
)


def test_hand_calculated_series() -> None:
    # equity 100 -> 110 -> 99 -> 108.9 -> 108.9 at 4 periods a year (one year in total).
    # returns: +0.10, -0.10, +0.10, 0.00 ; mean 0.025
    # deviations 0.075, -0.125, 0.075, -0.025 ; sum of squares 0.0275 ; var(ddof=1) 0.0275/3 ; std 0.0957427
    # Sharpe  = 0.025 / 0.0957427 * sqrt(4) = 0.522233
    # downside deviation = sqrt((0 + 0.01 + 0 + 0) / 4) = 0.05 ; Sortino = 0.025 / 0.05 * 2 = 1.0
    # AnnVol = 0.0957427 * 2 = 0.191485 ; TotalReturn = CAGR = 0.089 (one year) ; MaxDD = (110-99)/110 = 0.1
    # Calmar = 0.089 / 0.1 = 0.89 ; trades +5, -2, +3 -> WinRate 2/3
    idx = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    equity = pd.Series([100.0, 110.0, 99.0, 108.9, 108.9], index=idx)
    m = compute_metrics(equity, periods_per_year=4, trades=[5.0, -2.0, 3.0], exposure=0.75)
    assert set(m) == set(METRIC_NAMES)
    assert m["Sharpe"] == pytest.approx(0.522233, abs=1e-6)
    assert m["Sortino"] == pytest.approx(1.0, abs=1e-9)
    assert m["AnnVol"] == pytest.approx(0.191485, abs=1e-6)
    assert m["TotalReturn"] == pytest.approx(0.089, abs=1e-12)
    assert m["CAGR"] == pytest.approx(0.089, abs=1e-12)
    assert m["MaxDD"] == pytest.approx(0.1, abs=1e-12)
    assert m["Calmar"] == pytest.approx(0.89, abs=1e-9)
    assert m["WinRate"] == pytest.approx(2 / 3)
    assert m["Trades"] == 3
    assert m["Exposure"] == 0.75


def test_cagr_over_two_years_and_risk_free() -> None:
    # 100 -> 121 over 2 periods at 1 period a year: CAGR = sqrt(1.21) - 1 = 0.1 ; TotalReturn 0.21
    m = compute_metrics([100.0, 110.0, 121.0], periods_per_year=1)
    assert m["CAGR"] == pytest.approx(0.1, abs=1e-12)
    assert m["TotalReturn"] == pytest.approx(0.21, abs=1e-12)
    # returns 0.10, 0.10 -> std 0 -> Sharpe is 0 (not inf)
    assert m["Sharpe"] == 0.0
    # returns 0.02, 0.04 at ppy 1, rf 0.01: excess mean 0.02, std 0.0141421 -> Sharpe 1.414214
    m2 = compute_metrics([100.0, 102.0, 106.08], periods_per_year=1, risk_free=0.01)
    assert m2["Sharpe"] == pytest.approx(1.414214, abs=1e-6)


@pytest.mark.parametrize(
    "equity",
    [[], [100.0], [100.0, 100.0, 100.0, 100.0], [100.0, 0.0, 0.0], [100.0, float("nan"), 100.0]],
)
def test_degenerate_inputs_are_finite(equity: list[float]) -> None:
    m = compute_metrics(np.asarray(equity), periods_per_year=252, trades=[], exposure=0.0)
    assert all(math.isfinite(v) for v in m.values()), m
    json.dumps(m, allow_nan=False)
    if len(equity) <= 1 or len(set(equity)) == 1:
        assert all(v == 0.0 for v in m.values())


def test_blown_account() -> None:
    m = compute_metrics([100.0, 50.0, 0.0], periods_per_year=252)
    assert m["MaxDD"] == 1.0
    assert m["CAGR"] == -1.0
    assert m["TotalReturn"] == -1.0


def test_aggregate_mean_and_worst() -> None:
    a = compute_metrics([100.0, 110.0, 99.0, 108.9, 108.9], 4, [5.0, -2.0, 3.0], 0.75)
    b = {name: 0.0 for name in METRIC_NAMES} | {"Sharpe": -1.0, "MaxDD": 0.5, "AnnVol": 0.01, "Trades": 1.0}
    agg = aggregate({"A": a, "B": b})
    assert agg["Sharpe"] == pytest.approx((0.522233 - 1.0) / 2, abs=1e-6)
    assert agg["worst_Sharpe"] == -1.0
    assert agg["worst_MaxDD"] == 0.5
    assert agg["worst_AnnVol"] == pytest.approx(0.191485, abs=1e-6)
    assert agg["worst_WinRate"] == 0.0
    assert agg["Trades"] == 2.0
    assert "worst_Trades" not in agg and "worst_Exposure" not in agg
    assert aggregate({"A": a})["worst_Calmar"] == a["Calmar"]


def test_probabilistic_sharpe_hand_calc() -> None:
    # returns 0.02, 0, 0.02, 0: SR = 0.01/0.011547 = 0.866025 ; skew 0 ; kurtosis (non-excess) 1
    # variance term 1 - 0 + (1-1)/4 SR^2 = 1 ; z = 0.866025 * sqrt(3) = 1.5 ; PSR = Phi(1.5) = 0.933193
    assert probabilistic_sharpe([0.02, 0.0, 0.02, 0.0]) == pytest.approx(0.933193, abs=1e-6)
    # against its own SR the probability is exactly one half
    psr_self = probabilistic_sharpe([0.02, 0.0, 0.02, 0.0], sr_benchmark=0.8660254)
    assert psr_self == pytest.approx(0.5, abs=1e-6)


def test_deflated_sharpe_paper_example() -> None:
    # Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", numerical example: annualised SR 2.5 over
    # T = 1250 daily returns, skew -3, kurtosis 10, N = 100 trials with annualised SR variance 0.5.
    # Per period: SR = 2.5/sqrt(250) = 0.1581 ; V = 0.5/250 ; E[max SR] = 0.1132 ; DSR = 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-4)
    dsr = probabilistic_sharpe_from_stats(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=1e-3)


def test_deflated_sharpe_on_returns() -> None:
    rng = np.random.default_rng(7)
    rets = rng.normal(0.001, 0.01, 500)
    psr = probabilistic_sharpe(rets)
    # one trial: nothing to deflate
    assert deflated_sharpe(rets, 1, 0.01) == pytest.approx(psr)
    # more trials, or more dispersed trials, can only lower the probability
    assert deflated_sharpe(rets, 1000, 0.01) < deflated_sharpe(rets, 10, 0.01) < psr
    assert deflated_sharpe(rets, 10, 0.02) < deflated_sharpe(rets, 10, 0.01)


def test_return_stats_hand_calculated_and_pooled() -> None:
    from alpha_evolve.metrics import pooled_return_stats, return_stats

    # returns +10 %, -10 %, +10 %: mean 1/30, sample sd sqrt(((2/30)^2 * 2 + (4/30)^2) / 2) = 0.11547
    stats = return_stats([100.0, 110.0, 99.0, 108.9])
    assert stats["n_obs"] == 3
    assert stats["sharpe_per_period"] == pytest.approx((1 / 30) / 0.115470053837925, rel=1e-9)
    # biased moments of (+1, -2, +1) * (1/15): skew = -2/6 / (6/9)^1.5 ... = -0.7071, kurtosis = 1.5
    assert stats["skew"] == pytest.approx(-0.7071067811865476, rel=1e-9)
    assert stats["kurtosis"] == pytest.approx(1.5, rel=1e-9)
    other = {"n_obs": 2.0, "sharpe_per_period": 0.0, "skew": 0.0, "kurtosis": 3.0}
    pooled = pooled_return_stats([stats, other])
    assert pooled["n_obs"] == 2 and pooled["kurtosis"] == pytest.approx(2.25)
    assert pooled_return_stats([stats]) == stats and pooled_return_stats([stats, {}]) == {}
