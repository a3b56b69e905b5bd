"""The controller contract's names (shared/spec/controller-api-contract.md) on the real store and evaluator:
``_select_parent``, ``_request_mutation``, ``LLMMutator(max_retries=3, retry_delay=1.0)``, a ``Mutator`` protocol
met by any object with ``mutate``; and one store row per mutation attempt, failed attempts included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import RunConfig
from alpha_evolve.controller import EvolutionController
from alpha_evolve.evaluation_setup import build_evaluator, loop_wiring
from alpha_evolve.mutators import Mutator
from alpha_evolve.mutators.base import MutationRequest, MutationResponse
from alpha_evolve.mutators.llm import LLMMutator
from alpha_evolve.mutators.offline import OfflineMutator
from alpha_evolve.store import ProgramStore

pytestmark = pytest.mark.timeout(120)

BASE = RunConfig().with_updates({"backtest.synthetic_bars": 400, "evolution.mutator": "offline",
                                 "evolution.max_concurrent": 1, "evolution.max_retries": 3})


class NamelessMutator:
    """No ``name`` attribute, no base class: only ``mutate``. The first attempt of iteration 1 is invalid."""

    def __init__(self) -> None:
        self.inner = OfflineMutator(seed=5)
        self.calls: list[MutationRequest] = []

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        self.calls.append(request)
        if request.attempt == 1 and request.iteration == 1:
            bad = request.parent_code.replace("def decide(self, bar: Bar) -> None:", "def decide(self, bar: Bar)")
            return MutationResponse(f"{request.request_id}-a1", "nameless", code=bad)
        return await self.inner.mutate(request)


@pytest.fixture(scope="module")
def evaluator() -> Iterator[Any]:
    ev = build_evaluator(BASE, include=("train",))
    yield ev
    ev.close()


def test_any_object_with_mutate_is_a_mutator(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(NamelessMutator(), Mutator) and isinstance(OfflineMutator(), Mutator)
    assert not isinstance(object(), Mutator)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    llm = LLMMutator(max_retries=3, retry_delay=1.0)
    assert llm.max_retries == 3 and llm.backoff_base == 1.0 and isinstance(llm, Mutator)
    with pytest.raises(ValueError, match="retry_delay"):
        LLMMutator(max_retries=3, retry_delay=-1.0)


async def test_contract_calls_and_failed_attempts_are_rows(tmp_path: Path, evaluator: Any) -> None:
    store = ProgramStore(tmp_path / "programs.sqlite")
    mutator = NamelessMutator()
    controller = EvolutionController(BASE.evolution, store, evaluator, mutator, wiring=loop_wiring(BASE))
    with pytest.raises(RuntimeError, match="no eligible parent"):
        controller._select_parent("nothing-yet")
    await controller.run("momentum", "contract", 2)
    # the invalid first attempt of iteration 1 left its own row; the retry that succeeded has one too
    rows = store.attempts("contract", 1)
    assert (rows[0]["attempt"], rows[0]["status"]) == (1, "syntax") and rows[-1]["status"] == "ok"
    assert rows[0]["error"] and rows[0]["request_id"] == "contract-1-a1"
    for it in (1, 2):  # one row per attempt (a retried duplicate is a row too); the last one produced the program
        attempts = store.attempts("contract", it)
        assert [r["attempt"] for r in attempts] == list(range(1, len(attempts) + 1))
        assert attempts[-1]["status"] == "ok", attempts  # (an earlier valid one may have traded like a known program)

    parent = controller._select_parent("contract")
    assert parent.status == "ok" and parent.experiment == "contract"
    response = await controller._request_mutation(parent)
    assert response.ok and response.code and response.code != parent.code
    retried = await controller._request_mutation(parent, retry_count=2, previous_error="too similar")
    assert mutator.calls[-1].attempt == 3 and mutator.calls[-1].previous_error == "too similar"
    assert retried.request_id
    assert [r["attempt"] for r in store.attempts("contract", 3)] == [1, 3]
    with pytest.raises(ValueError, match="retry_count"):
        await controller._request_mutation(parent, retry_count=3)
    store.close()


def test_the_attempt_log_works_on_a_store_made_before_it(tmp_path: Path) -> None:
    store = ProgramStore(tmp_path / "old.sqlite")
    assert store.attempts("x") == []  # no table yet: nothing recorded, no error
    store.record_attempt(experiment="x", iteration=1, attempt=1, request_id="x-1-a1", status="timeout",
                         error="no answer", blocks={"decision_logic": "pass"})
    assert store.attempts("x")[0]["blocks"] == {"decision_logic": "pass"}
    store.close()
    reopened = ProgramStore(tmp_path / "old.sqlite")  # a store with the extra table still opens
    assert len(reopened.attempts("x", 1)) == 1
    reopened.close()
