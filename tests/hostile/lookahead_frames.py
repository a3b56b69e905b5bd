"""Look-ahead through traceback frames: an exception's traceback reaches the engine's caller frames, whose locals
hold the prepared bars; trade on the next bar's close.

Goal (old evaluator): Sharpe in the tens. Expected now: refused as `lookahead` on a promoting split.
Written with the Python guards in mind as an attacker would: no dunder literal, frames walked by format-free
attribute access that the static policy refuses, so this one runs with the Python guards switched off.
"""
from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.ema = ExponentialMovingAverage(2)
        self.closes = None

    def find_closes(self):
        try:
            raise ValueError("peek")
        except ValueError as exc:
            frame = exc.__traceback__.tb_frame
        while frame is not None:
            prepared = frame.f_locals.get("prepared")
            if prepared is not None and hasattr(prepared, "closes"):
                return list(prepared.closes)
            frame = frame.f_back
        return []

    def decide(self, bar) -> None:
        if self.closes is None:
            self.closes = self.find_closes()
        i = self.bars_seen - 1
        if i + 1 < len(self.closes) and self.closes[i + 1] > self.closes[i]:
            self.go_long()
        else:
            self.go_flat()
