"""Choosing a run's winner on validation, and saying honestly what that choice is worth.

The winner is the best of ``bt_top`` train finalists plus the seed *on validation*, so its validation figure is
the maximum of several noisy draws and beats the seed's by construction. This module therefore reports, next to
that figure:

* the figure deflated for the selection (``trials.deflate_winner``);
* the validation figure of the **best-on-train evolved program**: validation took no part in choosing it, so its
  comparison with the seed and with buy-and-hold on validation is out of sample — the run's verdict rests on it
  until the sealed holdout is opened (``holdout.py`` then restates the verdict on the holdout);
* buy-and-hold's figure on the same period beside every figure, and the information ratio against it.

A program with fewer than ``[backtest] min_round_trips`` round trips on train or validation is flagged and cannot
be crowned: one trade is buy-and-hold in disguise, and its Sharpe says nothing about a trading rule.

An evolved finalist displaces the seed only when a paired test on validation says it is better (``seed_gate``,
``[backtest] crown_confidence``): with a few hundred validation bars a Sharpe's standard error is about 1, so the
best of several noisy validation draws beats the seed by luck most of the time and then loses to it on the holdout
about half the time. The test uses the returns of both curves on the same bars, which for a descendant of the seed
are strongly correlated: a real difference shows up far sooner than in two separate Sharpe ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from alpha_evolve.metric_names import INFO_RATIO as INFO_RATIO  # declared with the other names
from alpha_evolve.metric_names import LOWER_IS_BETTER_METRICS
from alpha_evolve.metric_names import RANKING_METRICS as RANKING_METRICS
from alpha_evolve.trials import (
    Deflation,
    Selection,
    deflate_winner,
    nested_stage,
    outcome_key,
    program_hash,
    return_shape,
    trial_row,
)
from alpha_evolve.values import finite_or_zero as _num  # a figure in a comparison: not a number counts 0

NO_BEAT_SEED = "no evolved program beat the seed"


@dataclass
class RankedProgram:
    """A finalist with its train and validation figures, in the order the objective ranks them."""

    program: Any
    train: dict[str, float]
    validation: dict[str, float]
    equity: list[tuple[str, float]] = field(default_factory=list)
    status: str = "ok"
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # market-model warnings of its validation run
    return_stats: dict[str, float] = field(default_factory=dict)  # PSR/DSR inputs from every validation bar
    # Place in the train ranking the finalists were drawn from (0 = best train fitness); None: by fitness, then id.
    train_position: int | None = None
    # Paired test against the seed on validation (``seed_gate``): empty when none was run.
    seed_test: dict[str, float] = field(default_factory=dict)
    # False when the seed test said this evolved program is not better than the seed at the run's confidence:
    # it then ranks below the seed (``crown_key``), so it cannot displace it.
    admitted: bool = True

    @property
    def is_seed(self) -> bool:
        return bool(getattr(self.program, "is_seed", False))

    @property
    def crownable(self) -> bool:
        return self.status == "ok" and not self.flags


def information_ratio(equity: Sequence[Sequence[Any]], benchmark: Sequence[Sequence[Any]]) -> float:
    """Annualised information ratio of a curve against a benchmark curve of the same period.

    Both are ``[(iso timestamp, value), ...]``; returns are taken on the timestamps they share, and annualised by
    how many of those there are per year (so a curve sampled for storage still gives a consistent figure).
    """
    a, b = _series(equity), _series(benchmark)
    if a.empty or b.empty:
        return 0.0
    joined = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(joined) < 3:
        return 0.0
    values = joined.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = values[1:] / values[:-1] - 1.0
    excess = rets[:, 0] - rets[:, 1]
    excess = excess[np.isfinite(excess)]
    if excess.size < 2:
        return 0.0
    sd = float(np.std(excess, ddof=1))
    if sd <= 1e-15:
        return 0.0
    span = (joined.index[-1] - joined.index[0]).total_seconds() / (365.25 * 86400.0)
    per_year = excess.size / span if span > 0 else 252.0
    value = float(np.mean(excess)) / sd * math.sqrt(per_year)
    return value if math.isfinite(value) else 0.0


def _series(points: Sequence[Sequence[Any]]) -> pd.Series:
    if not points:
        return pd.Series(dtype=float)
    index = pd.to_datetime([p[0] for p in points], utc=True)
    s = pd.Series([float(p[1]) for p in points], index=index)
    return s[~s.index.duplicated(keep="last")]


def round_trip_flags(train: Mapping[str, Any], validation: Mapping[str, Any], minimum: int) -> list[str]:
    """Why a finalist may not be crowned under the minimum-trades rule (empty: it may)."""
    flags = []
    for period, metrics in (("train", train), ("validation", validation)):
        trades = float(metrics.get("Trades", 0.0) or 0.0)
        if minimum > 0 and trades < minimum:
            flags.append(f"too few round trips on {period}: {trades:g} < {minimum}")
    return flags


def objective_value(metrics: Mapping[str, Any], metric: str) -> float:
    """The objective as a number to maximise (drawdown and volatility are negated)."""
    value = float(metrics.get(metric, 0.0) or 0.0)
    return -value if metric in LOWER_IS_BETTER_METRICS else value


def crown_key(metric: str) -> Callable[[RankedProgram], tuple[int, int, float]]:
    """Crownable programs first, then those the seed test admitted (the seed always is), then by the objective on
    validation; failures last. The gate travels with each finalist (``admitted``), so every nested selection
    (``nested_selections``) is crowned by exactly the run's rule."""

    def key(r: RankedProgram) -> tuple[int, int, float]:
        if r.status != "ok":
            return (-1, 0, float("-inf"))
        return (1 if r.crownable else 0, 1 if (r.admitted or r.is_seed) else 0, objective_value(r.validation, metric))

    return key


def paired_sharpe_test(equity: Sequence[Sequence[Any]], reference: Sequence[Sequence[Any]]) -> dict[str, float]:
    """One-sided test that a curve's Sharpe ratio beats a reference curve's on the same bars (Jobson & Korkie 1981
    with Memmel's 2003 correction): z = (SR_a - SR_b) / sqrt(V), with per-bar Sharpe ratios, their correlation rho
    over T paired returns and V = (2 - 2 rho + (SR_a^2 + SR_b^2 - 2 SR_a SR_b rho^2) / 2) / T.

    Both curves are ``[(iso timestamp, value), ...]`` as the evaluator's trusted replay returned them; returns are
    taken on the timestamps they share (every bar up to ``equity_points``; beyond that, on the sampled points,
    which keeps the test paired but coarser). ``p_value`` is P(Z >= z) under "no better"; 1.0 when there are too
    few shared bars or nothing differs.
    """
    a, b = _series(equity), _series(reference)
    none = {"n_obs": 0.0, "sharpe_diff": 0.0, "correlation": 0.0, "z": 0.0, "p_value": 1.0}
    if a.empty or b.empty:
        return none
    joined = pd.concat([a, b], axis=1, join="inner").dropna()
    values = joined.to_numpy(dtype=float)
    if len(values) < 4:
        return none
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = values[1:] / values[:-1] - 1.0
    rets = rets[np.all(np.isfinite(rets), axis=1)]
    n = rets.shape[0]
    if n < 3:
        return {**none, "n_obs": float(n)}
    sd = rets.std(axis=0, ddof=1)
    sr = np.where(sd > 1e-15, rets.mean(axis=0) / np.where(sd > 1e-15, sd, 1.0), 0.0)
    rho = float(np.corrcoef(rets.T)[0, 1]) if bool(np.all(sd > 1e-15)) else 0.0
    rho = rho if math.isfinite(rho) else 0.0
    sa, sb = float(sr[0]), float(sr[1])
    var = (2.0 - 2.0 * rho + 0.5 * (sa * sa + sb * sb - 2.0 * sa * sb * rho * rho)) / n
    diff = sa - sb
    if var <= 1e-18 or abs(diff) <= 1e-15:
        return {"n_obs": float(n), "sharpe_diff": diff, "correlation": rho, "z": 0.0, "p_value": 1.0}
    z = diff / math.sqrt(var)
    p = 0.5 * math.erfc(z / math.sqrt(2.0))
    return {"n_obs": float(n), "sharpe_diff": diff, "correlation": rho, "z": z, "p_value": p}


def seed_gate(finalists: Sequence[RankedProgram], confidence: float) -> None:
    """Test every evolved finalist against the seed finalist on validation and admit only those better at
    ``confidence`` (p-value <= 1 - confidence); ``confidence`` 0 admits all (the plain best-on-validation rule).

    Without a seed finalist that ran on validation there is nothing to test against and every finalist is
    admitted. The outcome is recorded on each finalist (``seed_test``, ``admitted``) for ``crown_key``.
    """
    seed = next((r for r in finalists if r.is_seed and r.status == "ok" and r.equity), None)
    for r in finalists:
        r.seed_test, r.admitted = {}, True
        if seed is None or r.is_seed or r.status != "ok":
            continue
        r.seed_test = paired_sharpe_test(r.equity, seed.equity)
        r.admitted = confidence <= 0.0 or r.seed_test["p_value"] <= 1.0 - confidence


def draw_finalists(by_train: Sequence[Any], seed: Any | None, k: int) -> list[Any]:
    """The ``k`` best distinct programs of a train ranking (``store.top_k`` order), then the seed if not among them.

    Distinct means a different code key; failed and unscored programs are skipped. A smaller ``k`` draws a prefix
    of what a larger one draws, which is what makes the selections of different ``bt_top`` nested.
    """
    from alpha_evolve.program_keys import code_key

    distinct: list[Any] = []
    seen: set[str] = set()
    for program in by_train:
        if len(distinct) == k:
            break
        if program.status != "ok" or program.fitness is None:
            continue
        key = code_key(program.code)
        if key in seen:
            continue
        seen.add(key)
        distinct.append(program)
    # The seed is in every selection, even when a twin of its code ranked among the k (a twin may differ in
    # comments and, with a non-deterministic market model, in figures): otherwise a larger k could drop it.
    if seed is not None and not any(p is seed or (seed.id is not None and p.id == seed.id) for p in distinct):
        distinct.append(seed)
    return distinct


def train_order(finalists: Sequence[RankedProgram]) -> list[RankedProgram]:
    """Finalists in the order train chose them: recorded position, else fitness descending and id (``top_k``)."""

    def key(r: RankedProgram) -> tuple[float, float, int]:
        fitness = getattr(r.program, "fitness", None)
        f = float(fitness) if isinstance(fitness, int | float) and math.isfinite(float(fitness)) else float("-inf")
        position = float(r.train_position) if r.train_position is not None else float("inf")
        return (position, -f, int(getattr(r.program, "id", 0) or 0))

    return sorted(finalists, key=key)


def nested_selections(finalists: Sequence[RankedProgram], objective: str) -> list[Selection]:
    """The selections a run with ``bt_top`` = 1, 2, ... would have made: the top-j train finalists plus the seed,
    each crowned by ``crown_key`` (ties go to the better train rank, as in the run's own crowning)."""
    order = train_order(finalists)
    seeds = [r for r in order if r.is_seed]
    key = crown_key(objective)  # the seed gate rides on the finalists: each nested set contains the seed
    out: list[Selection] = []
    seen: frozenset[str] = frozenset()
    for j in range(1, len(order) + 1):
        members = order[:j] + [r for r in seeds if all(r is not m for m in order[:j])]
        hashes = frozenset(program_hash(r.program.code) for r in members)
        winner = max(members, key=key)
        if hashes == seen or winner.status != "ok":
            continue
        seen = hashes
        out.append(Selection(hashes, float(winner.validation.get("Sharpe", 0.0) or 0.0), winner_shape(winner)))
    return out


def winner_shape(r: RankedProgram) -> tuple[float, float]:
    """Skew and kurtosis of a finalist's validation returns: every bar's when the evaluator gave them, else those
    of the stored (possibly sampled) curve."""
    stats = r.return_stats
    if stats and stats.get("n_obs", 0) >= 3:
        return float(stats.get("skew", 0.0)), float(stats.get("kurtosis", 3.0))
    values = np.asarray([float(p[1]) for p in r.equity], dtype=float)
    returns = values[1:] / values[:-1] - 1.0 if values.size > 1 else np.zeros(0)
    return return_shape(returns)


def validation_rows(finalists: Sequence[RankedProgram], *, periods_per_year: float, n_obs: int
                    ) -> list[dict[str, Any]]:
    """Ledger rows of the finalists' validation runs (programs with identical figures there are one trial)."""
    return [trial_row(r.program.code, "validation", metrics=r.validation, status=r.status,
                      program_id=r.program.id, role="seed" if r.is_seed else "candidate",
                      periods_per_year=periods_per_year, n_obs=n_obs,
                      behavior_key=outcome_key(r.validation) if r.status == "ok" else None) for r in finalists]


def deflate_crowned(finalists: Sequence[RankedProgram], rows: Sequence[Mapping[str, Any]], *, objective: str,
                    validation_obs: int, train_obs: int, periods_per_year: float,
                    train_period: str = "train") -> Deflation:
    """Deflate a run's crowned program with its ledger ``rows`` at both stages, the validation stage as the
    smallest DSR over the nested selections — so the reported DSR cannot rise with ``bt_top``.

    The train stage tests the train selection's own pick (the first finalist in train order, whatever its
    validation run did): it is the same program for every ``bt_top``.
    """
    if not finalists:
        raise ValueError("no finalists to deflate")
    winner = max(train_order(finalists), key=crown_key(objective))
    pick = train_order(finalists)[0]
    nested = nested_stage(rows, nested_selections(finalists, objective), validation_obs=validation_obs,
                          periods_per_year=periods_per_year)
    return deflate_winner(
        rows, validation_sharpe=float(winner.validation.get("Sharpe", 0.0) or 0.0), validation_obs=validation_obs,
        validation_returns=[], shape=winner_shape(winner), train_sharpe=float(pick.train.get("Sharpe", 0.0) or 0.0),
        train_obs=train_obs, periods_per_year=periods_per_year, train_period=train_period, nested=nested)


def with_info_ratio(metrics: Mapping[str, Any], equity: Sequence[Sequence[Any]],
                    benchmark: Sequence[Sequence[Any]]) -> dict[str, float]:
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    out[INFO_RATIO] = information_ratio(equity, benchmark) if benchmark else 0.0
    return out


def figure(what: str, period: str, metrics: Mapping[str, Any], bh: Mapping[str, Any], *,
           program_id: int | None = None) -> dict[str, Any]:
    """One reported figure with buy-and-hold's on the same period beside it."""
    keep = ("Sharpe", "TotalReturn", "CAGR", "MaxDD", "Trades", INFO_RATIO)
    mine = {k: _num(metrics.get(k)) for k in keep if k in metrics or k != INFO_RATIO}
    theirs = {k: _num(bh.get(k)) for k in keep if k != INFO_RATIO}
    return {
        "what": what,
        "program_id": program_id,
        "period": period,
        "metrics": mine,
        "buy_and_hold": theirs,
        "excess_sharpe": _num(mine.get("Sharpe")) - _num(theirs.get("Sharpe")),
        "excess_total_return": _num(mine.get("TotalReturn")) - _num(theirs.get("TotalReturn")),
    }


def verdict(objective: str, *, period: str, evolved: Mapping[str, Any] | None, evolved_id: int | None,
            seed: Mapping[str, Any], bh: Mapping[str, Any], basis: str) -> dict[str, Any]:
    """Did an evolved program beat the seed and buy-and-hold on a period that took no part in choosing it?"""
    seed_v, bh_v = objective_value(seed, objective), objective_value(bh, objective)
    if evolved is None:
        beat_seed = beat_bh = False
        words = f"{NO_BEAT_SEED}: evolution produced no successful program"
    else:
        ev_v = objective_value(evolved, objective)
        beat_seed, beat_bh = ev_v > seed_v, ev_v > bh_v
        head = {
            (True, True): "an evolved program beat the seed and buy-and-hold",
            (True, False): "an evolved program beat the seed but not buy-and-hold",
            (False, True): f"{NO_BEAT_SEED} (though it beat buy-and-hold)",
            (False, False): f"{NO_BEAT_SEED}, nor buy-and-hold",
        }[(beat_seed, beat_bh)]
        words = (f"{head} on the {period} period ({basis}, program #{evolved_id}: {objective} "
                 f"{_num(evolved.get(objective)):.3f} vs seed {_num(seed.get(objective)):.3f} vs buy-and-hold "
                 f"{_num(bh.get(objective)):.3f})")
    return {
        "period": period,
        "basis": basis,
        "program_id": evolved_id,
        "objective": objective,
        "evolved_beat_seed": bool(beat_seed),
        "evolved_beat_buy_and_hold": bool(beat_bh),
        "statement": words,
    }
