"""Never evaluate the same thing twice: code-key cache hits and behaviour duplicates, on the real parts.

A real forked NautilusTrader evaluator (400 synthetic bars) is wrapped only to count its backtests; the store is
real SQLite. Mutators here are scripted so each test knows which candidate repeats which.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.blocks import splice_blocks
from alpha_evolve.config import RunConfig
from alpha_evolve.controller import EvolutionController
from alpha_evolve.evaluation_setup import build_evaluator, loop_wiring
from alpha_evolve.program_keys import changes_logic, code_key, logic_key
from alpha_evolve.selection import select_parent
from alpha_evolve.store import SCHEMA_VERSION, Program, ProgramStore
from tests._search_helpers import FAST_INDICATORS, FAST_REFORMATTED, SEED_EQUIVALENT, CountingEvaluator, Script

pytestmark = pytest.mark.timeout(120)

BASE = RunConfig().with_updates({"backtest.synthetic_bars": 400, "evolution.mutator": "offline",
                                 "evolution.max_concurrent": 1})

@pytest.fixture(scope="module")
def real_evaluator() -> Iterator[Any]:
    ev = build_evaluator(BASE, include=("train",))
    yield ev
    ev.close()


@pytest.fixture
def evaluator(real_evaluator: Any) -> CountingEvaluator:
    return CountingEvaluator(real_evaluator)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProgramStore]:
    s = ProgramStore(tmp_path / "programs.sqlite")
    yield s
    s.close()


def _rows(store: ProgramStore, experiment: str) -> list[Program]:
    with store.snapshot() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM programs WHERE experiment = ? ORDER BY id", (experiment,))]
    return store.get_many(ids)


async def test_identical_code_reuses_the_stored_result_without_a_backtest(
        store: ProgramStore, evaluator: CountingEvaluator) -> None:
    script = Script({1: [{"indicators": FAST_INDICATORS}], 2: [{"indicators": FAST_REFORMATTED}]})
    cfg = BASE.with_updates({"evolution.max_retries": 3})
    ctl = EvolutionController(cfg.evolution, store, evaluator, script, wiring=loop_wiring(cfg))  # type: ignore[arg-type]
    result = await ctl.run("momentum", "cache", 2)
    assert len(evaluator.calls) == 2  # the seed and iteration 1; iteration 2 ran no backtest
    rows = {p.iteration: p for p in _rows(store, "cache")}
    first, again = rows[1], rows[2]
    assert first.duplicate_of is None and first.status == "ok"
    assert again.code != first.code and again.code_key == first.code_key == code_key(first.code)
    assert (again.duplicate_kind, again.duplicate_of) == ("code", first.id)
    assert (again.metrics, again.fitness, again.behavior_key) == (first.metrics, first.fitness, first.behavior_key)
    # The mutator was told twice that its change did nothing new, then the stored result was reused.
    told = [c.previous_error for c in script.calls if c.iteration == 2]
    assert told[0] is None and all(t and "did nothing new" in t and f"#{first.id}" in t for t in told[1:])
    assert len(told) == 3
    assert result.cache_hits == 1 and result.behavior_duplicates == 0
    assert result.total_evaluations == 2  # cache hits are not evaluations
    assert not again.is_eligible_parent and store.eligible_count("cache") == 2
    assert again.id not in {p.id for p in store.top_k("cache", 10)}


async def test_behaviour_duplicate_is_stored_linked_and_excluded(
        store: ProgramStore, evaluator: CountingEvaluator) -> None:
    script = Script({1: [{"decision_logic": SEED_EQUIVALENT}]})
    cfg = BASE.with_updates({"evolution.max_retries": 1})
    ctl = EvolutionController(cfg.evolution, store, evaluator, script, wiring=loop_wiring(cfg))  # type: ignore[arg-type]
    result = await ctl.run("momentum", "twin", 1)
    assert len(evaluator.calls) == 2  # it was backtested: only the result shows it did nothing
    seed = store.seed("twin")
    assert seed is not None
    twin = next(p for p in _rows(store, "twin") if p.iteration == 1)
    assert twin.code_key != seed.code_key and twin.behavior_key == seed.behavior_key is not None
    assert (twin.duplicate_kind, twin.duplicate_of) == ("behavior", seed.id)
    assert twin.status == "ok" and twin.pruned and not twin.is_eligible_parent
    assert result.behavior_duplicates == 1 and result.cache_hits == 0
    # Not a new individual: not counted, never a parent, not in the novelty reference, not a top program, not a
    # separate trial for the deflated Sharpe.
    assert store.eligible_count("twin") == 1
    assert [c[0] for c in store.parent_candidates("twin", 100, with_behavior=True)] == [seed.id]
    assert {select_parent(store, "twin", random.Random(i), novelty_boost_w=1.0)[0].id for i in range(30)} == {seed.id}
    assert [p.id for p in store.top_k("twin", 10)] == [seed.id]
    assert store.train_sharpes("twin") == [seed.metrics["Sharpe"]]
    assert store.duplicate_counts("twin") == {"behavior": 1, "code": 0}


async def test_behaviour_duplicate_is_sent_back_while_attempts_remain(
        store: ProgramStore, evaluator: CountingEvaluator) -> None:
    script = Script({1: [{"decision_logic": SEED_EQUIVALENT}, {"indicators": FAST_INDICATORS}]})
    cfg = BASE.with_updates({"evolution.max_retries": 2})
    ctl = EvolutionController(cfg.evolution, store, evaluator, script, wiring=loop_wiring(cfg))  # type: ignore[arg-type]
    await ctl.run("momentum", "retry", 1)
    assert len(evaluator.calls) == 3
    second = [c for c in script.calls if c.iteration == 1][1]
    assert second.attempt == 2 and second.previous_error and "did nothing" in second.previous_error
    rows = _rows(store, "retry")
    seed = rows[0]
    discarded = [p for p in rows if not p.is_seed and p.iteration is None]
    kept = [p for p in rows if p.iteration == 1]
    assert len(discarded) == 1 and discarded[0].duplicate_of == seed.id  # the wasted backtest stays on record
    assert len(kept) == 1 and kept[0].duplicate_of is None and kept[0].is_eligible_parent


def test_keys_see_through_layout_but_not_through_logic() -> None:
    seed = splice_blocks(_momentum(), {})
    fast = splice_blocks(seed, {"indicators": FAST_INDICATORS})
    same = splice_blocks(seed, {"indicators": FAST_REFORMATTED})
    assert code_key(fast) == code_key(same) != code_key(seed)
    # Numbers, moving-average family and >= vs > are tuning; a new condition is logic.
    sma = fast.replace("ExponentialMovingAverage", "SimpleMovingAverage")
    assert logic_key(sma) == logic_key(seed) and not changes_logic(seed, sma)
    gte = seed.replace("self.fast_ema.value > self.slow_ema.value", "self.fast_ema.value >= self.slow_ema.value")
    assert not changes_logic(seed, gte)
    filtered = splice_blocks(seed, {"decision_logic": "if self.fast_ema.value > self.slow_ema.value and "
                                                      "self.bars_seen > 50:\n    self.go_long()\n"
                                                      "else:\n    self.go_flat()\n"})
    assert changes_logic(seed, filtered)


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    ProgramStore(path).close()
    raw = sqlite3.connect(path)
    for index in ("ix_programs_code_key", "ix_programs_behavior_key"):
        raw.execute(f"DROP INDEX {index}")
    for column in ("code_key", "behavior_key", "duplicate_of", "duplicate_kind"):
        raw.execute(f"ALTER TABLE programs DROP COLUMN {column}")
    raw.execute("INSERT INTO experiments (name, status, created_at, updated_at) VALUES ('e', 'running', 'x', 'x')")
    raw.execute("INSERT INTO programs (experiment, code, status, fitness, created_at, is_seed) "
                "VALUES ('e', 'pass', 'ok', 1.0, 'x', 1)")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with ProgramStore(path) as store:
        old = store.seed("e")
        assert old is not None and old.fitness == 1.0 and old.duplicate_of is None and old.code_key is None
        assert store.find_by_code_key("e", "nothing") is None
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def _momentum() -> str:
    from alpha_evolve.strategies import seed_source

    return seed_source("momentum")


async def test_map_elites_selection_runs_and_never_picks_a_duplicate(
        store: ProgramStore, evaluator: CountingEvaluator) -> None:
    from alpha_evolve.mutators.offline import OfflineMutator

    config = BASE.with_updates({"evolution.selection": "map_elites", "evolution.population_size": 4,
                                "evolution.archive_size": 1})
    result = await EvolutionController(config.evolution, store, evaluator, OfflineMutator(seed=3),  # type: ignore[arg-type]
                                 wiring=loop_wiring(config)).run(
        "momentum", "qd", 6)
    assert result.iterations_completed == 6
    rows = _rows(store, "qd")
    duplicates = {p.id for p in rows if p.duplicate_of is not None}
    assert all(p.parent_id not in duplicates for p in rows)
