"""The one shape bars leave the data package in, its limits, and the one-line error for anything else."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from alpha_evolve.values import one_line

COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
# Many index and FX files carry no volume; strategies that ignore volume should still run on them.
DEFAULT_VOLUME = 1_000_000.0
# Bump when cleaning rules change so cached results from older rules are not reused.
_LOADER_VERSION = "1"
_CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_FORMATS = ("auto", "csv", "parquet", "catalog")

DEFAULT_MAX_BARS = 2_000_000
"""Bars per instrument a run may load (``[backtest] max_bars``). Memory grows ~linearly with bars: the loader,
the prepared NautilusTrader bars and each forked worker's copy cost about ``_BYTES_PER_BAR_IN_MEMORY`` a bar at
the peak (a 10-million-row minute file took 6.4 GiB in a run; loading a 1-million-row, 95 MB minute CSV peaked at
0.95 GiB RSS), so 2 million bars is ~2 GiB. Above the limit a file is refused with one line before it is parsed."""
_BYTES_PER_BAR_IN_MEMORY = 1000
_MAX_BYTES_PER_ROW = 256
"""Text a CSV row may take on average before the file counts as too big to read (typical rows are 40-120 bytes)."""

PRICE_MAX = 17_014_118_346_046.0
"""NautilusTrader 1.221's ``PRICE_MAX`` (model.objects); a larger price cannot be represented by the engine."""
QUANTITY_MAX = 34_028_236_692_093.0
"""NautilusTrader 1.221's ``QUANTITY_MAX``: the largest volume a bar can carry."""
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


class DataError(ValueError):
    """A one-line, user-facing description of bad market data (file, line, problem); never a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(str(message)))


def _fail(path: Path | str, message: str, where: str | None = None) -> DataError:
    name = str(path)
    return DataError(f"{name}: {where}: {message}" if where else f"{name}: {message}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
