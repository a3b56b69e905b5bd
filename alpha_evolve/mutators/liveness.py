"""Which parts of a strategy's decision logic can run under the run's configuration, and which cannot.

Why: on a cash (long-only) account ``self.allow_short`` is False, ``go_short()`` is a no-op and a short position
never exists, so ``elif close > upper and self.allow_short: self.go_short()`` and ``(self.is_short and ...)`` are
dead. An edit there changes the code but never a trade — a backtest spent on nothing. The offline mutator edits
only live nodes, gates only live entries, and keeps a candidate only if it can still enter and leave a position
and has no self-contradictory condition (``a < b and a > b``).

The analysis is a small partial evaluator over the facts the configuration fixes; everything it cannot decide is
live (a sound over-approximation: it never calls reachable code dead).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Liveness:
    """Live statements and expressions of a decision body, and the ``self`` attributes live code reads."""

    live: set[int] = field(default_factory=set)  # id() of live AST nodes
    entries: list[ast.Expr] = field(default_factory=list)  # live `self.go_long()` statements
    exits: list[ast.Expr] = field(default_factory=list)  # live `self.go_flat()` (and go_short when allowed)
    reads: set[str] = field(default_factory=set)  # self.<name> read by live code

    def is_live(self, node: ast.AST) -> bool:
        return id(node) in self.live


def _self_attr(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def helper_call(node: ast.AST) -> str | None:
    """``go_long`` / ``go_short`` / ``go_flat`` for a statement ``self.go_xxx()``, else None."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and not node.value.args:
        name = _self_attr(node.value.func)
        if name in ("go_long", "go_short", "go_flat"):
            return name
    return None


def truth(node: ast.AST, allow_short: bool) -> bool | None:
    """The value of a condition if the configuration fixes it, else None."""
    attr = _self_attr(node)
    if attr == "allow_short":
        return allow_short
    if attr == "is_short" and not allow_short:
        return False
    if isinstance(node, ast.Constant):
        return bool(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = truth(node.operand, allow_short)
        return None if inner is None else not inner
    if isinstance(node, ast.BoolOp):
        values = [truth(v, allow_short) for v in node.values]
        decisive = isinstance(node.op, ast.Or)  # True decides an `or`, False decides an `and`
        if decisive in values:
            return decisive
        if all(v is (not decisive) for v in values):
            return not decisive
    return None


def analyse(body: Iterable[ast.stmt], allow_short: bool) -> Liveness:
    out = Liveness()
    _statements(list(body), True, allow_short, out)
    return out


def _statements(stmts: list[ast.stmt], live: bool, allow_short: bool, out: Liveness) -> None:
    for stmt in stmts:
        if isinstance(stmt, ast.If):
            t = truth(stmt.test, allow_short) if live else False
            if live:
                out.live.add(id(stmt))
                _expression(stmt.test, allow_short, out)
            _statements(stmt.body, live and t is not False, allow_short, out)
            _statements(stmt.orelse, live and t is not True, allow_short, out)
            continue
        call = helper_call(stmt)
        if not live or (call == "go_short" and not allow_short):
            continue  # unreachable, or a no-op whatever surrounds it
        out.live.add(id(stmt))
        if call == "go_long":
            out.entries.append(stmt)  # type: ignore[arg-type]
        elif call is not None:
            out.exits.append(stmt)  # type: ignore[arg-type]
        for _, value in ast.iter_fields(stmt):
            if isinstance(value, list):
                nested = [v for v in value if isinstance(v, ast.stmt)]
                if nested:
                    _statements(nested, True, allow_short, out)
                else:
                    for v in value:
                        if isinstance(v, ast.AST):
                            _expression(v, allow_short, out)
            elif isinstance(value, ast.AST):
                _expression(value, allow_short, out)


def _expression(node: ast.AST, allow_short: bool, out: Liveness) -> None:
    """Mark ``node`` and the sub-expressions an edit could make matter.

    An ``and``/``or`` whose value the configuration fixes has no live operand (nothing in it can change the
    outcome), and an operand that is itself a fixed fact is not worth editing either.
    """
    out.live.add(id(node))
    attr = _self_attr(node)
    if attr is not None:
        out.reads.add(attr)
    if isinstance(node, ast.BoolOp):
        if truth(node, allow_short) is not None:
            return
        for value in node.values:
            if truth(value, allow_short) is None:
                _expression(value, allow_short, out)
        return
    for child in ast.iter_child_nodes(node):
        _expression(child, allow_short, out)


# --------------------------------------------------------------------------------------- contradictions

_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE}


def _bound(cmp: ast.Compare) -> tuple[str, str, str | float] | None:
    """(left, "<"|">", right) for a one-operator ordering comparison, oriented so a constant sits on the right."""
    if len(cmp.ops) != 1 or type(cmp.ops[0]) not in _FLIP:
        return None
    left, op, right = cmp.left, type(cmp.ops[0]), cmp.comparators[0]
    if _const(left) is not None and _const(right) is None:
        left, right, op = right, left, _FLIP[op]
    sign = "<" if op in (ast.Lt, ast.LtE) else ">"
    c = _const(right)
    return ast.dump(left), sign, (c if c is not None else ast.dump(right))


def _const(node: ast.AST) -> float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _const(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    return None


def contradiction(tree: ast.AST) -> str | None:
    """The first ``and`` whose conjuncts cannot all hold (``a < b and a > b``, ``x > 5 and x < 3``, ``p and
    not p``), as source text, else None."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And)):
            continue
        bounds = [b for v in node.values if isinstance(v, ast.Compare) and (b := _bound(v)) is not None]
        seen = {ast.dump(v) for v in node.values}
        for v in node.values:
            if isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.Not) and ast.dump(v.operand) in seen:
                return ast.unparse(node)
        for i, (a1, s1, r1) in enumerate(bounds):
            for a2, s2, r2 in bounds[i + 1:]:
                if s1 == s2:
                    continue
                if a1 == a2 and r1 == r2:
                    return ast.unparse(node)
                if a1 == r2 and r1 == a2 and isinstance(r1, str):
                    continue  # a < b and b > a: the same statement twice
                if a1 == a2 and isinstance(r1, float) and isinstance(r2, float):
                    low, high = (r1, r2) if s1 == ">" else (r2, r1)
                    if high <= low:
                        return ast.unparse(node)
    return None
