"""OfflineMutator: validity rate, diversity and determinism of seeded AST mutations on the real seeds."""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path

import pytest

from alpha_evolve.blocks import extract_blocks, validate_candidate
from alpha_evolve.mutators import make_mutator
from alpha_evolve.mutators.base import MutationRequest
from alpha_evolve.mutators.offline import MA_FAMILY, OfflineMutator

SEEDS = Path(__file__).resolve().parent.parent / "alpha_evolve" / "strategies"
SEED_NAMES = ["momentum", "mean_reversion", "breakout"]


def _request(code: str, i: int = 0, **kw) -> MutationRequest:
    return MutationRequest(request_id=f"r{i}", experiment="e", iteration=i, parent_id="p", parent_code=code,
                           parent_blocks=extract_blocks(code), **kw)


def _seed(name: str) -> str:
    return (SEEDS / f"{name}.py").read_text()


@pytest.mark.parametrize("name", [n for n in SEED_NAMES if (SEEDS / f"{n}.py").exists()])
async def test_single_shot_validity_and_diversity(name):
    """Without internal retries, >= 80 % of 200 raw proposals must pass validate_candidate."""
    code = _seed(name)
    m = OfflineMutator(seed=7, max_attempts=1)
    valid: set[str] = set()
    n_ok = 0
    for i in range(200):
        resp = await m.mutate(_request(code, i))
        if resp.ok:
            n_ok += 1
            validate_candidate(code, str(resp.code))  # independent re-check
            assert resp.code != code
            valid.add(str(resp.code))
    assert n_ok >= 160, f"{name}: only {n_ok}/200 valid"
    assert len(valid) >= 60, f"{name}: only {len(valid)} distinct candidates"


async def test_same_seed_same_mutation_and_seed_matters():
    code = _seed("momentum")
    req = _request(code, 5)
    a = await OfflineMutator(seed=1).mutate(req)
    b = await OfflineMutator(seed=1).mutate(req)
    assert a.code == b.code and a.notes == b.notes
    others = {(await OfflineMutator(seed=s).mutate(req)).code for s in range(2, 12)}
    assert len(others - {a.code}) >= 3


async def test_operators_each_appear_and_keep_periods_valid():
    code = _seed("momentum")
    m = OfflineMutator(seed=11)
    seen: set[str] = set()
    for i in range(300):
        resp = await m.mutate(_request(code, i))
        if not resp.ok:
            continue
        notes = resp.notes or ""
        if "->" in notes and any(f in notes for f in MA_FAMILY):
            seen.add("switch")
        for word in ("comparison", "dropped condition", "added regime filter", "added confirming signal",
                     "added exit rule", "replaced signal"):
            if word in notes:
                seen.add(word)
        tree = ast.parse(resp.blocks["indicators"])
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            for arg in call.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, int):
                    assert arg.value >= 2, resp.blocks["indicators"]
    assert {"switch", "comparison", "added regime filter", "added confirming signal", "added exit rule",
            "replaced signal"} <= seen


async def test_indicator_switch_imports_the_new_class_when_needed():
    code = _seed("momentum")
    for i in range(400):
        resp = await OfflineMutator(seed=3).mutate(_request(code, i))
        if resp.ok and "ExponentialMovingAverage ->" in (resp.notes or ""):
            new = str(resp.notes).split("ExponentialMovingAverage -> ")[1].split(";")[0].strip()
            assert f"from nautilus_trader.indicators import {new}" in resp.blocks["indicators"]
            return
    pytest.fail("no indicator switch in 400 mutations")


async def test_allowed_blocks_are_respected():
    code = _seed("mean_reversion")
    parent = extract_blocks(code)
    for i in range(50):
        resp = await OfflineMutator(seed=2).mutate(_request(code, i, allowed_blocks=("indicators",)))
        assert resp.ok
        assert extract_blocks(str(resp.code))["decision_logic"] == parent["decision_logic"]


async def test_nothing_to_mutate_is_a_failed_mutation():
    code = _seed("momentum")
    blocks = extract_blocks(code)
    # an indicators-only request on a block with a single call and no numbers: give it a body with nothing to edit
    bare = code.replace(blocks["indicators"].strip().splitlines()[0], "pass", 1)
    bare = bare.replace(blocks["indicators"].strip().splitlines()[1], "pass", 1)
    resp = await OfflineMutator().mutate(_request(bare, allowed_blocks=("indicators",)))
    assert not resp.ok and resp.failure_kind == "no_blocks"


def test_make_mutator_auto_without_key_is_offline(monkeypatch, caplog):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with caplog.at_level(logging.INFO, logger="alpha_evolve.mutators"):
        m = make_mutator("auto", seed=9, model="ignored", timeout=1.0)
    assert isinstance(m, OfflineMutator) and m.seed == 9
    assert "auto -> offline" in caplog.text
    with pytest.raises(ValueError, match="unknown mutator"):
        make_mutator("gpt")


def test_rng_is_independent_of_global_random_state():
    code = _seed("breakout")
    req = _request(code, 1)
    import asyncio

    random.seed(1)
    a = asyncio.run(OfflineMutator(seed=4).mutate(req)).code
    random.seed(2)
    b = asyncio.run(OfflineMutator(seed=4).mutate(req)).code
    assert a == b


async def test_request_and_response_round_trip_through_json():
    import json

    from alpha_evolve.mutators.base import Inspiration, MutationResponse

    code = _seed("momentum")
    req = _request(code, 3, parent_metrics={"Calmar": 1.0, "holdout_Sharpe": 5.0, "Trades": 12},
                   inspirations=[{"code": code, "metrics": {"Calmar": 2.0, "validation_Calmar": 9.0}}],
                   allowed_blocks=["decision_logic"])
    assert req.parent_metrics == {"Calmar": 1.0, "Trades": 12.0}
    assert isinstance(req.inspirations[0], Inspiration)
    assert req.inspirations[0].blocks == extract_blocks(code) and req.inspirations[0].metrics == {"Calmar": 2.0}
    again = MutationRequest.from_dict(json.loads(json.dumps(req.to_dict())))
    assert again == req
    resp = await OfflineMutator(seed=1).mutate(req)
    assert MutationResponse.from_dict(json.loads(json.dumps(resp.to_dict()))) == resp
