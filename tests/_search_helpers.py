"""Scripted mutations and a backtest-counting evaluator shared by the duplicate and decision-trace tests."""

from __future__ import annotations

from typing import Any

from alpha_evolve.blocks import splice_blocks
from alpha_evolve.mutators.base import MutationRequest, MutationResponse

# A different program: faster EMA, so it trades differently from the seed.
FAST_INDICATORS = "self.fast_ema = ExponentialMovingAverage(5)\nself.slow_ema = ExponentialMovingAverage(30)\n"
# The same program as FAST, written differently: comments, layout, a docstring-like string, 5 spelt 0x5.
FAST_REFORMATTED = ('"""faster."""\n# a comment\nself.fast_ema = ExponentialMovingAverage( 0x5 )   # five\n\n'
                    "self.slow_ema = ExponentialMovingAverage(30)\n")
# Different code that trades exactly like the momentum seed on a cash account (operands swapped, no dead branch).
SEED_EQUIVALENT = ("if self.slow_ema.value < self.fast_ema.value:\n    self.go_long()\n"
                   "elif self.slow_ema.value > self.fast_ema.value:\n    self.go_flat()\n")


class CountingEvaluator:
    """The real evaluator, with a count of the backtests the controller asked for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def aevaluate(self, code: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(code)
        return await self.inner.aevaluate(code, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Script:
    """Answers attempt ``k`` of iteration ``i`` with ``plan[i][k-1]`` (the last entry repeats); records requests."""

    name = "script"

    def __init__(self, plan: dict[int, list[dict[str, str]]]) -> None:
        self.plan = plan
        self.calls: list[MutationRequest] = []

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        self.calls.append(request)
        answers = self.plan[request.iteration]
        bodies = answers[min(request.attempt, len(answers)) - 1]
        return MutationResponse(request.request_id, self.name, code=splice_blocks(request.parent_code, bodies))
