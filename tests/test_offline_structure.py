"""Each offline operator on every seed: valid code, scored by the real engine, edits on live code only.

Liveness is checked twice: statically (the branches a cash account makes dead — ``allow_short``, ``is_short`` —
are left exactly as they were, and nothing is added to them) and on the engine (the children of an operator do not
all trade exactly like their parent). Structural operators must change the logic key; no candidate may carry a
contradictory condition.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from alpha_evolve.blocks import extract_blocks, validate_candidate
from alpha_evolve.config import RunConfig
from alpha_evolve.evaluation_setup import build_evaluator
from alpha_evolve.mutators.base import MutationRequest
from alpha_evolve.mutators.liveness import analyse, contradiction, truth
from alpha_evolve.mutators.offline import OPERATORS, STRUCTURE_OPERATORS, OfflineMutator
from alpha_evolve.program_keys import changes_logic, result_behavior_key
from alpha_evolve.strategies import seed_source

pytestmark = pytest.mark.timeout(180)
SEEDS = ("momentum", "mean_reversion", "breakout")
CONFIG = RunConfig().with_updates({"backtest.synthetic_bars": 500, "backtest.screen_fraction": 0.0})


@pytest.fixture(scope="module")
def evaluator() -> Iterator[Any]:
    with build_evaluator(CONFIG, include=("train",)) as ev:
        yield ev


def _request(code: str, i: int) -> MutationRequest:
    return MutationRequest(request_id=f"r{i}", experiment="e", iteration=i, parent_id="p", parent_code=code,
                           parent_blocks=extract_blocks(code))


def _mutate(code: str, i: int, *ops: str, seed: int = 5) -> Any:
    return asyncio.run(OfflineMutator(seed=seed, operators=ops, max_attempts=2).mutate(_request(code, i)))


def _with_rules(name: str) -> str:
    """The seed plus a regime filter and an exit rule: something to replace and to remove."""
    code = seed_source(name)
    for op in ("add_regime_filter", "add_exit_rule"):
        response = _mutate(code, 0, op, seed=1)
        assert response.ok, response.error
        code = str(response.code)
    return code


def _dead_tests(code: str) -> list[str]:
    body = ast.parse(extract_blocks(code)["decision_logic"]).body
    return [ast.unparse(n.test) for n in ast.walk(ast.Module(body=body, type_ignores=[]))
            if isinstance(n, ast.If) and truth(n.test, False) is False]


@pytest.mark.parametrize("op", OPERATORS)
def test_operator_is_valid_live_and_scored_by_the_engine(op: str, evaluator: Any) -> None:
    parents, children = [], []
    for name in SEEDS:
        parent = _with_rules(name) if op in ("replace_regime_filter", "remove_condition") else seed_source(name)
        ok = 0
        for i in range(12):
            response = _mutate(parent, i, op)
            if not response.ok:
                continue
            ok += 1
            child = str(response.code)
            validate_candidate(parent, child)
            decision = ast.parse(extract_blocks(child)["decision_logic"])
            assert contradiction(decision) is None, child
            live = analyse(decision.body, allow_short=False)
            assert live.entries and live.exits, f"{op} left {name} unable to trade:\n{child}"
            # Dead branches are left alone: each of the parent's is still there, unchanged.
            assert set(_dead_tests(parent)) <= set(_dead_tests(child)), f"{op} edited a dead branch of {name}"
            if op in STRUCTURE_OPERATORS:
                assert changes_logic(parent, child), f"{op} did not change the logic:\n{child}"
            if len([c for p, c in children if p == parent]) < 2:
                parents.append(parent)
                children.append((parent, child))
        assert ok >= 11, f"{op} on {name}: only {ok}/12 proposals valid"
    results = evaluator.evaluate_many([c for _, c in children] + sorted(set(parents)), split="train")
    by_code = dict(zip([c for _, c in children] + sorted(set(parents)), results, strict=True))
    assert all(r.status == "ok" for r in results), [(r.status, r.error) for r in results if r.status != "ok"]
    changed = sum(result_behavior_key(by_code[c]) != result_behavior_key(by_code[p]) for p, c in children)
    # Most edits must show on the engine (on 300 train bars a stop may never fire, or a removed filter never bound).
    assert changed * 2 >= len(children), f"{op}: {len(children) - changed} of {len(children)} children did nothing"


def test_edits_stay_out_of_the_short_branch_on_a_cash_account() -> None:
    code = seed_source("mean_reversion")
    dead = "elif close > self.bands.upper and self.allow_short:\n    self.go_short()"
    assert dead in extract_blocks(code)["decision_logic"]
    for i in range(60):
        response = _mutate(code, i, *OPERATORS, seed=9)
        if response.ok:
            assert dead in extract_blocks(str(response.code))["decision_logic"], response.notes


def test_same_seed_same_structure() -> None:
    code = seed_source("breakout")
    first = [_mutate(code, i, *STRUCTURE_OPERATORS, seed=3).code for i in range(10)]
    again = [_mutate(code, i, *STRUCTURE_OPERATORS, seed=3).code for i in range(10)]
    assert first == again and len(set(first)) >= 8


def test_unknown_operator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown offline operator"):
        OfflineMutator(operators=("delete_everything",))
