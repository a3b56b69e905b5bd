"""Prompts tell the truth: the fitness the mutators are told is the one the run's config selects by.

The request is built by a real controller (real evaluator, real store) and then rendered exactly as the LLM
mutator (system + user prompt) and the agent mutator (request file, validated against its schema) render it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import RunConfig
from alpha_evolve.controller import EvolutionController
from alpha_evolve.evaluation_setup import build_evaluator, loop_wiring
from alpha_evolve.files import schema_errors
from alpha_evolve.mutators import prompts
from alpha_evolve.mutators.agent import REQUEST_SCHEMA, AgentMutator
from alpha_evolve.mutators.base import MutationRequest, MutationResponse
from alpha_evolve.mutators.offline import OfflineMutator
from alpha_evolve.store import ProgramStore

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.requests: list[MutationRequest] = []
        self.inner = OfflineMutator(seed=0)

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        self.requests.append(request)
        return await self.inner.mutate(request)


CASES: list[tuple[dict[str, Any], str, str, str]] = [
    ({}, "Sharpe", "maximize", "higher"),
    ({"evolution.fitness_metric": "Calmar"}, "Calmar", "maximize", "higher"),
    ({"evolution.fitness_metric": "MaxDD"}, "MaxDD", "minimize", "lower"),
    ({"evolution.fitness_metric": "Sortino", "evolution.fitness_folds": 3,
      "evolution.fitness_fold_aggregate": "worst"}, "Sortino", "maximize", "higher"),
]


@pytest.fixture(scope="module")
def requests(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[RunConfig, MutationRequest]]:
    """One real controller iteration per config; the request its mutator received."""
    import asyncio

    base = RunConfig().with_updates({"backtest.synthetic_bars": 300, "evolution.max_concurrent": 1,
                                     "backtest.screen_fraction": 0.0})
    out = []
    with build_evaluator(base, include=("train",)) as evaluator:
        for n, (updates, *_rest) in enumerate(CASES):
            config = base.with_updates(updates) if updates else base
            recorder = Recorder()
            with ProgramStore(tmp_path_factory.mktemp("p") / "p.sqlite") as store:
                ctl = EvolutionController(config.evolution, store, evaluator, recorder, wiring=loop_wiring(config))
                asyncio.run(ctl.run("momentum", f"e{n}", 1))
            out.append((config, recorder.requests[0]))
    return out


@pytest.mark.parametrize("case", range(len(CASES)))
def test_every_prompt_names_the_configured_fitness(case: int, requests: list[Any], tmp_path: Path) -> None:
    _, metric, direction, better = CASES[case]
    config, request = requests[case]
    assert request.fitness.metric == config.evolution.fitness_metric == metric
    assert request.fitness.direction == direction and request.allow_short is False
    system = prompts.system_prompt(request.fitness)
    user = prompts.user_prompt(request)
    assert f"selects programs by {request.fitness.sentence()}" in system
    assert f"({better} is better)" in system and f"a {better} {metric}" in user
    assert "(the fitness)" not in system and "Aim for a higher Calmar" not in user
    if config.evolution.fitness_folds > 1:
        assert "worst Sortino over 3 contiguous folds of the train period" in system
    # The agent's request file carries the same, and passes its schema.
    document = AgentMutator(tmp_path)._request_document(request)
    assert schema_errors(REQUEST_SCHEMA, document) == []
    assert document["fitness"] == {"metric": metric, "direction": direction, "period": request.fitness.period,
                                   "description": request.fitness.sentence()}
    assert MutationRequest.from_dict(document).fitness == request.fitness


def test_the_agent_definition_reads_the_fitness_from_the_request() -> None:
    text = (ROOT / ".claude" / "agents" / "alpha-evolve-mutator.md").read_text(encoding="utf-8")
    assert "`fitness`" in text and "read it from the request" in text
    # No metric is declared to be the fitness, and none is named as the thing to improve.
    assert not re.search(r"(Calmar|Sharpe|Sortino|CAGR)[^.\n]*\bis the fitness", text)
    assert not re.search(r"improve the (Calmar|Sharpe|Sortino)", text)
