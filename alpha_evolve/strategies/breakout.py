"""Volatility breakout: buy a close above the upper Keltner channel, exit when price falls back to the middle.

With shorting allowed, a close below the lower channel is sold and covered at the middle. Only the two
EVOLVE-BLOCKs change between generations; orders go through go_long / go_short / go_flat.
"""

from nautilus_trader.indicators import KeltnerChannel
from nautilus_trader.model.data import Bar

from alpha_evolve.strategies.base import EvolvableStrategy


class BreakoutStrategy(EvolvableStrategy):
    def setup_indicators(self) -> None:
        # === EVOLVE-BLOCK: indicators ===
        self.channel = KeltnerChannel(20, 1.5)
        # === END EVOLVE-BLOCK ===

    def decide(self, bar: Bar) -> None:
        # === EVOLVE-BLOCK: decision_logic ===
        close = bar.close.as_double()
        if close > self.channel.upper:
            self.go_long()
        elif close < self.channel.lower and self.allow_short:
            self.go_short()
        elif (self.is_long and close < self.channel.middle) or (self.is_short and close > self.channel.middle):
            self.go_flat()
        # === END EVOLVE-BLOCK ===
