"""Values made safe to record or show: a finite number or nothing, JSON without NaN, an error as one line.

Untrusted inputs (a candidate's claim, a hand-edited JSON file, a metric that came out NaN) reach the stores,
the summaries and the terminal from many places; each of them cleans them with these functions so that a
NaN never lands in a ranking and a multi-line message never breaks a log line or a status table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["finite_or_none", "finite_or_zero", "json_safe", "one_line"]


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float; None for None, booleans, text, NaN, infinities and anything not a number.

    Numpy scalars and Decimals count as numbers; text does not (``"1.5"`` in a JSON file is not a metric).
    """
    if value is None or isinstance(value, bool | str | bytes):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def finite_or_zero(value: Any) -> float:
    """``finite_or_none`` with 0.0 for "not a number": a degenerate statistic (a flat series' Sharpe, a missing
    metric in a comparison) can then never poison a ranking, a difference or a JSON file."""
    f = finite_or_none(value)
    return 0.0 if f is None else f


def one_line(exc: BaseException | str) -> str:
    """An exception or message on one line (whitespace runs collapsed); an empty message names the type."""
    text = " ".join(str(exc).split())
    return text or (type(exc).__name__ if isinstance(exc, BaseException) else "")


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None, numpy scalars as Python ones, mappings (str keys) and sequences walked.

    JSON has no NaN or Infinity; writing them as null is deliberate here rather than left to a serialiser.
    """
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and value.dtype.kind in "biuf":
        value = value.item()  # a numpy bool/int/float scalar (numpy is not imported here: the CLI starts fast)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
