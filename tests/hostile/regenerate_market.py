"""Recompute the default synthetic market instead of reading it: import the generator and rebuild the series from the
config's seed, then trade on the next close of the recomputed truth.

Goal (evaluator whose confinement let the child read this package's source): the recomputed truth is the same in
the causality run as in the normal run, so a mirrored future changes no decision and the check passes. Expected now:
the generator's source is outside what the kernel lets the candidate read (and not imported before the fork), so
the import fails as a `runtime` error. Needs the Python guards off (the policy refuses the import statically).
"""
from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.ema = ExponentialMovingAverage(2)
        import alpha_evolve.synthetic as generator

        self.generator = generator

    def decide(self, bar) -> None:
        self.go_flat()
