"""The market model: which instrument a series is, how prices are quantised, how orders are sized and filled.

Why this module exists (issue #10): with one hard-coded set-up (an `Equity`, 2 price decimals for every price
≥ 1, whole units, NautilusTrader's default bar fills) EURUSD lost 22 bp per rounding step, large orders paid a
tick of invented slippage on ~99 % of their size, BTC-like prices were under-sized and 1e-5 prices rounded to
zero. Everything that decides those things lives here, in one place:

- `InstrumentSpec`: asset class, price precision/tick, size increment, lot size, multiplier and currencies of
  one symbol, inferred from the data's own decimals and overridable per symbol in ``[backtest]``;
- `build_instrument` / `venue_kwargs`: the matching NautilusTrader instrument type and account;
- `order_quantity`: the ONE order-sizing rule (used by the base strategy and by any trusted replay);
- `fill_model`: fills at the close with fees only (default), or volume-limited with explicit slippage.

NautilusTrader is imported lazily: config validation and the parent process use the pure parts.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import numpy as np
import pandas as pd

ASSET_CLASSES = ("auto", "equity", "fx", "crypto", "future")
FILL_MODELS = ("close", "volume")

MAX_PRICE_PRECISION = 9
"""Cap on inferred price decimals for ordinary price levels: beyond 9 a float price carries noise, not information."""
HARD_PRICE_PRECISION = 15
"""Absolute cap (NautilusTrader 1.221 here is built with 16 fixed decimals): sub-micro prices may go up to it so
that the lowest price keeps at least `_MIN_SIGNIFICANT` significant digits."""
_MIN_SIGNIFICANT = 6
MAX_SIZE_PRECISION = 9
_SIGNIFICANT_DIGITS = 8
"""Without exact decimals in the data (float noise, rescaled series): ticks of ~1e-8 of the lowest price."""
_EXACT_SHARE = 0.99
"""Share of prices that must be exact at a precision for it to be "the data's decimals" (outliers rounded)."""
_INCREMENT_COST = 1e-2
"""Automatic size increments: whole units unless one costs more than 1 % of the starting capital."""

# ISO 4217 codes recognised in FX symbols like EURUSD, EUR/USD or EUR-USD.
_FIAT = frozenset(
    [
        "USD", "EUR", "JPY", "GBP", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "DKK", "PLN", "HUF", "CZK", "TRY",
        "ZAR", "MXN", "SGD", "HKD", "CNH", "CNY", "KRW", "INR", "BRL", "RUB", "ILS", "THB", "TWD"
    ]
)
_CRYPTO = frozenset(
    [
        "BTC", "ETH", "XBT", "SOL", "ADA", "XRP", "DOGE", "DOT", "LTC", "BCH", "LINK", "AVAX", "MATIC", "UNI",
        "ATOM", "XLM", "TRX", "SHIB", "BNB", "ETC", "FIL", "APT", "ARB", "OP", "NEAR", "PEPE", "SUI", "TON"
    ]
)
_STABLE = frozenset(["USDT", "USDC", "BUSD", "DAI", "TUSD", "FDUSD"])


class MarketError(ValueError):
    """A market-model problem (bad override, unusable prices), phrased as one line."""


@dataclass(frozen=True)
class OverrideField:
    """One per-symbol override key of ``[backtest.instruments.SYMBOL]``: its type, range and meaning."""

    type: type
    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None


OVERRIDE_FIELDS: dict[str, OverrideField] = {
    "asset_class": OverrideField(str, "equity, fx, crypto or future (auto = from the symbol)",
                                 choices=ASSET_CLASSES),
    "price_precision": OverrideField(int, "price decimals (default: inferred from the data)", ge=0,
                                     le=HARD_PRICE_PRECISION),
    "tick": OverrideField(float, "price increment, e.g. 0.25 (default: 10^-price_precision)", gt=0.0),
    "size_increment": OverrideField(float, "smallest order size step, e.g. 1 (whole units) or 0.0001", gt=0.0),
    "lot_size": OverrideField(float, "orders are whole multiples of this (default: size_increment)", gt=0.0),
    "multiplier": OverrideField(float, "contract multiplier: value of one unit per price point", gt=0.0),
    "base_currency": OverrideField(str, "traded currency of an fx/crypto pair, e.g. EUR or BTC"),
    "quote_currency": OverrideField(str, "currency prices are quoted in; the account currency"),
}


def _closest(word: str, options: list[str]) -> str:
    best = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {best[0]!r}?)" if best else ""


def _is_currency_code(code: str) -> bool:
    return 2 <= len(code) <= 10 and code.isalnum() and code.upper() == code


def validate_overrides(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """Check ``[backtest.instruments]``: a table of per-symbol tables of `OVERRIDE_FIELDS`; one-line errors."""
    if not isinstance(value, Mapping):
        raise MarketError(f"{where} = {value!r}: expected a table of per-symbol tables, e.g. "
                          "[backtest.instruments.EURUSD] with asset_class = \"fx\"")
    out: dict[str, dict[str, Any]] = {}
    for symbol, table in value.items():
        if not isinstance(table, Mapping):
            raise MarketError(f"{where}.{symbol} = {table!r}: expected a table of settings "
                              f"({', '.join(OVERRIDE_FIELDS)})")
        clean: dict[str, Any] = {}
        for key, raw in table.items():
            spec = OVERRIDE_FIELDS.get(key)
            if spec is None:
                raise MarketError(f"{where}.{symbol}: unknown key {key!r}{_closest(key, list(OVERRIDE_FIELDS))}; "
                                  f"expected one of {', '.join(OVERRIDE_FIELDS)}")
            clean[key] = _check_override(spec, raw, f"{where}.{symbol}.{key}")
        if "tick" in clean and "price_precision" in clean and _decimals(clean["tick"]) > clean["price_precision"]:
            raise MarketError(f"{where}.{symbol}.tick = {clean['tick']!r}: has more decimals than "
                              f"price_precision = {clean['price_precision']}")
        if "lot_size" in clean and "size_increment" in clean and not _is_multiple(clean["lot_size"],
                                                                                 clean["size_increment"]):
            raise MarketError(f"{where}.{symbol}.lot_size = {clean['lot_size']!r}: expected a whole multiple of "
                              f"size_increment ({clean['size_increment']!r})")
        out[str(symbol)] = clean
    return out


def _check_override(spec: OverrideField, value: Any, where: str) -> Any:
    if spec.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.type is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    kind = {int: "an integer", float: "a number", str: "a string"}[spec.type]
    if not ok:
        raise MarketError(f"{where} = {value!r}: expected {kind} ({spec.doc})")
    if spec.choices is not None and value not in spec.choices:
        raise MarketError(f"{where} = {value!r}: expected one of {', '.join(spec.choices)}"
                          f"{_closest(str(value), list(spec.choices))}")
    if spec.type is str and spec.choices is None and not _is_currency_code(value):
        raise MarketError(f"{where} = {value!r}: expected a currency code in capitals such as USD, EUR or BTC")
    bounds = ((spec.ge, lambda v, b: v >= b, ">="), (spec.gt, lambda v, b: v > b, ">"),
              (spec.le, lambda v, b: v <= b, "<="))
    for bound, test, text in bounds:
        if bound is not None and not test(value, bound):
            raise MarketError(f"{where} = {value!r}: expected {kind} {text} {bound:g}")
    if spec.type is float and where.endswith(("size_increment", "lot_size", "tick")) and _decimals(value) > 9:
        raise MarketError(f"{where} = {value!r}: expected at most 9 decimals")
    return value


# --------------------------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class InstrumentSpec:
    """Everything the venue needs to know about one symbol; recorded with every result that used it."""

    symbol: str
    asset_class: str  # equity | fx | crypto | future
    instrument_type: str  # the NautilusTrader class built for it
    price_precision: int
    tick: float
    size_precision: int
    size_increment: float
    lot_size: float
    multiplier: float
    base_currency: str | None
    quote_currency: str
    account_currency: str
    sources: dict[str, str] = field(default_factory=dict)  # field -> "data", "config", "symbol" or "default"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def order_step(self) -> Decimal:
        """Every order is a whole multiple of this: the lot size (itself a multiple of the size increment)."""
        return _dec(max(self.lot_size, self.size_increment))


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x))).normalize()


def _decimals(x: float) -> int:
    exponent = _dec(x).as_tuple().exponent
    return max(-exponent, 0) if isinstance(exponent, int) else 0


def _is_multiple(value: float, step: float) -> bool:
    ratio = _dec(value) / _dec(step)
    return ratio == ratio.to_integral_value() and ratio > 0


def infer_price_precision(prices: np.ndarray) -> tuple[int, str]:
    """Decimals the data really carries, ignoring float noise; (precision, how it was found).

    The smallest precision at which ≥ 99 % of the prices are exact (to float accuracy) is the data's own; when
    none is (a rescaled or computed series), enough decimals for ~8 significant digits of the lowest price.
    Both are capped at `MAX_PRICE_PRECISION` (9), raised for sub-micro prices just enough to keep 6 significant
    digits of the lowest price (never above `HARD_PRICE_PRECISION`).
    """
    values = np.asarray(prices, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        raise MarketError("no positive finite prices to infer a precision from")
    if values.size > 20_000:  # a deterministic sample keeps a million-bar series cheap
        values = values[np.linspace(0, values.size - 1, 20_000).astype(int)]
    lowest = float(values.min())
    cap = min(max(MAX_PRICE_PRECISION, _MIN_SIGNIFICANT - 1 - math.floor(math.log10(lowest))), HARD_PRICE_PRECISION)
    for digits in range(cap + 1):
        scaled = values * 10.0**digits
        error = np.abs(scaled - np.rint(scaled))
        exact = (error <= 1e-13 * np.maximum(np.abs(scaled), 1.0) + 1e-9) & (np.rint(scaled) >= 1)
        if float(np.mean(exact)) >= _EXACT_SHARE:
            return digits, "data"
    digits = _SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(lowest))
    return int(min(max(digits, 0), cap)), "significant digits"


def split_pair(symbol: str) -> tuple[str, str] | None:
    """(base, quote) of a symbol that names a currency pair (EURUSD, EUR/USD, BTC-USDT, BTCUSD), else None.

    File names carry more than the pair (``EURUSD_H1``, ``BTC-USDT-1h``, ``eurusd 2023``): the pair is read from
    the first one or two tokens, so such a file is still priced as the FX or crypto pair it is. Yahoo Finance's
    names count too: ``EURUSD=X`` is EUR/USD and a lone currency, ``JPY=X``, is quoted against the dollar."""
    upper = symbol.upper()
    tokens = [t for t in re.split(r"[/\-_.=^\s]+", upper) if t]
    if upper.endswith("=X") and len(tokens) == 2 and tokens[0] in _FIAT and tokens[0] != "USD":
        return "USD", tokens[0]
    if len(tokens) >= 2 and _known(tokens[0]) and _known(tokens[1]) and tokens[0] != tokens[1]:
        return tokens[0], tokens[1]
    return _joined_pair(tokens[0]) if tokens else None


def _joined_pair(text: str) -> tuple[str, str] | None:
    for cut in range(2, len(text) - 1):
        base, quote = text[:cut], text[cut:]
        if _known(base) and _known(quote) and base != quote:
            return base, quote
    return None


def _known(code: str) -> bool:
    return code in _FIAT or code in _CRYPTO or code in _STABLE


def _classify(symbol: str) -> tuple[str, tuple[str, str] | None]:
    pair = split_pair(symbol)
    if pair is None:
        return "equity", None
    base, quote = pair
    if base in _FIAT and quote in _FIAT:
        return "fx", pair
    return "crypto", pair


def _auto_size_precision(max_price: float, multiplier: float, capital: float) -> int:
    """Decimals that keep one size increment at ≤ 1 % of the starting capital (0 = whole units suffice)."""
    unit_cost = max_price * multiplier
    if unit_cost <= 0 or capital <= 0:
        return 0
    digits = math.ceil(math.log10(unit_cost / (capital * _INCREMENT_COST)) - 1e-12)
    return int(min(max(digits, 0), MAX_SIZE_PRECISION))


def instrument_spec(
    symbol: str,
    frame: pd.DataFrame,
    *,
    asset_class: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    starting_capital: float = 100_000.0,
) -> InstrumentSpec:
    """The spec of ``symbol`` from its bars (OHLC decimals, price level) and the config's overrides.

    Defaults: equities trade whole shares, switching to fractional shares (as retail brokers offer) only when
    one share costs more than 1 % of the starting capital; fx pairs trade 1 unit of the base currency;
    crypto trades fractions; futures trade whole contracts. The account currency is the quote currency, so
    ``starting_capital`` is in that currency.
    """
    over = dict(overrides or {})
    sources: dict[str, str] = {}
    inferred_class, pair = _classify(symbol)
    chosen = over.get("asset_class", asset_class)
    if chosen == "auto":
        klass = inferred_class
        sources["asset_class"] = "symbol" if pair else "default"
    else:
        klass = chosen
        sources["asset_class"] = "config"

    prices = frame[["open", "high", "low", "close"]].to_numpy(dtype=float).ravel()
    prices = prices[np.isfinite(prices)]
    if prices.size == 0 or float(prices.min()) <= 0:
        raise MarketError(f"{symbol}: prices must be positive and finite")
    if "tick" in over:
        tick = float(over["tick"])
        precision = int(over.get("price_precision", _decimals(tick)))
        sources["tick"] = sources["price_precision"] = "config"
    elif "price_precision" in over:
        precision = int(over["price_precision"])
        tick = 10.0**-precision
        sources["tick"] = sources["price_precision"] = "config"
    else:
        precision, how = infer_price_precision(prices)
        tick = 10.0**-precision
        sources["tick"] = sources["price_precision"] = how
    lowest = float(prices.min())
    if round(lowest / tick) * tick <= 0:
        raise MarketError(f"{symbol}: the lowest price {lowest:g} rounds to zero with a tick of {tick:g}; "
                          "raise price_precision or lower tick in [backtest.instruments]")

    multiplier = float(over.get("multiplier", 1.0))
    sources["multiplier"] = "config" if "multiplier" in over else "default"

    if klass == "fx" or klass == "crypto":
        base, quote = pair if pair else ("", "USD")
        base = over.get("base_currency", base) or _base_from_symbol(symbol)
        quote = over.get("quote_currency", quote)
    else:
        base = None
        quote = over.get("quote_currency", "USD")
    sources["quote_currency"] = "config" if "quote_currency" in over else ("symbol" if pair else "default")

    max_price = float(prices.max())
    if "size_increment" in over:
        increment = float(over["size_increment"])
        sources["size_increment"] = "config"
    else:
        natural = {"equity": 0, "fx": 0, "crypto": 0, "future": 0}[klass]
        digits = max(natural, _auto_size_precision(max_price, multiplier, starting_capital))
        if klass == "future":
            digits = 0  # contracts are whole
        increment = 10.0**-digits
        sources["size_increment"] = "default" if digits == natural else "capital"
    lot = float(over.get("lot_size", increment))
    sources["lot_size"] = "config" if "lot_size" in over else "size_increment"
    if not _is_multiple(lot, increment):
        raise MarketError(f"{symbol}: lot_size {lot:g} is not a whole multiple of size_increment {increment:g}")

    size_precision = _decimals(increment)
    instrument_type = {
        "equity": "Equity" if size_precision == 0 else "Instrument",
        "fx": "CurrencyPair",
        "crypto": "CurrencyPair",
        "future": "FuturesContract",
    }[klass]
    return InstrumentSpec(
        symbol=symbol,
        asset_class=klass,
        instrument_type=instrument_type,
        price_precision=precision,
        tick=float(_dec(tick)),
        size_precision=size_precision,
        size_increment=float(_dec(increment)),
        lot_size=float(_dec(lot)),
        multiplier=multiplier,
        base_currency=base,
        quote_currency=quote,
        account_currency=quote,
        sources=sources,
    )


def _base_from_symbol(symbol: str) -> str:
    letters = "".join(ch for ch in symbol.upper() if ch.isalnum())[:6]
    return letters or "BASE"


def quantize_prices(frame: pd.DataFrame, spec: InstrumentSpec) -> pd.DataFrame:
    """OHLC rounded to the instrument's tick (what the venue would print); volume untouched."""
    out = frame.copy()
    cols = ["open", "high", "low", "close"]
    tick = spec.tick
    if abs(tick - 10.0**-spec.price_precision) < 1e-15:
        out[cols] = out[cols].round(spec.price_precision)
    else:
        out[cols] = (np.rint(out[cols].to_numpy(dtype=float) / tick) * tick).round(spec.price_precision)
    return out


# --------------------------------------------------------------------------------------------- sizing


def order_quantity(
    *,
    price: float,
    equity: float,
    trade_fraction: float,
    spec_step: Decimal | float,
    multiplier: float = 1.0,
    free_cash: float | None = None,
    fee_rate: float = 0.0,
    adverse_fraction: float = 0.0,
    cash_headroom: float = 0.999,
) -> Decimal:
    """THE order-sizing rule: units worth ``trade_fraction`` of equity, a whole multiple of the order step.

    ``free_cash`` (a cash account buying) caps the order so that its cost, the fee and an adverse fill of
    ``adverse_fraction`` of the price stay within ``cash_headroom`` of it: the account can never be overdrawn
    (which would stop the engine early).
    Returns 0 when not even one step fits: the caller reports that, it never trades a smaller size.
    Decimal arithmetic: a float floor would leave residues like 65123.00000000001 in the position.
    """
    if not (math.isfinite(price) and price > 0 and math.isfinite(equity)) or multiplier <= 0:
        return Decimal(0)
    budget = trade_fraction * equity
    if free_cash is not None:
        unit_cost = price * multiplier * (1.0 + max(fee_rate, 0.0)) * (1.0 + max(adverse_fraction, 0.0))
        budget = min(budget, free_cash * price * multiplier / unit_cost * cash_headroom)
    if budget <= 0:
        return Decimal(0)
    step = spec_step if isinstance(spec_step, Decimal) else _dec(spec_step)
    units = Decimal(repr(budget / (price * multiplier)))
    steps = (units / step).to_integral_value(rounding=ROUND_FLOOR)
    return max(steps * step, Decimal(0))


# --------------------------------------------------------------------------------------------- NautilusTrader


def _currency(code: str) -> Any:
    from nautilus_trader.model.enums import CurrencyType
    from nautilus_trader.model.objects import Currency

    known = Currency.from_str(code, strict=True)
    if known is not None:
        return known
    kind = CurrencyType.CRYPTO if code in _CRYPTO or code in _STABLE else CurrencyType.FIAT
    currency = Currency(code, 8 if kind == CurrencyType.CRYPTO else 2, 0, code, kind)
    Currency.register(currency, overwrite=False)
    return currency


def build_instrument(spec: InstrumentSpec, instrument_id: Any, maker_fee: float, taker_fee: float) -> Any:
    """The NautilusTrader instrument for ``spec`` (Equity, CurrencyPair, FuturesContract or a fractional-share
    spot instrument), carrying the run's fees."""
    from nautilus_trader.model.enums import AssetClass, InstrumentClass
    from nautilus_trader.model.instruments import CurrencyPair, Equity, FuturesContract, Instrument
    from nautilus_trader.model.objects import Price, Quantity

    tick = Price(spec.tick, spec.price_precision)
    increment = Quantity(spec.size_increment, spec.size_precision)
    lot = Quantity(spec.lot_size, spec.size_precision)
    quote = _currency(spec.quote_currency)
    fees = {"maker_fee": Decimal(repr(maker_fee)), "taker_fee": Decimal(repr(taker_fee))}
    common = {"instrument_id": instrument_id, "raw_symbol": instrument_id.symbol, "ts_event": 0, "ts_init": 0}
    if spec.instrument_type == "Equity":
        return Equity(currency=quote, price_precision=spec.price_precision, price_increment=tick,
                      lot_size=lot, **common, **fees)
    if spec.instrument_type == "CurrencyPair":
        return CurrencyPair(base_currency=_currency(spec.base_currency or "BASE"), quote_currency=quote,
                            price_precision=spec.price_precision, size_precision=spec.size_precision,
                            price_increment=tick, size_increment=increment, lot_size=lot,
                            multiplier=Quantity(spec.multiplier, _decimals(spec.multiplier)),
                            margin_init=Decimal(0), margin_maint=Decimal(0), **common, **fees)
    if spec.instrument_type == "FuturesContract":
        return FuturesContract(asset_class=AssetClass.INDEX, currency=quote, price_precision=spec.price_precision,
                               price_increment=tick, multiplier=Quantity(spec.multiplier, _decimals(spec.multiplier)),
                               lot_size=lot, underlying=spec.symbol[:32] or "X", activation_ns=0,
                               expiration_ns=16_725_225_600_000_000_000,  # 2500-01-01: never expires in a test
                               margin_init=Decimal(0), margin_maint=Decimal(0), **common, **fees)
    return Instrument(asset_class=AssetClass.EQUITY, instrument_class=InstrumentClass.SPOT, quote_currency=quote,
                      is_inverse=False, price_precision=spec.price_precision, size_precision=spec.size_precision,
                      size_increment=increment, multiplier=Quantity(spec.multiplier, _decimals(spec.multiplier)),
                      margin_init=Decimal(0), margin_maint=Decimal(0), price_increment=tick, lot_size=lot,
                      **common, **fees)


def venue_kwargs(spec: InstrumentSpec, account_type: str, starting_capital: float) -> dict[str, Any]:
    """Account set-up for ``spec``: balances in its account (quote) currency, cash or 1× margin."""
    from nautilus_trader.model.enums import AccountType
    from nautilus_trader.model.objects import Money

    currency = _currency(spec.account_currency)
    margin = account_type == "margin"
    pair = spec.instrument_type == "CurrencyPair"
    return {
        "account_type": AccountType.MARGIN if margin else AccountType.CASH,
        "starting_balances": [Money(starting_capital, currency)],
        # A cash account buying a pair receives the base currency: it must be a multi-currency account.
        "base_currency": None if pair and not margin else currency,
        "default_leverage": Decimal(1) if margin else None,
    }


# --------------------------------------------------------------------------------------------- fills


@dataclass(frozen=True)
class FillSettings:
    """The fill model a run uses, recorded with its results."""

    model: str = "close"
    volume_share: float = 0.25  # "volume": share of the bar's volume available at the close
    slippage_bps: float = 0.0  # "volume": price concession on the rest, in basis points of the close

    def describe(self) -> dict[str, Any]:
        if self.model == "close":
            return {"model": "close", "slippage": "none: whole order at the bar close, fees only"}
        return {"model": "volume", "volume_share": self.volume_share, "slippage_bps": self.slippage_bps}

    def adverse_fraction(self) -> float:
        """Worst price concession of a fill as a fraction of the price (sizing keeps head-room for it)."""
        return 0.0 if self.model == "close" else self.slippage_bps / 1e4


def fill_model(settings: FillSettings, ts: np.ndarray | None = None, volume: np.ndarray | None = None) -> Any:
    """A NautilusTrader FillModel that fills market orders by ``settings``: never NautilusTrader's default,
    which quotes only volume/4 at the close and fills the rest one tick worse (silent slippage)."""
    from nautilus_trader.backtest.models import FillModel

    class _BookFill(FillModel):
        def get_orderbook_for_fill_simulation(self, instrument: Any, order: Any, best_bid: Any,
                                              best_ask: Any) -> Any:
            return _simulated_book(settings, instrument, order, best_bid, best_ask, ts, volume)

    return _BookFill()


def _simulated_book(settings: FillSettings, instrument: Any, order: Any, best_bid: Any, best_ask: Any,
                    ts: np.ndarray | None, volume: np.ndarray | None) -> Any:
    from nautilus_trader.model.book import OrderBook
    from nautilus_trader.model.data import BookOrder
    from nautilus_trader.model.enums import BookType, OrderSide
    from nautilus_trader.model.objects import Price, Quantity

    book = OrderBook(instrument_id=instrument.id, book_type=BookType.L2_MBP)
    size_prec = instrument.size_precision
    qty = float(order.quantity)
    levels: list[tuple[float, float]] = []  # (signed price offset as a fraction, size)
    if settings.model == "close" or ts is None or volume is None or len(ts) == 0:
        levels.append((0.0, qty))
    else:
        i = int(np.searchsorted(ts, int(order.ts_init), side="right")) - 1
        bar_volume = float(volume[min(max(i, 0), len(volume) - 1)])
        increment = float(instrument.size_increment)
        at_close = min(qty, math.floor(max(bar_volume * settings.volume_share, 0.0) / increment + 1e-9) * increment)
        if at_close > 0:
            levels.append((0.0, at_close))
        if qty - at_close > 0:
            levels.append((settings.slippage_bps / 1e4, qty - at_close + increment))
    order_id = 1
    for offset, size in levels:
        if size <= 0:
            continue
        size_q = Quantity(size, size_prec)
        if size_q.as_double() <= 0:
            continue
        for side, best, sign in ((OrderSide.SELL, best_ask, 1.0), (OrderSide.BUY, best_bid, -1.0)):
            px = best.as_double() * (1.0 + sign * offset)
            tick = float(instrument.price_increment)
            px = (math.ceil(px / tick - 1e-9) if sign > 0 else math.floor(px / tick + 1e-9)) * tick
            book.add(BookOrder(side=side, price=Price(px, instrument.price_precision), size=size_q,
                               order_id=order_id), 0, 0)
            order_id += 1
    return book
