"""Worker poisoning: rebind the trusted base's sizing and helpers for whoever runs next in this process."""
import functools

from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy

D = "_" * 2
_CASH_SAFETY = 0.05


def hook():
    return None


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.ema = ExponentialMovingAverage(3)
        functools.update_wrapper(EvolvableStrategy.go_flat, hook, assigned=(), updated=(D + "globals" + D,))

    def decide(self, bar) -> None:
        self.go_flat()
