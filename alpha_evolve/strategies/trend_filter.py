"""Trend following with a noise filter: hold the market while the close is above its moving average and
Kaufman's efficiency ratio says the move is clean rather than noise; step aside (or short) below the average.

The filter's threshold starts loose, so the seed still trades most of the noise. Only the two EVOLVE-BLOCKs change
between generations; orders go through go_long / go_short / go_flat.
"""

from nautilus_trader.indicators import EfficiencyRatio, SimpleMovingAverage
from nautilus_trader.model.data import Bar

from alpha_evolve.strategies.base import EvolvableStrategy


class TrendFilterStrategy(EvolvableStrategy):
    def setup_indicators(self) -> None:
        # === EVOLVE-BLOCK: indicators ===
        self.efficiency = EfficiencyRatio(15)
        self.average = SimpleMovingAverage(10)
        # === END EVOLVE-BLOCK ===

    def decide(self, bar: Bar) -> None:
        # === EVOLVE-BLOCK: decision_logic ===
        close = bar.close.as_double()
        if self.efficiency.value > 0.17 and close > self.average.value:
            self.go_long()
        elif close < self.average.value:
            if self.allow_short:
                self.go_short()
            else:
                self.go_flat()
        # === END EVOLVE-BLOCK ===
