"""NautilusTrader parquet catalogs as a bar source."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from alpha_evolve.data.cache import _cache_key, _cache_read, _cache_write
from alpha_evolve.data.parsing import _clean, _read_bytes, _Table
from alpha_evolve.data.shape import _fail, _first_line

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
