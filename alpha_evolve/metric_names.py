"""The names of the performance metrics, in one dependency-free place.

Config validation, the CLI and every JSON file use these names; keeping them out of ``metrics`` (which needs
numpy and pandas) lets the command line start and answer ``--help`` or a config error without loading them.
"""

METRIC_NAMES: tuple[str, ...] = (
    "Sharpe",
    "Sortino",
    "Calmar",
    "MaxDD",
    "CAGR",
    "TotalReturn",
    "AnnVol",
    "WinRate",
    "Trades",
    "Exposure",
)

# For a universe, the worst case of a metric is its min when higher is better, its max when lower is better.
WORST_IS_MIN: tuple[str, ...] = ("Sharpe", "Sortino", "Calmar", "CAGR", "TotalReturn", "WinRate")
WORST_IS_MAX: tuple[str, ...] = ("MaxDD", "AnnVol")

INFO_RATIO = "InfoRatio"
"""Annualised mean excess return over buy-and-hold on the same bars, divided by its volatility (``crowning``)."""
RANKING_METRICS: tuple[str, ...] = (*METRIC_NAMES, INFO_RATIO)
"""What ``[evolution] fitness_metric`` and ``[backtest] objective`` may name."""

LOWER_IS_BETTER_METRICS: frozenset[str] = frozenset(WORST_IS_MAX)
"""Metrics where smaller is better: an objective or fitness on them is minimised."""
