"""The on-disk cache of prepared bars (parquet per content hash + settings) and its counters."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alpha_evolve.data.shape import _LOADER_VERSION, COLUMNS, _first_line

log = logging.getLogger("alpha_evolve.data.cache")


@dataclass
class CacheStats:
    """Counters so callers (and tests) can see whether prepared data came from the cache."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0


cache_stats = CacheStats()


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
