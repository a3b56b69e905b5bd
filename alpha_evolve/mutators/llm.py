"""Mutations written by Claude through the Anthropic Messages API (``anthropic.AsyncAnthropic``).

Two kinds of retry, counted separately:

* transient API failures (429 rate limit, 529 overloaded, other 5xx, 408/409, connection errors and timeouts)
  are retried with exponential backoff and full jitter, honouring ``retry-after``; the SDK's own retries are
  switched off so that this policy — and its tests — are the only one in force;
* a reply that cannot be turned into a valid program (no blocks, syntax, policy, damaged markers, unchanged)
  is asked again with the error in the prompt: at most ``max_retries`` (1–3, default 3) replies per mutation.

Credential and request errors (400, 401, 403, 404, 413, 422) are not retried: they come back at once as a
failed mutation with a one-line error (``failure_kind`` "auth" or "api"). A spent ``Budget`` raises
``BudgetExceeded``. The API version this SDK sends (2026-10-21) rejects sampling parameters, so ``temperature``
is accepted for configuration compatibility but never sent; diversity comes from a seeded "focus" hint and the
inspirations instead, and ``effort`` maps to ``output_config.effort``.

The controller contract's spelling ``LLMMutator(max_retries=3, retry_delay=1.0)`` works: ``retry_delay`` is the
first backoff wait (``backoff_base``) before a transient API failure is retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import random
import re
import textwrap
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2

import alpha_evolve.mutators.prompts as prompts
from alpha_evolve.mutators.base import (
    Budget,
    BudgetExceeded,
    MutationRequest,
    MutationResponse,
    build_candidate,
    excerpt,
)
from alpha_evolve.values import one_line

logger = logging.getLogger("alpha_evolve.mutators.llm")

# Newest Sonnet in anthropic 2.12's ``types.Model`` literal and absent from its DEPRECATED_MODELS: strong at code,
# a third of Opus's price. Keep the id in configuration (``[evolution] model``) to change it.
DEFAULT_MODEL = "claude-sonnet-5-5"
MAX_VALIDATION_ATTEMPTS = 3

# Estimated USD per million tokens by model family: (input, output). Cache writes are billed at 1.25x input and
# cache reads at 0.1x input. These are estimates for budgeting, not invoices; an unknown family is priced at the
# most expensive row so a budget errs on the side of stopping early.
PRICES: dict[str, tuple[float, float]] = {
    "haiku": (1.0, 5.0),
    "sonnet": (3.0, 15.0),
    "opus": (5.0, 25.0),
    "fable": (15.0, 75.0),
    "mythos": (25.0, 125.0),
}
_UNKNOWN_PRICE = max(PRICES.values())
CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.1

_RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def price_for(model: str) -> tuple[float, float]:
    for family, price in PRICES.items():
        if family in model:
            return price
    return _UNKNOWN_PRICE


def estimate_cost(model: str, input_tokens: int, output_tokens: int, cache_read: int = 0,
                  cache_write: int = 0) -> float:
    """Estimated USD for one call; ``input_tokens`` excludes cached tokens, as the API reports it."""
    pin, pout = price_for(model)
    return (input_tokens * pin + cache_write * pin * CACHE_WRITE_FACTOR + cache_read * pin * CACHE_READ_FACTOR
            + output_tokens * pout) / 1_000_000


# ------------------------------------------------------------------------------------------------- extraction

# Markers as models actually write them: any case, any spacing, and an end marker that repeats the block name.
_START_RE = re.compile(r"^[ \t]*#\s*===\s*EVOLVE-BLOCK:\s*(?P<name>[A-Za-z_][\w-]*)\s*===\s*$", re.I)
_END_RE = re.compile(r"^[ \t]*#\s*===\s*END[ \t]+EVOLVE-BLOCK(?::\s*[A-Za-z_][\w-]*)?\s*===\s*$", re.I)
_FENCE_RE = re.compile(r"^[ \t]*(```|~~~)")
_FENCED_RE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(?P<body>.*?)^[ \t]*\1[ \t]*$", re.S | re.M)


class ExtractionError(ValueError):
    """Nothing usable in a reply; the message is fed back to the model."""


def extract_reply_blocks(reply: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """New block bodies from a model reply.

    Accepts marked blocks inside one or several fenced code blocks or with no fences at all (a later copy of a
    block wins, as models revise themselves), and — when exactly one block may change and the reply has no
    markers — a single fenced code block taken as that block's body.
    """
    reply = reply.replace("\r\n", "\n").replace("\r", "\n")  # CRLF/CR replies: fences must match at line ends
    blocks: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    fence_closed = False  # a fence inside a block is fine only right after its start or right before its end
    for line in reply.splitlines():
        m = _START_RE.match(line)
        if m:
            if current is not None:
                raise ExtractionError(
                    f"block {current!r} is not closed with '{prompts.BLOCK_END}' before the next block starts")
            current, lines, fence_closed = m.group("name"), [], False
            continue
        if current is not None:
            if _END_RE.match(line):
                blocks[current] = _clean_body(lines)
                current = None
            elif _FENCE_RE.match(line):
                if any(ln.strip() for ln in lines):
                    fence_closed = True
            elif fence_closed and line.strip():  # a fence closed before the end marker: the body is cut short
                raise ExtractionError(f"block {current!r} is not closed with '{prompts.BLOCK_END}'")
            else:
                lines.append(line)
    if current is not None:
        raise ExtractionError(f"block {current!r} is not closed with '{prompts.BLOCK_END}' (reply cut short?)")
    if blocks:
        empty = [n for n, b in blocks.items() if not b.strip()]
        if empty:
            raise ExtractionError(f"block {empty[0]!r} is empty; write a body (use 'pass' for none)")
        return blocks
    fenced = [m.group("body") for m in _FENCED_RE.finditer(reply)]
    fenced = [f for f in fenced if f.strip()]
    if len(allowed) == 1 and len(fenced) == 1:
        return {allowed[0]: _clean_body(fenced[0].splitlines())}
    if not fenced:
        raise ExtractionError("the reply contains no code: return the new bodies between EVOLVE-BLOCK markers")
    raise ExtractionError(
        "the reply has code but no EVOLVE-BLOCK markers: put each new body between "
        f"'{prompts.BLOCK_START.format(name='<name>')}' and '{prompts.BLOCK_END}'")


def _clean_body(lines: list[str]) -> str:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return textwrap.dedent("\n".join(lines).expandtabs(4)) + "\n"


# ----------------------------------------------------------------------------------------------------- mutator


@dataclass
class _Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost: float = 0.0

    def add(self, model: str, usage: Any) -> tuple[int, float]:
        i = int(getattr(usage, "input_tokens", 0) or 0)
        o = int(getattr(usage, "output_tokens", 0) or 0)
        cr = int(getattr(usage, "cache_read_input_tokens", 0) or 0)
        cw = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        cost = estimate_cost(model, i, o, cr, cw)
        self.input_tokens += i
        self.output_tokens += o
        self.cache_read += cr
        self.cache_write += cw
        self.cost += cost
        return i + o + cr + cw, cost


class _CallFailed(Exception):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class LLMMutator:
    """Claude rewrites the parent's EVOLVE-BLOCKs; see the module docstring for the retry rules."""

    name = "llm"

    def __init__(
        self,
        model: str | None = None,
        *,
        max_tokens: int = 4096,
        temperature: float | None = None,
        effort: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        http_client: httpx2.AsyncClient | None = None,
        max_retries: int = MAX_VALIDATION_ATTEMPTS,
        retry_delay: float | None = None,
        api_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        request_timeout: float = 300.0,
        budget: Budget | None = None,
        seed: int = 0,
        max_inspirations: int = 3,
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        if not 1 <= max_retries <= MAX_VALIDATION_ATTEMPTS:
            raise ValueError(f"max_retries must be between 1 and {MAX_VALIDATION_ATTEMPTS} (got {max_retries})")
        if api_retries < 0:
            raise ValueError("api_retries must be >= 0")
        if retry_delay is not None:  # the controller contract's name: the first wait before a retried API call
            if not (math.isfinite(retry_delay) and retry_delay >= 0):
                raise ValueError(f"retry_delay must be >= 0 seconds (got {retry_delay})")
            backoff_base = retry_delay
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        self.model = model or DEFAULT_MODEL
        self.max_tokens = max_tokens
        self.temperature = temperature  # not sent: see module docstring
        self.effort = effort
        self.max_retries = max_retries
        self.api_retries = api_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.budget = budget or Budget()
        self.seed = seed
        self.max_inspirations = max_inspirations
        if client is None:
            key = api_key or os.environ.get("ANTHROPIC_API_KEY")
            if not key:
                raise ValueError("the llm mutator needs an API key: set ANTHROPIC_API_KEY (or use mutator = "
                                 "\"offline\" / \"agent\")")
            kwargs: dict[str, Any] = {"api_key": key, "max_retries": 0, "timeout": request_timeout}
            if base_url:
                kwargs["base_url"] = base_url
            if http_client is not None:
                kwargs["http_client"] = http_client
            client = anthropic.AsyncAnthropic(**kwargs)
        self._client = client
        if temperature is not None:
            logger.debug("temperature=%s not sent: API version 2026-10-21 rejects sampling parameters",
                         temperature)

    async def aclose(self) -> None:
        await self._client.close()

    # -- one mutation ---------------------------------------------------------------------------------------

    async def mutate(self, request: MutationRequest) -> MutationResponse:
        t0 = time.monotonic()
        usage = _Usage()
        allowed = request.blocks_to_change
        rng = random.Random(self._rng_seed(request))
        current = request
        rejected: dict[str, str] | None = None
        raw: str | None = None
        error: str | None = None
        kind: str | None = None
        blocks: dict[str, str] = {}
        attempts = 0

        def response(**kw: Any) -> MutationResponse:
            base: dict[str, Any] = dict(
                request_id=request.request_id, mutator=self.name, model=self.model,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read, cache_creation_tokens=usage.cache_write,
                cost_usd=round(usage.cost, 6), attempts=attempts, elapsed=time.monotonic() - t0,
                raw_excerpt=excerpt(raw))
            base.update(kw)
            return MutationResponse(**base)

        if not allowed:
            return response(error="the parent has no EVOLVE-BLOCK that may change", failure_kind="blocks")
        for _ in range(self.max_retries):
            reason = self.budget.exhausted_reason()
            if reason is not None:
                raise BudgetExceeded(reason, response(error=reason, failure_kind="budget", blocks=blocks))
            focus = rng.choice(prompts.FOCUS_HINTS)
            text = prompts.user_prompt(current, focus=focus, rejected=rejected,
                                       max_inspirations=self.max_inspirations)
            try:
                message = await self._call(text, prompts.system_prompt(request.fitness))
            except _CallFailed as exc:
                return response(error=str(exc), failure_kind=exc.kind, blocks=blocks)
            attempts += 1
            tokens, cost = usage.add(self.model, message.usage)
            self.budget.charge(tokens, cost)
            raw = "".join(getattr(b, "text", "") for b in message.content if getattr(b, "type", "") == "text")
            try:
                new_bodies = extract_reply_blocks(raw, allowed)
            except ExtractionError as exc:
                error, kind, blocks = str(exc), "no_blocks", {}
                if message.stop_reason == "max_tokens":
                    error += f" (the reply was cut off at max_tokens={self.max_tokens})"
                elif message.stop_reason == "refusal":
                    error = "the model refused to answer"
            else:
                cand = build_candidate(request, new_bodies)
                if cand.code is not None:
                    logger.debug("request %s: valid candidate after %d attempt(s)", request.request_id, attempts)
                    return response(blocks=cand.blocks, code=cand.code)
                error, kind, blocks = cand.error, cand.failure_kind, cand.blocks
                rejected = {n: b for n, b in new_bodies.items() if n in request.parent_blocks}
            logger.warning("request %s attempt %d rejected (%s): %s", request.request_id, attempts, kind, error)
            current = request.with_error(error, request.attempt + attempts)
        return response(error=error, failure_kind=kind, blocks=blocks)

    def _rng_seed(self, request: MutationRequest) -> int:
        key = f"{self.seed}:{request.request_id}:{request.attempt}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")

    # -- one API call with transient retries ---------------------------------------------------------------

    async def _call(self, user_text: str, system: str | None = None) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": [{"type": "text", "text": system or prompts.system_prompt(),
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": user_text}],
        }
        if self.effort:
            kwargs["output_config"] = {"effort": self.effort}
        failures = 0
        while True:
            try:
                return await self._client.messages.create(**kwargs)
            except anthropic.APIStatusError as exc:
                status = exc.status_code
                if status in (401, 403):
                    raise _CallFailed(_api_error_line(exc), "auth") from None
                if status not in _RETRYABLE_STATUS:
                    raise _CallFailed(_api_error_line(exc), "api") from None
                delay_hint = _retry_after(exc.response)
                last = _api_error_line(exc)
            except (anthropic.APIConnectionError, httpx2.TransportError) as exc:
                delay_hint = None
                last = f"cannot reach the Anthropic API: {one_line(exc)}"
            failures += 1
            if failures > self.api_retries:
                raise _CallFailed(f"{last} (gave up after {failures} tries)", "api")
            delay = self._backoff(failures, delay_hint)
            logger.warning("%s; retry %d/%d in %.2fs", last, failures, self.api_retries, delay)
            await asyncio.sleep(delay)

    def _backoff(self, failures: int, hint: float | None) -> float:
        """Full-jitter exponential backoff; a server's retry-after (capped at backoff_max) is a floor."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (failures - 1)))
        delay = random.uniform(0.5 * ceiling, ceiling)
        if hint is not None and hint > 0:
            delay = max(delay, min(hint, self.backoff_max))
        return delay


def _retry_after(response: httpx2.Response | None) -> float | None:
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue
    return None


def _api_error_line(exc: anthropic.APIStatusError) -> str:
    detail = ""
    body = exc.body
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            detail = f"{err.get('type', '')}: {err.get('message', '')}".strip(": ")
    if not detail:
        detail = str(exc.message)
    detail = one_line(detail)
    hint = ""
    if exc.status_code == 401:
        hint = " — check ANTHROPIC_API_KEY"
    elif exc.status_code == 404:
        hint = " — check the model id ([evolution] model)"
    return f"Anthropic API error {exc.status_code} ({detail}){hint}"
