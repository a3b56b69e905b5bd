"""Time: bar interval, annualisation from the bars observed, chronological train/validation/holdout splits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from alpha_evolve.data.parsing import _ns
from alpha_evolve.data.shape import DataError

# --------------------------------------------------------------------------------------------- frequency


def bar_interval(index: pd.Index) -> pd.Timedelta:
    """Typical spacing of bars: the median gap, which ignores weekends, holidays and session breaks."""
    index = pd.DatetimeIndex(index)
    if len(index) < 2:
        raise DataError(f"cannot infer the bar interval from {len(index)} bar(s); need at least 2")
    return pd.Timedelta(int(np.median(np.diff(_ns(index)))), unit="ns")


_YEAR_NS = 365.25 * 86_400 * 1e9
_MIN_SPAN_DAYS = 90.0


def periods_per_year(index: pd.Index) -> float:
    """Bars per year for annualising metrics, as observed in the data.

    Over a span of at least 90 days: (bars - 1) / span in years of 365.25 days, so daily equities give ~252,
    24/7 daily bars ~365 and minute bars whatever their sessions really hold. Over shorter spans the calendar
    is too noisy (one overnight gap dominates), so: median bars per active calendar day × 252 active days a
    year if no bar falls on a weekend, else × 365.25.
    """
    index = pd.DatetimeIndex(index)
    if len(index) < 2:
        raise DataError(f"cannot infer bars per year from {len(index)} bar(s); need at least 2")
    ns = _ns(index)
    span = float(ns[-1] - ns[0])
    if span >= _MIN_SPAN_DAYS * 86_400e9:
        return (len(index) - 1) / (span / _YEAR_NS)
    days = pd.DatetimeIndex(index).normalize()
    per_day = float(pd.Series(1, index=days).groupby(level=0).size().median())
    active_days = 365.25 if bool((pd.DatetimeIndex(index).dayofweek >= 5).any()) else 252.0
    interval_days = bar_interval(index) / pd.Timedelta(days=1)
    if interval_days > 1.0:  # weekly/monthly bars: fewer than one per day
        return 365.25 / interval_days
    return per_day * active_days


def _interval_label(interval: pd.Timedelta) -> str:
    seconds = interval.total_seconds()
    for unit, size in (("W", 604_800), ("D", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# --------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Chronological train / validation / holdout parts; the holdout is the untouched tail."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame

    def describe(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"start": part.index[0].isoformat(), "end": part.index[-1].isoformat(), "bars": len(part)}
            for name, part in (("train", self.train), ("validation", self.validation), ("holdout", self.holdout))
        }

    def warmup(self, name: str, bars: int) -> pd.DataFrame | None:
        """The ``bars`` bars just before part ``name``, taken from the parts before it (none before train).

        They warm indicators up so a period does not start cold while buy-and-hold is invested from its first
        bar; the cut of the periods is unchanged and the warm-up bars are never scored.
        """
        before = {"train": [], "validation": [self.train], "holdout": [self.train, self.validation]}[name]
        if bars <= 0 or not before:
            return None
        tail = pd.concat([part.iloc[max(len(part) - bars, 0) :] for part in before])
        return tail.iloc[max(len(tail) - bars, 0) :]


def _cut(index: pd.DatetimeIndex, end: str | pd.Timestamp, what: str) -> int:
    """Number of bars up to `end`: a date-only value includes that whole day, a date-time is inclusive."""
    text = str(end).strip()
    try:
        stamp = pd.Timestamp(end)
    except (ValueError, TypeError):
        raise DataError(f"{what} '{text}' is not a date (expected ISO form such as 2020-12-31)") from None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if isinstance(end, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return int(index.searchsorted(stamp + pd.Timedelta(days=1), side="left"))
    return int(index.searchsorted(stamp, side="right"))


def split_bars(
    df: pd.DataFrame,
    train: float = 0.6,
    validation: float = 0.2,
    train_end: str | pd.Timestamp | None = None,
    validation_end: str | pd.Timestamp | None = None,
    min_bars: int = 30,
) -> DataSplits:
    """Split bars chronologically by fractions of the bar count or by ISO end dates (dates win).

    The holdout is the remainder. Every part must keep at least `min_bars` bars.
    """
    n = len(df)
    index = pd.DatetimeIndex(df.index)
    fractions_ok = 0.0 < train < 1.0 and 0.0 < validation < 1.0 and train + validation < 1.0
    if (train_end is None or validation_end is None) and not fractions_ok:
        raise DataError(f"split fractions train={train}, validation={validation} must be in (0, 1) and sum to < 1")
    first, last = index[0].isoformat() if n else "?", index[-1].isoformat() if n else "?"
    n_train = _cut(index, train_end, "train_end") if train_end is not None else int(n * train)
    if train_end is not None and not 0 < n_train < n:
        raise DataError(f"train_end {train_end} is outside the data ({first} to {last})")
    if validation_end is not None:
        n_val_end = _cut(index, validation_end, "validation_end")
        if n_val_end >= n or (n_val_end == 0):
            raise DataError(f"validation_end {validation_end} is outside the data ({first} to {last})")
        if n_val_end <= n_train:
            raise DataError(f"validation_end {validation_end} is not after the end of training ({train_end or train})")
    else:
        n_val_end = n_train + int(n * validation)
    parts = {"train": (0, n_train), "validation": (n_train, n_val_end), "holdout": (n_val_end, n)}
    for name, (lo, hi) in parts.items():
        if hi - lo < min_bars:
            raise DataError(
                f"split leaves {name} with {max(hi - lo, 0)} bar(s), fewer than the minimum {min_bars} "
                f"(data: {n} bars from {first} to {last})"
            )
    return DataSplits(train=df.iloc[0:n_train], validation=df.iloc[n_train:n_val_end], holdout=df.iloc[n_val_end:n])
