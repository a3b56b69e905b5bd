"""One NautilusTrader backtest of one candidate on one instrument — run only inside a worker process.

Why it is shaped like this (FIELD_NOTES, NautilusTrader 1.221):
- a fresh `BacktestEngine` per candidate: engine reuse keeps old strategies subscribed and trading;
- bars are wrangled once (`prepare_bars`, in the parent before forking) and shared by every run;
- the analyzer's Sharpe is wrong, so figures come from a mark-to-market equity curve rebuilt here from the fills
  and the bar closes (fees included), through `alpha_evolve.metrics`;
- a CASH account that over-buys stops the engine early and `run()` returns normally, so every run checks that
  each bar was processed (`incomplete`).
Nothing here may be called in the evaluator's parent process except `prepare_bars`/`BacktestSettings`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from nautilus_trader.backtest.config import BacktestEngineConfig
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.backtest.models import MakerTakerFeeModel
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import OmsType, OrderSide
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.persistence.wranglers import BarDataWrangler

from alpha_evolve import market, sandbox
from alpha_evolve.metrics import compute_metrics
from alpha_evolve.sandbox import SandboxViolation
from alpha_evolve.values import one_line

logger = logging.getLogger("alpha_evolve.backtest")

VENUE = "SIM"
CANDIDATE_FILENAME = sandbox.CANDIDATE_FILENAME  # the audit hook recognises candidate frames by it
FAILURE_KINDS = (
    "syntax", "policy", "import", "runtime", "timeout", "memory", "crash", "data", "incomplete",
    # the trusted replay of the decision log disagrees with the candidate's own run / a future-dependent decision
    "tampered", "lookahead",
)  # fmt: skip
_BAR_COLUMNS = ["open", "high", "low", "close", "volume"]


@dataclass(frozen=True)
class BacktestSettings:
    """Venue, costs and evaluation limits. Field names match `config.BacktestConfig` (see `from_config`)."""

    starting_capital: float = 100_000.0
    account_type: str = "cash"  # "cash" (long only) or "margin" (needed for shorts)
    allow_short: bool = False
    trade_fraction: float = 0.95
    taker_fee: float = 0.001  # 10 bps of notional; market orders pay the taker fee
    maker_fee: float = 0.001
    risk_free: float = 0.0  # annual rate used by Sharpe/Sortino
    # market model (alpha_evolve.market)
    asset_class: str = "auto"  # default asset class of every symbol: auto (from the symbol), equity, fx, crypto, future
    instruments: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-symbol overrides
    fill_model: str = "close"  # "close" (whole order at the bar close, fees only) or "volume"
    volume_share: float = 0.25  # "volume": share of a bar's volume that fills at the close
    slippage_bps: float = 0.0  # "volume": price concession on the rest of the order, in basis points
    warmup_bars: int = 250  # bars before a validation/holdout period that warm indicators up (not scored)
    # cascade (evaluator)
    screen_fraction: float = 0.3  # share of the train split used by the quick screen; 0 = no screen
    screen_min_trades: int = 1
    screen_min_sharpe: float = -2.0
    screen_max_drawdown: float = 0.9
    # limits (evaluator)
    soft_timeout_seconds: float = 30.0
    hard_timeout_seconds: float = 60.0
    memory_limit_mb: int = 2048  # address space a worker may add on top of what it had after start-up
    recycle_after: int = 50
    # Also recycle once a worker has run this many bars: big runs leave big leaked engines behind.
    recycle_after_bars: int = 1_000_000
    equity_points: int = 1000  # equity curve points returned per result (0 = every bar)
    log_level: str = "ERROR"  # NautilusTrader log level inside workers (only DEBUG/INFO/WARNING/ERROR)
    # Documented opt-out for kernels without Landlock/seccomp: run candidates without kernel confinement (the
    # trusted replay still scores them). Off by default; recorded in SUMMARY.json when on.
    allow_unconfined: bool = False

    def __post_init__(self) -> None:
        if self.account_type not in ("cash", "margin"):
            raise ValueError(f"account_type must be 'cash' or 'margin', got {self.account_type!r}")
        if self.allow_short and self.account_type != "margin":
            raise ValueError("allow_short requires account_type = 'margin'")
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            # An invalid level string is a Rust panic that aborts the worker (FIELD_NOTES).
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        if self.hard_timeout_seconds < self.soft_timeout_seconds:
            raise ValueError("hard_timeout_seconds must be >= soft_timeout_seconds")
        if self.fill_model not in market.FILL_MODELS:
            raise ValueError(f"fill_model must be one of {', '.join(market.FILL_MODELS)}, got {self.fill_model!r}")
        if self.asset_class not in market.ASSET_CLASSES:
            raise ValueError(f"asset_class must be one of {', '.join(market.ASSET_CLASSES)}, got {self.asset_class!r}")
        object.__setattr__(self, "instruments", market.validate_overrides(self.instruments, "instruments"))

    @property
    def fills(self) -> market.FillSettings:
        return market.FillSettings(self.fill_model, self.volume_share, self.slippage_bps)

    def spec_for(self, symbol: str, frame: pd.DataFrame) -> market.InstrumentSpec:
        """The instrument spec of ``symbol`` from its bars and this run's overrides."""
        overrides = self.instruments.get(symbol)
        if overrides is None:  # symbols are upper-cased from file names; accept the user's spelling
            overrides = next((v for k, v in self.instruments.items() if k.upper() == symbol.upper()), None)
        return market.instrument_spec(symbol, frame, asset_class=self.asset_class, overrides=overrides,
                                      starting_capital=self.starting_capital)

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> BacktestSettings:
        """Copy every same-named field from a `BacktestConfig` (or any object/mapping), then apply overrides."""
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name in names:
            if isinstance(config, Mapping):
                if name in config:
                    values[name] = config[name]
            elif hasattr(config, name):
                values[name] = getattr(config, name)
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class PreparedBars:
    """Bars of one instrument, wrangled once and shared (by fork) with every worker.

    The first ``warmup`` bars (taken from the period just before this one) only warm indicators up: the
    strategy takes no decision on them and they are not part of any figure. ``len()`` counts scored bars.
    """

    symbol: str
    instrument: Any  # the NautilusTrader instrument built from `spec`
    bar_type: BarType
    bars: list[Bar]  # warm-up bars first, then the scored bars
    frame: pd.DataFrame
    periods_per_year: float
    ts: np.ndarray  # bar timestamps, ns
    closes: np.ndarray  # bar closes as the engine sees them (rounded to the price precision)
    spec: market.InstrumentSpec | None = None
    warmup: int = 0
    volume: np.ndarray | None = None  # bar volumes (the "volume" fill model reads them)

    def slice(self, start: int, stop: int) -> PreparedBars:
        """Scored bars ``start:stop`` sharing the same Bar objects; the warm-up is kept when ``start`` is 0."""
        w = self.warmup
        lo = 0 if start == 0 else w + start
        hi = w + stop
        return dataclasses.replace(
            self,
            bars=self.bars[lo:hi],
            frame=self.frame.iloc[lo:hi],
            ts=self.ts[lo:hi],
            closes=self.closes[lo:hi],
            volume=None if self.volume is None else self.volume[lo:hi],
            warmup=w if start == 0 else 0,
        )

    @property
    def trade_start_ns(self) -> int:
        """Timestamp of the first scored bar (0 without warm-up)."""
        return int(self.ts[self.warmup]) if self.warmup and len(self.ts) > self.warmup else 0

    def __len__(self) -> int:
        return len(self.bars) - self.warmup


@dataclass
class BacktestOutcome:
    """Result of one run: plain data only, so it pickles cheaply across the worker pipe."""

    status: str  # "ok" or a failure kind
    error: str | None = None
    symbol: str = ""
    bars: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    equity_index: list[int] = field(default_factory=list)  # ns timestamps (downsampled)
    equity_values: list[float] = field(default_factory=list)
    trades: list[float] = field(default_factory=list)  # round-trip PnLs after costs
    elapsed: float = 0.0
    warnings: list[str] = field(default_factory=list)  # market-model problems that did not void the figures
    # The starting capital then every scored bar's equity: statistics use it, never the downsampled plot points.
    equity_full: np.ndarray | None = None
    decisions: list[tuple[int, int]] = field(default_factory=list)  # (bar index, ACTION_*) of the strategy
    fills: list[list[float]] = field(default_factory=list)  # (ts_ns, signed qty, price, commission) rows
    log: str = ""  # what the candidate printed (captured, bounded)


class CandidateLoadError(Exception):
    """The candidate could not be turned into a strategy class; `kind` is a failure kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------------------------- preparation


def _step_seconds(index: pd.Index) -> int:
    ns = pd.DatetimeIndex(index).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return max(int(np.median(np.diff(ns)) // 1_000_000_000), 1) if len(ns) > 1 else 86_400


def _bar_spec(index: pd.Index) -> str:
    """A NautilusTrader bar spec from the median bar spacing (only descriptive for EXTERNAL bars)."""
    seconds = _step_seconds(index)
    for unit, size in (("DAY", 86_400), ("HOUR", 3_600), ("MINUTE", 60)):
        if seconds % size == 0:
            return f"{seconds // size}-{unit}"
    return f"{seconds}-SECOND"


def infer_periods_per_year(index: pd.Index) -> float:
    """Bars per year: the data module's rule when it can decide, else a trading-calendar guess."""
    try:
        from alpha_evolve.data import periods_per_year

        return float(periods_per_year(pd.DatetimeIndex(index)))
    except (ImportError, ValueError):
        step = _step_seconds(index)
        return 252.0 if step >= 86_400 else 252.0 * 6.5 * 3600.0 / step


def _instrument_for(prepared: PreparedBars, settings: BacktestSettings) -> Any:
    """The prepared instrument, or a twin with the run's fees (fees live on the instrument in NautilusTrader)."""
    inst = prepared.instrument
    if float(inst.maker_fee) == settings.maker_fee and float(inst.taker_fee) == settings.taker_fee:
        return inst
    if prepared.spec is None:  # pragma: no cover - every PreparedBars built here has a spec
        return inst
    return market.build_instrument(prepared.spec, inst.id, settings.maker_fee, settings.taker_fee)


def instrument_id_for(symbol: str) -> InstrumentId:
    from alpha_evolve.instrument_ids import instrument_symbol

    return InstrumentId(Symbol(instrument_symbol(symbol)), Venue(VENUE))


def prepare_bars(
    symbol: str,
    frame: pd.DataFrame,
    settings: BacktestSettings | None = None,
    periods_per_year: float | None = None,
    *,
    spec: market.InstrumentSpec | None = None,
    warmup: pd.DataFrame | None = None,
) -> PreparedBars:
    """Wrangle a bars DataFrame (CONTRACTS.md shape) into NautilusTrader objects for one instrument.

    ``spec`` (normally built once from the whole series, so every period trades the same instrument) defaults to
    one inferred from ``frame``. ``warmup`` are the bars just before ``frame``: run first so indicators are
    warm when the period starts, never scored. Raises ValueError with a one-line message when the frame cannot
    be used.
    """
    settings = settings or BacktestSettings()
    for part in (frame,) if warmup is None else (frame, warmup):
        if list(part.columns) != _BAR_COLUMNS:
            raise ValueError(f"{symbol}: bar columns must be exactly {_BAR_COLUMNS}, got {list(part.columns)}")
        if not isinstance(part.index, pd.DatetimeIndex) or part.index.tz is None:
            raise ValueError(f"{symbol}: bars need a tz-aware UTC DatetimeIndex")
    if len(frame) == 0:
        raise ValueError(f"{symbol}: no bars")
    n_warm = 0
    if warmup is not None and len(warmup) and warmup.index[-1] < frame.index[0]:
        n_warm = min(len(warmup), settings.warmup_bars)
        frame = pd.concat([warmup.iloc[len(warmup) - n_warm:], frame]) if n_warm else frame
    frame = frame.astype(float)
    min_close = float(frame["close"].min())
    if not math.isfinite(min_close) or min_close <= 0:
        raise ValueError(f"{symbol}: close prices must be positive and finite")
    try:
        spec = spec or settings.spec_for(symbol, frame)
    except market.MarketError as exc:
        raise ValueError(str(exc)) from None
    quantized = market.quantize_prices(frame, spec)
    if float(quantized[["open", "high", "low", "close"]].to_numpy().min()) <= 0:
        raise ValueError(f"{symbol}: a price rounds to zero with a tick of {spec.tick:g}; raise price_precision "
                         "or lower tick in [backtest.instruments]")
    instrument_id = instrument_id_for(symbol)
    instrument = market.build_instrument(spec, instrument_id, settings.maker_fee, settings.taker_fee)
    bar_type = BarType.from_str(f"{instrument_id}-{_bar_spec(frame.index)}-LAST-EXTERNAL")
    bars = BarDataWrangler(bar_type, instrument).process(quantized)
    ppy = float(periods_per_year) if periods_per_year else infer_periods_per_year(frame.index)
    ts = np.asarray([bar.ts_event for bar in bars], dtype=np.int64)
    closes = np.asarray([float(bar.close) for bar in bars], dtype=float)
    volume = quantized["volume"].to_numpy(dtype=float)
    return PreparedBars(symbol, instrument, bar_type, bars, frame, ppy, ts, closes, spec, n_warm, volume)


# --------------------------------------------------------------------------------------------- candidate loading


def load_strategy_class(code: str) -> type:
    """Compile and execute candidate source; return its single EvolvableStrategy subclass.

    Re-applies the static policy as defence in depth (the parent already did, but a worker must not trust it).
    """
    from alpha_evolve import policy
    from alpha_evolve.strategies.base import EvolvableStrategy

    with sandbox.disarmed():  # compiling is refused while armed; the candidate's own source is the exception
        try:
            compiled = compile(code, CANDIDATE_FILENAME, "exec")
        except SyntaxError as exc:
            raise CandidateLoadError("syntax", f"SyntaxError: {exc.msg} (line {exc.lineno})") from None
        violations = _policy_violations(code)
    if violations:
        raise CandidateLoadError("policy", violations[0])
    namespace: dict[str, Any] = {
        "__name__": "alpha_evolve_candidate",
        "__builtins__": sandbox.restricted_builtins(policy.module_or_parent_allowed, policy.FORBIDDEN_BUILTINS),
    }
    try:
        exec(compiled, namespace)
    except SandboxViolation as exc:
        raise CandidateLoadError("policy", _describe(exc)) from None
    except (ImportError, AttributeError, NameError) as exc:
        raise CandidateLoadError("import", _describe(exc)) from None
    except Exception as exc:
        raise CandidateLoadError("runtime", _describe(exc)) from None
    classes = [
        obj
        for obj in namespace.values()
        if isinstance(obj, type)
        and issubclass(obj, EvolvableStrategy)
        and obj is not EvolvableStrategy
        and obj.__module__ == "alpha_evolve_candidate"
    ]
    if len(classes) != 1:
        found = ", ".join(sorted(c.__name__ for c in classes)) or "none"
        raise CandidateLoadError(
            "import", f"expected exactly one EvolvableStrategy subclass in the candidate, found {found}"
        )
    return classes[0]


def _policy_violations(code: str) -> list[str]:
    try:
        from alpha_evolve import policy
    except ImportError:
        return []
    return [str(v) for v in policy.check_policy(code)]


def candidate_line(exc: BaseException) -> int | None:
    """Line number of the innermost traceback frame that belongs to the candidate's source."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == CANDIDATE_FILENAME:
            line = frame.lineno
    return line


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    text = one_line(str(exc))
    if len(text) > 300:
        text = text[:297] + "..."
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    line = candidate_line(exc)
    return f"{message} (line {line})" if line is not None else message


# --------------------------------------------------------------------------------------------- the run


def _engine(settings: BacktestSettings, prepared: PreparedBars) -> BacktestEngine:
    engine = BacktestEngine(
        BacktestEngineConfig(
            logging=LoggingConfig(log_level=settings.log_level, bypass_logging=settings.log_level == "ERROR"),
            run_analysis=False,
        )
    )
    spec = prepared.spec or settings.spec_for(prepared.symbol, prepared.frame)
    engine.add_venue(
        Venue(VENUE),
        # HEDGING, not NETTING: the base strategy holds one position at a time (it closes before reversing), so
        # the fills are identical, but NETTING reuses one position id and its per-fill bookkeeping grows with
        # every reopen (measured: 87 vs 64 µs a bar over 100k minute bars, same trades and returns).
        OmsType.HEDGING,
        fee_model=MakerTakerFeeModel(),
        # Always an explicit fill model: NautilusTrader's default fills all but volume/4 one tick worse.
        fill_model=market.fill_model(settings.fills, prepared.ts, prepared.volume),
        **market.venue_kwargs(spec, settings.account_type, settings.starting_capital),
    )
    engine.add_instrument(_instrument_for(prepared, settings))
    engine.add_data(prepared.bars, sort=False)
    return engine


def run_backtest(code: str, prepared: PreparedBars, settings: BacktestSettings) -> BacktestOutcome:
    """Backtest candidate source on one instrument; every failure becomes a typed outcome, never an exception.

    Exceptions that are not the candidate's fault in a normal sense (the evaluator's timeout signal,
    MemoryError) propagate so the worker loop can classify them. The outcome carries the decision log and the
    fills as this process saw them: in a candidate's process they are a *claim*, checked by a trusted replay.
    """
    import time

    started = time.perf_counter()
    n_bars = len(prepared)  # scored bars (a warm-up is not scored)
    if n_bars < 2:
        return BacktestOutcome("data", f"{prepared.symbol}: only {n_bars} bar(s) to backtest", prepared.symbol,
                               n_bars)  # fmt: skip
    try:
        strategy_cls = load_strategy_class(code)
    except CandidateLoadError as exc:
        return BacktestOutcome(exc.kind, str(exc), prepared.symbol, n_bars, elapsed=time.perf_counter() - started)
    return run_strategy(strategy_cls, prepared, settings, started=started)


def strategy_config(prepared: PreparedBars, settings: BacktestSettings) -> Any:
    """The one configuration every strategy (candidate or trusted replay) is built with."""
    from alpha_evolve.strategies.base import EvolvableStrategyConfig

    return EvolvableStrategyConfig(
        instrument_id=prepared.instrument.id,
        bar_type=prepared.bar_type,
        trade_fraction=settings.trade_fraction,
        allow_short=settings.allow_short,
        trade_start_ns=prepared.trade_start_ns,
        adverse_fraction=settings.fills.adverse_fraction(),
    )


def run_strategy(
    make_strategy: Any, prepared: PreparedBars, settings: BacktestSettings, *, started: float | None = None
) -> BacktestOutcome:
    """Run ``make_strategy(config)`` on a fresh engine and score it from its fills (see module docstring)."""
    import time

    started = time.perf_counter() if started is None else started
    n_bars = len(prepared.bars)  # warm-up included: the engine must process every one of them

    def fail(kind: str, message: str) -> BacktestOutcome:
        return BacktestOutcome(kind, message, prepared.symbol, len(prepared), elapsed=time.perf_counter() - started)

    if len(prepared) < 2:
        return fail("data", f"{prepared.symbol}: only {len(prepared)} bar(s) to backtest")
    engine = _engine(settings, prepared)
    try:
        try:
            strategy = make_strategy(strategy_config(prepared, settings))
            engine.add_strategy(strategy)
        except Exception as exc:
            return fail("import", _describe(exc))
        try:
            engine.run()
        except Exception as exc:
            if isinstance(exc, MemoryError):
                raise
            # The audit hook refused something the static policy missed: report it as a policy failure.
            kind = "policy" if _caused_by(exc, SandboxViolation) else "runtime"
            return fail(kind, _describe(exc))
        processed = int(engine.iteration)
        if processed < n_bars:
            return fail(
                "incomplete",
                f"{prepared.symbol}: the engine stopped after {processed} of {n_bars} bars "
                "(e.g. a negative account balance)",
            )
        fills = _fills(engine)
        refused = _refused_orders(engine)
        sizing_refusals = int(getattr(strategy, "sizing_refusals", 0) or 0)
        first_refusal = str(getattr(strategy, "first_sizing_refusal", "") or "")
        log = getattr(strategy, "decision_log", None)
        decisions = [(int(i), int(a)) for i, a in log()] if callable(log) else []
    finally:
        try:
            engine.dispose()
        except Exception:  # pragma: no cover - disposal problems must not mask the result
            logger.debug("engine.dispose failed", exc_info=True)

    if refused:
        # The strategy's orders did not happen: the figures would describe some other strategy.
        return fail("incomplete", f"{prepared.symbol}: the venue refused {len(refused)} order(s); first: {refused[0]}")
    warnings: list[str] = []
    if sizing_refusals:
        if fills.size == 0:
            return fail(
                "incomplete",
                f"{prepared.symbol}: no position could be opened ({first_refusal}); set a smaller size_increment "
                "or lot_size for it in [backtest.instruments] or raise starting_capital",
            )
        warnings.append(f"{prepared.symbol}: {sizing_refusals} order(s) skipped as too small for one order step; "
                        f"first: {first_refusal}")
    outcome = scored_outcome(prepared, settings, fills, started, warnings)
    outcome.decisions = decisions
    outcome.fills = fills.tolist()
    return outcome


def _data_warnings(prepared: PreparedBars, settings: BacktestSettings) -> list[str]:
    """What the bars themselves make doubtful, decided here on trusted data so every scoring path says it."""
    volume = prepared.volume
    if settings.fill_model != "volume" or volume is None or len(volume) <= prepared.warmup:
        return []
    no_volume = float(np.mean(np.asarray(volume[prepared.warmup:], dtype=float) <= 0))
    if no_volume < 0.5:
        return []
    # Many sources publish no volume (Yahoo's FX rates, some index files): the volume model then slips every order.
    return [f"{prepared.symbol}: volume is zero on {no_volume:.0%} of bars, so fill_model 'volume' fills orders "
            f"there wholly at {settings.slippage_bps:g} bps slippage; use fill_model 'close' for data without volume"]


def _refused_orders(engine: BacktestEngine) -> list[str]:
    """One line per order the venue or the risk engine refused (denied or rejected), with its reason."""
    from nautilus_trader.model.events import OrderDenied, OrderRejected

    refused: list[str] = []
    for order in engine.cache.orders():
        for event in order.events:
            if isinstance(event, OrderDenied | OrderRejected):
                refused.append(f"{order.side_string()} {order.quantity} {type(event).__name__}: {event.reason}")
    return refused


def _fills(engine: BacktestEngine) -> np.ndarray:
    """Every fill as rows (ts_ns, signed quantity, price, commission), in time order."""
    rows: list[tuple[float, float, float, float]] = []
    for order in engine.cache.orders():
        for event in order.events:
            if isinstance(event, OrderFilled):
                sign = 1.0 if event.order_side == OrderSide.BUY else -1.0
                rows.append(
                    (
                        float(event.ts_event),
                        sign * float(event.last_qty),
                        float(event.last_px),
                        float(event.commission.as_double()),
                    )
                )
    if not rows:
        return np.zeros((0, 4))
    arr = np.asarray(rows, dtype=float)
    return arr[np.argsort(arr[:, 0], kind="stable")]


def _units(qty: np.ndarray, size_precision: int) -> list[int]:
    """Signed quantities as whole numbers of the instrument's smallest size step: exact sums, no residues."""
    scale = Decimal(10) ** int(size_precision)
    return [int((Decimal(repr(float(q))) * scale).to_integral_value()) for q in qty]


def equity_curve(
    ts: np.ndarray,
    closes: np.ndarray,
    fills: np.ndarray,
    capital: float,
    multiplier: float = 1.0,
    size_precision: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mark-to-market equity and position after each bar: cash (fills, fees) + position × close.

    Fills are attributed to the bar at or before their timestamp (a market order fills at the bar's close);
    fills after the last bar (closing orders at stop) are attributed to the last bar. With ``size_precision``
    the position is summed exactly in size steps, so a closed position is exactly 0 (not 1e-11).
    """
    if fills.size == 0:
        return np.full(ts.shape, float(capital)), np.zeros(ts.shape)
    qty, px, fee = fills[:, 1], fills[:, 2], fills[:, 3]
    cash_flow = -qty * px * multiplier - fee
    if size_precision is None:
        pos_cum = np.concatenate([[0.0], np.cumsum(qty)])
    else:
        steps = np.cumsum(np.asarray([0, *_units(qty, size_precision)], dtype=object))
        pos_cum = np.asarray([float(Decimal(int(v)).scaleb(-size_precision)) for v in steps], dtype=float)
    cash_cum = np.concatenate([[0.0], np.cumsum(cash_flow)])
    idx = np.searchsorted(fills[:, 0], ts.astype(float), side="right")
    idx[-1] = len(fills)
    position = pos_cum[idx]
    equity = capital + cash_cum[idx] + position * closes * multiplier
    return equity, position


def round_trips(
    fills: np.ndarray, last_close: float, multiplier: float = 1.0, size_precision: int | None = None
) -> list[float]:
    """PnL after fees of each round trip (flat → position → flat; a reversal closes one trip and opens one).

    Quantities are compared in whole size steps of the instrument (``size_precision`` decimals; inferred from
    the fills when not given), so a float residue such as -65123.00000000001 never splits or opens a trip.
    A position still open after the last fill is valued at the last close as if closed there.
    """
    if size_precision is None:
        size_precision = _fill_precision(fills[:, 1]) if fills.size else 0
    scale = 10.0**-size_precision
    trips: list[float] = []
    position = 0  # in size steps
    pnl = 0.0
    units = _units(fills[:, 1], size_precision) if fills.size else []
    for (_, _qty, px, fee), remaining in zip(fills, units, strict=True):
        fee_per_step = fee / abs(remaining) if remaining else 0.0
        if remaining == 0:
            pnl -= fee
        while remaining != 0:
            if position == 0 or (position > 0) == (remaining > 0):
                pnl += -remaining * scale * px * multiplier - abs(remaining) * fee_per_step
                position += remaining
                remaining = 0
            else:
                step = -position if abs(remaining) >= abs(position) else remaining
                pnl += -step * scale * px * multiplier - abs(step) * fee_per_step
                position += step
                remaining -= step
                if position == 0:
                    trips.append(pnl)
                    pnl = 0.0
    if position != 0:
        trips.append(pnl + position * scale * last_close * multiplier)
    return trips


def _fill_precision(qty: np.ndarray) -> int:
    """Decimals of the fill quantities (at most 9), ignoring float noise."""
    from alpha_evolve.market import infer_price_precision

    nonzero = np.abs(qty[qty != 0])
    return infer_price_precision(nonzero)[0] if nonzero.size else 0


def _downsample(n: int, points: int) -> np.ndarray:
    if points <= 0 or n <= points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, points).round().astype(int))


def scored_outcome(
    prepared: PreparedBars,
    settings: BacktestSettings,
    fills: np.ndarray,
    started: float,
    warnings: list[str] | None = None,
) -> BacktestOutcome:
    """Figures of the scored bars only (warm-up bars dropped; no fill can fall in them), from every bar's equity;
    only the curve returned for plotting is downsampled."""
    import time

    warnings = [*(warnings or []), *_data_warnings(prepared, settings)]
    w = prepared.warmup
    ts, closes = prepared.ts[w:], prepared.closes[w:]
    multiplier = float(prepared.instrument.multiplier)
    precision = int(prepared.instrument.size_precision)
    equity, position = equity_curve(ts, closes, fills, settings.starting_capital, multiplier, precision)
    trades = round_trips(fills, float(closes[-1]), multiplier, precision)
    exposure = float(np.count_nonzero(position)) / len(position) if len(position) else 0.0
    # Figures start from the starting capital, before the first bar's fills: an entry on the period's first bar
    # (buy-and-hold's) pays its fee inside the period, like every later one.
    scored = np.concatenate([[settings.starting_capital], equity])
    metrics = compute_metrics(scored, prepared.periods_per_year, trades, exposure, settings.risk_free)
    keep = _downsample(len(equity), settings.equity_points)
    return BacktestOutcome(
        status="ok",
        symbol=prepared.symbol,
        bars=len(prepared),
        metrics=metrics,
        equity_index=[int(t) for t in ts[keep]],
        equity_values=[float(v) for v in equity[keep]],
        trades=trades,
        elapsed=time.perf_counter() - started,
        warnings=list(warnings or []),
        equity_full=scored,
    )
