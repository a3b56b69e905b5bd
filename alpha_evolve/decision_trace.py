"""What a candidate would do on the train bars, worked out without running its code: a pre-check for duplicates.

Why: a child that trades exactly like its parent (a stop that never fires, a filter that holds at every entry)
or never trades at all in the screen period costs a backtest and teaches nothing. The controller asks this
module first; when the trace says "same orders as program #n" it sends the candidate back to the mutator while
attempts remain, with no backtest and no trial (nothing was run), and the engine decides on the last attempt.

How, safely: candidate code is an attacker, so it is never executed here. A small interpreter walks the AST of
``setup_indicators`` and ``decide`` and understands only a whitelisted subset — native indicators from the
catalogue built with numeric arguments, numeric state on ``self``, ``if``/assignments/``return``, arithmetic,
comparisons, ``max``/``min``/``abs``, the bar's prices and the ``go_long``/``go_short``/``go_flat`` helpers. Anything
else (loops, other calls, other attributes, ``**``) makes the trace unknown and the candidate is simply backtested.
Work per bar is bounded by the size of the AST (no loops), and the indicators are the real NautilusTrader ones fed
the very ``Bar`` objects the engine sees (``backtest.prepare_bars``), so the values the conditions read are the
engine's.

The position model is the base class's: ``go_long`` sends an order unless already long; the order is filled before
the next bar is decided (the engine fills it on that bar), so ``is_long`` turns true from the next bar on. The
trace is the list of orders sent, ``(bar, action)``; equal traces mean equal orders on every bar, hence equal fills
and the same figures. Where the model could differ from the engine (a cash account refusing an order it cannot
pay for), both programs meet the same bars with the same orders, and the last attempt is always backtested.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alpha_evolve import indicator_catalogue as catalogue
from alpha_evolve.source import parse as parse_source

logger = logging.getLogger("alpha_evolve.decision_trace")

LONG, FLAT, SHORT = "long", "flat", "short"
_BAR_FIELDS = ("open", "high", "low", "close", "volume")
_MAX_ARG = 100_000  # an indicator period beyond this is not something to simulate cheaply: unknown
_BUILTINS: dict[str, Callable[..., Any]] = {"max": max, "min": min, "abs": abs, "float": float, "int": int,
                                            "bool": bool, "round": round}
_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}


class Unsupported(Exception):
    """The code uses something the interpreter does not model: its trace is unknown (it will be backtested)."""


class _Return(Exception):
    pass


@dataclass(frozen=True)
class Trace:
    """The orders one program sends on the train bars of each instrument: ``(bar index, action)`` in order."""

    orders: tuple[tuple[str, tuple[tuple[int, str], ...]], ...]

    @property
    def key(self) -> str:
        return hashlib.sha256(repr(self.orders).encode()).hexdigest()

    def prefix_key(self, cut: Mapping[str, int]) -> str:
        """The key of the orders sent before each instrument's ``cut`` bar (what the screen run sees)."""
        head = tuple((s, tuple(o for o in orders if o[0] < cut.get(s, 0))) for s, orders in self.orders)
        return hashlib.sha256(repr(head).encode()).hexdigest()

    def enters_before(self, cut: Mapping[str, int]) -> bool:
        """Does any instrument open a position before its ``cut`` bar (the end of the screen period)?"""
        return any(a != FLAT and i < cut.get(symbol, 0) for symbol, orders in self.orders for i, a in orders)


@dataclass
class _Spec:
    indicators: dict[str, tuple[type, tuple[Any, ...], dict[str, Any]]]
    state: dict[str, Any]
    decide: list[ast.stmt]
    bar_name: str


def _const(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _const(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise Unsupported(f"not a number: {ast.unparse(node)}")


def _self_attr(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _spec(code: str) -> _Spec:
    try:
        tree = parse_source(code)
    except (SyntaxError, ValueError) as exc:
        raise Unsupported(f"does not parse: {exc}") from None
    methods: dict[str, ast.FunctionDef] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        found = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
        if "decide" in found:
            methods = found
    if "decide" not in methods:
        raise Unsupported("no decide method")
    if set(methods) - {"setup_indicators", "decide"}:
        raise Unsupported("other methods")
    import nautilus_trader.indicators as indicators_module

    indicators: dict[str, tuple[type, tuple[Any, ...], dict[str, Any]]] = {}
    state: dict[str, Any] = {}
    for stmt in methods["setup_indicators"].body if "setup_indicators" in methods else []:
        if isinstance(stmt, ast.ImportFrom) and (stmt.module or "").startswith("nautilus_trader.indicators"):
            continue
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and _self_attr(stmt.targets[0])):
            raise Unsupported(f"setup statement: {ast.unparse(stmt)}")
        attr = _self_attr(stmt.targets[0])
        assert attr is not None
        value = stmt.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in catalogue.BY_NAME:
            args = tuple(_const(a) for a in value.args)
            kwargs = {k.arg: _const(k.value) for k in value.keywords if k.arg is not None}
            if len(kwargs) != len(value.keywords) or any(abs(a) > _MAX_ARG for a in (*args, *kwargs.values())):
                raise Unsupported(f"indicator arguments: {ast.unparse(value)}")
            indicators[attr] = (getattr(indicators_module, value.func.id), args, kwargs)
            state.pop(attr, None)
        else:
            state[attr] = _const(value)
            indicators.pop(attr, None)
    decide = methods["decide"]
    params = [a.arg for a in decide.args.args]
    if len(params) != 2 or decide.args.vararg or decide.args.kwarg or decide.args.kwonlyargs:
        raise Unsupported("decide(self, bar) expected")
    return _Spec(indicators, state, decide.body, params[1])


class _Run:
    """One program on one instrument's bars."""

    def __init__(self, spec: _Spec, allow_short: bool) -> None:
        self.spec = spec
        self.allow_short = allow_short
        try:
            self.indicators = {a: cls(*args, **kwargs) for a, (cls, args, kwargs) in spec.indicators.items()}
        except Exception as exc:  # a constructor refusing its arguments: the engine run would fail, not us
            raise Unsupported(f"indicator construction: {exc}") from None
        self.state = dict(spec.state)
        self.position = FLAT
        self.pending: str | None = None
        self.bars_seen = 0
        self.orders: list[tuple[int, str]] = []
        self.calls: list[tuple[int, str]] = []  # every helper call, sent or not (the engine's decision log)
        self.index = 0
        self.bar: dict[str, float] = {}
        self.locals: dict[str, Any] = {}

    def run(self, bars: Sequence[Any]) -> list[tuple[int, str]]:
        indicators = list(self.indicators.values())
        for i, bar in enumerate(bars):
            if self.pending is not None:  # the order sent on the previous bar is filled before this one is decided
                self.position, self.pending = self.pending, None
            for ind in indicators:
                ind.handle_bar(bar)
            self.bars_seen += 1
            if all(ind.initialized for ind in indicators):
                self.bar = {f: float(getattr(bar, f)) for f in _BAR_FIELDS}
                self.locals = {}
                self.index = i
                try:
                    self.block(self.spec.decide)
                except _Return:
                    pass
                except (ArithmeticError, TypeError, ValueError) as exc:
                    raise Unsupported(f"evaluation: {exc}") from None
        return self.orders

    # -- statements --------------------------------------------------------------------------------------------

    def block(self, stmts: Iterable[ast.stmt]) -> None:
        for stmt in stmts:
            self.stmt(stmt)

    def stmt(self, node: ast.stmt) -> None:
        if isinstance(node, ast.If):
            self.block(node.body if self.expr(node.test) else node.orelse)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            self.store(node.targets[0], self.expr(node.value))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOPS:
            self.store(node.target, _BINOPS[type(node.op)](self.expr(_load(node.target)), self.expr(node.value)))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and _helper(node.value):
            self.helper(_helper(node.value) or "")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            pass
        elif isinstance(node, ast.Return) and node.value is None:
            raise _Return
        elif not isinstance(node, ast.Pass):
            raise Unsupported(f"statement: {ast.unparse(node)}")

    def store(self, target: ast.expr, value: Any) -> None:
        _number(value)
        attr = _self_attr(target)
        if isinstance(target, ast.Name):
            self.locals[target.id] = value
        elif attr is not None and attr not in self.indicators and (attr in self.state or attr not in _MEMBERS):
            self.state[attr] = value
        else:
            raise Unsupported(f"assignment to {ast.unparse(target)}")

    def helper(self, name: str) -> None:
        """The base class's go_long / go_short / go_flat: an order only when the position is not already so."""
        target = {"go_long": LONG, "go_flat": FLAT, "go_short": SHORT}[name]
        self.calls.append((self.index, target))
        if target == SHORT and not self.allow_short:
            return  # refused by the base class: no order
        if self.position != target:
            self.orders.append((self.index, target))
            self.pending = target

    # -- expressions -------------------------------------------------------------------------------------------

    def expr(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float | bool):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.locals:
                return self.locals[node.id]
            raise Unsupported(f"name {node.id}")
        if isinstance(node, ast.BoolOp):
            result: Any = None
            for value in node.values:
                result = self.expr(value)
                if (not result) if isinstance(node.op, ast.And) else result:
                    return result
            return result
        if isinstance(node, ast.UnaryOp):
            operand = self.expr(node.operand)
            if isinstance(node.op, ast.Not):
                return not operand
            if isinstance(node.op, ast.USub | ast.UAdd):
                return -_number(operand) if isinstance(node.op, ast.USub) else _number(operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _number(_BINOPS[type(node.op)](_number(self.expr(node.left)), _number(self.expr(node.right))))
        if isinstance(node, ast.Compare):
            left = _number(self.expr(node.left))
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                if type(op) not in _CMPOPS:
                    raise Unsupported(f"comparison {ast.unparse(node)}")
                right = _number(self.expr(comparator))
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.expr(node.body) if self.expr(node.test) else self.expr(node.orelse)
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise Unsupported(f"expression {ast.unparse(node)}")

    def attribute(self, node: ast.Attribute) -> Any:
        attr = _self_attr(node)
        if attr is not None:
            if attr in self.state:
                return self.state[attr]
            member = {"is_long": self.position == LONG, "is_short": self.position == SHORT,
                      "is_flat": self.position == FLAT, "bars_seen": self.bars_seen,
                      "allow_short": self.allow_short}
            if attr in member:
                return member[attr]
            raise Unsupported(f"self.{attr}")
        if isinstance(node.value, ast.Name) and node.value.id == self.spec.bar_name and node.attr in _BAR_FIELDS:
            return self.bar[node.attr]
        owner = _self_attr(node.value)
        if owner is not None and owner in self.indicators and not node.attr.startswith("_"):
            value = getattr(self.indicators[owner], node.attr, None)
            if isinstance(value, bool | int | float):
                return value
        raise Unsupported(f"attribute {ast.unparse(node)}")

    def call(self, node: ast.Call) -> Any:
        if node.keywords:
            raise Unsupported(f"call {ast.unparse(node)}")
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "as_double" and not node.args:
            return _number(self.expr(func.value))
        if isinstance(func, ast.Name) and func.id in _BUILTINS and func.id not in self.locals and node.args:
            return _number(_BUILTINS[func.id](*(_number(self.expr(a)) for a in node.args)))
        raise Unsupported(f"call {ast.unparse(node)}")


_MEMBERS = frozenset({"is_long", "is_short", "is_flat", "bars_seen", "allow_short", "trade_fraction"})


def _load(target: ast.expr) -> ast.expr:
    return ast.Name(target.id, ast.Load()) if isinstance(target, ast.Name) else \
        ast.Attribute(target.value, target.attr, ast.Load()) if isinstance(target, ast.Attribute) else target


def _helper(call: ast.Call) -> str | None:
    name = _self_attr(call.func)
    return name if name in ("go_long", "go_flat", "go_short") and not call.args and not call.keywords else None


def _number(value: Any) -> Any:
    if isinstance(value, bool | int | float) and (not isinstance(value, float) or math.isfinite(value)):
        return value
    raise Unsupported(f"value {value!r}")


class DecisionTracer:
    """Traces of programs on one run's train bars (per instrument), memoised by code."""

    def __init__(self, bars: Mapping[str, Sequence[Any]], *, allow_short: bool = False,
                 screen_fraction: float = 0.0, memo_size: int = 512) -> None:
        self.bars = {symbol: list(b) for symbol, b in bars.items()}
        self.allow_short = allow_short
        # The screen runs on the first max(int(n * fraction), 2) bars (forkserver's slice of the train split).
        self.screen_cut = {s: max(int(len(b) * screen_fraction), 2) for s, b in self.bars.items()} \
            if screen_fraction > 0 else {s: len(b) for s, b in self.bars.items()}
        self._memo: dict[str, Trace | None] = {}
        self._memo_size = memo_size
        self._index: dict[str, int] = {}  # trace key -> the first evaluated program that sent those orders
        self._screened: dict[str, int] = {}  # screen-period key -> the first program the screen rejected so
        self.indexed: set[str] = set()  # experiments whose stored programs are in the index

    def remember(self, program_id: int, code: str, stage: str | None = "full") -> None:
        """Index an evaluated program's trace, so a later candidate repeating its orders is caught.

        A program the screen rejected (``stage == "screen"``) is known by its screen-period orders only: any
        candidate sending the same orders there gets the same screen figures and is rejected alike.
        """
        trace = self.trace(code)
        if trace is not None:
            self._index.setdefault(trace.key, program_id)
            if stage == "screen":
                self._screened.setdefault(trace.prefix_key(self.screen_cut), program_id)

    def trace(self, code: str) -> Trace | None:
        """The program's orders on every instrument's train bars, or None when the interpreter cannot tell."""
        key = hashlib.sha256(code.encode()).hexdigest()
        if key in self._memo:
            return self._memo[key]
        try:
            spec = _spec(code)
            result: Trace | None = Trace(tuple((symbol, tuple(_Run(spec, self.allow_short).run(bars)))
                                               for symbol, bars in self.bars.items()))
        except Unsupported as exc:
            logger.debug("no decision trace: %s", exc)
            result = None
        if len(self._memo) >= self._memo_size:
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = result
        return result

    def verdict(self, code: str, references: Sequence[tuple[int, str]], flat_twin: int | None) -> str | None:
        """Why ``code`` need not be backtested (it would repeat program #n), or None to backtest it.

        Compared with every program ``remember``ed and with ``references`` ((program id, code) not in the index
        yet, e.g. this iteration's discarded attempts); ``flat_twin``: the first program that never traded, if any.
        """
        trace = self.trace(code)
        if trace is None:
            return None
        known = {t.key: pid for pid, other in reversed(references) if (t := self.trace(other)) is not None}
        program_id = self._index.get(trace.key, known.get(trace.key))
        if program_id is not None:
            return (f"this change did nothing: worked out on the train bars without a backtest, the candidate "
                        f"sends exactly the orders of program #{program_id} (same entries and exits on the same "
                        "bars); make a different change that alters when the strategy trades")
        program_id = self._screened.get(trace.prefix_key(self.screen_cut))
        if program_id is not None:
            return (f"this change did nothing: worked out on the train bars without a backtest, the candidate "
                    f"sends exactly the orders of program #{program_id} in the screen period, which rejected it "
                    "there; make a different change that alters when the strategy trades early on")
        if flat_twin is not None and not trace.enters_before(self.screen_cut):
            return (f"this change did nothing new: worked out on the train bars without a backtest, the candidate "
                    f"never enters a position in the screen period, like program #{flat_twin}; make a change "
                    "that keeps (or adds) entries")
        return None


def train_bars(run_data: Any, settings: Any, instruments: Mapping[str, Any]) -> dict[str, list[Any]] | None:
    """Each instrument's train bars exactly as the engine sees them; None when they cannot be prepared."""
    from alpha_evolve.backtest import prepare_bars

    bars: dict[str, list[Any]] = {}
    try:
        for symbol, splits in run_data.splits.items():
            prepared = prepare_bars(symbol, splits.train, settings, spec=instruments.get(symbol))
            bars[symbol] = list(prepared.bars)
    except (ValueError, KeyError, AttributeError) as exc:
        logger.info("train bars for the pre-check unavailable: %s", exc)
        return None
    return bars


def tracer_for(run_data: Any, settings: Any, instruments: Mapping[str, Any], *, allow_short: bool,
               screen_fraction: float) -> DecisionTracer | None:
    """A tracer over the train bars exactly as the engine sees them; None when they cannot be prepared."""
    bars = train_bars(run_data, settings, instruments)
    return None if bars is None else DecisionTracer(bars, allow_short=allow_short, screen_fraction=screen_fraction)
