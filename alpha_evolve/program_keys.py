"""Identity of a program at three depths: its code, its logic and its behaviour.

Why three keys:

- ``code_key``: two candidates whose code differs only in comments, formatting, docstrings or the spelling of a
  literal (``1.50`` vs ``1.5``) are the same program; the second one reuses the stored result (no backtest).
- ``logic_key``: the code with every numeric literal masked, moving-average classes folded into one family and
  ``>=``/``<=`` folded into ``>``/``<``. A mutation that leaves it unchanged only tuned numbers, swapped one
  moving average for another or moved a boundary; one that changes it changed the logic (the study's
  "logic-changing share").
- ``behavior_key``: a digest of what the program *did* on the split it was scored on — every metric, per
  instrument, and the equity curve. A deterministic engine gives identical trade lists identical curves, and
  two different trade lists agreeing on every metric and every equity sample do not occur in practice, so equal
  keys mean "this change did nothing". Such a program is a duplicate of the first one that behaved so.

Keys are SHA-256 hex digests: fixed length, indexable, and not reversible into anyone's code.
"""

from __future__ import annotations

import ast
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from alpha_evolve.source import parse as parse_source

# Moving averages sharing a constructor: swapping one for another is a "number-like" change, not new logic.
MOVING_AVERAGES: frozenset[str] = frozenset({
    "SimpleMovingAverage", "ExponentialMovingAverage", "WeightedMovingAverage", "HullMovingAverage",
    "DoubleExponentialMovingAverage", "WilderMovingAverage", "VariableIndexDynamicAverage",
})
_SIGNIFICANT = 10  # digits kept of every float in a behaviour key (identical runs agree to the last bit)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node: Any) -> Any:
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip


class _MaskLogic(ast.NodeTransformer):
    """Numbers -> 0, moving-average class names -> one name, non-strict comparisons -> strict ones."""

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Constant(0), node)
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.USub | ast.UAdd) and isinstance(node.operand, ast.Constant) \
                and node.operand.value == 0:
            return node.operand
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in MOVING_AVERAGES:
            return ast.copy_location(ast.Name("MovingAverage", node.ctx), node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr in MOVING_AVERAGES:
            node.attr = "MovingAverage"
        return node

    def visit_alias(self, node: ast.alias) -> ast.AST:
        if node.name in MOVING_AVERAGES:
            node.name = "MovingAverage"
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        self.generic_visit(node)
        unique: dict[str, ast.alias] = {}
        for alias in node.names:
            unique.setdefault(alias.name, alias)
        node.names = list(unique.values())
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        node.ops = [ast.Gt() if isinstance(o, ast.GtE) else ast.Lt() if isinstance(o, ast.LtE) else o
                    for o in node.ops]
        return node


def _tree(code: str) -> ast.Module | None:
    try:
        return _StripDocstrings().visit(parse_source(code))
    except (SyntaxError, ValueError):
        return None


def normalised_code(code: str) -> str:
    """The AST dump of ``code`` without docstrings (comments and layout never reach the AST)."""
    tree = _tree(code)
    return code if tree is None else ast.dump(tree)


def code_key(code: str) -> str:
    """Equal for programs that differ only in comments, formatting, docstrings or literal spelling."""
    return _digest("code:" + normalised_code(code))


def logic_key(code: str) -> str:
    """Equal for programs that differ only in numbers, moving-average family or ``>`` vs ``>=``."""
    tree = _tree(code)
    if tree is None:
        return _digest("logic:" + code)
    return _digest("logic:" + ast.dump(_MaskLogic().visit(tree)))


def changes_logic(parent_code: str, child_code: str) -> bool:
    return logic_key(parent_code) != logic_key(child_code)


def _rounded(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        f = float(value)
        return float(f"{f:.{_SIGNIFICANT}g}") if math.isfinite(f) else str(f)
    if isinstance(value, Mapping):
        return {str(k): _rounded(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, Sequence):
        return [_rounded(v) for v in value]
    return str(value)


def behavior_key(stage: str, metrics: Mapping[str, Any], per_instrument: Mapping[str, Mapping[str, Any]],
                 equity: Sequence[Sequence[Any]]) -> str:
    """Digest of an evaluation's outcome: the stage, all metrics (per instrument too) and the equity values.

    Timestamps are left out on purpose: two programs on the same split sample the same bars, and a program whose
    indicators warm up later but then trades identically still produces a different curve (flat at the start
    is part of the values), so nothing that matters is lost.
    """
    payload = {
        "stage": stage,
        "metrics": _rounded(dict(metrics)),
        "per_instrument": _rounded({k: dict(v) for k, v in per_instrument.items()}),
        "equity": [_rounded(point[1]) for point in equity],
    }
    return _digest("behavior:" + orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode())


def result_behavior_key(result: Any) -> str | None:
    """The behaviour key of an ``EvalResult`` that produced figures; None for failures (nothing to compare)."""
    if getattr(result, "status", None) != "ok" or not getattr(result, "metrics", None):
        return None
    return behavior_key(result.stage, result.metrics, getattr(result, "per_instrument", {}) or {},
                        getattr(result, "equity", []) or [])
