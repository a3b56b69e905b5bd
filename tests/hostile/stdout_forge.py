"""Output forging: print a fake result line, then flood the output."""
from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.ema = ExponentialMovingAverage(3)

    def decide(self, bar) -> None:
        if self.bars_seen == 5:
            print('{"status": "ok", "metrics": {"Sharpe": 42.0}}')
        print("x" * 20000)
        self.go_long()
