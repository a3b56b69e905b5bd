"""Market data: real-world file shapes, one-line errors, synthetic structure, splits, cache and catalog."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alpha_evolve.data import (
    COLUMNS,
    DEFAULT_VOLUME,
    DataError,
    bar_interval,
    cache_stats,
    load_bars,
    load_catalog_bars,
    load_dataset,
    load_universe,
    periods_per_year,
    split_bars,
)
from alpha_evolve.data import assembly as data_assembly
from alpha_evolve.synthetic import simulate, synthetic_bars


def _standard(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(COLUMNS)
    assert isinstance(df.index, pd.DatetimeIndex)
    assert str(df.index.tz) == "UTC"
    assert all(df[c].dtype == np.float64 for c in COLUMNS)
    assert df.index.is_monotonic_increasing and df.index.is_unique


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


YAHOO = """Date,Open,High,Low,Close,Adj Close,Volume
2020-01-02,74.06,75.15,73.80,75.09,73.15,135480400
2020-01-03,74.29,75.14,74.13,74.36,72.44,146322800
2020-01-06,73.45,74.99,73.19,74.95,73.02,118387200
2020-01-07,74.96,75.22,74.37,74.60,72.68,108872000
"""


# --------------------------------------------------------------------------------------------- shapes


def test_yahoo_csv(tmp_path):
    df = load_bars(_write(tmp_path / "AAPL.csv", YAHOO))
    _standard(df)
    assert len(df) == 4
    assert df.index[0] == pd.Timestamp("2020-01-02", tz="UTC")
    assert df.iloc[0].tolist() == [74.06, 75.15, 73.80, 75.09, 135480400.0]


def test_yahoo_adjusted_scales_ohlc(tmp_path):
    path = _write(tmp_path / "AAPL.csv", YAHOO)
    raw = load_bars(path)
    adj = load_bars(path, use_adjusted=True)
    factor = 73.15 / 75.09
    assert adj["close"].iloc[0] == pytest.approx(73.15)
    assert adj["open"].iloc[0] == pytest.approx(74.06 * factor)
    assert adj["high"].iloc[0] == pytest.approx(75.15 * factor)
    assert (adj["volume"] == raw["volume"]).all()


def test_adjusted_without_adj_close_is_refused(tmp_path):
    path = _write(tmp_path / "x.csv", "Date,Open,High,Low,Close\n2020-01-02,1,2,0.5,1.5\n")
    with pytest.raises(DataError, match=r"x\.csv: use_adjusted=True but there is no 'Adj Close' column"):
        load_bars(path, use_adjusted=True)


def test_epoch_ms_minute_bars_lowercase(tmp_path):
    start = 1_700_000_000_000
    rows = [f"{start + i * 60_000},{100 + i},{101 + i},{99 + i},{100.5 + i},{10 * (i + 1)}" for i in range(5)]
    df = load_bars(_write(tmp_path / "btc.csv", "timestamp,open,high,low,close,volume\n" + "\n".join(rows)))
    _standard(df)
    assert df.index[0] == pd.Timestamp(start, unit="ms", tz="UTC")
    assert bar_interval(df.index) == pd.Timedelta(minutes=1)


def test_bad_epoch_row_is_the_one_reported(tmp_path):
    rows = [f"{1_600_000_000 + i * 3600},1,2,0.5,1.5,3" for i in range(4)]
    rows[2] = "16OOOO72OO,1,2,0.5,1.5,3"
    path = _write(tmp_path / "e.csv", "time,open,high,low,close,volume\n" + "\n".join(rows))
    with pytest.raises(DataError, match=r"e\.csv: line 4: unparseable date '16OOOO72OO' in column 'time'"):
        load_bars(path)


def test_epoch_seconds(tmp_path):
    rows = [f"{1_600_000_000 + i * 3600},1,2,0.5,1.5,3" for i in range(3)]
    df = load_bars(_write(tmp_path / "s.csv", "time,open,high,low,close,volume\n" + "\n".join(rows)))
    assert df.index[1] == pd.Timestamp(1_600_003_600, unit="s", tz="UTC")


def test_datetime_with_offsets_converted_to_utc(tmp_path):
    text = (
        "Datetime,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-03-08 15:30:00-05:00,10,11,9,10.5,10.5,100\n"
        "2024-03-11 09:30:00-04:00,10.5,11,10,10.8,10.8,100\n"
    )
    df = load_bars(_write(tmp_path / "spy_1h.csv", text))
    _standard(df)
    assert df.index.tolist() == [
        pd.Timestamp("2024-03-08 20:30", tz="UTC"),
        pd.Timestamp("2024-03-11 13:30", tz="UTC"),
    ]


def test_month_day_year_dates(tmp_path):
    text = (
        "Date,Open,High,Low,Close,Volume\n01/02/2020,1,2,0.5,1.5,3\n01/03/2020,1,2,0.5,1.5,3\n01/13/2020,1,2,0.5,1,3\n"
    )
    df = load_bars(_write(tmp_path / "mdy.csv", text))
    assert df.index.tolist() == [pd.Timestamp(f"2020-01-{d:02d}", tz="UTC") for d in (2, 3, 13)]


def test_unnamed_index_column_from_pandas_to_csv(tmp_path):
    bars = synthetic_bars(n_bars=50, seed=3)
    frame = bars.copy()
    frame.index = pd.DatetimeIndex(frame.index).tz_localize(None)
    frame.index.name = None
    path = tmp_path / "dump.csv"
    frame.to_csv(path)
    assert path.read_text().startswith(",open,high")
    df = load_bars(path)
    _standard(df)
    pd.testing.assert_index_equal(df.index, bars.index, check_names=False)
    np.testing.assert_allclose(df.to_numpy(), bars.to_numpy(), rtol=1e-12)


def test_stooq_styles(tmp_path):
    web = "Date,Open,High,Low,Close,Volume\n2020-01-02,3244.67,3258.14,3235.53,3257.85,3459930000\n"
    assert len(load_bars(_write(tmp_path / "spx.csv", web))) == 1
    bulk = (
        "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
        "AAPL.US,5,20200102,153000,74.0,74.2,73.9,74.1,1000,0\n"
        "AAPL.US,5,20200102,153500,74.1,74.3,74.0,74.2,1200,0\n"
    )
    df = load_bars(_write(tmp_path / "aapl.us.txt", bulk))
    _standard(df)
    assert df.index.tolist() == [
        pd.Timestamp("2020-01-02 15:30", tz="UTC"),
        pd.Timestamp("2020-01-02 15:35", tz="UTC"),
    ]
    assert df["volume"].tolist() == [1000.0, 1200.0]


def test_yfinance_three_row_header_and_semicolons(tmp_path):
    text = (
        "Price,Close,High,Low,Open,Volume\nTicker,SPY,SPY,SPY,SPY,SPY\nDate,,,,,\n"
        "2024-01-02,472.6,473.6,470.5,472.1,123\n2024-01-03,468.8,471.1,468.1,470.4,456\n"
    )
    df = load_bars(_write(tmp_path / "spy.csv", text))
    assert df["open"].tolist() == [472.1, 470.4] and df["close"].tolist() == [472.6, 468.8]
    semi = "date;open;high;low;close;volume\n2020-01-02;1;2;0.5;1.5;3\n"
    assert len(load_bars(_write(tmp_path / "semi.csv", semi))) == 1


def test_newest_first_is_reversed(tmp_path):
    text = (
        "Date,Close/Last,Volume,Open,High,Low\n"
        "01/03/2020,$74.36,146322800,$74.29,$75.14,$74.13\n"
        "01/02/2020,$75.09,135480400,$74.06,$75.15,$73.80\n"
    )
    df = load_bars(_write(tmp_path / "nasdaq.csv", text))
    assert df.index[0] == pd.Timestamp("2020-01-02", tz="UTC")
    assert df["close"].tolist() == [75.09, 74.36]


def test_parquet_with_datetime_index_and_with_column(tmp_path):
    bars = synthetic_bars(n_bars=40, seed=1)
    frame = bars.rename(columns=str.capitalize)
    frame.index = pd.DatetimeIndex(frame.index).tz_convert("America/New_York")
    frame.to_parquet(tmp_path / "a.parquet")
    df = load_bars(tmp_path / "a.parquet")
    _standard(df)
    pd.testing.assert_frame_equal(df, bars, check_names=False, check_freq=False)
    flat = bars.reset_index().rename(columns={"timestamp": "Date"})
    flat["Date"] = flat["Date"].dt.tz_localize(None)
    flat.to_parquet(tmp_path / "b.parquet", index=False)
    pd.testing.assert_frame_equal(load_bars(tmp_path / "b.parquet"), bars, check_names=False, check_freq=False)


def test_gzip_csv(tmp_path):
    path = tmp_path / "g.csv.gz"
    path.write_bytes(gzip.compress(YAHOO.encode()))
    assert len(load_bars(path)) == 4


def test_missing_volume_filled_and_warned_once(tmp_path, caplog):
    for name in ("SPX", "NDX"):
        _write(tmp_path / f"{name}.csv", "Date,Open,High,Low,Close\n2020-01-02,1,2,0.5,1.5\n2020-01-03,1,2,0.5,1.5\n")
    with caplog.at_level(logging.WARNING, logger="alpha_evolve.data"):
        universe = load_universe(tmp_path)
    assert set(universe) == {"SPX", "NDX"}
    assert (universe["SPX"]["volume"] == DEFAULT_VOLUME).all()
    warnings = [r for r in caplog.records if "no volume column" in r.getMessage()]
    assert len(warnings) == 1 and "2 file(s)" in warnings[0].getMessage()


# --------------------------------------------------------------------------------------------- errors


GOOD = "2020-01-02,1,2,0.5,1.5,10"
HEADER = "Date,Open,High,Low,Close,Volume"

BAD_CASES = [
    # (rows after the header, expected line number, expected problem fragment)
    ([GOOD, "2020-01-03,1,2,0.5,abc,10"], 3, "unparseable number 'abc' in column 'Close'"),
    ([GOOD, "2020-01-03,1,2,,1.5,10"], 3, "missing value in column 'Low'"),
    ([GOOD, "2020-01-03,1,2,0.5,1.5,10", "2020-01-03,1,2,0.5,1.5,10"], 4, "duplicate timestamp"),
    ([GOOD, "2020-01-05,1,2,0.5,1.5,10", "2020-01-04,1,2,0.5,1.5,10"], 4, "is earlier than"),
    ([GOOD, "2020-01-03,0,2,0.5,1.5,10"], 3, "non-positive price 0 in column 'Open'"),
    ([GOOD, "2020-01-03,1,2,-0.5,1.5,10"], 3, "non-positive price -0.5 in column 'Low'"),
    ([GOOD, "2020-01-03,1,0.4,0.5,0.45,10"], 3, "high 0.4 is below low 0.5"),
    ([GOOD, "2020-01-03,1,1.2,0.5,1.5,10"], 3, "high 1.2 is below max(open, close) 1.5"),
    ([GOOD, "2020-01-03,1,2,1.2,1.5,10"], 3, "low 1.2 is above min(open, close) 1"),
    ([GOOD, "2020-13-45,1,2,0.5,1.5,10"], 3, "unparseable date '2020-13-45' in column 'Date'"),
    ([GOOD, "2020-01-03,1,2,0.5,1.5,-1"], 3, "negative volume -1"),
    ([GOOD, "2020-01-03,1,2,0.5,1.5,1", "2020-01-06,1,2,1.2,1.5,1"], 4, "low 1.2 is above min(open, close) 1"),
    ([GOOD, "2020-01-03,1,2,0.5,1.5,10,99"], 3, "expected 6 fields, saw 7"),
]


@pytest.mark.parametrize(("rows", "line", "problem"), BAD_CASES)
def test_bad_rows_name_file_line_and_problem(tmp_path, rows, line, problem):
    path = _write(tmp_path / "bad.csv", "\n".join([HEADER, *rows]) + "\n")
    with pytest.raises(DataError) as info:
        load_bars(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{path}: line {line}: ")
    assert problem in message


def test_line_numbers_count_blank_and_leading_lines(tmp_path):
    text = f"\n\n{HEADER}\n{GOOD}\n\n2020-01-03,1,2,0.5,oops,10\n"
    with pytest.raises(DataError, match=r"bad\.csv: line 6: unparseable number 'oops'"):
        load_bars(_write(tmp_path / "bad.csv", text))


def test_parquet_errors_name_row(tmp_path):
    bars = synthetic_bars(n_bars=10, seed=2)
    bars.loc[bars.index[4], "close"] = np.nan
    bars.to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p\.parquet: row 5: missing or non-finite value in column 'close'"):
        load_bars(tmp_path / "p.parquet")


def test_missing_columns_lists_found_and_expected(tmp_path):
    path = _write(tmp_path / "cols.csv", "Date,Open,High,Price\n2020-01-02,1,2,1.5\n")
    with pytest.raises(DataError) as info:
        load_bars(path)
    message = str(info.value)
    assert message.startswith(f"{path}: missing column(s) low, close; found 'Date', 'Open', 'High', 'Price'")
    assert "expected a time column" in message and "Open, High, Low, Close" in message
    no_time = _write(tmp_path / "notime.csv", "Open,High,Low,Close\n1,2,0.5,1.5\n")
    with pytest.raises(DataError, match=r"notime\.csv: missing column\(s\) time; found"):
        load_bars(no_time)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.csv", b"", "empty file (0 bytes)"),
        ("blank.csv", b"\n\n  \n", "empty file (only whitespace)"),
        ("header.csv", b"Date,Open,High,Low,Close\n", "empty file (a header but no bars)"),
        ("bars.json", b"{}", "unknown extension '.json'"),
        ("junk.parquet", b"not parquet at all", "unreadable Parquet file"),
        ("bin.csv", b"\x00\x01\x02PAR1", "unreadable file: looks binary"),
    ],
)
def test_file_level_errors(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_bars(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load_bars(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset(tmp_path / "nope")
    locked = _write(tmp_path / "locked.csv", YAHOO)
    locked.chmod(0)
    try:
        if locked.open("rb").readable():  # running as root: permissions do not apply
            pytest.skip("cannot make a file unreadable as root")
    except PermissionError:
        with pytest.raises(DataError, match=r"locked\.csv: unreadable file \(PermissionError"):
            load_bars(locked)
    finally:
        locked.chmod(0o644)


# --------------------------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_well_formed():
    a = synthetic_bars(n_bars=500, seed=11)
    b = synthetic_bars(n_bars=500, seed=11)
    c = synthetic_bars(n_bars=500, seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"].to_numpy(), c["close"].to_numpy())
    _standard(a)
    assert (a["high"] >= a[["open", "close"]].max(axis=1)).all()
    assert (a["low"] <= a[["open", "close"]].min(axis=1)).all()
    assert (a["low"] > 0).all() and (a["volume"] > 0).all()
    hourly = synthetic_bars(n_bars=100, seed=1, freq="1h")
    assert bar_interval(hourly.index) == pd.Timedelta(hours=1)


def _momentum_pnl(close: np.ndarray, lookback: int = 20) -> np.ndarray:
    log_close = np.log(close)
    returns = np.diff(log_close)
    signal = np.sign(log_close[lookback:-1] - log_close[: -lookback - 1])
    return signal * returns[lookback:]


def test_synthetic_has_regimes_a_trend_rule_can_exploit():
    rng = np.random.default_rng(0)
    real, shuffled = [], []
    for seed in range(6):
        path = simulate(n_bars=2000, seed=seed)
        close = path.bars["close"].to_numpy()
        returns = np.diff(np.log(close))
        regimes = path.regimes[1:]
        # Hidden regimes are visible in the returns: up-trend bars rise, down-trend bars fall on average.
        assert returns[regimes == 0].mean() > 0.001 > -0.001 > returns[regimes == 1].mean()
        real.append(_momentum_pnl(close).mean())
        # Same returns in random order: a random walk with the same distribution.
        shuffled.append(_momentum_pnl(np.exp(np.cumsum(rng.permutation(returns)))).mean())
    real_arr, shuffled_arr = np.array(real), np.array(shuffled)
    assert (real_arr > 0).all()
    assert real_arr.mean() > 4 * abs(shuffled_arr.mean())
    # Volatility clusters: absolute returns are autocorrelated, unlike a shuffled series.
    returns = np.diff(np.log(synthetic_bars(seed=7)["close"].to_numpy()))
    absr = np.abs(returns)
    assert np.corrcoef(absr[1:], absr[:-1])[0, 1] > 0.05
    perm = np.abs(rng.permutation(returns))
    assert abs(np.corrcoef(perm[1:], perm[:-1])[0, 1]) < 0.05


# --------------------------------------------------------------------------------------------- frequency


def test_periods_per_year():
    business = pd.bdate_range("2015-01-02", periods=1500, tz="UTC")
    assert periods_per_year(business) == pytest.approx(261, abs=1.5)  # no holidays in bdate_range
    calendar = pd.date_range("2015-01-01", periods=1500, freq="D", tz="UTC")
    assert periods_per_year(calendar) == pytest.approx(365.25, rel=1e-3)
    # US-equity minute bars: 390 a session, Monday to Friday, over a year.
    sessions = pd.bdate_range("2021-01-04", periods=260, tz="UTC")
    minutes = (
        sessions.repeat(390)
        + pd.to_timedelta(np.tile(np.arange(390), len(sessions)), unit="min")
        + pd.Timedelta(hours=14, minutes=30)
    )
    assert minutes.is_unique and len(minutes) == 390 * 260
    assert periods_per_year(minutes) == pytest.approx(390 * 260 * 365.25 / (sessions[-1] - sessions[0]).days, rel=0.01)
    # Short span fallback: one week of the same minute bars, two days of 24/7 hourly bars.
    assert periods_per_year(minutes[: 390 * 5]) == pytest.approx(390 * 252)
    hourly = pd.date_range("2024-01-06", periods=48, freq="h", tz="UTC")  # a weekend
    assert periods_per_year(hourly) == pytest.approx(24 * 365.25)
    with pytest.raises(DataError):
        periods_per_year(business[:1])


# --------------------------------------------------------------------------------------------- splits


def test_split_by_fraction():
    bars = synthetic_bars(n_bars=1000, seed=5)
    splits = split_bars(bars, train=0.6, validation=0.2)
    assert (len(splits.train), len(splits.validation), len(splits.holdout)) == (600, 200, 200)
    assert splits.train.index[-1] < splits.validation.index[0]
    assert splits.validation.index[-1] < splits.holdout.index[0]
    pd.testing.assert_frame_equal(pd.concat([splits.train, splits.validation, splits.holdout]), bars)
    described = splits.describe()
    assert described["holdout"] == {
        "start": bars.index[800].isoformat(),
        "end": bars.index[-1].isoformat(),
        "bars": 200,
    }


def test_split_by_date_includes_the_whole_end_day():
    bars = synthetic_bars(n_bars=24 * 200, seed=5, freq="1h", start="2020-01-01")
    splits = split_bars(bars, train_end="2020-03-31", validation_end="2020-05-31")
    assert splits.train.index[-1] == pd.Timestamp("2020-03-31 23:00", tz="UTC")
    assert splits.validation.index[0] == pd.Timestamp("2020-04-01 00:00", tz="UTC")
    assert splits.validation.index[-1] == pd.Timestamp("2020-05-31 23:00", tz="UTC")
    timed = split_bars(bars, train_end="2020-03-31T12:00", validation=0.2)
    assert timed.train.index[-1] == pd.Timestamp("2020-03-31 12:00", tz="UTC")
    assert len(timed.validation) == int(len(bars) * 0.2)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"train": 0.9, "validation": 0.2}, "sum to < 1"),
        ({"train": 0.96, "validation": 0.02}, "split leaves validation with 20 bar(s), fewer than the minimum 30"),
        ({"train_end": "2010-01-01", "validation_end": "2015-06-01"}, "train_end 2010-01-01 is outside the data"),
        ({"train_end": "2016-01-01", "validation_end": "2015-12-01"}, "is not after the end of training"),
        ({"train_end": "2016-01-01", "validation_end": "2030-01-01"}, "validation_end 2030-01-01 is outside"),
        ({"train_end": "not a date"}, "train_end 'not a date' is not a date"),
    ],
)
def test_split_refusals(kwargs, problem):
    bars = synthetic_bars(n_bars=1000, seed=5)
    with pytest.raises(DataError) as info:
        split_bars(bars, **kwargs)
    assert problem in str(info.value)


def test_split_min_bars_parameter():
    bars = synthetic_bars(n_bars=100, seed=5)
    with pytest.raises(DataError, match="fewer than the minimum 30"):
        split_bars(bars)
    assert len(split_bars(bars, min_bars=20).holdout) == 20


# --------------------------------------------------------------------------------------------- dataset + cache


def test_default_dataset_is_synthetic_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="alpha_evolve.data"):
        ds = load_dataset(None)
    assert ds.synthetic and list(ds.instruments) == ["SYN"]
    assert ds.source == "embedded synthetic data (seed 7, 2000 daily bars)"
    assert any("embedded synthetic data" in r.getMessage() for r in caplog.records)
    described = ds.describe()
    assert described["bars"] == {"SYN": 2000} and described["interval"] == "1D"
    assert described["periods_per_year"] == pytest.approx(365.25, rel=1e-3)
    assert described["hash"] == ds.content_hash == load_dataset("").content_hash
    assert load_dataset(None, synthetic_seed=8).content_hash != ds.content_hash
    multi = load_dataset(None, symbols=["a", "b"], synthetic_bars=300)
    assert list(multi.instruments) == ["A", "B"]
    assert not multi.instruments["A"].equals(multi.instruments["B"])


def test_dataset_from_file_folder_and_hash_stability(tmp_path):
    yahoo = _write(tmp_path / "aapl.csv", YAHOO)
    ds = load_dataset(yahoo)
    assert not ds.synthetic and ds.source == str(yahoo) and list(ds.instruments) == ["AAPL"]
    assert load_dataset(yahoo, symbols=["apple"]).instruments.keys() == {"APPLE"}
    # The hash is over cleaned data: the same bars from a differently shaped file hash the same.
    parquet_dir = tmp_path / "pq"
    parquet_dir.mkdir()
    ds.instruments["AAPL"].to_parquet(parquet_dir / "aapl.parquet")
    assert load_dataset(parquet_dir / "aapl.parquet").content_hash == ds.content_hash
    folder = tmp_path / "universe"
    folder.mkdir()
    _write(folder / "aapl.csv", YAHOO)
    synthetic_bars(n_bars=60, seed=1).to_parquet(folder / "msft.parquet")
    _write(folder / "notes.md", "ignored")
    universe = load_dataset(folder)
    assert sorted(universe.instruments) == ["AAPL", "MSFT"]
    assert list(load_dataset(folder, symbols=["msft"]).instruments) == ["MSFT"]
    with pytest.raises(DataError, match=r"no file for symbol\(s\) IBM; available: AAPL, MSFT"):
        load_dataset(folder, symbols=["ibm"])
    _write(folder / "zzz.csv", HEADER + "\n2020-01-02,1,2,0.5,x,1\n")
    with pytest.raises(DataError, match=r"zzz\.csv: line 2: unparseable number 'x'"):
        load_dataset(folder)


def test_cache_hit_skips_parsing_and_changed_bytes_invalidate(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = _write(tmp_path / "aapl.csv", YAHOO)
    before = (cache_stats.hits, cache_stats.misses, cache_stats.writes)
    first = load_dataset(path, cache_dir=cache)
    assert (cache_stats.misses, cache_stats.writes) == (before[1] + 1, before[2] + 1)
    assert len(list(cache.glob("*.parquet"))) == 1 and not list(cache.glob("*.tmp"))

    def no_parsing(*_args, **_kwargs):
        raise AssertionError("raw file parsed despite a cache entry")

    with monkeypatch.context() as patch:
        patch.setattr(data_assembly, "_read_csv", no_parsing)
        second = load_dataset(path, cache_dir=cache)
    assert cache_stats.hits == before[0] + 1
    assert second.content_hash == first.content_hash
    pd.testing.assert_frame_equal(second.instruments["AAPL"], first.instruments["AAPL"])
    # Settings are part of the key.
    adjusted = load_dataset(path, cache_dir=cache, use_adjusted=True)
    assert adjusted.content_hash != first.content_hash

    # Same size, same mtime, different bytes: still a miss.
    stat = path.stat()
    path.write_text(YAHOO.replace("75.09,73.15", "75.08,73.15"))
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    changed = load_dataset(path, cache_dir=cache)
    assert changed.instruments["AAPL"]["close"].iloc[0] == 75.08
    assert changed.content_hash != first.content_hash


def test_corrupt_cache_entry_is_rebuilt(tmp_path, caplog):
    cache = tmp_path / "cache"
    path = _write(tmp_path / "aapl.csv", YAHOO)
    expected = load_dataset(path, cache_dir=cache)
    (entry,) = cache.glob("*.parquet")
    entry.write_bytes(b"garbage")
    corrupt_before = cache_stats.corrupt
    with caplog.at_level(logging.WARNING, logger="alpha_evolve.data"):
        again = load_dataset(path, cache_dir=cache)
    assert cache_stats.corrupt == corrupt_before + 1
    assert again.content_hash == expected.content_hash
    assert entry.read_bytes()[:4] == b"PAR1"  # rewritten
    # A well-formed parquet with the wrong shape is also ignored.
    pd.DataFrame({"x": [1.0]}).to_parquet(entry)
    assert load_dataset(path, cache_dir=cache).content_hash == expected.content_hash


def test_missing_volume_survives_cache(tmp_path, caplog):
    cache = tmp_path / "cache"
    path = _write(tmp_path / "spx.csv", "Date,Open,High,Low,Close\n2020-01-02,1,2,0.5,1.5\n")
    load_dataset(path, cache_dir=cache)
    with caplog.at_level(logging.WARNING, logger="alpha_evolve.data"):
        load_dataset(path, cache_dir=cache)
    assert any("no volume column" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------- catalog


def _write_catalog(root: Path, bars_by_symbol: dict[str, pd.DataFrame]) -> list[str]:
    from nautilus_trader.model.data import BarType
    from nautilus_trader.persistence.catalog import ParquetDataCatalog
    from nautilus_trader.persistence.wranglers import BarDataWrangler
    from nautilus_trader.test_kit.providers import TestInstrumentProvider

    catalog = ParquetDataCatalog(str(root))
    bar_types = []
    for symbol, bars in bars_by_symbol.items():
        instrument = TestInstrumentProvider.equity(symbol, "XNAS")
        bar_type = BarType.from_str(f"{instrument.id}-1-DAY-LAST-EXTERNAL")
        catalog.write_data([instrument])
        catalog.write_data(BarDataWrangler(bar_type, instrument).process(bars))
        bar_types.append(str(bar_type))
    return bar_types


def test_catalog_round_trip(tmp_path):
    root = tmp_path / "catalog"
    aapl = synthetic_bars(n_bars=120, seed=1).round(2)
    msft = synthetic_bars(n_bars=80, seed=2).round(2)
    aapl_type, _msft_type = _write_catalog(root, {"AAPL": aapl, "MSFT": msft})

    got = load_catalog_bars(root, bar_type=aapl_type)
    _standard(got)
    pd.testing.assert_frame_equal(got, aapl, check_names=False, check_freq=False)
    by_instrument = load_catalog_bars(root, instrument_id="MSFT.XNAS")
    pd.testing.assert_frame_equal(by_instrument, msft, check_names=False, check_freq=False)
    with pytest.raises(DataError, match="several bar types"):
        load_catalog_bars(root)
    with pytest.raises(DataError, match=r"no bars for instrument IBM\.XNAS; available: AAPL\.XNAS-1-DAY"):
        load_catalog_bars(root, instrument_id="IBM.XNAS")

    ds = load_dataset(root, cache_dir=tmp_path / "cache")
    assert sorted(ds.instruments) == ["AAPL", "MSFT"] and not ds.synthetic
    pd.testing.assert_frame_equal(ds.instruments["MSFT"], msft, check_names=False, check_freq=False)
    hits = cache_stats.hits
    again = load_dataset(root, symbols=["aapl"], fmt="catalog", cache_dir=tmp_path / "cache")
    assert list(again.instruments) == ["AAPL"] and cache_stats.hits == hits + 1
    with pytest.raises(DataError, match="not a NautilusTrader ParquetDataCatalog"):
        load_dataset(tmp_path / "cache", fmt="catalog")


def test_real_msft_file_shipped_by_matplotlib_loads() -> None:
    """A real Yahoo export we did not write: newest first, 19-Sep-03 dates, an 'Adj. Close*' column."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "msft.csv"
    bars = load_bars(path)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert bars.index.is_monotonic_increasing and len(bars) == 65
    assert bars.index[-1] == pd.Timestamp("2003-09-19", tz="UTC")
    assert bars["close"].iloc[-1] == pytest.approx(29.96)


def test_long_synthetic_series_stay_representable() -> None:
    """260,000 minute bars used to compound regime drifts past NautilusTrader's PRICE_MAX."""
    from alpha_evolve.synthetic import synthetic_bars as gen

    bars = gen(260_000, seed=3, freq="1min")
    assert bars["low"].min() > 0.1 and bars["high"].max() < 1e5
    short = gen(1500, seed=7)  # the embedded default is untouched by the band
    assert short["close"].max() / 100.0 < 20.0 and short["close"].min() / 100.0 > 1 / 20.0
