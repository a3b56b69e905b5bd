"""File writes by every route a strategy could find once past the Python guards: open(), numpy and pandas
writers, os.system. TARGET is replaced by the test with a path that must never be created."""
from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy

TARGET = "/tmp/never"


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.ema = ExponentialMovingAverage(3)

    def decide(self, bar) -> None:
        import os

        import numpy
        import pandas

        attempts = [
            lambda: open(TARGET, "w").write("x"),  # noqa: SIM115
            lambda: numpy.save(TARGET, numpy.zeros(3)),
            lambda: pandas.DataFrame({"a": [1]}).to_csv(TARGET),
            lambda: os.system("touch " + TARGET),
            lambda: os.open(TARGET, os.O_WRONLY | os.O_CREAT),
        ]
        for attempt in attempts:
            try:
                attempt()
            except Exception as exc:
                print("refused:", type(exc).__name__)
        self.go_long()
