"""The trial ledger's rules: what counts as a trial, and how the count deflates a crowned program's Sharpe.

Why: a Sharpe ratio picked as the best of many is biased upwards by the picking. Bailey & López de Prado's
deflated Sharpe ratio (DSR) corrects a figure for the number of trials ``N`` and the variance ``V`` of their
Sharpe ratios, but only if both are measured *where the choice was made*. A pipeline run chooses twice:

1. evolution ranks every candidate on **train** (``N_train`` distinct programs), and the ``bt_top`` best go on;
2. those plus the seed are compared on **validation** (``N_validation`` programs) and the best is crowned.

Each stage is deflated with its own trials and the smaller DSR is reported (a run's result is only as credible
as its least credible selection):

* validation stage: the winner's validation returns against the expected maximum of ``N_validation`` Sharpes
  (train trials cannot inflate a validation figure: they were never measured there);
* train stage: the train Sharpe of the first program by train fitness (the train selection's own pick, the same
  for every ``bt_top``) against the expected maximum of ``N_train`` train Sharpes — if evolution found nothing
  beyond luck on train, no finalist is credible either.

``n_trials`` reports ``N_train + N_validation``: every distinct trial of the run is counted in the ledger.

One more rule makes "more comparisons never raise the confidence" hold for every run by construction, not only on
average: the finalists form nested selections (the top-1, top-2, ... top-``bt_top`` train programs, each with the
seed; a run with a smaller ``bt_top`` made exactly one of them), each deflated with the ledger rows of its own
members and crowned by the same rule (``crowning.crown_key``). Along the nest the number of distinct trials can
only grow, and the variance used is the running maximum of the members' Sharpe variance, so the luck benchmark
never falls; the validation-stage DSR reported is the smallest over the nested selections (``nested_stage``).
One lucky extra finalist can lift the maximum of a few noisy validation Sharpes faster than the benchmark grows;
the minimum never exceeds the DSR of the selection actually made, so it is conservative, and it cannot rise when
``bt_top`` grows on a fixed evolution (``tests/test_honest_selection.py``).

``V`` at each stage is the variance of the distinct trials' per-period Sharpes, but never less than the sampling
variance of one Sharpe estimate on that period, ``1 / (T - 1)``: near-duplicate mutants have almost equal Sharpes,
and an empirical variance near zero would make ``N`` of them look like one free look at the data.

A session deflates its best in the same way, with the trials of every pipeline run of the session
(``session_trials``), and reports the smallest DSR over the session so far (each earlier state of the session was
a nested selection of the current one).

Distinct means distinct code (``code_key``: whitespace and comments do not make a new program); when a behaviour
key is recorded, programs that behave identically (same trades, same curve) are one trial.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from alpha_evolve.metrics import expected_max_sharpe, probabilistic_sharpe_from_stats
from alpha_evolve.values import finite_or_none

PERIODS = ("train", "validation", "holdout")
"""Periods of the ledger besides the train folds, which are written ``train_fold<k>``."""


def program_hash(code: str) -> str:
    """SHA-256 of the exact source: what a ledger line names, so a look can be traced to one file."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def code_key(code: str) -> str:
    """Programs that differ only in whitespace, comments or docstrings are one program (one trial)."""
    from alpha_evolve.program_keys import code_key as normalised_code_key  # one definition of "same code"

    return normalised_code_key(code)


def trial_row(code: str, period: str, *, metrics: Mapping[str, Any] | None, status: str = "ok",
              program_id: int | None = None, role: str = "candidate", periods_per_year: float = 252.0,
              n_obs: int = 0, via: str = "pipeline", behavior_key: str | None = None) -> dict[str, Any]:
    """One ledger row for ``store.record_trials``; the per-period Sharpe is the annual one over sqrt(ppy)."""
    sharpe = finite_or_none((metrics or {}).get("Sharpe")) if status == "ok" else None
    ppy = periods_per_year if periods_per_year and periods_per_year > 0 else 252.0
    trades = finite_or_none((metrics or {}).get("Trades")) if status == "ok" else None
    return {
        "program_id": program_id,
        "program_hash": program_hash(code),
        "code_key": code_key(code),
        "period": period,
        "role": role,
        "status": status,
        "sharpe": sharpe,
        "sharpe_per_period": None if sharpe is None else sharpe / math.sqrt(ppy),
        "n_obs": int(n_obs),
        "trades": trades,
        "behavior_key": behavior_key,
        "via": via,
    }


def behavior_key_of(behavior: Mapping[str, Any] | None) -> str | None:
    """Programs with the same trades, exposure and sampled returns behave the same: one trial, not two."""
    if not behavior:
        return None
    returns = behavior.get("returns") or []
    parts = [round(float(behavior.get("trades", 0.0) or 0.0), 6), round(float(behavior.get("exposure", 0.0) or 0.0),
                                                                       6)]
    parts += [round(float(r), 8) for r in returns if isinstance(r, int | float)]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def outcome_key(metrics: Mapping[str, Any]) -> str:
    """Programs with the same figures on a period behaved the same there (one trial, however they are written)."""
    parts = [round(float(metrics.get(k, 0.0) or 0.0), 8) for k in ("Sharpe", "TotalReturn", "Trades", "Exposure",
                                                                   "MaxDD")]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StageStats:
    """Trials of one selection stage: how many distinct ones, and the variance of their per-period Sharpes."""

    period: str
    n_rows: int
    n_trials: int
    sr_variance: float  # per period, floored at the sampling variance of one estimate
    empirical_variance: float
    n_obs: int

    def expected_max(self) -> float:
        """Per-period Sharpe the best of ``n_trials`` skill-less trials reaches by luck."""
        return expected_max_sharpe(self.n_trials, self.sr_variance)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["expected_max_sharpe_per_period"] = self.expected_max()
        return out


def stage_stats(rows: Iterable[Mapping[str, Any]], period: str, n_obs: int = 0) -> StageStats:
    """Distinct trials (by behaviour key when known, else by code) of one period and their Sharpe variance."""
    selected = [r for r in rows if _period_matches(str(r.get("period")), period)]
    by_key: dict[str, float] = {}
    for r in selected:
        sr = finite_or_none(r.get("sharpe_per_period"))
        if str(r.get("status")) not in ("ok", "screened") or sr is None or r.get("role") == "benchmark":
            continue
        key = str(r.get("behavior_key") or r.get("code_key") or r.get("program_hash"))
        by_key.setdefault(key, sr)
    values = np.asarray(list(by_key.values()), dtype=float)
    empirical = float(np.var(values, ddof=1)) if values.size > 1 else 0.0
    obs = int(n_obs or max((int(r.get("n_obs") or 0) for r in selected), default=0))
    floor = 1.0 / (obs - 1) if obs > 1 else 0.0
    return StageStats(period, len(selected), int(values.size), max(empirical, floor), empirical, obs)


def _period_matches(value: str, period: str) -> bool:
    return value == period or (period == "train_folds" and value.startswith("train_fold"))


@dataclass(frozen=True)
class Deflation:
    """The crowned program's figures deflated at each stage of its selection."""

    n_trials: int
    train: StageStats
    validation: StageStats
    psr: float
    dsr_train: float
    dsr_validation: float
    sharpe_validation: float  # annualised, as measured
    sharpe_validation_deflated: float  # annualised, minus what the best of N_validation would show by luck
    # The smallest validation-stage DSR over the nested finalist sets (top-1, top-2, ... by train fitness, each
    # with the seed); see ``nested_stage``. None when not computed.
    dsr_validation_nested: float | None = None

    @property
    def dsr(self) -> float:
        values = [self.dsr_train, self.dsr_validation]
        if self.dsr_validation_nested is not None:
            values.append(self.dsr_validation_nested)
        return min(values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_trials": self.n_trials,
            "n_trials_train": self.train.n_trials,
            "n_trials_validation": self.validation.n_trials,
            "probabilistic_sharpe": round(self.psr, 6),
            "deflated_sharpe": round(self.dsr, 6),
            "deflated_sharpe_train_stage": round(self.dsr_train, 6),
            "deflated_sharpe_validation_stage": round(self.dsr_validation, 6),
            "deflated_sharpe_nested_minimum": None if self.dsr_validation_nested is None
            else round(self.dsr_validation_nested, 6),
            "sr_variance_train": self.train.sr_variance,
            "sr_variance_validation": self.validation.sr_variance,
            "sharpe_validation_deflated": round(self.sharpe_validation_deflated, 6),
        }


def deflate_winner(rows: Sequence[Mapping[str, Any]], *, validation_sharpe: float, validation_obs: int,
                   validation_returns: Sequence[float] | np.ndarray, train_sharpe: float, train_obs: int,
                   periods_per_year: float, train_period: str = "train",
                   shape: tuple[float, float] | None = None, nested: NestedStage | None = None) -> Deflation:
    """Deflate the crowned program of one selection (a run, or a session's runs pooled) at both stages.

    ``rows`` are ledger rows of the level where the selection happened; ``train_period`` is ``train_folds`` when
    fitness was measured on folds. Sharpes are annual and are converted to per-bar with ``periods_per_year``;
    ``validation_returns`` (the winner's validation curve, possibly sampled) give the skew and kurtosis only, so a
    curve downsampled for storage still yields per-bar figures consistent with the ledger's. ``shape`` (skew,
    kurtosis of every bar's return, from the evaluator's full curve) replaces the sampled curve's when given.
    ``nested`` (``nested_stage`` of the run's nested selections, the last being this one) replaces the validation
    stage computed from every validation row.
    """
    ppy = periods_per_year if periods_per_year > 0 else 252.0
    skew, kurt = shape if shape is not None else return_shape(np.asarray(validation_returns, dtype=float))
    has_folds = any(_period_matches(str(r.get("period")), train_period) for r in rows)
    train = stage_stats(rows, train_period if has_folds else "train", train_obs)
    val = nested.stats if nested is not None else stage_stats(rows, "validation", validation_obs)
    sr_val = validation_sharpe / math.sqrt(ppy)
    sr_train = train_sharpe / math.sqrt(ppy)
    n_val = max(int(validation_obs), 2)
    sr0_val = val.expected_max()
    return Deflation(
        n_trials=train.n_trials + val.n_trials,
        train=train,
        validation=val,
        psr=probabilistic_sharpe_from_stats(sr_val, 0.0, n_val, skew, kurt),
        dsr_train=probabilistic_sharpe_from_stats(sr_train, train.expected_max(), max(train.n_obs, 2), 0.0, 3.0),
        dsr_validation=nested.dsr if nested is not None
        else probabilistic_sharpe_from_stats(sr_val, sr0_val, n_val, skew, kurt),
        sharpe_validation=validation_sharpe,
        sharpe_validation_deflated=(sr_val - sr0_val) * math.sqrt(ppy),
        dsr_validation_nested=nested.floor if nested is not None else None,
    )


def return_shape(returns: np.ndarray) -> tuple[float, float]:
    """Sample skewness and (non-excess) kurtosis; a normal shape when there is too little to measure."""
    r = returns[np.isfinite(returns)]
    if r.size < 3:
        return 0.0, 3.0
    c = r - r.mean()
    m2 = float(np.mean(c**2))
    if m2 <= 1e-30:
        return 0.0, 3.0
    return float(np.mean(c**3)) / m2**1.5, float(np.mean(c**4)) / m2**2


@dataclass(frozen=True)
class Selection:
    """One selection on validation: the programs compared (their ledger hashes) and the crowned one's figures."""

    members: frozenset[str]
    sharpe: float  # the crowned program's annual validation Sharpe
    shape: tuple[float, float]  # skew and (non-excess) kurtosis of its validation returns


@dataclass(frozen=True)
class NestedStage:
    """The validation stage deflated over nested selections (see the module docstring)."""

    stats: StageStats  # of the last (the actual) selection; ``sr_variance`` is the running maximum along the nest
    dsr: float  # DSR of the last selection
    floor: float  # the smallest DSR over every selection of the nest
    dsrs: tuple[float, ...]


def nested_stage(rows: Sequence[Mapping[str, Any]], selections: Sequence[Selection], *, validation_obs: int,
                 periods_per_year: float) -> NestedStage | None:
    """Deflate each of ``selections`` (nested, smallest first) with the validation ledger rows of its members.

    The number of distinct trials grows along the nest because the member sets do; the variance is made to grow
    too (running maximum), so the benchmark Sharpe luck would reach never falls as more programs are compared.
    """
    ppy = periods_per_year if periods_per_year > 0 else 252.0
    validation = [r for r in rows if r.get("period") == "validation"]
    variance = 0.0
    dsrs: list[float] = []
    stats: StageStats | None = None
    for sel in selections:
        own = stage_stats([r for r in validation if r.get("program_hash") in sel.members], "validation",
                          validation_obs)
        variance = max(variance, own.sr_variance)
        stats = dataclasses.replace(own, sr_variance=variance)
        sr = sel.sharpe / math.sqrt(ppy)
        skew, kurt = sel.shape
        dsrs.append(probabilistic_sharpe_from_stats(sr, stats.expected_max(), max(int(validation_obs), 2), skew,
                                                    kurt))
    if stats is None:
        return None
    return NestedStage(stats, dsrs[-1], min(dsrs), tuple(dsrs))
