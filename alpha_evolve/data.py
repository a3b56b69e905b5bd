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
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from alpha_evolve.files import decompress_gzip, not_a_file_reason, read_regular_file
from alpha_evolve.synthetic import generate_bars, generator_parameters
from alpha_evolve.synthetic import synthetic_bars as _synthetic_bars

__all__ = [
    "COLUMNS",
    "DEFAULT_VOLUME",
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
    "periods_per_year",
    "split_bars",
    "synthetic_bars",
]

log = logging.getLogger("alpha_evolve.data")

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

synthetic_bars = _synthetic_bars


class DataError(ValueError):
    """A one-line, user-facing description of bad market data (file, line, problem); never a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass
class CacheStats:
    """Counters so callers (and tests) can see whether prepared data came from the cache."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0


cache_stats = CacheStats()


# --------------------------------------------------------------------------------------------- column roles


def _norm(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


_TIME_ALIASES = (
    "datetime",
    "timestamp",
    "date",
    "time",
    "ts",
    "tsevent",
    "opentime",
    "gmttime",
    "localtime",
    "dt",
    "index",
    "unnamed0",
    "",
)
_ROLE_ALIASES: dict[str, tuple[str, ...]] = {
    "open": ("open", "o", "openprice", "openmid", "openbid"),
    "high": ("high", "h", "highprice", "highmid", "highbid"),
    "low": ("low", "l", "lowprice", "lowmid", "lowbid"),
    "close": ("close", "c", "closelast", "closeprice", "last", "closemid", "closebid"),
    "volume": ("volume", "vol", "v", "volumeto", "tickvol", "tickvolume", "basevolume"),
    "adj_close": ("adjclose", "adjustedclose", "adjcloseprice"),
}


@dataclass
class _Table:
    """Raw columns of one file plus the user-visible label of each row ("line 7" or "row 6")."""

    path: Path
    frame: pd.DataFrame
    row_labels: Callable[[int], str]
    index_time: pd.Series | None = None  # a DatetimeIndex that carried the time (parquet)


def _fail(path: Path | str, message: str, where: str | None = None) -> DataError:
    name = str(path)
    return DataError(f"{name}: {where}: {message}" if where else f"{name}: {message}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------------------------- reading


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _CSV_SUFFIXES + _PARQUET_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _file_format(path: Path, fmt: str) -> str:
    if fmt not in _FORMATS:
        raise DataError(f"unknown data format '{fmt}' (expected one of: {', '.join(_FORMATS)})")
    if fmt in ("csv", "parquet"):
        return fmt
    suffix = _suffix(path)
    if suffix in _CSV_SUFFIXES:
        return "csv"
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    raise _fail(
        path,
        f"unknown extension '{suffix or '(none)'}' (expected .csv, .tsv, .txt, .csv.gz or .parquet; "
        "pass fmt='csv' or fmt='parquet' to read it anyway)",
    )


def _read_bytes(path: Path, max_bars: int = DEFAULT_MAX_BARS) -> bytes:
    """The file's bytes, read without blocking (a FIFO, a device or a directory is refused at once) and capped
    at ``max_file_bytes(max_bars)`` so a huge file is refused before it is read, not after memory runs out."""
    limit = max_file_bytes(max_bars)
    if not os.path.lexists(path):
        raise _fail(path, "no such file")
    try:
        return read_regular_file(path, max_bytes=limit, what="data file", error=DataError)
    except DataError as exc:
        if "more than the limit" in str(exc):
            raise _fail(path, f"{str(exc).split(': ', 1)[1]} ({_limit_hint(max_bars)})") from None
        if isinstance(exc.__cause__, OSError):  # keep the errno in the chain: EIO/EACCES are the machine's fault
            raise _fail(path, f"unreadable file ({_first_line(exc.__cause__)})") from exc.__cause__
        raise


def _decode(path: Path, data: bytes, max_bars: int = DEFAULT_MAX_BARS) -> str:
    if data[:2] == b"\x1f\x8b":
        limit = max_file_bytes(max_bars)
        try:
            data = decompress_gzip(data, max_bytes=limit, source=path, error=DataError)
        except DataError as exc:
            if "more than the limit" in str(exc):
                raise _fail(path, f"decompresses to more than {limit // (1024 * 1024)} MiB "
                                  f"({_limit_hint(max_bars)})") from None
            raise
    if b"\x00" in data[:4096]:
        raise _fail(path, "unreadable file: looks binary, not CSV text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _limit_hint(max_bars: int) -> str:
    return (f"the limit is {max_bars:,} bars per instrument, about {_BYTES_PER_BAR_IN_MEMORY * max_bars / 2**30:.1f} "
            "GiB to load and backtest; raise [backtest] max_bars if the machine has the memory, or use fewer bars")


def max_file_bytes(max_bars: int) -> int:
    """Largest data file (after decompression) read for ``max_bars`` bars: generous per-row room for wide rows."""
    return max(max_bars, 1) * _MAX_BYTES_PER_ROW + (1 << 20)


def _check_bar_count(path: Path, rows: int, max_bars: int, where: str = "") -> None:
    if rows > max_bars:
        raise _fail(path, f"{rows:,} rows{where}, more than {max_bars:,} bars per instrument ({_limit_hint(max_bars)})")


def _read_csv(path: Path, data: bytes, max_bars: int = DEFAULT_MAX_BARS) -> _Table:
    text = _decode(path, data, max_bars)
    _check_bar_count(path, text.count("\n") - 1, max_bars)  # before the per-line work below, which costs memory
    lines = text.splitlines()
    header_idx = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_idx is None:
        raise _fail(path, "empty file (no header, no bars)")
    header = lines[header_idx]
    sep = max((",", ";", "\t", "|"), key=header.count)
    if header.count(sep) == 0:
        raise _fail(
            path,
            f"line {header_idx + 1}: cannot find columns in header '{header[:80]}' "
            "(expected a delimited header such as Date,Open,High,Low,Close,Volume)",
        )
    try:
        # Time columns stay text (leading zeros in HHMMSS, formats decided later); prices and volumes are
        # parsed by the C reader, several times faster than converting strings afterwards.
        names = pd.read_csv(io.StringIO(header), sep=sep, nrows=0, skipinitialspace=True).columns
        text_columns = {c: str for c in names if _norm(c) in _TIME_ALIASES or _norm(c).startswith("unnamed")}
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            skiprows=header_idx,
            dtype=text_columns,  # type: ignore[arg-type]
            keep_default_na=False,
            skipinitialspace=True,
        )
    except pd.errors.ParserError as exc:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if match:
            raise _fail(
                path, f"expected {match.group(1)} fields, saw {match.group(3)}", f"line {match.group(2)}"
            ) from None
        raise _fail(path, f"unreadable CSV ({_first_line(exc)})") from None
    except (ValueError, pd.errors.EmptyDataError) as exc:
        raise _fail(path, f"unreadable CSV ({_first_line(exc)})") from None
    frame.columns = [str(c).strip() for c in frame.columns]

    line_numbers = np.array([i + 1 for i in range(header_idx + 1, len(lines)) if lines[i].strip()], dtype=np.int64)
    frame, line_numbers = _drop_yfinance_subheaders(frame, line_numbers)
    if len(line_numbers) == len(frame):
        numbers = line_numbers

        def label(i: int) -> str:
            return f"line {numbers[i]}"
    else:  # quoted multi-line fields: fall back to data-row numbers

        def label(i: int) -> str:
            return f"data row {i + 1}"

    return _Table(path=path, frame=frame.reset_index(drop=True), row_labels=label)


def _drop_yfinance_subheaders(frame: pd.DataFrame, lines: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """yfinance >= 0.2.51 writes `Price,Close,...` / `Ticker,AAPL,...` / `Date,,,...` as three header rows."""
    if len(frame) >= 2 and _norm(frame.columns[0]) == "price":
        first = str(frame.iloc[0, 0]).strip().lower()
        second = str(frame.iloc[1, 0]).strip()
        rest_empty = all(str(v).strip() == "" for v in frame.iloc[1, 1:])
        if first == "ticker" and _norm(second) in _TIME_ALIASES and rest_empty:
            frame = frame.iloc[2:].rename(columns={frame.columns[0]: second})
            return frame, lines[2:]
    return frame, lines


def _read_parquet(path: Path, data: bytes, max_bars: int = DEFAULT_MAX_BARS) -> _Table:
    if not data:
        raise _fail(path, "empty file (0 bytes)")
    try:
        import pyarrow.parquet as pq

        _check_bar_count(path, int(pq.ParquetFile(io.BytesIO(data)).metadata.num_rows), max_bars)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises many types for damaged files
        raise _fail(path, f"unreadable Parquet file ({_first_line(exc)})") from None
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises many types for damaged files
        raise _fail(path, f"unreadable Parquet file ({_first_line(exc)})") from None
    index_time: pd.Series | None = None
    if isinstance(frame.index, pd.DatetimeIndex):
        index_time = pd.Series(frame.index, name=frame.index.name or "index")
        frame = frame.reset_index(drop=True)
    elif not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    frame.columns = [str(c).strip() for c in frame.columns]

    def label(i: int) -> str:
        return f"row {i + 1}"

    return _Table(path=path, frame=frame, row_labels=label, index_time=index_time)


# --------------------------------------------------------------------------------------------- cleaning

_NUMERIC_JUNK = re.compile(r"[\s$€£,_]")
_MISSING_TOKENS = {"", "nan", "null", "none", "na", "n/a", "-", "#n/a"}


def _to_float(table: _Table, column: str) -> np.ndarray:
    raw = table.frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise _fail(table.path, f"missing or non-finite value in column '{column}'", table.row_labels(i))
        return values
    fast = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if np.isfinite(fast).all():  # the common case, without per-string Python work
        return fast
    text = raw.astype(str).str.strip()
    cleaned = text.str.replace(_NUMERIC_JUNK, "", regex=True)
    values = pd.to_numeric(cleaned, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        token = str(text.iloc[i])
        what = (
            f"missing value in column '{column}'"
            if token.lower() in _MISSING_TOKENS
            else f"unparseable number '{token[:40]}' in column '{column}'"
        )
        raise _fail(table.path, what, table.row_labels(i))
    return values


_DATE_FORMATS = (
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
    "%d/%m/%Y",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%y",
    "%d.%m.%Y",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M:%S.%f",
    "%Y.%m.%d",
    "%Y.%m.%d %H:%M",
    "%Y.%m.%d %H:%M:%S",
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y%m%d",
    "%Y%m%d %H%M%S",
    "%Y%m%d %H:%M:%S",
    "%d-%b-%Y",
    "%d-%b-%y",
    "%d %b %Y",
    "%b %d, %Y",
)
_EXPECTED_DATES = "expected ISO 8601, m/d/Y, d.m.Y, d-Mon-Y, YYYYMMDD or epoch seconds/milliseconds"


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch whatever the index's resolution (pandas 2 keeps s/ms/us units)."""
    return np.asarray(index.as_unit("ns").asi8)  # type: ignore[attr-defined]


def _epoch_unit(values: np.ndarray) -> Literal["s", "ms", "us", "ns"]:
    magnitude = float(np.nanmedian(np.abs(values)))
    if magnitude < 1e11:
        return "s"
    if magnitude < 1e14:
        return "ms"
    if magnitude < 1e17:
        return "us"
    return "ns"


def _parse_times(table: _Table, column: str, raw: pd.Series) -> pd.DatetimeIndex:
    """Parse one time column to UTC; the first row that no candidate format explains is reported."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return pd.DatetimeIndex(raw).tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(raw):
        return pd.DatetimeIndex(raw).tz_localize("UTC")
    numeric = pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw)
    if not numeric and len(raw) and not str(raw.iloc[0]).strip().isdigit():
        try:  # fast path for the common ISO case; anything unusual goes through the careful path below
            iso = pd.to_datetime(raw, format="ISO8601", utc=True)
            if not iso.isna().any():
                return pd.DatetimeIndex(iso)
        except (ValueError, TypeError, OverflowError):
            pass
    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if len(numbers) and np.isfinite(numbers).all():
        # Whole numbers: YYYYMMDD (Stooq, MetaStock) or epoch seconds/ms/us/ns.
        whole = bool((numbers == np.floor(numbers)).all())
        if whole and ((numbers >= 18000101) & (numbers <= 21991231)).all():
            ymd = pd.to_datetime(
                pd.Series(numbers.astype(np.int64)).astype(str), format="%Y%m%d", utc=True, errors="coerce"
            )
            if not ymd.isna().any():
                return pd.DatetimeIndex(ymd)
        try:
            parsed = pd.to_datetime(pd.Series(numbers), unit=_epoch_unit(numbers), utc=True)
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
            raise _fail(table.path, f"epoch timestamps in column '{column}' are out of range") from None
        return pd.DatetimeIndex(parsed)

    text = raw.astype(str).str.strip()
    empty = text.str.lower().isin(_MISSING_TOKENS)
    if empty.any():
        i = int(np.argmax(empty.to_numpy()))
        raise _fail(table.path, f"missing date in column '{column}'", table.row_labels(i))
    finite = np.isfinite(numbers)
    if finite.mean() > 0.5:  # mostly epoch numbers: the odd one out is the bad row
        i = int(np.argmax(~finite))
        raise _fail(
            table.path,
            f"unparseable date '{str(text.iloc[i])[:40]}' in column '{column}' ({_EXPECTED_DATES})",
            table.row_labels(i),
        )

    candidates: list[pd.Series] = []
    try:
        iso = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        if not iso.isna().any():
            return pd.DatetimeIndex(iso)
        candidates.append(iso)
    except (ValueError, TypeError):
        pass
    complete: list[pd.DatetimeIndex] = []
    for fmt in _DATE_FORMATS:
        try:
            parsed = pd.to_datetime(text, format=fmt, utc=True, errors="coerce")
        except (ValueError, TypeError):
            continue
        if not parsed.isna().any():
            complete.append(pd.DatetimeIndex(parsed))
            if len(complete) == 2:
                break
        else:
            candidates.append(parsed)
    if complete:
        # Day-first and month-first can both parse (e.g. 01/02/2020); month-first wins unless only the
        # day-first reading puts the bars in time order.
        for parsed_index in complete:
            if parsed_index.is_monotonic_increasing or parsed_index.is_monotonic_decreasing:
                return parsed_index
        return complete[0]
    best = max(candidates, key=lambda s: int(s.notna().sum())) if candidates else None
    i = int(np.argmax(best.isna().to_numpy())) if best is not None else 0
    raise _fail(
        table.path,
        f"unparseable date '{str(text.iloc[i])[:40]}' in column '{column}' ({_EXPECTED_DATES})",
        table.row_labels(i),
    )


def _find_columns(table: _Table) -> tuple[dict[str, str], str | None, str | None]:
    """Map roles (open, high, ...) to column names; return (roles, time column, separate time-of-day column)."""
    by_norm: dict[str, str] = {}
    for name in table.frame.columns:
        by_norm.setdefault(_norm(name), name)
    roles: dict[str, str] = {}
    for role, aliases in _ROLE_ALIASES.items():
        for alias in aliases:
            if alias in by_norm:
                roles[role] = by_norm[alias]
                break
    time_col: str | None = None
    clock_col: str | None = None
    if table.index_time is None:
        for alias in _TIME_ALIASES:
            if alias in by_norm:
                time_col = by_norm[alias]
                break
        if time_col is not None and _norm(time_col) == "date" and "time" in by_norm:
            clock_col = by_norm["time"]  # separate Date and Time columns (Stooq, MetaTrader)
    missing = [r for r in ("open", "high", "low", "close") if r not in roles]
    if time_col is None and table.index_time is None:
        missing.insert(0, "time")
    if missing:
        found = ", ".join(repr(str(c)) for c in table.frame.columns) or "none"
        raise _fail(
            table.path,
            f"missing column(s) {', '.join(missing)}; found {found}; expected a time column "
            "(Date, Datetime, timestamp, time or an unnamed index) and Open, High, Low, Close "
            "(Volume and Adj Close optional)",
        )
    return roles, time_col, clock_col


def _clean(table: _Table, use_adjusted: bool) -> tuple[pd.DataFrame, bool]:
    """Turn a raw table into standard bars or raise DataError; returns (bars, volume_was_filled)."""
    if len(table.frame) == 0:
        raise _fail(table.path, "empty file (a header but no bars)")
    roles, time_col, clock_col = _find_columns(table)

    if table.index_time is not None:
        times = _parse_times(table, str(table.index_time.name), table.index_time)
    else:
        assert time_col is not None
        raw_time = table.frame[time_col]
        if clock_col is not None:
            raw_time = raw_time.astype(str).str.strip() + " " + table.frame[clock_col].astype(str).str.strip()
        times = _parse_times(table, time_col, raw_time)

    values = {role: _to_float(table, roles[role]) for role in ("open", "high", "low", "close")}
    volume_filled = "volume" not in roles
    n = len(table.frame)
    values["volume"] = np.full(n, DEFAULT_VOLUME) if volume_filled else _to_float(table, roles["volume"])

    if use_adjusted:
        if "adj_close" not in roles:
            found = ", ".join(repr(str(c)) for c in table.frame.columns)
            raise _fail(table.path, f"use_adjusted=True but there is no 'Adj Close' column; found {found}")
        adj = _to_float(table, roles["adj_close"])
        _check_positive(table, roles["adj_close"], adj)
        _check_positive(table, roles["close"], values["close"])
        factor = adj / values["close"]
        for role in ("open", "high", "low", "close"):
            values[role] = values[role] * factor

    rows = np.arange(n)
    ns = _ns(times)
    if n > 1:
        steps = np.diff(ns)
        if (steps < 0).all():  # newest-first export: reverse, keep each bar's original line
            log.info("%s: bars are newest-first; reversing to ascending time order", table.path)
            rows = rows[::-1]
            times = times[::-1]
            ns = _ns(times)
            values = {k: v[::-1] for k, v in values.items()}
            steps = np.diff(ns)
        if (steps <= 0).any():
            i = int(np.argmax(steps <= 0)) + 1
            here, before = table.row_labels(int(rows[i])), table.row_labels(int(rows[i - 1]))
            if steps[i - 1] == 0:
                problem = f"duplicate timestamp {times[i].isoformat()} (same as {before})"
            else:
                problem = (
                    f"timestamp {times[i].isoformat()} is earlier than {times[i - 1].isoformat()} "
                    f"on {before}; bars must be in ascending time order"
                )
            raise _fail(table.path, problem, here)

    if n and ns[0] < 0:  # ascending by now: the first bar is the earliest
        early = int((ns < 0).sum())
        raise _fail(table.path, f"date {times[0].isoformat()} is before 1970-01-01, the earliest time NautilusTrader "
                    f"can represent; drop the earlier rows ({early} bar(s))", table.row_labels(int(rows[0])))
    for role in ("open", "high", "low", "close"):
        _check_positive(table, roles[role], values[role], rows)
        _check_at_most(table, roles[role], values[role], rows, PRICE_MAX, "price")
    if not volume_filled:
        _check_at_most(table, roles["volume"], values["volume"], rows, QUANTITY_MAX, "volume")
    o, h, lo, c, v = (values[k] for k in COLUMNS)
    tol = 1e-9 * np.maximum(np.abs(h), 1.0)
    checks = (
        (h < lo - tol, lambda j: f"high {h[j]:g} is below low {lo[j]:g}"),
        (h < np.maximum(o, c) - tol, lambda j: f"high {h[j]:g} is below max(open, close) {max(o[j], c[j]):g}"),
        (lo > np.minimum(o, c) + tol, lambda j: f"low {lo[j]:g} is above min(open, close) {min(o[j], c[j]):g}"),
        (v < 0, lambda j: f"negative volume {v[j]:g}"),
    )
    for bad, describe in checks:
        if bad.any():
            j = int(np.argmax(bad))
            more = int(bad.sum()) - 1
            suffix = f" ({more} more bar(s) like this)" if more else ""
            raise _fail(table.path, describe(j) + suffix, table.row_labels(int(rows[j])))

    index = pd.DatetimeIndex(times, name="timestamp").as_unit("ns")
    bars = pd.DataFrame({k: np.ascontiguousarray(values[k], dtype="float64") for k in COLUMNS}, index=index)
    return bars, volume_filled


def _check_positive(table: _Table, column: str, values: np.ndarray, rows: np.ndarray | None = None) -> None:
    bad = values <= 0
    if bad.any():
        j = int(np.argmax(bad))
        row = int(rows[j]) if rows is not None else j
        raise _fail(table.path, f"non-positive price {values[j]:g} in column '{column}'", table.row_labels(row))


def _check_at_most(table: _Table, column: str, values: np.ndarray, rows: np.ndarray, limit: float, what: str) -> None:
    bad = values > limit
    if bad.any():
        j = int(np.argmax(bad))
        more = int(bad.sum()) - 1
        suffix = f" ({more} more bar(s) like this)" if more else ""
        raise _fail(table.path, f"{what} {values[j]:g} in column '{column}' is above the engine's maximum {limit:g}"
                    + suffix, table.row_labels(int(rows[j])))


# --------------------------------------------------------------------------------------------- cache


def _cache_key(data_hash: str, settings: str) -> str:
    return hashlib.sha256(f"{_LOADER_VERSION}|{settings}|{data_hash}".encode()).hexdigest()[:40]


def _cache_read(cache_dir: Path | None, key: str) -> tuple[pd.DataFrame, bool] | None:
    if cache_dir is None:
        return None
    path = cache_dir / f"{key}.parquet"
    if not path.exists():
        cache_stats.misses += 1
        return None
    try:
        frame = pd.read_parquet(path)
        volume_filled = bool(frame.attrs.get("alpha_evolve_volume_filled", False))
        frame = _conform(frame)
    except Exception as exc:  # a damaged cache entry is rebuilt, never fatal
        cache_stats.corrupt += 1
        cache_stats.misses += 1
        log.warning("ignoring corrupt cache entry %s (%s); rebuilding", path, _first_line(exc))
        return None
    cache_stats.hits += 1
    log.debug("cache hit %s", path)
    return frame, volume_filled


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Check that a cached frame still has the standard shape; raise ValueError otherwise."""
    if list(frame.columns) != list(COLUMNS):
        raise ValueError(f"columns {list(frame.columns)}")
    if not isinstance(frame.index, pd.DatetimeIndex) or str(frame.index.tz) != "UTC":
        raise ValueError("index is not a UTC DatetimeIndex")
    if not all(frame[c].dtype == np.float64 for c in COLUMNS):
        raise ValueError("non-float columns")
    if len(frame) == 0 or not frame.index.is_monotonic_increasing or not frame.index.is_unique:
        raise ValueError("bad index")
    frame = frame.copy()
    frame.attrs = {}
    frame.index.name = "timestamp"
    return frame


def _cache_write(cache_dir: Path | None, key: str, frame: pd.DataFrame, volume_filled: bool) -> None:
    if cache_dir is None:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        out = frame.copy()
        out.attrs = {"alpha_evolve_volume_filled": volume_filled}
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                out.to_parquet(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, cache_dir / f"{key}.parquet")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        cache_stats.writes += 1
    except OSError as exc:  # a read-only or full cache directory must not stop a run
        log.warning("could not write data cache in %s (%s)", cache_dir, _first_line(exc))


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


# --------------------------------------------------------------------------------------------- catalog


def is_catalog(path: str | Path) -> bool:
    """A NautilusTrader ParquetDataCatalog keeps bars under `<root>/data/bar/<bar type>/*.parquet`."""
    return (Path(path) / "data" / "bar").is_dir()


def _catalog_bar_types(root: Path) -> list[str]:
    bar_dir = root / "data" / "bar"
    return sorted(p.name for p in bar_dir.iterdir() if p.is_dir()) if bar_dir.is_dir() else []


def _catalog_hash(root: Path, bar_type: str) -> str:
    digest = hashlib.sha256()
    for path in sorted((root / "data" / "bar" / bar_type).rglob("*.parquet")):
        digest.update(path.name.encode())
        digest.update(_read_bytes(path))
    return digest.hexdigest()


def _select_bar_type(root: Path, bar_type: str | None, instrument_id: str | None) -> str:
    available = _catalog_bar_types(root)
    if not available:
        raise _fail(root, "catalog has no bars (data/bar is empty)")
    if bar_type is not None:
        if bar_type not in available:
            raise _fail(root, f"no bars of type {bar_type} in catalog; available: {', '.join(available)}")
        return bar_type
    chosen = available
    if instrument_id is not None:
        chosen = [b for b in available if b.split("-", 1)[0] == instrument_id]
        if not chosen:
            raise _fail(root, f"no bars for instrument {instrument_id}; available: {', '.join(available)}")
    if len(chosen) > 1:
        raise _fail(root, f"catalog holds several bar types ({', '.join(chosen)}); name one with bar_type")
    return chosen[0]


def _read_catalog(root: Path, bar_type: str) -> pd.DataFrame:
    try:
        from nautilus_trader.persistence.catalog import ParquetDataCatalog

        bars = ParquetDataCatalog(str(root)).bars(bar_types=[bar_type])
    except Exception as exc:
        raise _fail(root, f"unreadable catalog bars {bar_type} ({_first_line(exc)})") from None
    if not bars:
        raise _fail(root, f"catalog has no {bar_type} bars")
    frame = pd.DataFrame(
        {
            "open": [b.open.as_double() for b in bars],
            "high": [b.high.as_double() for b in bars],
            "low": [b.low.as_double() for b in bars],
            "close": [b.close.as_double() for b in bars],
            "volume": [b.volume.as_double() for b in bars],
            "ts": [b.ts_event for b in bars],
        }
    )
    table = _Table(
        path=root / "data" / "bar" / bar_type,
        frame=frame,
        row_labels=lambda i: f"bar {i + 1}",
    )
    cleaned, _ = _clean(table, use_adjusted=False)
    return cleaned


def _load_catalog_cached(root: Path, bar_type: str, cache_dir: Path | None) -> pd.DataFrame:
    key = _cache_key(_catalog_hash(root, bar_type), f"catalog|{bar_type}")
    cached = _cache_read(cache_dir, key)
    if cached is not None:
        return cached[0]
    bars = _read_catalog(root, bar_type)
    _cache_write(cache_dir, key, bars, False)
    return bars


def load_catalog_bars(
    catalog_path: str | Path, bar_type: str | None = None, instrument_id: str | None = None
) -> pd.DataFrame:
    """Read one bar type from a NautilusTrader ParquetDataCatalog (indexed by each bar's `ts_event`)."""
    root = Path(catalog_path)
    if not is_catalog(root):
        raise _fail(root, "not a NautilusTrader ParquetDataCatalog (no data/bar directory)")
    return _read_catalog(root, _select_bar_type(root, bar_type, instrument_id))


def _catalog_instruments(root: Path, symbols: Sequence[str], cache_dir: Path | None) -> dict[str, pd.DataFrame]:
    available = _catalog_bar_types(root)
    if not available:
        raise _fail(root, "catalog has no bars (data/bar is empty)")
    chosen: list[str] = []
    if symbols:
        for wanted in symbols:
            hits = [
                b
                for b in available
                if wanted == b
                or wanted == b.split("-", 1)[0]
                or wanted.upper() == b.split("-", 1)[0].split(".", 1)[0].upper()
            ]
            if len(hits) != 1:
                problem = "matches several bar types" if hits else "matches no bar type"
                raise _fail(
                    root,
                    f"'{wanted}' {problem}; name a bar type or instrument id (available: {', '.join(available)})",
                )
            chosen.append(hits[0])
    else:
        chosen = available
    instrument_ids = [b.split("-", 1)[0] for b in chosen]
    if len(set(instrument_ids)) != len(instrument_ids):
        raise _fail(root, f"several bar types per instrument ({', '.join(chosen)}); name them in symbols")
    short = [i.split(".", 1)[0] for i in instrument_ids]
    names = short if len(set(short)) == len(short) else instrument_ids
    return {name: _load_catalog_cached(root, b, cache_dir) for name, b in zip(names, chosen, strict=True)}


# --------------------------------------------------------------------------------------------- frequency


def bar_interval(index: pd.Index) -> pd.Timedelta:
    """Typical spacing of bars: the median gap, which ignores weekends, holidays and session breaks."""
    index = pd.DatetimeIndex(index)
    if len(index) < 2:
        raise DataError(f"cannot infer the bar interval from {len(index)} bar(s); need at least 2")
    return pd.Timedelta(int(np.median(np.diff(_ns(index)))), unit="ns")


_YEAR_NS = 365.25 * 86_400 * 1e9
_MIN_SPAN_DAYS = 90.0


def periods_per_year(index: pd.Index) -> float:
    """Bars per year for annualising metrics, as observed in the data.

    Over a span of at least 90 days: (bars - 1) / span in years of 365.25 days, so daily equities give ~252,
    24/7 daily bars ~365 and minute bars whatever their sessions really hold. Over shorter spans the calendar
    is too noisy (one overnight gap dominates), so: median bars per active calendar day × 252 active days a
    year if no bar falls on a weekend, else × 365.25.
    """
    index = pd.DatetimeIndex(index)
    if len(index) < 2:
        raise DataError(f"cannot infer bars per year from {len(index)} bar(s); need at least 2")
    ns = _ns(index)
    span = float(ns[-1] - ns[0])
    if span >= _MIN_SPAN_DAYS * 86_400e9:
        return (len(index) - 1) / (span / _YEAR_NS)
    days = pd.DatetimeIndex(index).normalize()
    per_day = float(pd.Series(1, index=days).groupby(level=0).size().median())
    active_days = 365.25 if bool((pd.DatetimeIndex(index).dayofweek >= 5).any()) else 252.0
    interval_days = bar_interval(index) / pd.Timedelta(days=1)
    if interval_days > 1.0:  # weekly/monthly bars: fewer than one per day
        return 365.25 / interval_days
    return per_day * active_days


def _interval_label(interval: pd.Timedelta) -> str:
    seconds = interval.total_seconds()
    for unit, size in (("W", 604_800), ("D", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# --------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Chronological train / validation / holdout parts; the holdout is the untouched tail."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame

    def describe(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"start": part.index[0].isoformat(), "end": part.index[-1].isoformat(), "bars": len(part)}
            for name, part in (("train", self.train), ("validation", self.validation), ("holdout", self.holdout))
        }

    def warmup(self, name: str, bars: int) -> pd.DataFrame | None:
        """The ``bars`` bars just before part ``name``, taken from the parts before it (none before train).

        They warm indicators up so a period does not start cold while buy-and-hold is invested from its first
        bar; the cut of the periods is unchanged and the warm-up bars are never scored.
        """
        before = {"train": [], "validation": [self.train], "holdout": [self.train, self.validation]}[name]
        if bars <= 0 or not before:
            return None
        tail = pd.concat([part.iloc[max(len(part) - bars, 0):] for part in before])
        return tail.iloc[max(len(tail) - bars, 0):]


def _cut(index: pd.DatetimeIndex, end: str | pd.Timestamp, what: str) -> int:
    """Number of bars up to `end`: a date-only value includes that whole day, a date-time is inclusive."""
    text = str(end).strip()
    try:
        stamp = pd.Timestamp(end)
    except (ValueError, TypeError):
        raise DataError(f"{what} '{text}' is not a date (expected ISO form such as 2020-12-31)") from None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if isinstance(end, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return int(index.searchsorted(stamp + pd.Timedelta(days=1), side="left"))
    return int(index.searchsorted(stamp, side="right"))


def split_bars(
    df: pd.DataFrame,
    train: float = 0.6,
    validation: float = 0.2,
    train_end: str | pd.Timestamp | None = None,
    validation_end: str | pd.Timestamp | None = None,
    min_bars: int = 30,
) -> DataSplits:
    """Split bars chronologically by fractions of the bar count or by ISO end dates (dates win).

    The holdout is the remainder. Every part must keep at least `min_bars` bars.
    """
    n = len(df)
    index = pd.DatetimeIndex(df.index)
    fractions_ok = 0.0 < train < 1.0 and 0.0 < validation < 1.0 and train + validation < 1.0
    if (train_end is None or validation_end is None) and not fractions_ok:
        raise DataError(f"split fractions train={train}, validation={validation} must be in (0, 1) and sum to < 1")
    first, last = index[0].isoformat() if n else "?", index[-1].isoformat() if n else "?"
    n_train = _cut(index, train_end, "train_end") if train_end is not None else int(n * train)
    if train_end is not None and not 0 < n_train < n:
        raise DataError(f"train_end {train_end} is outside the data ({first} to {last})")
    if validation_end is not None:
        n_val_end = _cut(index, validation_end, "validation_end")
        if n_val_end >= n or (n_val_end == 0):
            raise DataError(f"validation_end {validation_end} is outside the data ({first} to {last})")
        if n_val_end <= n_train:
            raise DataError(f"validation_end {validation_end} is not after the end of training ({train_end or train})")
    else:
        n_val_end = n_train + int(n * validation)
    parts = {"train": (0, n_train), "validation": (n_train, n_val_end), "holdout": (n_val_end, n)}
    for name, (lo, hi) in parts.items():
        if hi - lo < min_bars:
            raise DataError(
                f"split leaves {name} with {max(hi - lo, 0)} bar(s), fewer than the minimum {min_bars} "
                f"(data: {n} bars from {first} to {last})"
            )
    return DataSplits(train=df.iloc[0:n_train], validation=df.iloc[n_train:n_val_end], holdout=df.iloc[n_val_end:n])


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
            name: generate_bars(synthetic_generator, n_bars=synthetic_bars, seed=synthetic_seed + i,
                                freq=synthetic_freq, symbol=name, signal=synthetic_signal,
                                regime_bars=synthetic_regime_bars)
            for i, name in enumerate(names)
        }
        for bars in instruments.values():
            bars.attrs = {}
        word = _FREQ_WORDS.get(synthetic_freq, f"{synthetic_freq}")
        kind = f"planted market, signal {synthetic_signal:g}, " if synthetic_generator == "planted" else ""
        description = f"embedded synthetic data ({kind}seed {synthetic_seed}, {synthetic_bars} {word} bars)"
        log.info("no data source given: using %s", description)
        params = generator_parameters(synthetic_generator, n_bars=synthetic_bars, seed=synthetic_seed,
                                      freq=synthetic_freq, signal=synthetic_signal,
                                      regime_bars=synthetic_regime_bars)
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
