"""What the evaluator tests share (local pool, hostile corpus, sandbox escapes, Ray): the seed strategy, small
synthetic splits, a candidate template and lean backtest settings."""

from __future__ import annotations

import textwrap
from pathlib import Path

from alpha_evolve.backtest import BacktestSettings
from alpha_evolve.data import DataSplits
from alpha_evolve.synthetic import synthetic_bars

MOMENTUM = (Path(__file__).parents[1] / "alpha_evolve" / "strategies" / "momentum.py").read_text()
SOFT = 2.0


def splits(seed: int = 5, n: int = 800) -> DataSplits:
    """Synthetic bars cut into train (half), validation and holdout (a quarter each)."""
    bars = synthetic_bars(n, seed=seed)
    half, three_q = n // 2, 3 * n // 4
    return DataSplits(train=bars.iloc[:half], validation=bars.iloc[half:three_q], holdout=bars.iloc[three_q:])


def candidate(decide_body: str, prelude: str = "") -> str:
    """A strategy whose ``decide`` body is ``decide_body`` (and whatever ``prelude`` puts at module level)."""
    return (
        prelude
        + "from nautilus_trader.indicators import ExponentialMovingAverage\n"
        + "from alpha_evolve.strategies.base import EvolvableStrategy\n\n\n"
        + "class Candidate(EvolvableStrategy):\n"
        + "    def setup_indicators(self) -> None:\n"
        + "        self.ema = ExponentialMovingAverage(5)\n\n"
        + "    def decide(self, bar) -> None:\n"
        + textwrap.indent(textwrap.dedent(decide_body).strip("\n"), " " * 8)
        + "\n"
    )


SETTINGS = BacktestSettings(
    soft_timeout_seconds=SOFT, hard_timeout_seconds=SOFT + 2, memory_limit_mb=256, screen_min_sharpe=-100.0,
    screen_max_drawdown=1.0,
)
