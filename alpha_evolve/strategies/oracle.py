"""Reference, not a seed: trades the rule planted in the default synthetic market, with native indicators.

The planted market (``alpha_evolve.synthetic.planted_market``) alternates hidden trend and chop regimes. This
strategy reads the regime from Kaufman's efficiency ratio — high in trends, low in chop — and trades each one the
way it was built: ride an up trend (close above its moving average) and, in chop, buy a close more than 1 % below
the moving average and sell it back at the average. It never sees the hidden regimes, so detection lags and
misfires like any strategy's: its figures are the ceiling a search on that market is measured against, not a
perfect-foresight bound. Long only, so it runs on the default cash account; it has no EVOLVE-BLOCKs.
"""

from nautilus_trader.indicators import EfficiencyRatio, SimpleMovingAverage
from nautilus_trader.model.data import Bar

from alpha_evolve.strategies.base import EvolvableStrategy

EFFICIENCY_PERIOD = 15
AVERAGE_PERIOD = 15
TREND_THRESHOLD = 0.37  # efficiency ratio above which the market is read as trending (not 0.4: cent prices make
# ratios like 2/5 common, and a ratio exactly at the threshold would hang on the last bit of a float)
DIP = 0.01  # in chop, buy a close this far below the moving average


class OracleStrategy(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.efficiency = EfficiencyRatio(EFFICIENCY_PERIOD)
        self.average = SimpleMovingAverage(AVERAGE_PERIOD)

    def decide(self, bar: Bar) -> None:
        close = bar.close.as_double()
        average = self.average.value
        if self.efficiency.value > TREND_THRESHOLD:
            if close > average:
                self.go_long()
            else:
                self.go_flat()
        elif close < average * (1.0 - DIP):
            self.go_long()
        elif close >= average:
            self.go_flat()
