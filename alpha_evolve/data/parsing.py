"""From the bytes of one CSV or Parquet file to clean bars: column roles, reading, cleaning, checks.

Every bad input is refused with a one-line ``DataError`` naming the file, the line (as an editor shows it) and
the problem.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from alpha_evolve.data.shape import (
    _BYTES_PER_BAR_IN_MEMORY,
    _CSV_SUFFIXES,
    _FORMATS,
    _MAX_BYTES_PER_ROW,
    _PARQUET_SUFFIXES,
    COLUMNS,
    DEFAULT_MAX_BARS,
    DEFAULT_VOLUME,
    PRICE_MAX,
    QUANTITY_MAX,
    DataError,
    _fail,
    _first_line,
)
from alpha_evolve.files import decompress_gzip, read_regular_file

log = logging.getLogger("alpha_evolve.data.parsing")

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
                raise _fail(
                    path, f"decompresses to more than {limit // (1024 * 1024)} MiB ({_limit_hint(max_bars)})"
                ) from None
            raise
    if b"\x00" in data[:4096]:
        raise _fail(path, "unreadable file: looks binary, not CSV text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _limit_hint(max_bars: int) -> str:
    return (
        f"the limit is {max_bars:,} bars per instrument, about {_BYTES_PER_BAR_IN_MEMORY * max_bars / 2**30:.1f} "
        "GiB to load and backtest; raise [backtest] max_bars if the machine has the memory, or use fewer bars"
    )


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
        raise _fail(
            table.path,
            f"date {times[0].isoformat()} is before 1970-01-01, the earliest time NautilusTrader "
            f"can represent; drop the earlier rows ({early} bar(s))",
            table.row_labels(int(rows[0])),
        )
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
        raise _fail(
            table.path,
            f"{what} {values[j]:g} in column '{column}' is above the engine's maximum {limit:g}" + suffix,
            table.row_labels(int(rows[j])),
        )
