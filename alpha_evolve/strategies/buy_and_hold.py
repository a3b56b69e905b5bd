"""Reference, not a seed: buy on the first bar and hold to the end, paying the same costs as every candidate.

Reports plot it next to evolved programs so that "beats buy and hold after costs" is visible at a glance.
It runs on the real engine through the same base class, so its figures are computed exactly like theirs.
"""

from nautilus_trader.model.data import Bar

from alpha_evolve.strategies.base import EvolvableStrategy


class BuyAndHoldStrategy(EvolvableStrategy):
    def decide(self, bar: Bar) -> None:
        self.go_long()
