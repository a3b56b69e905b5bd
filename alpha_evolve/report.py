"""Pictures of a run: equity and drawdown of the top programs, the seed and buy-and-hold on one period.

A table of Sharpe ratios hides *when* a strategy made or lost its money; two stacked panels (growth of 1 and
drawdown, shared time axis) show it at a glance, which is what a researcher checks before trusting a number.
Rendering uses matplotlib's Agg backend so it works on machines without a display.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

logger = logging.getLogger("alpha_evolve.report")

_STYLES = {
    "buy_and_hold": {"color": "#7f7f7f", "linestyle": "--", "linewidth": 1.6},
    "seed": {"color": "#1f1f1f", "linestyle": ":", "linewidth": 1.8},
    "oracle": {"color": "#b8860b", "linestyle": "-.", "linewidth": 1.6},
}
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def normalise(equity: pd.Series) -> pd.Series:
    """Growth of 1 from the first point, so curves that start from different capital compare directly."""
    first = float(equity.iloc[0]) if len(equity) else 1.0
    return equity / first if first else equity


def drawdown(equity: pd.Series) -> pd.Series:
    """Fall from the running peak as a negative fraction (0 at new highs)."""
    peak = equity.cummax()
    return equity / peak - 1.0


def render_report(
    curves: Mapping[str, pd.Series],
    path: str | Path,
    *,
    title: str,
    subtitle: str = "",
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Draw growth-of-1 and drawdown panels for every curve; keys ``seed``/``buy_and_hold`` get fixed styles.

    ``labels`` maps curve keys to legend text (e.g. with the validation Sharpe), so the legend alone tells
    which line is which program and how it scored.
    """
    labels = labels or {}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_eq, ax_dd) = plt.subplots(
        2, 1, figsize=(12, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}, constrained_layout=True
    )
    colour = iter(_PALETTE * 4)
    # Draw programs first and the references last so the references stay visible on top.
    order = [k for k in curves if k not in _STYLES] + [k for k in ("oracle", "seed", "buy_and_hold") if k in curves]
    for key in order:
        series = curves[key].dropna()
        if series.empty:
            continue
        style = _STYLES.get(key, {"color": next(colour), "linewidth": 1.4})
        growth = normalise(series)
        ax_eq.plot(growth.index, growth.values, label=labels.get(key, key), **style)
        ax_dd.plot(growth.index, drawdown(growth).to_numpy(dtype=float) * 100.0, **style)
    ax_eq.axhline(1.0, color="#bbbbbb", linewidth=0.8)
    ax_eq.set_ylabel("growth of 1 (after costs)")
    ax_eq.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=11, loc="left")
    ax_eq.grid(True, alpha=0.3)
    ax_eq.legend(loc="upper left", fontsize=8, frameon=False, ncol=2)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.grid(True, alpha=0.3)
    locator = mdates.AutoDateLocator()
    ax_dd.xaxis.set_major_locator(locator)
    ax_dd.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    logger.debug("wrote %s", out)
    return out
