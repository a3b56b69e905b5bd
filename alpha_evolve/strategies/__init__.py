"""Seed strategies, handled as source text.

The main process never imports a strategy file (evolved descendants are untrusted and only run in sandboxed
workers); it reads the seeds' text from the package so the same path works from a checkout or a wheel.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["REFERENCES", "SEEDS", "list_seeds", "seed_source"]

SEEDS: dict[str, str] = {
    "momentum": "momentum.py",
    "mean_reversion": "mean_reversion.py",
    "breakout": "breakout.py",
    "trend_filter": "trend_filter.py",
}

REFERENCES: dict[str, str] = {
    "buy_and_hold": "buy_and_hold.py",
    "oracle": "oracle.py",
}
"""Benchmarks drawn beside evolved programs; they have no EVOLVE-BLOCKs and are never evolved. ``oracle`` trades
the rule planted in the default synthetic market: the ceiling a search on that market is measured against."""


def list_seeds() -> list[str]:
    """Names of the seed strategies, sorted."""
    return sorted(SEEDS)


def seed_source(name: str) -> str:
    """Source text of the seed ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    filename = SEEDS.get(name) or REFERENCES.get(name)
    if filename is None:
        raise ValueError(f"unknown seed strategy {name!r}; expected one of: {', '.join(list_seeds())}")
    return resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")
