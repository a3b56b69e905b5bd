"""Global rebinding through enum.global_enum on a functional Enum created "in" the trusted base module:
its members overwrite the module's globals by name (`_CASH_SAFETY` here, which caps every cash-account order).

Goal (old evaluator): rewrite trusted state by string name. Expected now: `tampered` (fills differ from the replay).
"""
import enum

from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.fast = ExponentialMovingAverage(3)
        self.slow = ExponentialMovingAverage(8)
        enum.global_enum(enum.Enum("Hack", {"_CASH_SAFETY": 0.2}, module="alpha_evolve.strategies.base", type=float))

    def decide(self, bar) -> None:
        if self.fast.value > self.slow.value:
            self.go_long()
        else:
            self.go_flat()
