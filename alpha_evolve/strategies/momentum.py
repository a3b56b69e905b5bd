"""Trend following: hold the market while a fast EMA is above a slow EMA, step aside (or short) otherwise.

Only the two EVOLVE-BLOCKs change between generations: the indicators (native NautilusTrader ones, as
attributes of ``self``) and the decision on each bar. Orders go through go_long / go_short / go_flat.
"""

from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.data import Bar

from alpha_evolve.strategies.base import EvolvableStrategy


class MomentumStrategy(EvolvableStrategy):
    def setup_indicators(self) -> None:
        # === EVOLVE-BLOCK: indicators ===
        self.fast_ema = ExponentialMovingAverage(10)
        self.slow_ema = ExponentialMovingAverage(30)
        # === END EVOLVE-BLOCK ===

    def decide(self, bar: Bar) -> None:
        # === EVOLVE-BLOCK: decision_logic ===
        if self.fast_ema.value > self.slow_ema.value:
            self.go_long()
        elif self.fast_ema.value < self.slow_ema.value:
            if self.allow_short:
                self.go_short()
            else:
                self.go_flat()
        # === END EVOLVE-BLOCK ===
