"""Deterministic mutations without an LLM: a structural search over the strategy's AST, not just its numbers.

Why it exists: a run must work with no API key (CI, demos, air-gapped machines), and the outer loop needs a
cheap, reproducible baseline to compare LLM mutators against. A baseline that only jitters numbers crowns the
seed's logic with other numbers, so most operators change the logic, built from the same indicator catalogue the
LLM prompt offers (``indicator_catalogue``):

- tuning: ``jitter_number``, ``swap_compare`` (``>`` ↔ ``>=``/``<``), ``switch_indicator`` (same family);
- structure: ``add_regime_filter`` / ``replace_regime_filter`` (trend strength, volatility, efficiency gates on
  entries), ``add_exit_rule`` (ATR trailing stop, channel stop, time stop, each with a re-entry cool-down),
  ``add_confirmation`` (a second signal that must agree), ``remove_condition`` (a conjunct, or a whole filter or
  exit rule), ``replace_signal`` (the entry's indicator family changes, e.g. a moving-average cross -> MACD).

Every edit lands on live code only (``liveness``: nothing in branches the configuration makes dead, such as
``allow_short`` on a cash account), and a candidate is kept only if it still can enter and leave a position and
has no contradictory condition. The random stream is derived from (seed, iteration, parent_id, attempt) only —
not from the experiment's name — so the same request always gets the same mutation, whatever the order or
concurrency of the calls, and two runs of one config evolve the same programs.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from alpha_evolve import indicator_catalogue as catalogue
from alpha_evolve.mutators.base import Candidate, MutationRequest, MutationResponse, build_candidate
from alpha_evolve.mutators.calibration import PASS_SHARE, ThresholdCalibrator
from alpha_evolve.mutators.liveness import Liveness, analyse, contradiction, helper_call
from alpha_evolve.source import parse as parse_source

logger = logging.getLogger("alpha_evolve.mutators.offline")

# Families whose members share a constructor (first argument = period) and their output attributes.
MA_FAMILY: tuple[str, ...] = (
    "SimpleMovingAverage", "ExponentialMovingAverage", "WeightedMovingAverage", "HullMovingAverage",
    "DoubleExponentialMovingAverage", "WilderMovingAverage",
)
# (period, width) channels exposing .upper/.middle/.lower; Donchian has no width argument.
CHANNEL_FAMILY: tuple[str, ...] = ("BollingerBands", "KeltnerChannel", "DonchianChannel")
_CHANNEL_WIDTH_DEFAULT = {"BollingerBands": 2.0, "KeltnerChannel": 1.5}
# Constructors whose first two integer arguments (after ``offset``) must stay ordered fast < slow.
_ORDERED_PERIODS: dict[str, int] = {
    "MovingAverageConvergenceDivergence": 0, "VolatilityRatio": 0, "KlingerVolumeOscillator": 0,
    "ArcherMovingAveragesTrends": 0, "AdaptiveMovingAverage": 1,
}
_INDICATOR_MODULE = "nautilus_trader.indicators"

TUNING_OPERATORS: tuple[str, ...] = ("jitter_number", "swap_compare", "switch_indicator")
STRUCTURE_OPERATORS: tuple[str, ...] = ("add_regime_filter", "replace_regime_filter", "add_exit_rule",
                                        "add_confirmation", "remove_condition", "replace_signal")
OPERATORS: tuple[str, ...] = TUNING_OPERATORS + STRUCTURE_OPERATORS
_WEIGHTS: dict[str, float] = {
    "jitter_number": 2.2, "swap_compare": 0.4, "switch_indicator": 0.8,
    "add_regime_filter": 1.6, "replace_regime_filter": 1.0, "add_exit_rule": 1.6, "add_confirmation": 1.2,
    "remove_condition": 1.4, "replace_signal": 1.2,
}
# A parent with few round trips gives a new gate or stop almost nothing to act on: it either holds at every
# entry (the child trades exactly like the parent) or blocks them all (a flat curve, like every other child that
# never trades). Both are wasted backtests, so such parents are loosened or re-signalled rather than tightened.
FEW_TRADES = 3
_FEW_TRADES_FACTOR: dict[str, float] = {
    "add_regime_filter": 0.2, "add_confirmation": 0.2, "replace_regime_filter": 0.5, "add_exit_rule": 0.4,
    "remove_condition": 1.8, "replace_signal": 1.8, "switch_indicator": 1.3,
}


# What kind of edit an earlier child of the parent was (``edit_class``) and the operators that make that kind.
EDIT_CLASSES: dict[str, tuple[str, ...]] = {
    "gate": ("add_regime_filter", "replace_regime_filter", "add_confirmation"),
    "exit": ("add_exit_rule",),
    "signal": ("replace_signal",),
    "remove": ("remove_condition",),
    "tuning": TUNING_OPERATORS,
}
# Weight left to an edit class each time it bought nothing from this parent (a duplicate or a child that never
# traded): the same kind of change to the same parent mostly buys nothing again (a second gate on a parent whose
# few entries the first one blocked is the same flat curve), so the siblings' record steers the next draw.
WASTED_FACTOR = 0.25
_WASTED = ("duplicate", "no_trades")


def _weights(request: MutationRequest) -> dict[str, float]:
    """Operator weights for one parent: the defaults, shifted away from tightening edits when it rarely trades
    and away from the kinds of edit that bought nothing when tried on this parent before."""
    weights = dict(_WEIGHTS)
    trades = request.parent_metrics.get("Trades")
    if trades is not None and math.isfinite(trades) and trades < FEW_TRADES:
        weights = {op: w * _FEW_TRADES_FACTOR.get(op, 1.0) for op, w in weights.items()}
    for sibling in request.siblings:
        if sibling.outcome not in _WASTED:
            continue
        wasted = {edit_class(request.parent_blocks, sibling.blocks)}
        if sibling.outcome == "no_trades":
            wasted |= {"gate", "exit"}  # too few entries to tighten: any new gate or stop may block them all
        for op in {op for kind in wasted for op in EDIT_CLASSES[kind]}:
            weights[op] *= WASTED_FACTOR
    return weights


def _assigned_attrs(blocks: dict[str, str]) -> set[str]:
    out: set[str] = set()
    for text in blocks.values():
        try:
            tree = parse_source(text)
        except SyntaxError:
            continue
        out |= {a for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                and (a := _self_attr(n)) is not None}
    return out


def _count(blocks: dict[str, str], kind: type) -> int:
    total = 0
    for text in blocks.values():
        try:
            total += sum(isinstance(n, kind) for n in ast.walk(parse_source(text)))
        except SyntaxError:
            continue
    return total


def edit_class(parent_blocks: dict[str, str], child_blocks: dict[str, str]) -> str:
    """"gate", "exit", "signal", "remove" or "tuning": what a child changed in its parent, read from the state
    it adds or drops (the operators name what they add: ``regime_*``, ``confirm_*``, ``stop_*``, ``signal_*``)."""
    child = {**parent_blocks, **child_blocks}
    before, after = _assigned_attrs(parent_blocks), _assigned_attrs(child)
    added, removed = after - before, before - after
    if any(a.startswith(("regime_", "confirm_")) for a in added):
        return "gate"
    if any(a.startswith("stop_") or a == "hold_bars" for a in added):
        return "exit"
    if any(a.startswith("signal_") for a in added):
        return "signal"
    if removed or _count(child, ast.Compare) < _count(parent_blocks, ast.Compare):
        return "remove"
    return "tuning"


def _wasted_numbers(request: MutationRequest) -> set[tuple[str, int]]:
    """(block, position) of the numbers whose jitter gave this parent a child that bought nothing."""
    out: set[tuple[str, int]] = set()
    for sibling in request.siblings:
        if sibling.outcome not in _WASTED:
            continue
        for name, text in sibling.blocks.items():
            parent_text = request.parent_blocks.get(name)
            if parent_text is None or parent_text == text:
                continue
            try:
                before, after = _numbers(parse_source(parent_text)), _numbers(parse_source(text))
            except SyntaxError:
                continue
            if len(before) == len(after):
                out |= {(name, i) for i, (a, b) in enumerate(zip(before, after, strict=True))
                        if a.value != b.value}
    return out


def _numbers(tree: ast.AST) -> list[ast.Constant]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and _is_number(n)]


EXIT_RULES: tuple[str, ...] = ("atr_trailing_stop", "channel_stop", "time_stop")
_CLOSE = "bar.close.as_double()"
_COOLDOWN = "cooldown"
# State the exit rules keep; their bookkeeping (tick, counters, peak tracking) is not a place to mutate.
_MACHINERY: frozenset[str] = frozenset({_COOLDOWN, "hold_bars", "stop_peak"})
# What EvolvableStrategy offers evolved code (prompts.HELPERS): read without being assigned in a block.
_BASE_MEMBERS: frozenset[str] = frozenset({"go_long", "go_short", "go_flat", "is_long", "is_short", "is_flat",
                                           "bars_seen", "allow_short", "trade_fraction"})
_MIN_JUMP = 0.2  # smallest relative move of a jittered number (see _jitter_number)
MAX_NEW_LOOKBACK = 50  # longest period a newly added indicator is drawn with (see _draw)
MAX_GATES = 3  # regime filters + confirmations on the entries: more is curve fitting, not structure


@dataclass
class _Applied:
    block: str
    description: str


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _is_number(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, int | float)
            and not isinstance(node.value, bool))


def _self_attr(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _expr(text: str) -> ast.expr:
    return parse_source(text).body[0].value  # type: ignore[attr-defined]


def _stmts(text: str) -> list[ast.stmt]:
    return parse_source(text).body


class _Body:
    """One parsed block body, with the parent links the operators need."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.tree = parse_source(source)
        self.parents: dict[ast.AST, ast.AST] = {}
        self.refresh()

    def refresh(self) -> None:
        self.tree = ast.fix_missing_locations(self.tree)
        self.parents = {}
        for parent in ast.walk(self.tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent

    def nodes(self, kind: type | tuple[type, ...]) -> list[ast.AST]:
        return [n for n in ast.walk(self.tree) if isinstance(n, kind)]

    def source(self) -> str:
        return ast.unparse(ast.fix_missing_locations(self.tree)) + "\n"


class _Program:
    """The blocks of one request: which holds the indicators, which decides, and what of it is live."""

    def __init__(self, request: MutationRequest, parsed: dict[str, _Body], fixed: dict[str, _Body]) -> None:
        self.allow_short = request.allow_short
        self.bodies = parsed  # blocks that may change
        everything = {**fixed, **parsed}
        self.dec = next((b for b in everything.values() if _has_helpers(b)), None)
        self.ind = next((b for b in everything.values() if b is not self.dec and _constructs(b)), None)
        if self.ind is None:
            self.ind = everything.get("indicators") if everything.get("indicators") is not self.dec else None
        self.imported: set[str] = set()
        self.wasted_numbers: set[tuple[str, int]] = set()  # (block, position) jittered before for nothing
        self.calibration: ThresholdCalibrator | None = None
        self.live = Liveness()
        self.analyse()
        self.unassigned_before = self.unassigned()  # base-class members and whatever the parent relies on

    def analyse(self) -> None:
        self.live = analyse(self.dec.tree.body, self.allow_short) if self.dec is not None else Liveness()

    @property
    def structural(self) -> bool:
        """Both the decision block and the indicators block may change."""
        return (self.dec is not None and self.ind is not None and self.dec.name in self.bodies
                and self.ind.name in self.bodies)

    def assigned(self) -> dict[str, ast.Assign]:
        """self.<attr> = ... statements of the indicators block, by attribute."""
        out: dict[str, ast.Assign] = {}
        if self.ind is not None:
            for stmt in self.ind.tree.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    attr = _self_attr(stmt.targets[0])
                    if attr is not None:
                        out[attr] = stmt
        return out

    def indicator_of(self, attr: str) -> str | None:
        stmt = self.assigned().get(attr)
        if stmt is not None and isinstance(stmt.value, ast.Call):
            return _call_name(stmt.value)
        return None

    def fresh(self, stem: str) -> str:
        taken = set(self.assigned()) | self.live.reads
        for body in self.bodies.values():
            taken |= {a for n in ast.walk(body.tree) if (a := _self_attr(n)) is not None}
        if stem not in taken:
            return stem
        return next(f"{stem}_{k}" for k in range(2, 1000) if f"{stem}_{k}" not in taken)

    def unassigned(self) -> set[str]:
        """Attributes read but assigned in no block (base-class members, or a parent's own mistakes)."""
        assigned = set(self.assigned())
        for body in (self.dec, self.ind):
            if body is not None:
                assigned |= {a for n in ast.walk(body.tree) if isinstance(n, ast.Attribute)
                             and isinstance(n.ctx, ast.Store) and (a := _self_attr(n)) is not None}
        return self.reads_anywhere() - assigned

    def reads_anywhere(self) -> set[str]:
        out: set[str] = set()
        for body in {id(b): b for b in (*self.bodies.values(), self.dec) if b is not None}.values():
            for node in ast.walk(body.tree):
                attr = _self_attr(node)
                if attr is not None and isinstance(node.ctx, ast.Load):  # type: ignore[attr-defined]
                    out.add(attr)
        return out


def _has_helpers(body: _Body) -> bool:
    return any(helper_call(n) for n in ast.walk(body.tree))


def _constructs(body: _Body) -> bool:
    return any(isinstance(n, ast.Call) and (_call_name(n) or "") in catalogue.BY_NAME for n in ast.walk(body.tree))


class OfflineMutator:
    """Seeded AST mutations; the default mutator when no API key is configured."""

    name = "offline"

    def __init__(self, seed: int = 0, *, max_attempts: int = 4, jitter: float = 0.35,
                 two_op_probability: float = 0.25, operators: tuple[str, ...] | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        unknown = sorted(set(operators or ()) - set(OPERATORS))
        if unknown:
            raise ValueError(f"unknown offline operator(s) {', '.join(unknown)}; "
                             f"expected some of {', '.join(OPERATORS)}")
        self.operators = tuple(operators) if operators else OPERATORS
        self.seed = seed
        self.max_attempts = max_attempts
        self.jitter = jitter
        self.two_op_probability = two_op_probability
        self._had_options = False  # set by propose (synchronous, so safe under asyncio concurrency)
        # Set by the pipeline: new filters' thresholds from their distribution on the train bars (``calibration``).
        self.calibration: ThresholdCalibrator | None = None

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        t0 = time.monotonic()
        last: Candidate | None = None
        notes = ""
        attempt = 0
        for attempt in range(1, self.max_attempts + 1):
            rng = random.Random(self._seed_for(request, attempt))
            bodies, applied = self.propose(request, rng)
            notes = "; ".join(f"{a.block}: {a.description}" for a in applied)
            if not bodies:
                if not self._had_options:
                    last = Candidate({}, error="no mutation operator applies to the allowed blocks",
                                     failure_kind="no_blocks")
                    break
                continue  # the operators drawn found nothing to do, or the result could no longer trade
            last = build_candidate(request, bodies)
            if last.code is not None:
                return MutationResponse(request_id=request.request_id, mutator=self.name, blocks=last.blocks,
                                        code=last.code, attempts=attempt, elapsed=time.monotonic() - t0,
                                        notes=notes)
            logger.debug("offline attempt %d for %s rejected (%s): %s", attempt, request.request_id,
                         last.failure_kind, last.error)
        if last is None:
            last = Candidate({}, error="every proposal was dead, contradictory or could no longer trade",
                             failure_kind="no_blocks")
        return MutationResponse(request_id=request.request_id, mutator=self.name, blocks=last.blocks,
                                error=last.error, failure_kind=last.failure_kind, attempts=attempt,
                                elapsed=time.monotonic() - t0, notes=notes or None)

    def _seed_for(self, request: MutationRequest, attempt: int) -> int:
        key = f"{self.seed}:{request.iteration}:{request.parent_id}:{request.attempt}:{attempt}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")

    # -- proposal -------------------------------------------------------------------------------------------

    def propose(self, request: MutationRequest, rng: random.Random) -> tuple[dict[str, str], list[_Applied]]:
        """New bodies for one or two operator applications; empty bodies with notes = a rejected proposal."""
        parsed: dict[str, _Body] = {}
        fixed: dict[str, _Body] = {}
        for name, body in request.parent_blocks.items():
            try:
                (parsed if name in request.blocks_to_change else fixed)[name] = _Body(name, body)
            except SyntaxError:
                logger.debug("block %s of %s does not parse on its own; skipped", name, request.parent_id)
        prog = _Program(request, parsed, fixed)
        prog.imported = _imported_indicator_names(request.parent_code)
        prog.wasted_numbers = _wasted_numbers(request)
        prog.calibration = self.calibration
        n_ops = 2 if rng.random() < self.two_op_probability else 1
        applied: list[_Applied] = []
        touched: set[str] = set()
        self._had_options = False
        for _ in range(n_ops):
            options = [op for op in self.operators if self._applicable(op, prog)]
            if not options:
                break
            self._had_options = True
            weights = _weights(request)
            op = rng.choices(options, weights=[weights[o] for o in options], k=1)[0]
            result = self._apply(op, prog, rng)
            if result is None:
                continue
            block_names, desc = result
            applied.append(_Applied("+".join(block_names), desc))
            touched.update(block_names)
            for name in block_names:
                prog.bodies[name].refresh()
            prog.analyse()
        if touched and not _still_trades(prog):
            return {}, applied
        return {name: parsed[name].source() for name in touched}, applied

    def _applicable(self, op: str, prog: _Program) -> bool:
        if op == "jitter_number":
            return bool(_live_numbers(prog))
        if op == "swap_compare":
            return bool(_compare_sites(prog))
        if op == "switch_indicator":
            return bool(_switchable(prog))
        if not prog.structural:
            return False
        if op == "replace_regime_filter":
            return bool(_rule_attrs(prog, "regime_"))
        if op == "add_exit_rule":
            return any(_exit_available(prog, kind) for kind in EXIT_RULES)
        if op == "remove_condition":
            return bool(_droppable(prog)) or bool(_removable_rules(prog))
        if op == "replace_signal":
            return bool(_signal_sites(prog))
        gates = [a for a in prog.assigned() if a.startswith(("regime_", "confirm_"))]
        return bool(prog.live.entries) and len(gates) < MAX_GATES  # add_regime_filter, add_confirmation

    def _apply(self, op: str, prog: _Program, rng: random.Random) -> tuple[list[str], str] | None:
        fn: Callable[[_Program, random.Random], tuple[list[str], str] | None] = {
            "jitter_number": self._jitter_number,
            "swap_compare": _swap_compare,
            "switch_indicator": _switch_indicator,
            "add_regime_filter": lambda p, r: _add_gate(p, r, catalogue.REGIME_ROLES, "regime_", "regime filter"),
            "replace_regime_filter": _replace_regime_filter,
            "add_exit_rule": _add_exit_rule,
            "add_confirmation": lambda p, r: _add_gate(p, r, ("signal",), "confirm_", "confirming signal"),
            "remove_condition": _remove_condition,
            "replace_signal": _replace_signal,
        }[op]
        return fn(prog, rng)

    def _jitter_number(self, prog: _Program, rng: random.Random) -> tuple[list[str], str] | None:
        sites = _live_numbers(prog)
        if prog.wasted_numbers:
            # Moving a number that was already moved from this parent for nothing mostly buys nothing again.
            fresh = [(b, n) for b, n in sites
                     if (b.name, next(i for i, m in enumerate(_numbers(b.tree)) if m is n)) not in prog.wasted_numbers]
            sites = fresh or sites
        body, node = rng.choice(sites)
        old = node.value
        assert isinstance(old, int | float)
        parent = body.parents.get(node)
        if isinstance(parent, ast.UnaryOp):
            parent = body.parents.get(parent)
        if isinstance(parent, ast.keyword):
            parent = body.parents.get(parent)
        in_indicator = isinstance(parent, ast.Call) and _call_name(parent) in catalogue.BY_NAME
        # A move too small to shift a crossing or a lookback trades exactly like the parent (a wasted backtest):
        # every jump is at least _MIN_JUMP of the value, and an integer one at least two steps where it can be.
        up = rng.random() < 0.5
        size = math.exp(rng.uniform(math.log1p(_MIN_JUMP), max(math.log1p(_MIN_JUMP), self.jitter)))
        factor = size if up else 1 / size
        if isinstance(old, int):
            floor = 2 if in_indicator else 1
            step = 2 if abs(old) >= 4 else 1
            new: int | float = round(old * factor)
            new = max(new, old + step) if up else min(new, old - step)
            if new < floor:
                new = max(round(old * size), old + step)
        else:
            new = float(f"{old * factor:.4g}")
        node.value = new
        if in_indicator and isinstance(parent, ast.Call):
            _keep_periods_ordered(parent)
        return [body.name], f"{old!r} -> {new!r}"


# ---------------------------------------------------------------------------------------------- site finding


def _live_numbers(prog: _Program) -> list[tuple[_Body, ast.Constant]]:
    """Non-zero numeric literals an edit could make matter (zero has no multiplicative neighbourhood)."""
    out: list[tuple[_Body, ast.Constant]] = []
    live_attrs = prog.live.reads
    for body in prog.bodies.values():
        if body is prog.dec:
            nodes = [n for st in ast.walk(body.tree) if isinstance(st, ast.stmt) and not _bookkeeping(st)
                     for n in ast.iter_child_nodes(st) if not isinstance(n, ast.stmt)
                     for n in ast.walk(n) if prog.live.is_live(n)]
        elif body is prog.ind and prog.dec is not None:
            nodes = [n for stmt in body.tree.body
                     if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                             and (a := _self_attr(stmt.targets[0])) is not None and a not in live_attrs)
                     for n in ast.walk(stmt)]
        else:
            nodes = list(ast.walk(body.tree))
        out += [(body, n) for n in nodes if isinstance(n, ast.Constant) and _is_number(n) and n.value != 0]
    return out


def _bookkeeping(stmt: ast.stmt) -> bool:
    """The cool-down tick, counters and peak tracking of an exit rule (numbers there are not parameters)."""
    if isinstance(stmt, ast.AugAssign):
        return _self_attr(stmt.target) in _MACHINERY
    if isinstance(stmt, ast.Assign):
        return any(_self_attr(t) == "stop_peak" for t in stmt.targets)
    return isinstance(stmt, ast.If) and _is_cooldown_tick(stmt)


def _compare_sites(prog: _Program) -> list[tuple[_Body, ast.Compare, int]]:
    out = []
    for body in prog.bodies.values():
        for c in ast.walk(body.tree):
            rule_state = _attrs(c) & _MACHINERY or {a for a in _attrs(c) if a.startswith("stop_")}
            if isinstance(c, ast.Compare) and rule_state:
                continue  # `hold_bars > n`, `close < stop_peak - k * atr`: flipping them breaks the rule
            if isinstance(c, ast.Compare) and (body is not prog.dec or prog.live.is_live(c)):
                out += [(body, c, i) for i, o in enumerate(c.ops) if isinstance(o, _SWAPS_KEYS)]
    return out


def _switchable(prog: _Program) -> list[tuple[_Body, ast.Call]]:
    out = []
    for body in prog.bodies.values():
        for stmt in body.tree.body:
            attr = _self_attr(stmt.targets[0]) if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
            if body is prog.ind and prog.dec is not None and attr is not None and attr not in prog.live.reads:
                continue
            out += [(body, n) for n in ast.walk(stmt)
                    if isinstance(n, ast.Call) and (_call_name(n) or "") in MA_FAMILY + CHANNEL_FAMILY]
    return out


def _entry_tests(prog: _Program) -> list[ast.If]:
    """The live `if` statements whose body (directly) holds a live entry."""
    assert prog.dec is not None
    out = []
    for entry in prog.live.entries:
        parent = prog.dec.parents.get(entry)
        if isinstance(parent, ast.If) and entry in parent.body and prog.live.is_live(parent):
            out.append(parent)
    return out


def _rule_attrs(prog: _Program, prefix: str) -> list[str]:
    return sorted(a for a in prog.assigned() if a.startswith(prefix) and a in prog.live.reads)


# ---------------------------------------------------------------------------------------------- tuning


# Direction flips only: `>` vs `>=` on continuous indicator values almost never changes a trade (a wasted backtest).
_SWAPS: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.Gt,), ast.Gt: (ast.Lt,), ast.LtE: (ast.GtE,), ast.GtE: (ast.LtE,),
}
_SWAPS_KEYS = tuple(_SWAPS)
_OP_TEXT: dict[type[ast.cmpop], str] = {ast.Lt: "<", ast.Gt: ">", ast.LtE: "<=", ast.GtE: ">="}


def _swap_compare(prog: _Program, rng: random.Random) -> tuple[list[str], str] | None:
    body, node, i = rng.choice(_compare_sites(prog))
    old = type(node.ops[i])
    new = rng.choice(_SWAPS[old])
    node.ops[i] = new()
    return [body.name], f"comparison {_OP_TEXT[old]} -> {_OP_TEXT[new]}"


def _switch_indicator(prog: _Program, rng: random.Random) -> tuple[list[str], str] | None:
    body, call = rng.choice(_switchable(prog))
    old = _call_name(call)
    assert old is not None
    family = MA_FAMILY if old in MA_FAMILY else CHANNEL_FAMILY
    new = rng.choice([f for f in family if f != old])
    if isinstance(call.func, ast.Name):
        call.func.id = new
    elif isinstance(call.func, ast.Attribute):
        call.func.attr = new
    if family is CHANNEL_FAMILY:
        # Donchian takes (period); the others (period, width). Keep the period, add or drop the width.
        call.keywords = [k for k in call.keywords if k.arg not in ("k", "k_multiplier")]
        if new == "DonchianChannel":
            del call.args[1:]
        elif len(call.args) < 2:
            call.args = [*call.args[:1], ast.Constant(_CHANNEL_WIDTH_DEFAULT[new])]
    if isinstance(call.func, ast.Name):
        _ensure_import(body, new, prog.imported)
    return [body.name], f"{old} -> {new}"


# ---------------------------------------------------------------------------------------------- structure


def _draw(param: catalogue.Param, rng: random.Random, *, lookback: bool = False) -> int | float:
    if param.integer:
        high = int(param.high)
        if lookback:
            # A new indicator that is still warming up for most of the screen period blocks every entry there:
            # each such child is the same flat curve (a wasted backtest). Longer lookbacks stay reachable by jitter.
            high = max(int(param.low), min(high, MAX_NEW_LOOKBACK))
        return rng.randint(int(param.low), high)
    return round(rng.uniform(param.low, param.high), 2)


def _new_indicator(prog: _Program, rng: random.Random, ind: catalogue.Indicator, stem: str) -> str:
    """Construct ``ind`` with drawn parameters as a fresh attribute; returns the attribute name."""
    assert prog.ind is not None
    attr = prog.fresh(stem)
    args = [_draw(p, rng, lookback=True) for p in ind.params]
    start = _ORDERED_PERIODS.get(ind.name)
    if start is not None and len(args) >= start + 2 and args[start] >= args[start + 1]:
        args[start], args[start + 1] = args[start + 1], args[start] + 1
    prog.ind.tree.body.append(*_stmts(f"self.{attr} = {ind.name}({', '.join(repr(a) for a in args)})"))
    _ensure_import(prog.ind, ind.name, prog.imported)
    return attr


def _condition_expr(cond: catalogue.Condition, attr: str, rng: random.Random,
                    prog: _Program | None = None) -> ast.expr:
    threshold = "" if cond.threshold is None else repr(_threshold(cond, attr, rng, prog))
    return _expr(cond.text.format(a=attr, close=_CLOSE, t=threshold))


def _threshold(cond: catalogue.Condition, attr: str, rng: random.Random, prog: _Program | None) -> int | float:
    """From the indicator's distribution on the train bars when a calibrator is set (``calibration``), so the
    new condition lets a drawn share of the bars through; else from the catalogue's range."""
    assert cond.threshold is not None
    drawn = _draw(cond.threshold, rng)
    share = rng.uniform(*PASS_SHARE)  # drawn either way: the stream does not depend on having a calibrator
    if cond.role == "signal":
        share *= 0.6  # a signal (an oversold reading, a momentum level) is rarer than a regime
    if prog is None or prog.calibration is None:
        return drawn
    stmt = prog.assigned().get(attr)
    call = stmt.value if stmt is not None else None
    if not (isinstance(call, ast.Call) and all(_is_number(a) for a in call.args) and not call.keywords):
        return drawn
    args = [a.value for a in call.args]  # type: ignore[attr-defined]
    calibrated = prog.calibration.threshold(_call_name(call) or "", args, cond.text, share)
    return drawn if calibrated is None else calibrated


def _gate_entries(prog: _Program, condition: ast.expr) -> int:
    """AND ``condition`` into the test of every live entry (wrapping an entry that has no test of its own)."""
    assert prog.dec is not None
    gated = 0
    for entry in list(prog.live.entries):
        parent = prog.dec.parents.get(entry)
        cond = copy.deepcopy(condition)
        if isinstance(parent, ast.If) and entry in parent.body and len(parent.body) == 1:
            if isinstance(parent.test, ast.BoolOp) and isinstance(parent.test.op, ast.And):
                parent.test.values.append(cond)
            else:
                parent.test = ast.BoolOp(op=ast.And(), values=[parent.test, cond])
        else:
            container = _container(prog.dec, entry)
            if container is None:
                continue
            container[container.index(entry)] = ast.If(test=cond, body=[entry], orelse=[])
        gated += 1
    prog.dec.refresh()
    return gated


def _container(body: _Body, stmt: ast.stmt) -> list[ast.stmt] | None:
    parent = body.parents.get(stmt, body.tree)
    for _, value in ast.iter_fields(parent):
        if isinstance(value, list) and any(v is stmt for v in value):
            return value
    return None


def _add_gate(prog: _Program, rng: random.Random, roles: tuple[str, ...], stem: str,
              what: str) -> tuple[list[str], str] | None:
    assert prog.dec is not None and prog.ind is not None
    used = {prog.indicator_of(a) for a in prog.assigned()}
    style = _entry_style(prog)
    # A confirmation must be able to agree with the entry: a trend entry confirmed by an oversold reading (or a
    # dip entry by a breakout) almost never fires, and every such child is the same flat, wasted backtest.
    choices = [(i, c) for i, c in catalogue.conditions(roles) if i.name not in used
               and (c.role != "signal" or c.style == style)]
    if not choices:
        return None
    ind, cond = rng.choice(choices)
    attr = _new_indicator(prog, rng, ind, stem + _abbrev(ind.name))
    condition = _condition_expr(cond, attr, rng, prog)
    if not _gate_entries(prog, condition):
        return None
    return [prog.ind.name, prog.dec.name], f"added {what} `{ast.unparse(condition)}` ({cond.role})"


def _replace_regime_filter(prog: _Program, rng: random.Random) -> tuple[list[str], str] | None:
    assert prog.dec is not None and prog.ind is not None
    attr = rng.choice(_rule_attrs(prog, "regime_"))
    old = prog.indicator_of(attr)
    _strip_attr(prog, attr)
    prog.analyse()
    added = _add_gate(prog, rng, catalogue.REGIME_ROLES, "regime_", "regime filter")
    if added is None:
        return None
    return added[0], f"replaced regime filter {old} with: {added[1].removeprefix('added regime filter ')}"


def _exit_available(prog: _Program, kind: str) -> bool:
    stems = {"atr_trailing_stop": "stop_peak", "channel_stop": "stop_channel", "time_stop": "hold_bars"}
    return bool(prog.live.entries) and stems[kind] not in prog.assigned()


def _add_exit_rule(prog: _Program, rng: random.Random) -> tuple[list[str], str] | None:
    """A stop with a cool-down: flat for ``wait`` bars after it fires, so the entry cannot re-buy at once."""
    assert prog.dec is not None and prog.ind is not None
    kind = rng.choice([k for k in EXIT_RULES if _exit_available(prog, k)])
    wait = rng.randint(3, 15)
    # `return` after the stop: the rest of the logic must not send a second closing order in the same bar (the
    # first is not filled yet, so is_long still holds and a second go_flat would sell short on a cash account).
    fire = f"self.go_flat()\n        self.{_COOLDOWN} = {wait}\n        return"
    if kind == "atr_trailing_stop":
        atr = _new_indicator(prog, rng, catalogue.BY_NAME["AverageTrueRange"], "stop_atr")
        k = round(rng.uniform(1.0, 2.5), 1)  # wider stops rarely fire within a holding period
        prog.ind.tree.body += _stmts("self.stop_peak = 0.0")
        rule = (f"if self.is_long:\n    self.stop_peak = max(self.stop_peak, {_CLOSE})\n"
                f"    if {_CLOSE} < self.stop_peak - {k} * self.{atr}.value:\n        {fire}\n"
                "else:\n    self.stop_peak = 0.0")
        desc = f"ATR trailing stop ({k} x ATR from the peak close)"
    elif kind == "channel_stop":
        ch = _new_indicator(prog, rng, catalogue.Indicator("DonchianChannel", "", "", "channel",
                                                           (catalogue.Param(5, 20),)), "stop_channel")
        rule = (f"if self.is_long and bar.low.as_double() <= self.{ch}.lower:\n"
                f"    {fire.replace(chr(10) + '        ', chr(10) + '    ')}")
        desc = "channel stop (a new low of the Donchian channel)"
    else:
        bars = rng.randint(5, 30)
        prog.ind.tree.body += _stmts("self.hold_bars = 0")
        rule = (f"if self.is_long:\n    self.hold_bars += 1\n    if self.hold_bars > {bars}:\n        {fire}\n"
                "else:\n    self.hold_bars = 0")
        desc = f"time stop (flat after {bars} bars in the market)"
    if _COOLDOWN not in prog.assigned():
        prog.ind.tree.body += _stmts(f"self.{_COOLDOWN} = 0")
        prog.dec.tree.body[:0] = _stmts(f"if self.{_COOLDOWN} > 0:\n    self.{_COOLDOWN} -= 1")
        _gate_entries(prog, _expr(f"self.{_COOLDOWN} == 0"))
    insert_at = 1 if _is_cooldown_tick(prog.dec.tree.body[0]) else 0
    prog.dec.tree.body[insert_at:insert_at] = _stmts(rule)
    prog.dec.refresh()
    return [prog.ind.name, prog.dec.name], f"added exit rule: {desc}, {wait}-bar cool-down"


def _is_cooldown_tick(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.If) and f"self.{_COOLDOWN} -=" in ast.unparse(stmt)


def _droppable(prog: _Program) -> list[tuple[ast.BoolOp, int]]:
    """Live conjuncts/disjuncts of live tests that can go (never a cool-down gate: it belongs to its stop)."""
    assert prog.dec is not None
    out = []
    stops = _MACHINERY | {a for a in prog.assigned() if a.startswith("stop_")}
    for node in ast.walk(prog.dec.tree):
        if isinstance(node, ast.BoolOp) and prog.live.is_live(node) and not _attrs(node) & stops:
            out += [(node, i) for i, v in enumerate(node.values)
                    if prog.live.is_live(v) and _COOLDOWN not in ast.unparse(v)]
    return out


def _removable_rules(prog: _Program) -> list[str]:
    """Filters and exit rules the mutator added earlier (or the seed has) that can be taken out whole."""
    rules = _rule_attrs(prog, "regime_") + _rule_attrs(prog, "confirm_")
    rules += [a for a in ("stop_peak", "stop_channel", "hold_bars") if a in prog.assigned()]
    return rules


def _remove_condition(prog: _Program, rng: random.Random) -> tuple[list[str], str] | None:
    assert prog.dec is not None and prog.ind is not None
    rules = _removable_rules(prog)
    sites = _droppable(prog)
    if rules and (not sites or rng.random() < 0.5):
        attr = rng.choice(rules)
        what = prog.indicator_of(attr) or attr
        _strip_attr(prog, attr)
        return [prog.ind.name, prog.dec.name], f"removed rule {attr} ({what})"
    node, idx = rng.choice(sites)
    dropped = node.values.pop(idx)
    if len(node.values) == 1:
        _replace(prog.dec, node, node.values[0])
    prog.dec.refresh()
    _prune_unread(prog)
    return [prog.ind.name, prog.dec.name], f"dropped condition `{ast.unparse(dropped)}`"


def _strip_attr(prog: _Program, attr: str) -> None:
    """Take out every statement and condition that reads ``self.<attr>``, then what nothing reads any more."""
    assert prog.dec is not None
    reads = re.compile(rf"\bself\.{re.escape(attr)}\b")
    dec = prog.dec

    def keep_stmt(stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.If) and reads.search(ast.unparse(stmt.test)):
            calls = {helper_call(s) for s in ast.walk(stmt)}
            if "go_flat" in calls and "go_long" not in calls:
                return False  # an exit rule: the whole `if` goes
        return not (isinstance(stmt, ast.Assign | ast.AugAssign | ast.Expr) and reads.search(ast.unparse(stmt)))

    for node in list(ast.walk(dec.tree)):
        for field in ("body", "orelse"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                kept = [s for s in stmts if keep_stmt(s)]
                setattr(node, field, kept or ([] if field == "orelse" else [ast.Pass()]))
        if isinstance(node, ast.BoolOp):
            node.values = [v for v in node.values if not reads.search(ast.unparse(v))] or node.values
    dec.refresh()
    for node in list(ast.walk(dec.tree)):  # collapse one-operand and/or, unwrap `if <gate>: go_long()`
        if isinstance(node, ast.BoolOp) and len(node.values) == 1:
            _replace(dec, node, node.values[0])
        elif isinstance(node, ast.If) and reads.search(ast.unparse(node.test)) and not node.orelse:
            container = _container(dec, node)
            if container is not None:
                i = container.index(node)
                container[i:i + 1] = node.body
    _tidy(dec)
    _prune_unread(prog, also=attr)
    sets_cooldown = any(isinstance(n, ast.Assign) and ast.unparse(n).startswith(f"self.{_COOLDOWN} = ")
                        and ast.unparse(n) != f"self.{_COOLDOWN} = 0" for n in ast.walk(dec.tree))
    if attr != _COOLDOWN and _COOLDOWN in prog.assigned() and not sets_cooldown:
        _strip_attr(prog, _COOLDOWN)  # no stop left to start a cool-down: its tick and gates go too


def _tidy(body: _Body) -> None:
    """Remove `pass` beside other statements and `if`s left with nothing to do."""
    for _ in range(3):
        changed = False
        for node in list(ast.walk(body.tree)):
            for field in ("body", "orelse"):
                stmts = getattr(node, field, None)
                if not (isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt)):
                    continue
                kept = [st for st in stmts if not isinstance(st, ast.Pass)
                        and not (isinstance(st, ast.If) and all(isinstance(b, ast.Pass) for b in st.body)
                                 and not st.orelse)]
                if len(kept) != len(stmts):
                    changed = True
                    setattr(node, field, kept or ([] if field == "orelse" else [ast.Pass()]))
        if not changed:
            break
    body.refresh()


def _prune_unread(prog: _Program, also: str | None = None) -> None:
    """Drop indicator and state assignments nothing reads (an unread indicator still delays the first decision)."""
    if prog.ind is None:
        return
    for _ in range(3):  # state that only fed a removed rule (e.g. stop_peak) goes in a later round
        read = prog.reads_anywhere()
        body = prog.ind.tree.body
        kept = [s for s in body if not (isinstance(s, ast.Assign) and len(s.targets) == 1
                                        and (a := _self_attr(s.targets[0])) is not None
                                        and (a not in read or a == also))]
        if len(kept) == len(body):
            break
        prog.ind.tree.body = kept or [ast.Pass()]
        also = None
    _drop_unused_imports(prog.ind)
    prog.ind.refresh()


def _signal_sites(prog: _Program) -> list[tuple[ast.If, ast.expr]]:
    """(entry test, operand) pairs where the operand reads an indicator: the entry's signal, replaceable."""
    out = []
    indicators = {a for a in prog.assigned() if prog.indicator_of(a) in catalogue.BY_NAME}
    for test_if in _entry_tests(prog):
        test = test_if.test
        operands = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) else [test]
        for operand in operands:
            attrs = {a for n in ast.walk(operand) if (a := _self_attr(n)) is not None}
            if attrs & indicators and _COOLDOWN not in attrs:
                out.append((test_if, operand))
    return out


def _replace_signal(prog: _Program, rng: random.Random) -> tuple[list[str], str] | None:
    assert prog.dec is not None and prog.ind is not None
    test_if, operand = rng.choice(_signal_sites(prog))
    old_families = {catalogue.BY_NAME[n].family for a in _attrs(operand)
                    if (n := prog.indicator_of(a)) in catalogue.BY_NAME}
    choices = [(i, c) for i, c in catalogue.conditions("signal") if i.family not in old_families]
    if not choices:
        return None
    ind, cond = rng.choice(choices)
    attr = _new_indicator(prog, rng, ind, "signal_" + _abbrev(ind.name))
    new = _condition_expr(cond, attr, rng, prog)
    old_text = ast.unparse(operand)
    if operand is test_if.test:
        test_if.test = new
    else:
        _replace(prog.dec, operand, new)
    prog.dec.refresh()
    _prune_unread(prog)
    return [prog.ind.name, prog.dec.name], f"replaced signal `{old_text}` with `{ast.unparse(new)}` ({ind.family})"


def _entry_style(prog: _Program) -> str:
    """"reversal" when an entry buys weakness (price below a band or average, an oscillator below a level),
    else "trend"."""
    for test_if in _entry_tests(prog):
        for node in ast.walk(test_if.test):
            if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
                continue
            text = ast.unparse(node)
            below = isinstance(node.ops[0], ast.Lt | ast.LtE)
            if below and ("close" in ast.unparse(node.left) or _const(node.comparators[0]) is not None):
                return "reversal" if _COOLDOWN not in text else "trend"
    return "trend"


def _const(node: ast.AST) -> float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _const(node.operand)
        return None if inner is None else -inner
    return float(node.value) if _is_number(node) else None  # type: ignore[attr-defined]


def _attrs(node: ast.AST) -> set[str]:
    return {a for n in ast.walk(node) if (a := _self_attr(n)) is not None}


def _abbrev(name: str) -> str:
    return "".join(c for c in name if c.isupper()).lower() or name.lower()


def _still_trades(prog: _Program) -> bool:
    """Live entry and exit, no contradictory condition, every attribute read is assigned somewhere."""
    if prog.dec is None:
        return True
    prog.analyse()
    if not prog.live.entries or not prog.live.exits:
        return False
    if contradiction(prog.dec.tree) is not None:
        return False
    return not (prog.unassigned() - prog.unassigned_before - _BASE_MEMBERS)  # nothing a removal took away


# ---------------------------------------------------------------------------------------------- helpers


def _ensure_import(body: _Body, name: str, imported: set[str]) -> None:
    if name not in imported and not _imports_in_body(body, name):
        body.tree.body.insert(0, ast.ImportFrom(module=_INDICATOR_MODULE, names=[ast.alias(name=name)], level=0))


def _drop_unused_imports(body: _Body) -> None:
    used = {n.id for n in ast.walk(body.tree) if isinstance(n, ast.Name)}
    kept: list[ast.stmt] = []
    for stmt in body.tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == _INDICATOR_MODULE:
            stmt.names = [a for a in stmt.names if (a.asname or a.name) in used]
            if not stmt.names:
                continue
        kept.append(stmt)
    body.tree.body = kept or [ast.Pass()]


def _imports_in_body(body: _Body, name: str) -> bool:
    return any(isinstance(n, ast.ImportFrom) and any((a.asname or a.name) == name for a in n.names)
               for n in body.tree.body)


def _imported_indicator_names(code: str) -> set[str]:
    try:
        tree = parse_source(code)
    except SyntaxError:
        return set()
    names: set[str] = set()
    # Module level only: an import inside a method serves that method alone (and a removal may take it away).
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(_INDICATOR_MODULE):
            names.update(a.asname or a.name for a in node.names)
    return names


def _keep_periods_ordered(call: ast.Call) -> None:
    start = _ORDERED_PERIODS.get(_call_name(call) or "")
    if start is None or len(call.args) < start + 2:
        return
    a, b = call.args[start], call.args[start + 1]
    if not (isinstance(a, ast.Constant) and isinstance(b, ast.Constant) and _is_number(a) and _is_number(b)):
        return
    lo, hi = a.value, b.value
    assert isinstance(lo, int | float) and isinstance(hi, int | float)
    if lo >= hi:
        lo, hi = min(lo, hi), max(lo, hi)
        a.value, b.value = lo, (hi + 1 if lo == hi else hi)


def _replace(body: _Body, old: ast.AST, new: ast.AST) -> None:
    parent = body.parents.get(old)
    if parent is None:
        return
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
