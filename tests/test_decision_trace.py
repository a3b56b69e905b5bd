"""The decision-trace pre-check: orders worked out without running candidate code, checked against the engine.

Fidelity is checked against real NautilusTrader backtests (the engine's own decision log, bar by bar) for every
seed and for structural offline mutants; the controller test uses the real forked evaluator and real SQLite, with a
scripted mutator so it knows which candidate repeats which.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.backtest import prepare_bars, run_backtest
from alpha_evolve.blocks import extract_blocks, splice_blocks
from alpha_evolve.config import RunConfig
from alpha_evolve.controller import EvolutionController
from alpha_evolve.decision_trace import DecisionTracer, _Run, _spec, tracer_for
from alpha_evolve.evaluation_setup import (
    backtest_settings,
    build_evaluator,
    instrument_specs,
    load_run_data,
    loop_wiring,
)
from alpha_evolve.mutators.base import MutationRequest, Sibling
from alpha_evolve.mutators.offline import EDIT_CLASSES, WASTED_FACTOR, OfflineMutator, _weights, edit_class
from alpha_evolve.store import ProgramStore
from alpha_evolve.strategies import seed_source
from tests._search_helpers import FAST_INDICATORS, SEED_EQUIVALENT, CountingEvaluator, Script

pytestmark = pytest.mark.timeout(120)

BASE = RunConfig().with_updates({"backtest.synthetic_bars": 400, "evolution.mutator": "offline",
                                 "evolution.max_concurrent": 1})
_ACTIONS = {0: "flat", 1: "long", 2: "short"}


@pytest.fixture(scope="module")
def train() -> Any:
    data = load_run_data(BASE)
    settings = backtest_settings(BASE)
    symbol, splits = next(iter(data.splits.items()))
    return prepare_bars(symbol, splits.train, settings, spec=instrument_specs(data, settings)[symbol]), settings


def _calls(code: str, bars: Any) -> list[tuple[int, str]]:
    run = _Run(_spec(code), allow_short=False)
    run.run(bars)
    return run.calls


def _mutants(seed: str, n: int) -> list[str]:
    """Structural offline mutants of a seed (filters, stops with cool-downs, replaced signals), deterministic."""
    code = seed_source(seed)
    mutator = OfflineMutator(seed=5)
    out = []
    for i in range(1, 40):
        request = MutationRequest(f"t-{i}", "t", i, "1", code, extract_blocks(code))
        response = asyncio.run(mutator.mutate(request))
        if response.code and ("stop_" in response.code or "regime_" in response.code or "signal_" in response.code):
            out.append(response.code)
        if len(out) == n:
            break
    return out


def test_traced_decisions_equal_the_engines_bar_by_bar(train: Any) -> None:
    prepared, settings = train
    programs = [seed_source(s) for s in ("trend_filter", "momentum", "mean_reversion", "breakout")]
    programs += _mutants("trend_filter", 3)
    assert len(programs) == 7
    for code in programs:
        engine = [(i, _ACTIONS[a]) for i, a in run_backtest(code, prepared, settings).decisions]
        assert engine, "the program never decided: the comparison would prove nothing"
        assert _calls(code, prepared.bars) == engine


def test_code_outside_the_interpreted_subset_is_never_run(train: Any, tmp_path: Path) -> None:
    prepared, _ = train
    marker = tmp_path / "ran"
    seed = seed_source("momentum")
    tracer = DecisionTracer({"SYN": prepared.bars})
    hostile = [
        f"open({str(marker)!r}, 'w').write('x')\nself.go_long()\n",
        f"__import__('pathlib').Path({str(marker)!r}).touch()\n",
        "while True:\n    pass\n",
        "x = 10 ** 10 ** 10\nself.go_long()\n",
        "self.go_long()\nself.log.info('hi')\n",
        "for _ in range(3):\n    self.go_long()\n",
    ]
    for body in hostile:
        code = splice_blocks(seed, {"decision_logic": body})
        assert tracer.trace(code) is None, body
        assert tracer.verdict(code, [(1, seed)], flat_twin=1) is None  # unknown: the engine will judge it
    assert not marker.exists()
    assert tracer.trace(seed) is not None


def test_verdicts_name_the_program_repeated(train: Any) -> None:
    prepared, _ = train
    seed = seed_source("momentum")
    tracer = DecisionTracer({"SYN": prepared.bars}, screen_fraction=0.3)
    # Same orders as the seed, different code; a filter that is never true (no entries at all); a faster average.
    same = splice_blocks(seed, {"decision_logic": SEED_EQUIVALENT})
    never = splice_blocks(seed, {"decision_logic": "if self.fast_ema.value > 10 * self.slow_ema.value:\n"
                                                   "    self.go_long()\nelse:\n    self.go_flat()\n"})
    fast = splice_blocks(seed, {"indicators": FAST_INDICATORS})
    tracer.remember(7, seed)
    verdict = tracer.verdict(same, [], flat_twin=None)
    assert verdict is not None and "#7" in verdict and "without a backtest" in verdict
    assert tracer.verdict(never, [], flat_twin=None) is None  # no program that never traded yet: a new behaviour
    flat = tracer.verdict(never, [], flat_twin=9)
    assert flat is not None and "#9" in flat and "screen period" in flat
    assert tracer.verdict(fast, [(7, seed)], flat_twin=9) is None
    # Screened out: known by its screen-period orders; a candidate equal there is rejected alike.
    screened = DecisionTracer({"SYN": prepared.bars}, screen_fraction=0.3)
    screened.remember(3, seed, stage="screen")
    cut = screened.screen_cut["SYN"]
    trace = screened.trace(seed)
    assert trace is not None and any(i < cut for i, _ in trace.orders[0][1])
    late = splice_blocks(seed, {"decision_logic": f"if self.bars_seen > {cut + 5}:\n    self.go_flat()\n"
                                                  "elif self.fast_ema.value > self.slow_ema.value:\n"
                                                  "    self.go_long()\nelse:\n    self.go_flat()\n"})
    assert screened.trace(late) != trace
    message = screened.verdict(late, [], flat_twin=None)
    assert message is not None and "#3" in message and "screen period" in message


@pytest.fixture(scope="module")
def real_evaluator() -> Iterator[Any]:
    ev = build_evaluator(BASE, include=("train",))
    yield ev
    ev.close()


def _tracer() -> DecisionTracer:
    data = load_run_data(BASE)
    settings = backtest_settings(BASE)
    tracer = tracer_for(data, settings, instrument_specs(data, settings), allow_short=False,
                        screen_fraction=BASE.backtest.screen_fraction)
    assert tracer is not None
    return tracer


async def test_a_traced_repeat_is_sent_back_without_a_backtest_or_a_trial(tmp_path: Path, real_evaluator: Any) -> None:
    evaluator = CountingEvaluator(real_evaluator)
    script = Script({1: [{"decision_logic": SEED_EQUIVALENT}, {"indicators": FAST_INDICATORS}]})
    with ProgramStore(tmp_path / "programs.sqlite") as store:
        cfg = BASE.with_updates({"evolution.max_retries": 2})
        ctl = EvolutionController(cfg.evolution, store, evaluator, script, wiring=loop_wiring(cfg))  # type: ignore[arg-type]
        ctl.tracer = _tracer()
        await ctl.run("momentum", "traced", 1)
        seed = store.seed("traced")
        assert seed is not None
        equivalent = splice_blocks(seed.code, {"decision_logic": SEED_EQUIVALENT})
        assert equivalent not in evaluator.calls and len(evaluator.calls) == 2  # the seed and the faster average
        second = [c for c in script.calls if c.iteration == 1][1]
        assert second.previous_error and "without a backtest" in second.previous_error
        assert f"#{seed.id}" in second.previous_error
        assert ctl.traced_duplicates == 1
        rows = store.evaluated_programs("traced")
        assert [p.code for p in rows] == [seed.code, splice_blocks(seed.code, {"indicators": FAST_INDICATORS})]
        assert all(p.duplicate_of is None for p in rows)  # nothing wasted: every backtest bought a new behaviour
        attempts = store.attempts("traced", 1)
        assert [a["status"] for a in attempts] == ["duplicate", "ok"]


async def test_the_last_attempt_is_always_backtested(tmp_path: Path, real_evaluator: Any) -> None:
    evaluator = CountingEvaluator(real_evaluator)
    script = Script({1: [{"decision_logic": SEED_EQUIVALENT}]})
    with ProgramStore(tmp_path / "programs.sqlite") as store:
        cfg = BASE.with_updates({"evolution.max_retries": 1})
        ctl = EvolutionController(cfg.evolution, store, evaluator, script, wiring=loop_wiring(cfg))  # type: ignore[arg-type]
        ctl.tracer = _tracer()
        await ctl.run("momentum", "last", 1)
        seed = store.seed("last")
        twin = next(p for p in store.evaluated_programs("last") if not p.is_seed)
        assert seed is not None and len(evaluator.calls) == 2  # the engine, not the trace, has the last word
        assert (twin.duplicate_kind, twin.duplicate_of) == ("behavior", seed.id)
        assert ctl.traced_duplicates == 0


def test_siblings_that_bought_nothing_steer_the_offline_mutator() -> None:
    code = seed_source("trend_filter")
    blocks = extract_blocks(code)
    gate = dict(blocks)
    gate["indicators"] += "self.regime_ar = AroonOscillator(20)\n"
    gate["decision_logic"] = gate["decision_logic"].replace("close > self.average.value",
                                                            "close > self.average.value and self.regime_ar.value > 0")
    stop = dict(blocks, indicators=blocks["indicators"] + "self.hold_bars = 0\n")
    tuned = {"indicators": blocks["indicators"].replace("SimpleMovingAverage(10)", "SimpleMovingAverage(14)")}
    dropped = {"decision_logic": blocks["decision_logic"].replace("self.efficiency.value > 0.17 and ", "")}
    assert [edit_class(blocks, b) for b in (gate, stop, tuned, dropped)] == ["gate", "exit", "tuning", "remove"]

    def weights(*siblings: Sibling) -> dict[str, float]:
        return _weights(MutationRequest("r", "e", 1, "1", code, blocks, siblings=siblings))

    base = weights()
    assert weights(Sibling(gate, "new", 4.0)) == base  # a change that bought something is no reason to avoid it
    after_dup = weights(Sibling(tuned, "duplicate", 15.0))
    for op in EDIT_CLASSES["tuning"]:
        assert after_dup[op] == pytest.approx(base[op] * WASTED_FACTOR)
    assert after_dup["add_regime_filter"] == base["add_regime_filter"]
    flat = weights(Sibling(gate, "no_trades", 0.0))  # a gate that blocked every entry: no tightening for a while
    for op in EDIT_CLASSES["gate"] + EDIT_CLASSES["exit"]:
        assert flat[op] == pytest.approx(base[op] * WASTED_FACTOR)
    assert flat["remove_condition"] == base["remove_condition"]
    # The request carries the siblings through its dict form (the agent mutator's request file).
    request = MutationRequest("r", "e", 1, "1", code, blocks, siblings=(Sibling(gate, "no_trades", 0.0),))
    assert MutationRequest.from_dict(request.to_dict()) == request


def test_jitter_avoids_numbers_already_moved_for_nothing() -> None:
    code = seed_source("trend_filter")
    blocks = extract_blocks(code)
    wasted = {"indicators": blocks["indicators"].replace("SimpleMovingAverage(10)", "SimpleMovingAverage(13)")}
    mutator = OfflineMutator(seed=1, operators=("jitter_number",), two_op_probability=0.0)
    plain, steered = [], []
    for i in range(40):
        for siblings, out in (((), plain), ((Sibling(wasted, "duplicate", 15.0),), steered)):
            request = MutationRequest(f"r{i}", "e", i, "1", code, blocks, siblings=siblings)
            bodies, _ = mutator.propose(request, random.Random(i))
            out.append("SimpleMovingAverage(10)" not in bodies.get("indicators", "SimpleMovingAverage(10)"))
    assert any(plain) and not any(steered)


def test_the_llm_prompt_shows_the_changes_that_bought_nothing() -> None:
    from alpha_evolve.mutators.prompts import user_prompt

    code = seed_source("trend_filter")
    blocks = extract_blocks(code)
    tuned = dict(blocks, indicators=blocks["indicators"].replace("SimpleMovingAverage(10)", "SimpleMovingAverage(14)"))
    useful = dict(blocks, indicators=blocks["indicators"].replace("EfficiencyRatio(15)", "EfficiencyRatio(25)"))
    plain = user_prompt(MutationRequest("r", "e", 1, "1", code, blocks, siblings=(Sibling(useful, "new", 9.0),)))
    assert "bought nothing" not in plain
    told = user_prompt(MutationRequest("r", "e", 1, "1", code, blocks,
                                       siblings=(Sibling(useful, "new", 9.0), Sibling(tuned, "duplicate", 66.0))))
    section = told[told.index("bought nothing"):]
    assert "SimpleMovingAverage(14)" in section and "EfficiencyRatio(25)" not in section


def _pass_share(bars: list[Any], indicator: Any, attr: str, op: str, threshold: float, scaled: bool) -> float:
    """Share of the bars (once the indicator is warm) where ``attr op threshold [* close]`` holds: by hand."""
    hits = total = 0
    for bar in bars:
        indicator.handle_bar(bar)
        if not indicator.initialized:
            continue
        value, bound = float(getattr(indicator, attr)), threshold * (float(bar.close) if scaled else 1.0)
        total += 1
        hits += value < bound if op == "<" else value > bound
    return hits / total


def test_calibrated_thresholds_let_the_drawn_share_of_bars_through(train: Any) -> None:
    from nautilus_trader.indicators import AverageTrueRange, EfficiencyRatio

    from alpha_evolve.mutators.calibration import ThresholdCalibrator

    prepared, _ = train
    calibrator = ThresholdCalibrator({"SYN": prepared.bars})
    for q in (0.35, 0.6, 0.8):
        atr = calibrator.threshold("AverageTrueRange", [14], "self.{a}.value < {t} * {close}", q)
        assert atr is not None
        assert _pass_share(prepared.bars, AverageTrueRange(14), "value", "<", atr, True) == pytest.approx(q, abs=0.02)
        eff = calibrator.threshold("EfficiencyRatio", [20], "self.{a}.value > {t}", q)
        assert eff is not None
        assert _pass_share(prepared.bars, EfficiencyRatio(20), "value", ">", eff, False) == pytest.approx(q, abs=0.02)
    assert calibrator.threshold("Stochastics", [10, 3], "self.{a}.value_k > self.{a}.value_d", 0.5) is None
    assert calibrator.threshold("AverageTrueRange", [10_000], "self.{a}.value < {t} * {close}", 0.5) is None


def test_new_filters_from_the_offline_mutator_bind_on_the_train_bars(train: Any) -> None:
    import re

    import nautilus_trader.indicators as module

    from alpha_evolve.mutators.calibration import PASS_SHARE, ThresholdCalibrator

    prepared, _ = train
    code = seed_source("trend_filter")
    mutator = OfflineMutator(seed=3, operators=("add_regime_filter",), two_op_probability=0.0)
    mutator.calibration = ThresholdCalibrator({"SYN": prepared.bars})
    checked = 0
    for i in range(12):
        response = asyncio.run(mutator.mutate(MutationRequest(f"r{i}", "e", i, "1", code, extract_blocks(code))))
        assert response.code is not None
        ctor = re.search(r"self\.(regime_\w+) = (\w+)\(([\d., ]*)\)", response.code)
        cond = re.search(r"self\.regime_\w+\.(\w+) ([<>]) (-?[\d.e-]+)( \* bar\.close\.as_double\(\))?", response.code)
        if ctor is None or cond is None:
            continue  # a condition without a threshold (e.g. `> 0`)
        args = [float(a) if "." in a else int(a) for a in ctor.group(3).split(",")]
        share = _pass_share(prepared.bars, getattr(module, ctor.group(2))(*args), cond.group(1), cond.group(2),
                            float(cond.group(3)), bool(cond.group(4)))
        assert PASS_SHARE[0] - 0.03 <= share <= PASS_SHARE[1] + 0.03, response.code
        checked += 1
    assert checked >= 5
