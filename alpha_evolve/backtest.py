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
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import Equity
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.persistence.wranglers import BarDataWrangler

from alpha_evolve import sandbox
from alpha_evolve.metrics import compute_metrics
from alpha_evolve.sandbox import SandboxViolation

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
    """Bars of one instrument, wrangled once and shared (by fork) with every worker."""

    symbol: str
    instrument: Equity
    bar_type: BarType
    bars: list[Bar]
    frame: pd.DataFrame
    periods_per_year: float
    ts: np.ndarray  # bar timestamps, ns
    closes: np.ndarray  # bar closes as the engine sees them (rounded to the price precision)

    def slice(self, start: int, stop: int) -> PreparedBars:
        """A sub-range sharing the same Bar objects (no re-wrangling)."""
        return dataclasses.replace(
            self,
            bars=self.bars[start:stop],
            frame=self.frame.iloc[start:stop],
            ts=self.ts[start:stop],
            closes=self.closes[start:stop],
        )

    def __len__(self) -> int:
        return len(self.bars)


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


def _equity(instrument_id: InstrumentId, precision: int, settings: BacktestSettings) -> Equity:
    return Equity(
        instrument_id=instrument_id,
        raw_symbol=instrument_id.symbol,
        currency=USD,
        price_precision=precision,
        price_increment=Price(10.0**-precision, precision),
        lot_size=Quantity.from_int(1),
        ts_event=0,
        ts_init=0,
        maker_fee=Decimal(str(settings.maker_fee)),
        taker_fee=Decimal(str(settings.taker_fee)),
    )


def _instrument_for(prepared: PreparedBars, settings: BacktestSettings) -> Equity:
    """The prepared instrument, or a twin with the run's fees (fees live on the instrument in NautilusTrader)."""
    inst = prepared.instrument
    if float(inst.maker_fee) == settings.maker_fee and float(inst.taker_fee) == settings.taker_fee:
        return inst
    return _equity(inst.id, inst.price_precision, settings)


def prepare_bars(
    symbol: str,
    frame: pd.DataFrame,
    settings: BacktestSettings | None = None,
    periods_per_year: float | None = None,
) -> PreparedBars:
    """Wrangle a bars DataFrame (CONTRACTS.md shape) into NautilusTrader objects for one `Equity`.

    Raises ValueError with a one-line message when the frame cannot be used.
    """
    settings = settings or BacktestSettings()
    if list(frame.columns) != _BAR_COLUMNS:
        raise ValueError(f"{symbol}: bar columns must be exactly {_BAR_COLUMNS}, got {list(frame.columns)}")
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise ValueError(f"{symbol}: bars need a tz-aware UTC DatetimeIndex")
    if len(frame) == 0:
        raise ValueError(f"{symbol}: no bars")
    frame = frame.astype(float)
    min_close = float(frame["close"].min())
    if not math.isfinite(min_close) or min_close <= 0:
        raise ValueError(f"{symbol}: close prices must be positive and finite")
    precision = 2 if min_close >= 1.0 else 4
    from alpha_evolve.instrument_ids import instrument_symbol

    instrument_id = InstrumentId(Symbol(instrument_symbol(symbol)), Venue(VENUE))
    instrument = _equity(instrument_id, precision, settings)
    bar_type = BarType.from_str(f"{instrument_id}-{_bar_spec(frame.index)}-LAST-EXTERNAL")
    bars = BarDataWrangler(bar_type, instrument).process(frame)
    ppy = float(periods_per_year) if periods_per_year else infer_periods_per_year(frame.index)
    ts = np.asarray([bar.ts_event for bar in bars], dtype=np.int64)
    closes = np.asarray([float(bar.close) for bar in bars], dtype=float)
    return PreparedBars(symbol, instrument, bar_type, bars, frame, ppy, ts, closes)


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
    text = " ".join(str(exc).split())
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
    margin = settings.account_type == "margin"
    engine.add_venue(
        Venue(VENUE),
        # HEDGING, not NETTING: the base strategy holds one position at a time (it closes before reversing), so
        # the fills are identical, but NETTING reuses one position id and its per-fill bookkeeping grows with
        # every reopen (measured: 87 vs 64 µs a bar over 100k minute bars, same trades and returns).
        OmsType.HEDGING,
        AccountType.MARGIN if margin else AccountType.CASH,
        [Money(settings.starting_capital, USD)],
        base_currency=USD,
        default_leverage=Decimal(1) if margin else None,
        fee_model=MakerTakerFeeModel(),
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
    n_bars = len(prepared.bars)
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
    )


def run_strategy(
    make_strategy: Any, prepared: PreparedBars, settings: BacktestSettings, *, started: float | None = None
) -> BacktestOutcome:
    """Run ``make_strategy(config)`` on a fresh engine and score it from its fills (see module docstring)."""
    import time

    started = time.perf_counter() if started is None else started
    n_bars = len(prepared.bars)

    def fail(kind: str, message: str) -> BacktestOutcome:
        return BacktestOutcome(kind, message, prepared.symbol, n_bars, elapsed=time.perf_counter() - started)

    if n_bars < 2:
        return fail("data", f"{prepared.symbol}: only {n_bars} bar(s) to backtest")
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
        log = getattr(strategy, "decision_log", None)
        decisions = [(int(i), int(a)) for i, a in log()] if callable(log) else []
    finally:
        try:
            engine.dispose()
        except Exception:  # pragma: no cover - disposal problems must not mask the result
            logger.debug("engine.dispose failed", exc_info=True)

    outcome = _outcome(prepared, settings, fills, started)
    outcome.decisions = decisions
    outcome.fills = fills.tolist()
    return outcome


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


def equity_curve(
    ts: np.ndarray, closes: np.ndarray, fills: np.ndarray, capital: float, multiplier: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Mark-to-market equity and position after each bar: cash (fills, fees) + position × close.

    Fills are attributed to the bar at or before their timestamp (a market order fills at the bar's close);
    fills after the last bar (closing orders at stop) are attributed to the last bar.
    """
    if fills.size == 0:
        return np.full(ts.shape, float(capital)), np.zeros(ts.shape)
    qty, px, fee = fills[:, 1], fills[:, 2], fills[:, 3]
    cash_flow = -qty * px * multiplier - fee
    pos_cum = np.concatenate([[0.0], np.cumsum(qty)])
    cash_cum = np.concatenate([[0.0], np.cumsum(cash_flow)])
    idx = np.searchsorted(fills[:, 0], ts.astype(float), side="right")
    idx[-1] = len(fills)
    position = pos_cum[idx]
    equity = capital + cash_cum[idx] + position * closes * multiplier
    return equity, position


def round_trips(fills: np.ndarray, last_close: float, multiplier: float = 1.0) -> list[float]:
    """PnL after fees of each round trip (flat → position → flat; a reversal closes one trip and opens one).

    A position still open after the last fill is valued at the last close as if closed there.
    """
    trips: list[float] = []
    position = 0.0
    pnl = 0.0
    for _, qty, px, fee in fills:
        remaining = qty
        fee_per_unit = fee / abs(qty) if qty else 0.0
        while abs(remaining) > 1e-12:
            if position == 0.0 or np.sign(position) == np.sign(remaining):
                pnl += -remaining * px * multiplier - abs(remaining) * fee_per_unit
                position += remaining
                remaining = 0.0
            else:
                step = -position if abs(remaining) >= abs(position) else remaining
                pnl += -step * px * multiplier - abs(step) * fee_per_unit
                position += step
                remaining -= step
                if abs(position) < 1e-12:
                    position = 0.0
                    trips.append(pnl)
                    pnl = 0.0
    if position != 0.0:
        trips.append(pnl + position * last_close * multiplier)
    return trips


def _downsample(n: int, points: int) -> np.ndarray:
    if points <= 0 or n <= points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, points).round().astype(int))


def _outcome(
    prepared: PreparedBars, settings: BacktestSettings, fills: np.ndarray, started: float
) -> BacktestOutcome:
    import time

    ts, closes = prepared.ts, prepared.closes
    multiplier = float(prepared.instrument.multiplier)
    equity, position = equity_curve(ts, closes, fills, settings.starting_capital, multiplier)
    trades = round_trips(fills, float(closes[-1]), multiplier)
    exposure = float(np.count_nonzero(position)) / len(position) if len(position) else 0.0
    metrics = compute_metrics(equity, prepared.periods_per_year, trades, exposure, settings.risk_free)
    keep = _downsample(len(equity), settings.equity_points)
    return BacktestOutcome(
        status="ok",
        symbol=prepared.symbol,
        bars=len(prepared.bars),
        metrics=metrics,
        equity_index=[int(t) for t in ts[keep]],
        equity_values=[float(v) for v in equity[keep]],
        trades=trades,
        elapsed=time.perf_counter() - started,
    )
