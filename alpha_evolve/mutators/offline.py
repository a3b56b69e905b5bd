"""Deterministic mutations without an LLM, on the AST of the block bodies.

Why it exists: a run must work with no API key (CI, demos, air-gapped machines), and the outer loop needs a
cheap, reproducible baseline to compare LLM mutators against. The operators are small, local edits that keep
the program well-formed most of the time — jitter a period or threshold, swap a comparison, drop or add a
condition, switch a native indicator for one with a compatible constructor — and every candidate is validated
exactly like an LLM's. The random stream is derived from (seed, iteration, parent_id, attempt) only — not from the
experiment's name — so the same request always gets the same mutation, whatever the order or concurrency of the
calls, and two runs of one config (e.g. a self-evolution baseline and its repeat) evolve the same programs.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from alpha_evolve import prompts
from alpha_evolve.mutators.base import Candidate, MutationRequest, MutationResponse, build_candidate
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

OPERATORS: tuple[str, ...] = ("jitter_number", "swap_compare", "drop_condition", "add_condition",
                              "switch_indicator")
_WEIGHTS: dict[str, float] = {"jitter_number": 4.0, "swap_compare": 1.5, "drop_condition": 1.0,
                              "add_condition": 1.0, "switch_indicator": 1.5}


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


def _numbers(body: _Body) -> list[ast.Constant]:
    """Non-zero numeric literals (zero has no multiplicative neighbourhood)."""
    return [n for n in ast.walk(body.tree) if isinstance(n, ast.Constant) and _is_number(n) and n.value != 0]


def _calls(body: _Body, names: tuple[str, ...]) -> list[ast.Call]:
    return [n for n in ast.walk(body.tree) if isinstance(n, ast.Call) and (_call_name(n) or "") in names]


def _compare_sites(body: _Body) -> list[tuple[ast.Compare, int]]:
    return [(c, i) for c in ast.walk(body.tree) if isinstance(c, ast.Compare)
            for i, o in enumerate(c.ops) if isinstance(o, _SWAPS_KEYS)]


class _Body:
    """One parsed block body, with the parent links the operators need."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.tree = parse_source(source)
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(self.tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent

    def nodes(self, kind: type | tuple[type, ...]) -> list[ast.AST]:
        return [n for n in ast.walk(self.tree) if isinstance(n, kind)]

    def source(self) -> str:
        return ast.unparse(ast.fix_missing_locations(self.tree)) + "\n"


class OfflineMutator:
    """Seeded AST mutations; the default mutator when no API key is configured."""

    name = "offline"

    def __init__(self, seed: int = 0, *, max_attempts: int = 3, jitter: float = 0.35,
                 two_op_probability: float = 0.3) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.seed = seed
        self.max_attempts = max_attempts
        self.jitter = jitter
        self.two_op_probability = two_op_probability

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        t0 = time.monotonic()
        last: Candidate | None = None
        notes = ""
        for attempt in range(1, self.max_attempts + 1):
            rng = random.Random(self._seed_for(request, attempt))
            bodies, applied = self.propose(request, rng)
            notes = "; ".join(f"{a.block}: {a.description}" for a in applied)
            if not bodies:
                last = Candidate({}, error="no mutation operator applies to the allowed blocks",
                                 failure_kind="no_blocks")
                break
            last = build_candidate(request, bodies)
            if last.code is not None:
                return MutationResponse(request_id=request.request_id, mutator=self.name, blocks=last.blocks,
                                        code=last.code, attempts=attempt, elapsed=time.monotonic() - t0,
                                        notes=notes)
            logger.debug("offline attempt %d for %s rejected (%s): %s", attempt, request.request_id,
                         last.failure_kind, last.error)
        assert last is not None
        return MutationResponse(request_id=request.request_id, mutator=self.name, blocks=last.blocks,
                                error=last.error, failure_kind=last.failure_kind, attempts=attempt,
                                elapsed=time.monotonic() - t0, notes=notes or None)

    def _seed_for(self, request: MutationRequest, attempt: int) -> int:
        key = f"{self.seed}:{request.iteration}:{request.parent_id}:{request.attempt}:{attempt}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")

    # -- proposal -------------------------------------------------------------------------------------------

    def propose(self, request: MutationRequest, rng: random.Random) -> tuple[dict[str, str], list[_Applied]]:
        """New bodies for one or two operator applications (unvalidated)."""
        parsed: dict[str, _Body] = {}
        for name in request.blocks_to_change:
            try:
                parsed[name] = _Body(name, request.parent_blocks[name])
            except SyntaxError:
                logger.debug("block %s of %s does not parse on its own; skipped", name, request.parent_id)
        imported = _imported_indicator_names(request.parent_code)
        n_ops = 2 if rng.random() < self.two_op_probability else 1
        applied: list[_Applied] = []
        touched: set[str] = set()
        for _ in range(n_ops):
            options = [(op, body) for body in parsed.values() for op in OPERATORS
                       if self._applicable(op, body)]
            if not options:
                break
            weights = [_WEIGHTS[op] for op, _ in options]
            op, body = rng.choices(options, weights=weights, k=1)[0]
            desc = self._apply(op, body, rng, imported)
            if desc:
                applied.append(_Applied(body.name, desc))
                touched.add(body.name)
                body.__init__(body.name, body.source())  # type: ignore[misc]  # refresh parent links
        return {name: parsed[name].source() for name in touched}, applied

    def _applicable(self, op: str, body: _Body) -> bool:
        if op == "jitter_number":
            return bool(_numbers(body))
        if op == "swap_compare":
            return bool(_compare_sites(body))
        if op == "drop_condition":
            return bool(body.nodes(ast.BoolOp))
        if op == "add_condition":
            return bool(body.nodes(ast.If)) and bool(_donors(body))
        if op == "switch_indicator":
            return bool(_calls(body, MA_FAMILY + CHANNEL_FAMILY))
        return False

    def _apply(self, op: str, body: _Body, rng: random.Random, imported: set[str]) -> str:
        fn: Callable[[_Body, random.Random], str] = {
            "jitter_number": self._jitter_number,
            "swap_compare": _swap_compare,
            "drop_condition": _drop_condition,
            "add_condition": _add_condition,
            "switch_indicator": lambda b, r: _switch_indicator(b, r, imported),
        }[op]
        return fn(body, rng)

    def _jitter_number(self, body: _Body, rng: random.Random) -> str:
        node = rng.choice(_numbers(body))
        old = node.value
        assert isinstance(old, int | float)
        parent = body.parents.get(node)
        if isinstance(parent, ast.UnaryOp):
            parent = body.parents.get(parent)
        if isinstance(parent, ast.keyword):
            parent = body.parents.get(parent)
        in_indicator = isinstance(parent, ast.Call) and _call_name(parent) in prompts.INDICATORS
        factor = math.exp(rng.uniform(-self.jitter, self.jitter))
        if isinstance(old, int):
            floor = 2 if in_indicator else 1
            new: int | float = max(floor, round(old * factor))
            if new == old:
                new = old + 1 if rng.random() < 0.5 or old - 1 < floor else old - 1
        else:
            new = float(f"{old * factor:.4g}")
            if new == old:
                new = float(f"{old * (1.1 if rng.random() < 0.5 else 0.9):.4g}")
        node.value = new
        if in_indicator and isinstance(parent, ast.Call):
            _keep_periods_ordered(parent)
        return f"{old!r} -> {new!r}"


# ---------------------------------------------------------------------------------------------- the operators

_SWAPS: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.Gt, ast.LtE), ast.Gt: (ast.Lt, ast.GtE),
    ast.LtE: (ast.GtE, ast.Lt), ast.GtE: (ast.LtE, ast.Gt),
}
_SWAPS_KEYS = tuple(_SWAPS)
_OP_TEXT: dict[type[ast.cmpop], str] = {ast.Lt: "<", ast.Gt: ">", ast.LtE: "<=", ast.GtE: ">="}


def _swap_compare(body: _Body, rng: random.Random) -> str:
    node, i = rng.choice(_compare_sites(body))
    old = type(node.ops[i])
    new = rng.choice(_SWAPS[old])
    node.ops[i] = new()
    return f"comparison {_OP_TEXT[old]} -> {_OP_TEXT[new]}"


def _drop_condition(body: _Body, rng: random.Random) -> str:
    node = rng.choice(body.nodes(ast.BoolOp))
    assert isinstance(node, ast.BoolOp)
    idx = rng.randrange(len(node.values))
    dropped = node.values.pop(idx)
    if len(node.values) == 1:
        _replace(body, node, node.values[0])
    return f"dropped condition `{ast.unparse(dropped)}`"


def _donors(body: _Body) -> list[ast.AST]:
    return [n for n in body.nodes(ast.Compare)] + [
        n for n in body.nodes(ast.Attribute)
        if isinstance(n, ast.Attribute) and n.attr in ("is_long", "is_short", "is_flat")
        and isinstance(n.value, ast.Name) and n.value.id == "self"
    ]


def _add_condition(body: _Body, rng: random.Random) -> str:
    target = rng.choice(body.nodes(ast.If))
    assert isinstance(target, ast.If)
    donors = [d for d in _donors(body) if d is not target.test]
    donor = copy.deepcopy(rng.choice(donors)) if donors else copy.deepcopy(target.test)
    if isinstance(donor, ast.Compare) and rng.random() < 0.5:
        swappable = [i for i, o in enumerate(donor.ops) if isinstance(o, _SWAPS_KEYS)]
        if swappable:
            i = rng.choice(swappable)
            donor.ops[i] = rng.choice(_SWAPS[type(donor.ops[i])])()
    elif isinstance(donor, ast.Attribute) and rng.random() < 0.5:
        donor = ast.UnaryOp(op=ast.Not(), operand=donor)
    op: ast.boolop = ast.And() if rng.random() < 0.75 else ast.Or()
    if isinstance(target.test, ast.BoolOp) and type(target.test.op) is type(op):
        target.test.values.append(donor)  # type: ignore[arg-type]
    else:
        target.test = ast.BoolOp(op=op, values=[target.test, donor])  # type: ignore[list-item]
    return f"added condition `{ast.unparse(donor)}` ({type(op).__name__.lower()})"


def _switch_indicator(body: _Body, rng: random.Random, imported: set[str]) -> str:
    call = rng.choice(_calls(body, MA_FAMILY + CHANNEL_FAMILY))
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
    if isinstance(call.func, ast.Name) and new not in imported and not _imports_in_body(body, new):
        body.tree.body.insert(0, ast.ImportFrom(module=_INDICATOR_MODULE, names=[ast.alias(name=new)], level=0))
    return f"{old} -> {new}"


def _imports_in_body(body: _Body, name: str) -> bool:
    return any(isinstance(n, ast.ImportFrom) and any((a.asname or a.name) == name for a in n.names)
               for n in body.tree.body)


def _imported_indicator_names(code: str) -> set[str]:
    try:
        tree = parse_source(code)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
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
