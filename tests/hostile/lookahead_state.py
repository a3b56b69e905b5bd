"""Look-ahead through the worker's own state: walk the frames up to the slot's loop, take the dataset from its
`state.datasets` (not the bars being fed) and trade on the next close.

Goal (evaluator before the child forgot its parent's data): the causality run fed a mirrored future while the true
bars sat in `state.datasets`, so this read the truth in both runs, decided identically and passed: Sharpe 16 on
validation, status ok. Expected now: the candidate's process holds only a private copy of the bars it is fed; the
walk finds no other dataset, so it never trades on a future close.
Like lookahead_frames, it needs the Python guards off (frame walks are refused statically).
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
        n_fed = None
        while frame is not None:
            loc = frame.f_locals
            prepared = loc.get("prepared")
            if n_fed is None and prepared is not None and hasattr(prepared, "closes"):
                n_fed = len(prepared.closes)
                first = float(prepared.closes[0])
            for v in list(loc.values()):
                ds = getattr(v, "datasets", None)
                if isinstance(ds, dict):
                    for p in ds.values():
                        c = getattr(p, "closes", None)
                        if c is not None and len(c) == n_fed and float(c[0]) == first:
                            return list(c)
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
