"""EvolutionController on the real parts: SQLite store, forked NautilusTrader evaluator, offline mutator.

Data is 400 synthetic daily bars (train = 240) so one evaluation takes ~0.1 s; one evaluator is shared by the
module (its start-up imports NautilusTrader and forks the workers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.blocks import extract_blocks, splice_blocks
from alpha_evolve.config import RunConfig
from alpha_evolve.controller import EvolutionController, StopCondition, fitness_from_metrics
from alpha_evolve.evaluation_setup import build_evaluator, loop_wiring
from alpha_evolve.experiment_status import EvolutionStatus, ProgressEvent, config_from_experiment, request_stop
from alpha_evolve.mutators.base import MutationRequest, MutationResponse
from alpha_evolve.mutators.offline import OfflineMutator
from alpha_evolve.store import ProgramStore, StoreError
from alpha_evolve.strategies import seed_source

pytestmark = pytest.mark.timeout(120)

# The original regime series (these tests' expectations were built on it; the default is the planted market).
BASE = RunConfig().with_updates({"backtest.synthetic_bars": 400, "evolution.mutator": "offline",
                                 "evolution.max_concurrent": 2, "backtest.synthetic_generator": "regimes"})


@pytest.fixture(scope="module")
def evaluator() -> Iterator[Any]:
    ev = build_evaluator(BASE, include=("train",))
    yield ev
    ev.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProgramStore]:
    s = ProgramStore(tmp_path / "programs.sqlite")
    yield s
    s.close()


def make(store: ProgramStore, evaluator: Any, mutator: Any = None, **updates: Any) -> EvolutionController:
    cfg = BASE.with_updates(updates) if updates else BASE
    mutator = mutator or OfflineMutator(seed=cfg.evolution.random_seed)
    return EvolutionController(cfg.evolution, store, evaluator, mutator, wiring=loop_wiring(cfg))


def iterations(store: ProgramStore, experiment: str) -> list[int]:
    return store.completed_iterations(experiment)


def seeds(store: ProgramStore, experiment: str) -> int:
    with store.snapshot() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM programs WHERE experiment = ? AND is_seed = 1",
                                (experiment,)).fetchone()[0])


# ---------------------------------------------------------------------------------------------- stubs


def _with_body(request: MutationRequest | str, body: str) -> str:
    code = request if isinstance(request, str) else request.parent_code
    return splice_blocks(code, {"decision_logic": body})


_SEED = seed_source("momentum")


class ScriptedMutator:
    """Returns scripted candidates per iteration (else delegates to the offline mutator); records calls."""

    name = "scripted"

    def __init__(self, script: dict[int, str]) -> None:
        self.script = script
        self.calls: list[MutationRequest] = []
        self.inner = OfflineMutator(seed=1)

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        self.calls.append(request)
        kind = self.script.get(request.iteration)
        if kind is None:
            return await self.inner.mutate(request)
        if kind == "syntax":  # a reply the controller's validation rejects (bypasses the mutator's own checks)
            code = request.parent_code.replace("def decide(self, bar: Bar) -> None:", "def decide(self, bar: Bar)")
            return MutationResponse(request.request_id, self.name, code=code)
        # Spliced into the seed, not the parent: the same script entry is then the same program whatever the
        # parent (the skeleton outside the blocks is the seed's in every descendant).
        if kind == "runtime":
            return MutationResponse(request.request_id, self.name,
                                    code=_with_body(_SEED, "x = 1 / 0\nself.go_long()"))
        if kind == "flat":  # never trades: screened out
            return MutationResponse(request.request_id, self.name, code=_with_body(_SEED, "self.go_flat()"))
        raise AssertionError(kind)


class PricedMutator:
    """Offline mutations with a fake price tag: only for the budget accounting test."""

    name = "priced"

    def __init__(self, tokens: int, usd: float) -> None:
        self.inner = OfflineMutator(seed=3)
        self.tokens, self.usd = tokens, usd

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        response = await self.inner.mutate(request)
        return dataclasses.replace(response, input_tokens=self.tokens, output_tokens=0, cost_usd=self.usd)


# ---------------------------------------------------------------------------------------------- tests


async def test_ten_iterations_record_exactly_ten_plus_seed(store: ProgramStore, evaluator: Any) -> None:
    events: list[ProgressEvent] = []
    result = await make(store, evaluator).run("momentum", "ten", 10, on_progress=events.append)
    assert result.status is EvolutionStatus.COMPLETED
    assert result.stop_reason == "iterations"
    assert iterations(store, "ten") == list(range(1, 11))
    assert seeds(store, "ten") == 1
    # Attempts that traded exactly like an earlier program were sent back to the mutator; they stay on record
    # without an iteration number, as behaviour duplicates.
    discarded = [p for p in _all(store, "ten") if p.iteration is None]
    assert all(p.duplicate_kind == "behavior" and p.pruned for p in discarded)
    assert store.count("ten") == 11 + len(discarded)
    assert result.iterations_completed == 10 and result.total_mutations == 10 + len(discarded)
    assert result.total_evaluations == result.successful_mutations + 1 - result.cache_hits
    assert result.best_strategy is not None and result.best_fitness == result.best_strategy.fitness
    seed = store.seed("ten")
    assert seed is not None and seed.iteration == 0 and seed.is_seed
    assert seed.fitness == pytest.approx(fitness_from_metrics(seed.metrics, "Sharpe"))
    assert [e.kind for e in events] == ["seed"] + ["iteration"] * 10
    ok = [p for p in store.top_k("ten", 100)]
    assert all(p.behavior and len(p.behavior["returns"]) == 32 for p in ok)
    exp = store.require_experiment("ten")
    assert exp.status == "completed" and exp.completed_iterations == 10


async def test_fitness_sign_for_lower_is_better(store: ProgramStore, evaluator: Any) -> None:
    result = await make(store, evaluator, fitness_metric="MaxDD").run("momentum", "dd", 2)
    for p in store.top_k("dd", 10):
        assert p.fitness == pytest.approx(-p.metrics["MaxDD"])
    assert result.best_fitness is not None and result.best_fitness <= 0


async def test_concurrency_records_same_iterations(tmp_path: Path, evaluator: Any) -> None:
    recorded: dict[tuple[int, int], list[int]] = {}
    codes: dict[tuple[int, int], list[str]] = {}
    for conc in (1, 2, 1):
        with ProgramStore(tmp_path / f"c{conc}-{len(recorded)}.sqlite") as s:
            await make(s, evaluator, max_concurrent=conc).run("momentum", "conc", 6)
            recorded[(conc, len(recorded))] = iterations(s, "conc")
            codes[(conc, len(codes))] = [p.code for p in sorted(s.top_k("conc", 100), key=lambda p: p.id or 0)]
    assert all(v == list(range(1, 7)) for v in recorded.values())
    # With one slot the run is fully deterministic: same parents, same mutations, same programs.
    assert codes[(1, 0)] == codes[(1, 2)]


class JitterMutator:
    """Offline mutations that come back after a random delay, so concurrent iterations finish out of order."""

    name = "jitter"

    def __init__(self, seed: int) -> None:
        import random as _random

        self.inner = OfflineMutator(seed=seed)
        self.clock = _random.Random()  # deliberately unseeded: timing differs between runs

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        await asyncio.sleep(self.clock.random() * 0.15)
        return await self.inner.mutate(request)


async def test_concurrent_runs_are_reproducible_whatever_the_timing(tmp_path: Path, evaluator: Any) -> None:
    runs = []
    for n in range(2):
        with ProgramStore(tmp_path / f"jitter{n}.sqlite") as s:
            controller = make(s, evaluator, JitterMutator(seed=5), max_concurrent=2)
            await controller.run("momentum", "jit", 8)
            # Every recorded program (duplicates too: which one is "the first" must not depend on timing either).
            programs = sorted((p for p in _all(s, "jit") if p.iteration is not None), key=lambda p: p.iteration)
            runs.append([(p.iteration, p.parent_id, p.code, p.fitness, p.duplicate_of) for p in programs])
    assert [r[0] for r in runs[0]] == list(range(0, 9))
    assert runs[0] == runs[1]


async def test_target_fitness_stop(store: ProgramStore, evaluator: Any) -> None:
    ctl = make(store, evaluator, max_concurrent=1)
    result = await ctl.run("momentum", "tgt", 50, stop_condition=StopCondition(target_fitness=-100.0))
    assert result.stop_reason == "target_fitness"
    assert result.status is EvolutionStatus.COMPLETED
    assert iterations(store, "tgt") == [1]


async def test_patience_stop(store: ProgramStore, evaluator: Any) -> None:
    result = await make(store, evaluator, max_concurrent=1, patience=3).run("momentum", "pat", 300)
    assert result.stop_reason == "patience"
    rows = sorted((p for p in _all(store, "pat") if p.iteration is not None), key=lambda p: p.iteration)
    assert len(rows) - 1 < 300
    best = -math.inf
    since = 0
    for p in rows:
        if p.fitness is not None and p.fitness > best + 1e-12:
            best, since = p.fitness, 0
        elif not p.is_seed:
            since += 1
    assert since == 3


async def test_wall_clock_stop(store: ProgramStore, evaluator: Any) -> None:
    result = await make(store, evaluator).run("momentum", "wall", 100_000,
                                              stop_condition=StopCondition(max_wall_seconds=1.5))
    assert result.stop_reason == "max_wall_seconds"
    assert 0 < result.iterations_completed < 100_000
    assert result.elapsed_seconds >= 1.5


async def test_budget_stop(store: ProgramStore, evaluator: Any) -> None:
    ctl = make(store, evaluator, PricedMutator(tokens=100, usd=0.01), max_concurrent=1, budget_tokens=350)
    result = await ctl.run("momentum", "bud", 50)
    assert result.stop_reason == "budget"
    # The budget is checked after each recorded iteration, whose retries (after an invalid or duplicate
    # candidate) are calls too: the run stops at the first iteration that takes the spend to 350 tokens.
    done = iterations(store, "bud")
    assert done == list(range(1, len(done) + 1))
    assert _spend_at_iterations(store, "bud", "input_tokens")[-1] >= 350
    assert len(done) == 1 or _spend_at_iterations(store, "bud", "input_tokens")[-2] < 350
    store2_result = await make(store, evaluator, PricedMutator(tokens=0, usd=0.3), max_concurrent=1,
                               budget_usd=1.0).run("momentum", "usd", 50)
    assert store2_result.stop_reason == "budget"
    # The budget is checked after each recorded iteration (its retries included): the run stopped at the first
    # iteration that took the spend to $1.
    at_iteration = _spend_at_iterations(store, "usd", "cost_usd")
    assert at_iteration[-1] >= 1.0 > at_iteration[-2]
    assert iterations(store, "usd") == list(range(1, store2_result.iterations_completed + 1))
    # Resuming a budget-stopped experiment spends nothing more: the budget covers the whole experiment.
    again = await make(store, evaluator, PricedMutator(tokens=100, usd=0.01), max_concurrent=2,
                       budget_tokens=350).resume("bud")
    assert again.stop_reason == "budget" and again.iterations_run == 0
    assert iterations(store, "bud") == done


async def test_failures_recorded_never_parents(store: ProgramStore, evaluator: Any) -> None:
    script = {2: "syntax", 3: "runtime", 4: "flat", 6: "runtime", 7: "flat"}
    mutator = ScriptedMutator(script)
    result = await make(store, evaluator, mutator, max_concurrent=1, max_retries=3).run("momentum", "fail", 12)
    every = [p for p in _all(store, "fail") if not p.is_seed]
    rows = {p.iteration: p for p in every if p.iteration is not None}
    assert sorted(rows) == list(range(1, 13))
    assert rows[2].status == "syntax" and rows[2].stage is None and rows[2].fitness is None
    assert rows[3].status == "runtime" and rows[3].fitness is None and "division" in (rows[3].failure_message or "")
    assert rows[4].status == "screened" and rows[4].stage == "screen" and rows[4].fitness is None
    # Retries carry the validation error: three attempts for iteration 2, the later ones told why.
    attempts = [c for c in mutator.calls if c.iteration == 2]
    assert [c.attempt for c in attempts] == [1, 2, 3]
    assert attempts[0].previous_error is None and all(c.previous_error for c in attempts[1:])
    failed_ids = {p.id for p in rows.values() if p.status != "ok"}
    assert all(p.parent_id not in failed_ids for p in rows.values())
    # Iterations 6 and 7 repeat the code of 3 and 4 whatever they are told: on the last attempt the stored result
    # is reused (a cache hit, no backtest), linked to the first program.
    for again, first in ((6, 3), (7, 4)):
        assert [c.previous_error is not None and "did nothing new" in c.previous_error
                for c in mutator.calls if c.iteration == again] == [False, True, True]
        assert rows[again].duplicate_kind == "code" and rows[again].duplicate_of == rows[first].id
        assert (rows[again].status, rows[again].metrics) == (rows[first].status, rows[first].metrics)
    discarded = len(every) - 12
    assert result.cache_hits == 2
    assert result.total_mutations == 12 + discarded and result.successful_mutations == 11 + discarded
    assert result.total_evaluations == 1 + 11 + discarded - 2
    assert result.successful_evaluations == 1 + sum(p.status == "ok" and p.duplicate_kind != "code" for p in every)


async def test_stop_then_resume_completes_exactly(store: ProgramStore, evaluator: Any) -> None:
    ctl = make(store, evaluator)

    def on_progress(event: ProgressEvent) -> None:
        if event.kind == "iteration" and event.iterations_completed >= 3:
            ctl.stop()

    result = await ctl.run("momentum", "sr", 12, on_progress=on_progress)
    assert result.status is EvolutionStatus.PAUSED and result.stop_reason == "stopped"
    assert store.require_experiment("sr").status == "paused"
    done = iterations(store, "sr")
    assert 3 <= len(done) < 12
    resumed = await make(store, evaluator).resume("sr", additional_iterations=3)
    assert resumed.status is EvolutionStatus.COMPLETED and resumed.stop_reason == "iterations"
    assert iterations(store, "sr") == list(range(1, 16))
    assert seeds(store, "sr") == 1
    assert resumed.iterations_run == 15 - len(done)
    with pytest.raises(ValueError, match="recorded all 15"):
        await make(store, evaluator).resume("sr")


async def test_force_stop_discards_in_flight(store: ProgramStore, evaluator: Any) -> None:
    ctl = make(store, evaluator, max_concurrent=2)

    def on_progress(event: ProgressEvent) -> None:
        if event.kind == "iteration":
            ctl.stop(force=True)

    result = await ctl.run("momentum", "force", 20, on_progress=on_progress)
    assert result.status is EvolutionStatus.PAUSED
    done = iterations(store, "force")
    assert 1 <= len(done) <= 2
    await make(store, evaluator).resume("force")
    assert iterations(store, "force") == list(range(1, 21))


async def test_stop_request_from_another_connection(tmp_path: Path, store: ProgramStore, evaluator: Any) -> None:
    other = ProgramStore(store.path)
    requested: list[str] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.kind == "iteration" and not requested:
            requested.append(request_stop(other, "ext"))

    result = await make(store, evaluator).run("momentum", "ext", 500, on_progress=on_progress)
    other.close()
    assert requested == ["requested"]
    assert result.status is EvolutionStatus.PAUSED and result.stop_reason == "stopped"
    assert len(iterations(store, "ext")) < 500


async def test_invalid_seed_and_missing_blocks(tmp_path: Path, store: ProgramStore, evaluator: Any) -> None:
    with pytest.raises(ValueError, match="unknown seed strategy"):
        await make(store, evaluator).run("no_such_seed", "bad", 3)
    plain = tmp_path / "plain.py"
    code = seed_source("momentum")
    for line in [ln for ln in code.splitlines() if "EVOLVE-BLOCK" in ln]:
        code = code.replace(line + "\n", "")
    assert not extract_blocks(code)
    plain.write_text(code)
    with pytest.raises(ValueError, match="no EVOLVE-BLOCK"):
        await make(store, evaluator).run(str(plain), "bad", 3)
    assert store.get_experiment("bad") is None
    with pytest.raises(ValueError, match="not found"):
        await make(store, evaluator).resume("bad")


class BrokenStore(ProgramStore):
    """A store whose disk 'fails' on the third iteration write (stands in for corruption mid-run)."""

    def record_iteration(self, program: Any, experiment_update: Any = None, discarded: Any = ()) -> int:
        if (program.iteration or 0) >= 3:
            raise StoreError(f"store {self.path} is corrupt: database disk image is malformed")
        return super().record_iteration(program, experiment_update, discarded)


async def test_store_failure_marks_failed(tmp_path: Path, evaluator: Any) -> None:
    broken = BrokenStore(tmp_path / "broken.sqlite")
    with pytest.raises(RuntimeError) as info:
        await make(broken, evaluator, max_concurrent=1).run("momentum", "corrupt", 10)
    assert "\n" not in str(info.value) and "malformed" in str(info.value)
    assert broken.require_experiment("corrupt").status == "failed"
    broken.close()


def test_get_progress(store: ProgramStore, evaluator: Any) -> None:
    ctl = make(store, evaluator)
    with pytest.raises(ValueError):
        ctl.get_progress()
    asyncio.run(ctl.run("momentum", "prog", 2))
    progress = ctl.get_progress()
    assert progress.experiment == "prog" and progress.iterations_completed == 2
    assert progress.total_mutations == 2 + _discarded(store, "prog") and progress.best_fitness is not None
    with pytest.raises(ValueError):
        ctl.get_progress("missing")


def _spend_at_iterations(store: ProgramStore, experiment: str, field: str) -> list[float]:
    """Cumulative spend (rows in id order) at each recorded iteration."""
    spent, out = 0.0, []
    for p in _all(store, experiment):
        spent += getattr(p, field)
        if p.iteration:
            out.append(spent)
    return out


def _discarded(store: ProgramStore, experiment: str) -> int:
    return sum(1 for p in _all(store, experiment) if p.iteration is None and not p.is_seed)


def _all(store: ProgramStore, experiment: str) -> list[Any]:
    with store.snapshot() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM programs WHERE experiment = ? ORDER BY id",
                                          (experiment,))]
    return store.get_many(ids)


async def test_resume_rescores_a_seed_whose_worker_died(store: ProgramStore, evaluator: Any) -> None:
    await make(store, evaluator).run("momentum", "reseed", 0)
    seed = store.seed("reseed")
    assert seed is not None and seed.status == "ok" and seed.id is not None
    good = seed.fitness
    store.update_metrics(seed.id, {}, None, status="crash", failure_message="worker exited with code 1")
    store.update_experiment("reseed", status=EvolutionStatus.FAILED.value)
    result = await make(store, evaluator).resume("reseed", additional_iterations=2)
    again = store.seed("reseed")
    assert again is not None and again.status == "ok" and again.fitness == pytest.approx(good)
    assert iterations(store, "reseed") == [1, 2] and seeds(store, "reseed") == 1
    assert result.status is EvolutionStatus.COMPLETED


async def test_takes_its_section_and_records_the_whole_run_config(store: ProgramStore, evaluator: Any) -> None:
    """The loop gets its ``[evolution]`` section plus the named wiring, never the run config; what it records for
    ``evolve resume`` is still the whole run config (backtest included) with this run's generations and seed."""
    with pytest.raises(ValueError, match="loop_wiring"):
        EvolutionController(BASE, store, evaluator)  # type: ignore[arg-type]
    other = loop_wiring(BASE.with_updates({"evolution.fitness_metric": "Sortino"}))
    with pytest.raises(ValueError, match="wiring built for fitness 'Sortino'"):
        EvolutionController(BASE.evolution, store, evaluator, wiring=other)
    ctl = make(store, evaluator)
    assert (ctl.wiring.fitness.metric, ctl.wiring.allow_short) == (BASE.evolution.fitness_metric, False)
    await ctl.run("momentum", "recorded", 1)
    stored = config_from_experiment(store, "recorded").to_dict()
    expected = BASE.with_updates({"evolution.generations": 1, "evolution.seed_strategy": "momentum"}).to_dict()
    assert stored == expected
