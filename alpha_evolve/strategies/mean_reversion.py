"""Mean reversion: buy a close below the lower Bollinger band, take profit back at the middle band.

With shorting allowed, a close above the upper band is sold and covered at the middle band. Only the two
EVOLVE-BLOCKs change between generations; orders go through go_long / go_short / go_flat.
"""

from nautilus_trader.indicators import BollingerBands
from nautilus_trader.model.data import Bar

from alpha_evolve.strategies.base import EvolvableStrategy


class MeanReversionStrategy(EvolvableStrategy):
    def setup_indicators(self) -> None:
        # === EVOLVE-BLOCK: indicators ===
        self.bands = BollingerBands(20, 2.0)
        # === END EVOLVE-BLOCK ===

    def decide(self, bar: Bar) -> None:
        # === EVOLVE-BLOCK: decision_logic ===
        close = bar.close.as_double()
        if close < self.bands.lower:
            self.go_long()
        elif close > self.bands.upper and self.allow_short:
            self.go_short()
        elif (self.is_long and close > self.bands.middle) or (self.is_short and close < self.bands.middle):
            self.go_flat()
        # === END EVOLVE-BLOCK ===
