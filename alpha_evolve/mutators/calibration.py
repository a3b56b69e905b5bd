"""Thresholds for new filters drawn from the indicator's own distribution on the train bars, so that they bind.

Why: a regime filter with a threshold drawn from a fixed range (``ATR < 0.01 x close``) is, on a market whose
bars move 2 % a day, false on almost every bar: the child keeps 3 of its parent's 66 trades, its train Sharpe on
those 3 is noise, and exploitation then breeds from it (a trap the default planted run fell into). Drawn instead
as a quantile of the filter's own values on the train bars — letting through a share ``q`` of the bars, q drawn in
``PASS_SHARE`` — a new filter always filters something and never everything.

Only the train split is read (never validation or holdout figures), with the real NautilusTrader indicator fed the
engine's own ``Bar`` objects; the mutator's draw stays deterministic for a given request.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger("alpha_evolve.mutators.calibration")

PASS_SHARE = (0.35, 0.8)  # share of the train bars a new filter lets through
_MIN_VALUES = 30
# "self.{a}.<attr> <op> {t}" optionally "* {close}": the quantity compared with the threshold, and how.
_TEMPLATE = re.compile(r"^self\.\{a\}\.(\w+)\s*([<>]=?)\s*\{t\}(\s*\*\s*\{close\})?$")


class ThresholdCalibrator:
    """Distributions of indicator outputs on the train bars (memoised), and thresholds drawn from them."""

    def __init__(self, bars: Mapping[str, Sequence[Any]]) -> None:
        self.bars = {symbol: list(b) for symbol, b in bars.items()}
        self._memo: dict[tuple[Any, ...], np.ndarray | None] = {}

    def threshold(self, indicator: str, args: Sequence[float], template: str, q: float) -> float | None:
        """The threshold for ``template`` (a catalogue condition) that lets through a share ``q`` of the bars.

        None when the template is not of the form ``self.{a}.<attr> <op> {t} [* {close}]`` or the indicator
        gives too few values (the caller then draws from the catalogue's range as before).
        """
        match = _TEMPLATE.match(template.strip())
        if match is None:
            return None
        attr, op, scaled = match.group(1), match.group(2), bool(match.group(3))
        values = self._values(indicator, tuple(args), attr, scaled)
        if values is None:
            return None
        share = min(max(q, 0.0), 1.0)
        cut = float(np.quantile(values, share if op.startswith("<") else 1.0 - share))
        return float(f"{cut:.4g}") if math.isfinite(cut) else None

    def _values(self, indicator: str, args: tuple[Any, ...], attr: str, scaled: bool) -> np.ndarray | None:
        key = (indicator, args, attr, scaled)
        if key not in self._memo:
            self._memo[key] = self._compute(indicator, args, attr, scaled)
        return self._memo[key]

    def _compute(self, indicator: str, args: tuple[Any, ...], attr: str, scaled: bool) -> np.ndarray | None:
        import nautilus_trader.indicators as module

        from alpha_evolve import indicator_catalogue as catalogue

        if indicator not in catalogue.BY_NAME or attr.startswith("_"):
            return None
        out: list[float] = []
        try:
            for bars in self.bars.values():
                ind = getattr(module, indicator)(*args)
                for bar in bars:
                    ind.handle_bar(bar)
                    if not ind.initialized:
                        continue
                    value = float(getattr(ind, attr))
                    if scaled:
                        close = float(bar.close)
                        value = value / close if close else math.nan
                    if math.isfinite(value):
                        out.append(value)
        except (AttributeError, TypeError, ValueError) as exc:
            logger.debug("no distribution for %s%s.%s: %s", indicator, args, attr, exc)
            return None
        return np.asarray(out) if len(out) >= _MIN_VALUES else None
