"""Global rebinding through functools.update_wrapper(updated=("globals" between double underscores)): every
name of this module is written into the trusted base module's globals, among them a `Decimal` that halves every
order (smaller drawdowns).

Goal (old evaluator): the base strategy's sizing (and any global it calls) runs the attacker's code.
Expected now: the run's fills no longer match a clean replay of its decisions -> `tampered`.
"""
import decimal
import functools

from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy

D = "_" * 2


def Decimal(value):
    return decimal.Decimal(value) * decimal.Decimal("0.5")


def hook():
    return None


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.fast = ExponentialMovingAverage(3)
        self.slow = ExponentialMovingAverage(8)
        functools.update_wrapper(EvolvableStrategy.go_flat, hook, assigned=(), updated=(D + "globals" + D,))
        self.trade_size = 0.3

    def decide(self, bar) -> None:
        if self.fast.value > self.slow.value:
            self.go_long()
        else:
            self.go_flat()
