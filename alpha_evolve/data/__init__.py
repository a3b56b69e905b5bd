"""Market data: load, validate, cache and split OHLCV bars.

Researchers bring their own files in many shapes (Yahoo, Stooq, yfinance, exchange exports, pandas dumps,
NautilusTrader catalogs). Everything that leaves this module has one shape — a DataFrame with a UTC
``DatetimeIndex`` named ``timestamp`` and float columns exactly ``open, high, low, close, volume`` — and every
bad input is refused with a one-line ``DataError`` naming the file, the line (as an editor shows it) and the
problem, because a backtest on silently repaired data produces figures nobody can trust.

Rules worth knowing:

* Naive timestamps are taken as UTC; timestamps with an offset are converted to UTC.
* Files sorted newest-first (strictly descending, as some portals export) are reversed; any other disorder and
  any duplicate timestamp is an error.
* A file without a volume column gets ``DEFAULT_VOLUME`` per bar and one warning per load.
* ``periods_per_year`` annualises from the bars actually observed per calendar year (see its docstring).

The package: ``shape`` (the standard columns, limits, ``DataError``), ``parsing`` (one file's bytes to clean bars),
``cache`` (prepared bars on disk), ``catalog`` (NautilusTrader catalogs), ``calendar`` (interval, annualisation,
splits) and ``assembly`` (paths or the synthetic market to a ``Dataset``). Import from ``alpha_evolve.data``;
the submodules' underscored names are theirs alone.
"""

from __future__ import annotations

from alpha_evolve.data.assembly import Dataset, content_hash, load_bars, load_dataset, load_universe
from alpha_evolve.data.cache import CacheStats, cache_stats
from alpha_evolve.data.calendar import DataSplits, bar_interval, periods_per_year, split_bars
from alpha_evolve.data.catalog import is_catalog, load_catalog_bars
from alpha_evolve.data.parsing import max_file_bytes
from alpha_evolve.data.shape import (
    COLUMNS,
    DEFAULT_MAX_BARS,
    DEFAULT_VOLUME,
    EPOCH,
    PRICE_MAX,
    QUANTITY_MAX,
    DataError,
)
from alpha_evolve.synthetic import synthetic_bars

__all__ = [
    "COLUMNS",
    "DEFAULT_MAX_BARS",
    "DEFAULT_VOLUME",
    "EPOCH",
    "PRICE_MAX",
    "QUANTITY_MAX",
    "CacheStats",
    "DataError",
    "DataSplits",
    "Dataset",
    "bar_interval",
    "cache_stats",
    "content_hash",
    "is_catalog",
    "load_bars",
    "load_catalog_bars",
    "load_dataset",
    "load_universe",
    "max_file_bytes",
    "periods_per_year",
    "split_bars",
    "synthetic_bars",
]
