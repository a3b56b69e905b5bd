"""LLMMutator against the real anthropic SDK client, offline: httpx2.MockTransport replays scripted API replies."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from alpha_evolve.blocks import extract_blocks, validate_candidate
from alpha_evolve.mutators import make_mutator
from alpha_evolve.mutators.base import Budget, BudgetExceeded, Inspiration, MutationRequest
from alpha_evolve.mutators.llm import DEFAULT_MODEL, LLMMutator, estimate_cost, extract_reply_blocks

SEEDS = Path(__file__).resolve().parent.parent / "alpha_evolve" / "strategies"
MOMENTUM = (SEEDS / "momentum.py").read_text()

GOOD_REPLY = """Slower trend filter and an exit when momentum fades.

```python
# === EVOLVE-BLOCK: indicators ===
self.fast_ema = ExponentialMovingAverage(12)
self.slow_ema = ExponentialMovingAverage(40)
# === END EVOLVE-BLOCK ===
# === EVOLVE-BLOCK: decision_logic ===
if self.fast_ema.value > self.slow_ema.value * 1.002:
    self.go_long()
elif self.fast_ema.value < self.slow_ema.value:
    self.go_flat()
# === END EVOLVE-BLOCK ===
```
"""

BAD_REPLY = """```python
# === EVOLVE-BLOCK: decision_logic ===
import os
if self.fast_ema.value > self.slow_ema.value:
    self.go_long()
# === END EVOLVE-BLOCK ===
```"""


def _request(**kw) -> MutationRequest:
    base: dict[str, Any] = dict(
        request_id="req-1", experiment="exp", iteration=3, parent_id="p1", parent_code=MOMENTUM,
        parent_blocks=extract_blocks(MOMENTUM),
        parent_metrics={"Calmar": 0.8125, "Sharpe": 1.234, "MaxDD": 0.21, "CAGR": 0.17, "WinRate": 0.45,
                        "holdout_Calmar": 9.87, "validation_Sharpe": 7.65},
        guidance="prefer fewer trades",
        inspirations=(Inspiration(blocks={"decision_logic": "if self.is_flat:\n    self.go_long()\n"},
                                  metrics={"Calmar": 1.5}, program_id="p9"),),
    )
    base.update(kw)
    return MutationRequest(**base)


def _message(text: str, *, input_tokens: int = 1000, output_tokens: int = 200, cache_read: int = 0) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": DEFAULT_MODEL,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": 0}}


class Script:
    """A fake Messages API: replies in order, records every request body."""

    def __init__(self, *replies: httpx2.Response | Callable[[], httpx2.Response]) -> None:
        self.replies = list(replies)
        self.bodies: list[dict] = []
        self.headers: list[dict] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(request.content))
        self.headers.append(dict(request.headers))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return reply() if callable(reply) else reply

    def prompt(self, i: int) -> str:
        return self.bodies[i]["messages"][0]["content"]


def ok(text: str, **kw) -> httpx2.Response:
    return httpx2.Response(200, json=_message(text, **kw))


def err(status: int, kind: str, message: str, headers: dict | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers=headers or {},
                           json={"type": "error", "error": {"type": kind, "message": message}})


def mutator(script: Script, **kw) -> LLMMutator:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)
    return LLMMutator(api_key="sk-test", http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(script)),
                      **kw)


def test_default_model_is_current_and_not_deprecated():
    from typing import get_args

    from anthropic.resources.messages.messages import DEPRECATED_MODELS
    from anthropic.types.model import Model

    literal = get_args(get_args(Model)[0])
    assert DEFAULT_MODEL in literal
    assert DEFAULT_MODEL not in DEPRECATED_MODELS


async def test_good_reply_gives_valid_candidate_tokens_and_cost():
    script = Script(ok(GOOD_REPLY, input_tokens=1500, output_tokens=300, cache_read=500))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        resp = await mutator(script).mutate(_request())
    assert resp.ok, resp.error
    validate_candidate(MOMENTUM, str(resp.code))
    assert "ExponentialMovingAverage(40)" in str(resp.code) and "1.002" in str(resp.code)
    assert extract_blocks(str(resp.code))["decision_logic"] == resp.blocks["decision_logic"]
    assert (resp.input_tokens, resp.output_tokens, resp.cache_read_tokens) == (1500, 300, 500)
    assert resp.cost_usd == pytest.approx(estimate_cost(DEFAULT_MODEL, 1500, 300, 500))
    assert resp.cost_usd == pytest.approx((1500 * 3 + 300 * 15 + 500 * 0.3) / 1e6)
    assert resp.attempts == 1 and resp.model == DEFAULT_MODEL

    body = script.bodies[0]
    assert body["model"] == DEFAULT_MODEL
    assert "temperature" not in body  # API version 2026-10-21 rejects sampling parameters
    assert script.headers[0]["authorization"] == "Bearer sk-test"
    prompt = script.prompt(0)
    assert "Calmar 0.812" in prompt and "Sharpe 1.234" in prompt and "MaxDD 21.0%" in prompt
    assert "CAGR 17.0%" in prompt and "WinRate 45.0%" in prompt
    assert "9.87" not in prompt and "7.65" not in prompt
    assert "holdout" not in prompt.lower() and "validation_" not in prompt
    assert "prefer fewer trades" in prompt and "Calmar 1.500" in prompt  # guidance + inspiration
    assert "# === EVOLVE-BLOCK: decision_logic ===" in prompt
    system = body["system"][0]["text"]
    assert "RelativeStrengthIndex" in system and "0..1" in system and "go_flat" in system


async def test_rate_limit_then_overload_then_success_backs_off():
    script = Script(err(429, "rate_limit_error", "slow down", {"retry-after-ms": "1"}),
                    err(529, "overloaded_error", "busy"), ok(GOOD_REPLY))
    m = mutator(script, backoff_base=0.004, backoff_max=0.05)
    delays: list[float] = []
    real = m._backoff

    def spy(failures: int, hint: float | None) -> float:
        delays.append(real(failures, hint))
        return delays[-1]

    m._backoff = spy  # type: ignore[method-assign]
    resp = await m.mutate(_request())
    assert resp.ok, resp.error
    assert len(script.bodies) == 3
    assert len(delays) == 2 and 0.002 <= delays[0] <= 0.004 and 0.004 <= delays[1] <= 0.008
    assert resp.attempts == 1  # transient failures are not validation attempts


async def test_transient_errors_give_up_after_api_retries():
    script = Script(err(529, "overloaded_error", "busy"))
    resp = await mutator(script, api_retries=2).mutate(_request())
    assert not resp.ok and resp.failure_kind == "api"
    assert len(script.bodies) == 3
    assert "529" in str(resp.error) and "gave up after 3 tries" in str(resp.error) and "\n" not in str(resp.error)


async def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    m = mutator(Script(ok(GOOD_REPLY)), backoff_base=1.0, backoff_max=30.0)
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0)):
        delays = {m._backoff(failures, None) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jitter
    assert m._backoff(1, 10.0) >= 10.0
    assert m._backoff(1, 1e6) <= 30.0


async def test_invalid_reply_is_retried_with_the_error_in_the_prompt():
    script = Script(ok(BAD_REPLY), ok(GOOD_REPLY))
    resp = await mutator(script).mutate(_request())
    assert resp.ok, resp.error
    assert resp.attempts == 2 and len(script.bodies) == 2
    assert resp.input_tokens == 2000 and resp.output_tokens == 400  # summed over attempts
    assert "previous attempt was rejected" not in script.prompt(0)
    second = script.prompt(1)
    assert "previous attempt was rejected" in second
    assert "forbidden-import" in second and "import os" in second  # the error and the rejected body


async def test_three_invalid_replies_fail_with_the_last_error():
    script = Script(ok("no code at all"), ok(BAD_REPLY), ok(BAD_REPLY.replace("import os", "x = open('f')")))
    resp = await mutator(script).mutate(_request())
    assert not resp.ok and resp.code is None
    assert resp.attempts == 3 and len(script.bodies) == 3
    assert resp.failure_kind == "policy" and "open" in str(resp.error)
    assert "x = open('f')" in str(resp.raw_excerpt)
    assert "no code" in script.prompt(1) and "forbidden-import" in script.prompt(2)


async def test_max_retries_is_the_total_number_of_replies():
    script = Script(ok(BAD_REPLY))
    resp = await mutator(script, max_retries=1).mutate(_request())
    assert resp.failure_kind == "policy" and len(script.bodies) == 1
    with pytest.raises(ValueError, match="between 1 and 3"):
        mutator(script, max_retries=4)


async def test_unchanged_reply_is_a_failed_mutation():
    blocks = extract_blocks(MOMENTUM)
    # Same bodies, different whitespace and an added comment: still the parent's program.
    reply = ("```python\n# === EVOLVE-BLOCK: decision_logic ===\n# same as before\n"
             + blocks["decision_logic"].replace("> self", ">  self") + "\n# === END EVOLVE-BLOCK ===\n```")
    script = Script(ok(reply))
    resp = await mutator(script).mutate(_request())
    assert resp.failure_kind == "unchanged" and resp.code is None
    assert "identical" in script.prompt(1)


async def test_budget_exhausted_stops_before_the_next_call():
    budget = Budget(max_tokens=1500)
    script = Script(ok(GOOD_REPLY, input_tokens=1000, output_tokens=600))
    m = mutator(script, budget=budget)
    first = await m.mutate(_request())
    assert first.ok and budget.tokens_used == 1600 and budget.exhausted
    with pytest.raises(BudgetExceeded, match="token budget exhausted") as info:
        await m.mutate(_request(request_id="req-2"))
    assert len(script.bodies) == 1
    assert info.value.response is not None and info.value.response.failure_kind == "budget"


async def test_budget_in_dollars_is_shared_between_mutators():
    budget = Budget(max_usd=0.01)
    script = Script(ok(BAD_REPLY, input_tokens=2000, output_tokens=500))  # 0.0135 USD per reply at sonnet rates
    with pytest.raises(BudgetExceeded, match="cost budget") as info:
        await mutator(script, budget=budget).mutate(_request())
    assert len(script.bodies) == 1  # the retry is not sent once the budget is spent
    assert info.value.response is not None and info.value.response.input_tokens == 2000
    with pytest.raises(BudgetExceeded):
        await mutator(Script(ok(GOOD_REPLY)), budget=budget).mutate(_request())


async def test_auth_error_fails_at_once_with_one_line():
    script = Script(err(401, "authentication_error", "invalid x-api-key"))
    resp = await mutator(script).mutate(_request())
    assert len(script.bodies) == 1
    assert resp.failure_kind == "auth" and resp.fatal
    assert resp.error == "Anthropic API error 401 (authentication_error: invalid x-api-key) — check ANTHROPIC_API_KEY"


async def test_bad_request_fails_at_once():
    script = Script(err(400, "invalid_request_error", "max_tokens: too large\nfor this model"))
    resp = await mutator(script).mutate(_request())
    assert len(script.bodies) == 1 and resp.failure_kind == "api" and not resp.fatal
    assert "\n" not in str(resp.error) and "400" in str(resp.error)


async def test_connection_errors_are_retried():
    calls = {"n": 0}

    def flaky(request: httpx2.Request) -> httpx2.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx2.ConnectError("connection refused", request=request)
        return ok(GOOD_REPLY)

    m = LLMMutator(api_key="k", backoff_base=0.001,
                   http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(flaky)))
    resp = await m.mutate(_request())
    assert resp.ok and calls["n"] == 2


def test_missing_api_key_is_one_line(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        LLMMutator()


def test_make_mutator_auto_picks_llm_with_key(monkeypatch, caplog):
    import logging

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-x")
    with caplog.at_level(logging.INFO, logger="alpha_evolve.mutators"):
        m = make_mutator("auto", model="claude-haiku-5-5", seed=3, run_dir="ignored")
    assert isinstance(m, LLMMutator) and m.model == "claude-haiku-5-5"
    assert "auto -> llm" in caplog.text


# -------------------------------------------------------------------------------------------------- extraction


def test_extract_from_several_fences_and_without_fences():
    two_fences = ("a\n```python\n# === EVOLVE-BLOCK: a ===\nx = 1\n# === END EVOLVE-BLOCK ===\n```\ntext\n"
                  "```\n    # === EVOLVE-BLOCK: b ===\n    y = 2\n    # === END EVOLVE-BLOCK ===\n```")
    assert extract_reply_blocks(two_fences, ("a", "b")) == {"a": "x = 1\n", "b": "y = 2\n"}
    bare = "# === EVOLVE-BLOCK: a ===\n    if x:\n        y()\n# === END EVOLVE-BLOCK ===\n"
    assert extract_reply_blocks(bare, ("a",)) == {"a": "if x:\n    y()\n"}


def test_extract_single_fence_when_one_block_may_change():
    assert extract_reply_blocks("Here:\n```python\nself.go_long()\n```\n", ("decision_logic",)) == {
        "decision_logic": "self.go_long()\n"}
    with pytest.raises(ValueError, match="no EVOLVE-BLOCK markers"):
        extract_reply_blocks("```python\nself.go_long()\n```", ("indicators", "decision_logic"))


def test_extract_later_copy_wins_and_unclosed_block_is_an_error():
    text = ("# === EVOLVE-BLOCK: a ===\nx = 1\n# === END EVOLVE-BLOCK ===\n"
            "better:\n# === EVOLVE-BLOCK: a ===\nx = 2\n# === END EVOLVE-BLOCK ===\n")
    assert extract_reply_blocks(text, ("a",)) == {"a": "x = 2\n"}
    with pytest.raises(ValueError, match="not closed"):
        extract_reply_blocks("```\n# === EVOLVE-BLOCK: a ===\nx = 1\n```", ("a",))


def test_extract_messy_replies_crlf_named_end_marker_and_fences_inside_markers():
    crlf = "Here:\r\n```python\r\nself.go_long()\r\n```\r\n"
    assert extract_reply_blocks(crlf, ("decision_logic",)) == {"decision_logic": "self.go_long()\n"}
    named_end = "```python\n# === EVOLVE-BLOCK: a ===\nx = 1\n# === END EVOLVE-BLOCK: a ===\n```\n"
    assert extract_reply_blocks(named_end, ("a",)) == {"a": "x = 1\n"}
    fenced_inside = "# === EVOLVE-BLOCK: a ===\n```python\nx = 1\n```\n\n# === END EVOLVE-BLOCK ===\n"
    assert extract_reply_blocks(fenced_inside, ("a",)) == {"a": "x = 1\n"}
    lower = "```\n# === evolve-block: a ===\nx = 1\n# === end evolve-block ===\n```"
    assert extract_reply_blocks(lower, ("a",)) == {"a": "x = 1\n"}
    with pytest.raises(ValueError, match="not closed"):  # a fence then prose: the body was cut short
        extract_reply_blocks("# === EVOLVE-BLOCK: a ===\nx = 1\n```\nprose\n# === END EVOLVE-BLOCK ===\n", ("a",))


async def test_crlf_reply_with_blocks_in_another_order_gives_valid_candidate():
    reply = "\r\n".join([
        "Reasoning first.", "", "```python",
        "# === EVOLVE-BLOCK: decision_logic ===",
        "if self.fast_ema.value > self.slow_ema.value * 1.002:", "    self.go_long()",
        "elif self.fast_ema.value < self.slow_ema.value:", "    self.go_flat()",
        "# === END EVOLVE-BLOCK: decision_logic ===",
        "# === EVOLVE-BLOCK: indicators ===",
        "self.fast_ema = ExponentialMovingAverage(12)", "self.slow_ema = ExponentialMovingAverage(40)",
        "# === END EVOLVE-BLOCK ===", "```", "Some closing prose.", ""])
    resp = await mutator(Script(ok(reply)), max_retries=1).mutate(_request())
    assert resp.ok, resp.error
    assert "ExponentialMovingAverage(40)" in str(resp.code) and "1.002" in str(resp.code)
    assert "\r" not in str(resp.code)


async def test_only_allowed_blocks_may_change():
    script = Script(ok(GOOD_REPLY))
    resp = await mutator(script, max_retries=1).mutate(_request(allowed_blocks=("decision_logic",)))
    assert resp.failure_kind == "blocks" and "'indicators' may not be changed" in str(resp.error)


def test_sdk_errors_are_the_ones_we_catch():
    # Guards the status-code routing in _call against SDK renames.
    assert issubclass(anthropic.OverloadedError, anthropic.InternalServerError)
    assert issubclass(anthropic.RateLimitError, anthropic.APIStatusError)
    assert issubclass(anthropic.APITimeoutError, anthropic.APIConnectionError)
