"""From a path (file, folder, catalog) or the synthetic market to a ``Dataset``: the package's entry point."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alpha_evolve.data.cache import _cache_key, _cache_read, _cache_write
from alpha_evolve.data.calendar import _interval_label, bar_interval, periods_per_year
from alpha_evolve.data.catalog import _catalog_instruments, is_catalog
from alpha_evolve.data.parsing import (
    _check_bar_count,
    _clean,
    _file_format,
    _ns,
    _read_bytes,
    _read_csv,
    _read_parquet,
    _suffix,
)
from alpha_evolve.data.shape import (
    _CSV_SUFFIXES,
    _FORMATS,
    _PARQUET_SUFFIXES,
    COLUMNS,
    DEFAULT_MAX_BARS,
    DEFAULT_VOLUME,
    DataError,
    _fail,
)
from alpha_evolve.files import not_a_file_reason
from alpha_evolve.synthetic import generate_bars, generator_parameters

log = logging.getLogger("alpha_evolve.data.assembly")

# --------------------------------------------------------------------------------------------- files


def _load_file(
    path: Path,
    fmt: str = "auto",
    use_adjusted: bool = False,
    cache_dir: Path | None = None,
    max_bars: int = DEFAULT_MAX_BARS,
) -> tuple[pd.DataFrame, bool]:
    kind = _file_format(path, fmt)
    data = _read_bytes(path, max_bars)
    key = _cache_key(hashlib.sha256(data).hexdigest(), f"file|{kind}|adjusted={use_adjusted}")
    cached = _cache_read(cache_dir, key)
    if cached is not None:
        _check_bar_count(path, len(cached[0]), max_bars)
        return cached
    if not data.strip():
        raise _fail(path, "empty file (0 bytes)" if not data else "empty file (only whitespace)")
    table = _read_csv(path, data, max_bars) if kind == "csv" else _read_parquet(path, data, max_bars)
    bars, volume_filled = _clean(table, use_adjusted)
    _cache_write(cache_dir, key, bars, volume_filled)
    return bars, volume_filled


def _warn_filled(paths: Sequence[Path]) -> None:
    if paths:
        names = ", ".join(p.name for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
        log.warning(
            "no volume column in %d file(s) (%s); using %s per bar", len(paths), names, f"{DEFAULT_VOLUME:,.0f}"
        )


def load_bars(
    path: str | Path, *, fmt: str = "auto", use_adjusted: bool = False, max_bars: int = DEFAULT_MAX_BARS
) -> pd.DataFrame:
    """Load one CSV or Parquet file of OHLCV bars into the standard shape, or raise DataError."""
    path = Path(path)
    bars, filled = _load_file(path, fmt, use_adjusted, None, max_bars)
    _warn_filled([path] if filled else [])
    return bars


def _matches(pattern: str, name: str) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name.lower(), part.strip().lower()) for part in pattern.split("|") if part.strip())


def _universe_files(folder: Path, symbols: Sequence[str] | None, pattern: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise _fail(folder, "not a directory")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not _matches(pattern, path.name):
            continue
        symbol = path.name[: len(path.name) - len(_suffix(path))].upper() if _suffix(path) else path.stem.upper()
        if symbol in files:
            raise _fail(path, f"symbol {symbol} also comes from {files[symbol].name}; keep one file per symbol")
        files[symbol] = path
    if not files:
        raise _fail(folder, f"no data files matching '{pattern}'")
    if symbols:
        wanted = [s.upper() for s in symbols]
        absent = [s for s in wanted if s not in files]
        if absent:
            raise _fail(folder, f"no file for symbol(s) {', '.join(absent)}; available: {', '.join(sorted(files))}")
        files = {s: files[s] for s in wanted}
    for path in files.values():  # a FIFO, device, dangling link or folder named like data: say so, never block
        reason = not_a_file_reason(path)
        if reason is not None:
            raise _fail(path, f"{reason.replace(', expected a regular file', '')}, expected a data file")
    return files


def load_universe(
    folder: str | Path,
    symbols: Sequence[str] | None = None,
    pattern: str = "*.csv|*.parquet",
    *,
    use_adjusted: bool = False,
    cache_dir: Path | None = None,
    max_bars: int = DEFAULT_MAX_BARS,
) -> dict[str, pd.DataFrame]:
    """Load every matching file in a folder as one instrument each (symbol = file stem, upper-cased)."""
    folder = Path(folder)
    out: dict[str, pd.DataFrame] = {}
    filled: list[Path] = []
    for symbol, path in _universe_files(folder, symbols, pattern).items():
        bars, was_filled = _load_file(path, "auto", use_adjusted, cache_dir, max_bars)
        out[symbol] = bars
        if was_filled:
            filled.append(path)
    _warn_filled(filled)
    return out


# --------------------------------------------------------------------------------------------- dataset


def content_hash(instruments: dict[str, pd.DataFrame]) -> str:
    """sha256 over symbols, timestamps and values of cleaned bars: the identity of the data a result used."""
    digest = hashlib.sha256()
    for symbol in sorted(instruments):
        bars = instruments[symbol]
        digest.update(symbol.encode() + b"\x00")
        digest.update(np.ascontiguousarray(_ns(pd.DatetimeIndex(bars.index)), dtype="<i8").tobytes())
        digest.update(np.ascontiguousarray(bars[list(COLUMNS)].to_numpy(dtype="<f8")).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Dataset:
    """The market data one run uses: instruments by symbol plus where they came from."""

    instruments: dict[str, pd.DataFrame]
    synthetic: bool
    source: str
    content_hash: str = field(default="")
    generator: dict[str, Any] | None = None  # synthetic data: the generator and its parameters

    def describe(self) -> dict[str, Any]:
        starts = [b.index[0] for b in self.instruments.values()]
        ends = [b.index[-1] for b in self.instruments.values()]
        longest = max(self.instruments.values(), key=len)
        return {
            "source": self.source,
            "synthetic": self.synthetic,
            "symbols": list(self.instruments),
            "bars": {s: len(b) for s, b in self.instruments.items()},
            "start": min(starts).isoformat(),
            "end": max(ends).isoformat(),
            "interval": _interval_label(bar_interval(pd.DatetimeIndex(longest.index))),
            "periods_per_year": round(periods_per_year(pd.DatetimeIndex(longest.index)), 4),
            "hash": self.content_hash,
            "generator": self.generator,
        }


_FREQ_WORDS = {
    "1D": "daily",
    "D": "daily",
    "B": "business-daily",
    "1B": "business-daily",
    "1h": "hourly",
    "h": "hourly",
    "1min": "1-minute",
    "min": "1-minute",
    "1W": "weekly",
    "W": "weekly",
}


def load_dataset(
    source: str | Path | None,
    *,
    symbols: Sequence[str] = (),
    fmt: str = "auto",
    use_adjusted: bool = False,
    synthetic_bars: int = 2000,
    synthetic_seed: int = 7,
    synthetic_freq: str = "1D",
    cache_dir: Path | None = None,
    max_bars: int = DEFAULT_MAX_BARS,
    synthetic_generator: str = "regimes",
    synthetic_signal: float = 1.0,
    synthetic_regime_bars: float = 40.0,
) -> Dataset:
    """The single entry point: a file, a folder of files, a catalog, or None/"" for embedded synthetic data.

    With synthetic data, each named symbol gets its own series (seed, seed+1, ...); with a single file, one
    symbol renames it; with a folder or catalog, symbols select instruments.
    """
    if fmt not in _FORMATS:
        raise DataError(f"unknown data format '{fmt}' (expected one of: {', '.join(_FORMATS)})")
    if source is None or str(source).strip() == "":
        names = [s.upper() for s in symbols] or ["SYN"]
        instruments = {
            name: generate_bars(
                synthetic_generator,
                n_bars=synthetic_bars,
                seed=synthetic_seed + i,
                freq=synthetic_freq,
                symbol=name,
                signal=synthetic_signal,
                regime_bars=synthetic_regime_bars,
            )
            for i, name in enumerate(names)
        }
        for bars in instruments.values():
            bars.attrs = {}
        word = _FREQ_WORDS.get(synthetic_freq, f"{synthetic_freq}")
        kind = f"planted market, signal {synthetic_signal:g}, " if synthetic_generator == "planted" else ""
        description = f"embedded synthetic data ({kind}seed {synthetic_seed}, {synthetic_bars} {word} bars)"
        log.info("no data source given: using %s", description)
        params = generator_parameters(
            synthetic_generator,
            n_bars=synthetic_bars,
            seed=synthetic_seed,
            freq=synthetic_freq,
            signal=synthetic_signal,
            regime_bars=synthetic_regime_bars,
        )
        return Dataset(instruments, True, description, content_hash(instruments), params)

    path = Path(source).expanduser()
    if not path.exists():
        reason = not_a_file_reason(path)
        raise _fail(path, "no such file or directory" if reason in (None, "does not exist") else reason)
    if path.is_dir() and _suffix(path) in _CSV_SUFFIXES + _PARQUET_SUFFIXES and not is_catalog(path):
        raise _fail(path, "is a directory, expected a data file")
    if path.is_dir():
        if fmt == "catalog" or (fmt == "auto" and is_catalog(path)):
            if not is_catalog(path):
                raise _fail(path, "not a NautilusTrader ParquetDataCatalog (no data/bar directory)")
            instruments = _catalog_instruments(path, symbols, cache_dir)
            for name, frame in instruments.items():
                _check_bar_count(path, len(frame), max_bars, f" of {name}")
        else:
            pattern = {"csv": "*.csv|*.tsv|*.txt|*.csv.gz", "parquet": "*.parquet|*.pq"}.get(fmt, "*.csv|*.parquet")
            instruments = load_universe(
                path, symbols or None, pattern, use_adjusted=use_adjusted, cache_dir=cache_dir, max_bars=max_bars
            )
    else:
        if fmt == "catalog":
            raise _fail(path, "fmt='catalog' needs a catalog directory, not a file")
        if len(symbols) > 1:
            raise _fail(path, f"one file holds one instrument, but {len(symbols)} symbols were named")
        bars, filled = _load_file(path, fmt, use_adjusted, cache_dir, max_bars)
        _warn_filled([path] if filled else [])
        name = symbols[0].upper() if symbols else path.name[: len(path.name) - len(_suffix(path))].upper()
        instruments = {name: bars}
    return Dataset(instruments, False, str(path), content_hash(instruments))
