"""Data a user brings: any file name gives a valid NautilusTrader instrument (the user's symbol stays visible),
dates before 1970 and prices above the engine's maximum name the file and the row, and the bar limit refuses a
file that would not fit in memory before it is parsed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nautilus_trader.model.data import BarType
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.objects import PRICE_MAX, QUANTITY_MAX

from alpha_evolve.backtest import BacktestSettings, prepare_bars, run_backtest
from alpha_evolve.data import PRICE_MAX as DATA_PRICE_MAX
from alpha_evolve.data import QUANTITY_MAX as DATA_QUANTITY_MAX
from alpha_evolve.data import DataError, load_dataset
from alpha_evolve.instrument_ids import instrument_symbol
from alpha_evolve.strategies import seed_source

NAMES = ["SP_500", "sp 500", "S&P 500", "BRK.B", "ÄPFEL", "日経225", "X/Y", "a__b", "_", "-", "...", "E=MC2",
         "BTC-USD", "A" * 200, "x\u200by", "GC=F", "^GSPC", "EUR_USD.fx"]


@pytest.mark.parametrize("name", NAMES)
def test_every_name_gives_a_valid_instrument_and_bar_type(name: str) -> None:
    symbol = instrument_symbol(name)
    iid = InstrumentId(Symbol(symbol), Venue("SIM"))
    assert InstrumentId.from_str(str(iid)) == iid
    assert str(BarType.from_str(f"{iid}-1-DAY-LAST-EXTERNAL").instrument_id) == str(iid)
    assert "_" not in symbol and "." not in symbol and symbol.isascii() and len(symbol) <= 48
    assert instrument_symbol(name) == symbol  # deterministic: a resumed run gets the same id


def test_distinct_names_stay_distinct() -> None:
    assert len({instrument_symbol(n) for n in NAMES}) == len(NAMES)
    assert instrument_symbol("AAPL") == "AAPL" and instrument_symbol("BTC-USD") == "BTC-USD"


def _bars(n: int = 260, start: str = "2015-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, n)))
    return pd.DataFrame({"Date": pd.date_range(start, periods=n, freq="B").strftime("%Y-%m-%d"),
                         "Open": close, "High": close * 1.01, "Low": close * 0.99, "Close": close,
                         "Volume": 1e6})


@pytest.mark.parametrize("filename", ["sp_500.csv", "my prices.csv", "brk.b.csv", "ünïcode_ß.csv"])
def test_a_backtest_runs_on_a_file_of_any_name_and_reports_the_users_symbol(tmp_path: Path, filename: str) -> None:
    path = tmp_path / filename
    _bars().to_csv(path, index=False)
    dataset = load_dataset(path)
    (symbol, frame), = dataset.instruments.items()
    assert symbol == filename[: -len(".csv")].upper()
    prepared = prepare_bars(symbol, frame)
    outcome = run_backtest(seed_source("momentum"), prepared, BacktestSettings())
    assert outcome.status == "ok", outcome.error
    assert outcome.symbol == symbol  # what people read keeps their name; only the engine sees the derived id


def test_engine_limits_match_nautilus() -> None:
    assert float(PRICE_MAX) == DATA_PRICE_MAX and float(QUANTITY_MAX) == DATA_QUANTITY_MAX


def test_dates_before_1970_name_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    _bars(start="1969-12-01").to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 2: date 1969-12-01") and "before 1970-01-01" in message
    assert "\n" not in message


def test_prices_above_the_engine_maximum_name_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    frame = _bars()
    frame.loc[7, ["High"]] = 2e14
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"huge\.csv: line 9: price 2e\+14 in column 'High' is above the engine's "):
        load_dataset(path)


def test_a_file_above_the_bar_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "minutes.csv"
    _bars(n=500).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_dataset(path, max_bars=400)
    message = str(info.value)
    assert "500 rows, more than 400 bars per instrument" in message and "[backtest] max_bars" in message
    assert len(load_dataset(path, max_bars=500).instruments["MINUTES"]) == 500
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:  # sparse: refused from its size alone, never read into memory
        fh.truncate(2 * 1024 * 1024 * 1024)
    with pytest.raises(DataError, match="more than the limit"):
        load_dataset(big, max_bars=1000)
