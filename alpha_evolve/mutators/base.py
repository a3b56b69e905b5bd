"""The mutation protocol shared by every mutator: request, response, budget.

Requests and responses are plain frozen dataclasses with ``to_dict``/``from_dict`` because the agent mutator
exchanges them as JSON files with a Claude Code session, and the controller records them in the store. A mutator
never raises for a bad candidate: it returns a response whose ``failure_kind`` says why, so the controller can
count it and move on. The only exception that escapes ``mutate`` is ``BudgetExceeded``, which the controller turns
into a stop reason.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from alpha_evolve.source import parse as parse_source
from alpha_evolve.values import finite_or_none, one_line

# Metric names a mutator may see (train period only). Anything else in ``parent_metrics`` — in particular
# validation or holdout figures — is dropped before it reaches a prompt or a request file.
PROMPT_METRICS: tuple[str, ...] = (
    "Calmar", "Sharpe", "Sortino", "MaxDD", "CAGR", "TotalReturn", "AnnVol", "WinRate", "Trades", "Exposure",
)

# failure_kind values of a failed mutation (not of an evaluation).
MUTATION_FAILURE_KINDS: tuple[str, ...] = (
    "syntax",     # candidate does not parse
    "policy",     # candidate breaks the sandbox policy
    "blocks",     # markers or block set damaged, or a block not allowed to change was returned
    "unchanged",  # the reply reproduces the parent (after whitespace / comment normalisation)
    "no_blocks",  # nothing usable could be extracted from the reply
    "timeout",    # the agent did not answer in time
    "response",   # the agent's response file was malformed (schema) or named another request
    "agent",      # the agent answered with an error instead of blocks
    "api",        # the LLM API rejected the request (400/404/422...) or failed after all transient retries
    "auth",       # the LLM API refused the credentials (401/403): every later call will fail too
    "budget",     # the token/cost budget ran out (carried by BudgetExceeded.response)
)
# Failures after which calling the same mutator again is pointless: the controller should stop the run.
FATAL_FAILURE_KINDS: frozenset[str] = frozenset({"auth", "budget"})

RAW_EXCERPT_CHARS = 2000


def train_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Keep only the known train-period metric names with finite numeric values."""
    out: dict[str, float] = {}
    for name in PROMPT_METRICS:
        value = finite_or_none(metrics.get(name))
        if value is not None:
            out[name] = value
    return out


def excerpt(text: str | None, limit: int = RAW_EXCERPT_CHARS) -> str | None:
    """A bounded piece of a raw reply, kept for debugging without bloating the store."""
    if text is None:
        return None
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n…[{len(text) - limit} chars omitted]…\n{text[-half:]}"


@dataclass(frozen=True)
class Inspiration:
    """A strong program from the store shown to the mutator: its block bodies and train metrics."""

    blocks: dict[str, str]
    metrics: dict[str, float]
    program_id: str | None = None
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"blocks": dict(self.blocks), "metrics": train_metrics(self.metrics)}
        if self.program_id is not None:
            d["program_id"] = self.program_id
        if self.code is not None:
            d["code"] = self.code
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Inspiration:
        blocks = data.get("blocks")
        if not blocks and data.get("code"):
            from alpha_evolve.blocks import extract_blocks

            blocks = extract_blocks(str(data["code"]))
        return cls(
            blocks={str(k): str(v) for k, v in (blocks or {}).items()},
            metrics=train_metrics(data.get("metrics") or {}),
            program_id=None if data.get("program_id") is None else str(data["program_id"]),
            code=None if data.get("code") is None else str(data["code"]),
        )


@dataclass(frozen=True)
class FitnessSpec:
    """What the run rewards, as every mutator must be told it: the metric, its direction and its period.

    Built from the run's config (``prompts.fitness_spec``), never hard-coded in a prompt, so an LLM or an agent
    optimises the figure that actually selects parents.
    """

    metric: str = "Sharpe"
    maximize: bool = True
    period: str = "train"
    description: str = ""

    def __post_init__(self) -> None:
        if self.description == f"{self.metric} on the {self.period} period":
            object.__setattr__(self, "description", "")  # the default wording: one spelling of one spec

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"

    def sentence(self) -> str:
        """One line for a prompt, e.g. "Sharpe on the train period (higher is better)"."""
        text = self.description or f"{self.metric} on the {self.period} period"
        return f"{text} ({'higher' if self.maximize else 'lower'} is better)"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": self.direction, "period": self.period,
                "description": self.sentence()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> FitnessSpec:
        if not data:
            return cls()
        metric, period = str(data.get("metric") or "Sharpe"), str(data.get("period") or "train")
        maximize = data.get("direction", "maximize") != "minimize"
        suffix = " (higher is better)" if maximize else " (lower is better)"
        text = str(data.get("description") or "").removesuffix(suffix)
        if text == f"{metric} on the {period} period":
            text = ""  # the default wording: keep the spec equal to the one it was written from
        return cls(metric=metric, maximize=maximize, period=period, description=text)


SIBLING_OUTCOMES: tuple[str, ...] = ("new", "duplicate", "no_trades", "failed")


@dataclass(frozen=True)
class Sibling:
    """An earlier child of the same parent and what its change bought, so a mutator does not make it again.

    ``outcome``: "new" (a behaviour no program had), "duplicate" (traded exactly like an earlier program, or was
    the same code), "no_trades" (never traded where it was scored: its gates blocked every entry) or "failed".
    """

    blocks: dict[str, str]
    outcome: str
    trades: float | None = None

    def __post_init__(self) -> None:
        if self.outcome not in SIBLING_OUTCOMES:
            raise ValueError(f"sibling outcome {self.outcome!r}: expected one of {', '.join(SIBLING_OUTCOMES)}")

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": dict(self.blocks), "outcome": self.outcome, "trades": self.trades}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sibling:
        trades = data.get("trades")
        return cls(blocks={str(k): str(v) for k, v in (data.get("blocks") or {}).items()},
                   outcome=str(data.get("outcome") or "new"), trades=None if trades is None else float(trades))


@dataclass(frozen=True)
class MutationRequest:
    """Everything a mutator may know about one mutation. Train metrics only, never validation figures.

    ``allowed_blocks`` empty means every block of the parent may change. ``attempt`` counts the controller's
    attempts at this mutation (1-based); ``previous_error`` is the validation error of the attempt before.
    """

    request_id: str
    experiment: str
    iteration: int
    parent_id: str
    parent_code: str
    parent_blocks: dict[str, str]
    parent_metrics: dict[str, float] = field(default_factory=dict)
    guidance: str = ""
    inspirations: tuple[Inspiration, ...] = ()
    previous_error: str | None = None
    attempt: int = 1
    allowed_blocks: tuple[str, ...] = ()
    fitness: FitnessSpec = field(default_factory=FitnessSpec)
    allow_short: bool = False  # the run's account can go short: otherwise go_short and short branches are dead
    siblings: tuple[Sibling, ...] = ()  # earlier children of this parent (and this iteration's discarded attempts)

    def __post_init__(self) -> None:
        # Normalise so that requests built from lists/dicts compare equal and carry train metrics only.
        object.__setattr__(self, "parent_metrics", train_metrics(self.parent_metrics))
        object.__setattr__(self, "inspirations", tuple(
            i if isinstance(i, Inspiration) else Inspiration.from_dict(i) for i in self.inspirations))
        object.__setattr__(self, "allowed_blocks", tuple(self.allowed_blocks))
        object.__setattr__(self, "siblings", tuple(
            s if isinstance(s, Sibling) else Sibling.from_dict(s) for s in self.siblings))
        if not isinstance(self.fitness, FitnessSpec):
            object.__setattr__(self, "fitness", FitnessSpec.from_dict(self.fitness))

    @property
    def blocks_to_change(self) -> tuple[str, ...]:
        """The block names the mutator may rewrite, in the parent's order."""
        if not self.allowed_blocks:
            return tuple(self.parent_blocks)
        return tuple(b for b in self.parent_blocks if b in self.allowed_blocks)

    def with_error(self, error: str | None, attempt: int) -> MutationRequest:
        return dataclasses.replace(self, previous_error=error, attempt=attempt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "experiment": self.experiment,
            "iteration": self.iteration,
            "parent_id": self.parent_id,
            "parent_code": self.parent_code,
            "parent_blocks": dict(self.parent_blocks),
            "parent_metrics": dict(self.parent_metrics),
            "guidance": self.guidance,
            "inspirations": [i.to_dict() for i in self.inspirations],
            "previous_error": self.previous_error,
            "attempt": self.attempt,
            "allowed_blocks": list(self.allowed_blocks),
            "fitness": self.fitness.to_dict(),
            "allow_short": self.allow_short,
            "siblings": [s.to_dict() for s in self.siblings],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MutationRequest:
        return cls(
            request_id=str(data["request_id"]),
            experiment=str(data.get("experiment", "")),
            iteration=int(data.get("iteration", 0)),
            parent_id=str(data.get("parent_id", "")),
            parent_code=str(data["parent_code"]),
            parent_blocks={str(k): str(v) for k, v in (data.get("parent_blocks") or {}).items()},
            parent_metrics=dict(data.get("parent_metrics") or {}),
            guidance=str(data.get("guidance") or ""),
            inspirations=tuple(Inspiration.from_dict(i) for i in data.get("inspirations") or ()),
            previous_error=None if data.get("previous_error") is None else str(data["previous_error"]),
            attempt=int(data.get("attempt", 1)),
            allowed_blocks=tuple(str(b) for b in data.get("allowed_blocks") or ()),
            fitness=FitnessSpec.from_dict(data.get("fitness")),
            allow_short=bool(data.get("allow_short", False)),
            siblings=tuple(Sibling.from_dict(s) for s in data.get("siblings") or ()),
        )


@dataclass(frozen=True)
class MutationResponse:
    """The outcome of one mutation: a validated candidate (``code``) or an ``error`` with its ``failure_kind``.

    Token counts and ``cost_usd`` (an estimate, see ``llm.PRICES``) are summed over every API call made for
    this mutation, including calls whose replies failed validation.
    """

    request_id: str
    mutator: str
    blocks: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    error: str | None = None
    failure_kind: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 0
    elapsed: float = 0.0
    raw_excerpt: str | None = None
    notes: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is not None and self.error is None

    @property
    def fatal(self) -> bool:
        return self.failure_kind in FATAL_FAILURE_KINDS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MutationResponse:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["blocks"] = {str(k): str(v) for k, v in (data.get("blocks") or {}).items()}
        return cls(**kwargs)


class BudgetExceeded(RuntimeError):
    """The run's LLM budget is spent; ``response`` holds what the interrupted mutation had used."""

    def __init__(self, message: str, response: MutationResponse | None = None) -> None:
        super().__init__(message)
        self.response = response


class Budget:
    """Token and/or USD ceiling shared by every mutation of a run (thread-safe; 0/None = unlimited).

    Tokens are input + output + cache tokens as reported by the API; dollars are the price-table estimate.
    A call already under way is never interrupted: the budget is checked before each call, so a run can
    overshoot by at most one reply per concurrent mutation.
    """

    def __init__(self, max_tokens: int | None = None, max_usd: float | None = None) -> None:
        if max_tokens is not None and max_tokens < 0:
            raise ValueError("budget max_tokens must be >= 0")
        if max_usd is not None and max_usd < 0:
            raise ValueError("budget max_usd must be >= 0")
        self.max_tokens = max_tokens or None
        self.max_usd = max_usd or None
        self._tokens = 0
        self._usd = 0.0
        self._lock = threading.Lock()

    @property
    def tokens_used(self) -> int:
        return self._tokens

    @property
    def usd_used(self) -> float:
        return self._usd

    def charge(self, tokens: int, usd: float) -> None:
        with self._lock:
            self._tokens += max(0, int(tokens))
            self._usd += max(0.0, float(usd))

    def exhausted_reason(self) -> str | None:
        with self._lock:
            if self.max_tokens is not None and self._tokens >= self.max_tokens:
                return f"LLM token budget exhausted ({self._tokens:,} of {self.max_tokens:,} tokens used)"
            if self.max_usd is not None and self._usd >= self.max_usd:
                return f"LLM cost budget exhausted (${self._usd:.4f} of ${self.max_usd:.2f} estimated)"
        return None

    @property
    def exhausted(self) -> bool:
        return self.exhausted_reason() is not None

    def check(self, response: MutationResponse | None = None) -> None:
        reason = self.exhausted_reason()
        if reason is not None:
            raise BudgetExceeded(reason, response)

    def snapshot(self) -> dict[str, Any]:
        return {"tokens_used": self._tokens, "usd_used": round(self._usd, 6),
                "max_tokens": self.max_tokens, "max_usd": self.max_usd}


@runtime_checkable
class Mutator(Protocol):
    """A source of candidate programs: any object with an async ``mutate(request) -> MutationResponse``.

    ``mutate`` returns a response for every outcome but a spent budget (``BudgetExceeded``). A ``name`` attribute
    is optional (shown in the store and the reports; the class name stands in for it).
    """

    async def mutate(self, request: MutationRequest) -> MutationResponse: ...


def block_names(blocks: Sequence[str] | Mapping[str, str]) -> str:
    return ", ".join(blocks) if blocks else "(none)"


# ------------------------------------------------------------------------------------------ candidate building


@dataclass(frozen=True)
class Candidate:
    """The result of turning new block bodies into a program: ``code`` or an ``error`` + ``failure_kind``."""

    blocks: dict[str, str]
    code: str | None = None
    error: str | None = None
    failure_kind: str | None = None


def normalise_body(body: str) -> str:
    """Whitespace- and comment-insensitive form of a block body, so a reformatted parent counts as unchanged."""
    import ast
    import textwrap

    lines = [ln.rstrip() for ln in body.expandtabs(4).splitlines() if ln.strip()]
    text = textwrap.dedent("\n".join(lines))
    try:
        return ast.dump(parse_source(text))
    except SyntaxError:
        return text


def build_candidate(request: MutationRequest, bodies: Mapping[str, str]) -> Candidate:
    """Splice ``bodies`` over the parent's and validate; blocks not given keep the parent's body.

    Why here and not in each mutator: the LLM, agent and offline paths must judge candidates identically, or
    the success rates the outer loop compares would not mean the same thing.
    """
    from alpha_evolve.blocks import CandidateError, splice_blocks, validate_candidate

    allowed = request.blocks_to_change
    unknown = [name for name in bodies if name not in request.parent_blocks]
    if unknown:
        return Candidate(dict(bodies), error=(
            f"block {unknown[0]!r} does not exist in the parent (blocks: {block_names(request.parent_blocks)})"),
            failure_kind="blocks")
    forbidden = [name for name in bodies if name not in allowed]
    if forbidden:
        return Candidate(dict(bodies), error=(
            f"block {forbidden[0]!r} may not be changed (allowed: {block_names(allowed)})"), failure_kind="blocks")
    changed = {n: b for n, b in bodies.items()
               if normalise_body(b) != normalise_body(request.parent_blocks[n])}
    if not changed:
        return Candidate(dict(bodies), error="the new block bodies are identical to the parent's",
                         failure_kind="unchanged")
    try:
        code = splice_blocks(request.parent_code, changed)
    except ValueError as exc:
        return Candidate(dict(bodies), error=f"cannot splice the blocks: {one_line(exc)}", failure_kind="blocks")
    try:
        validate_candidate(request.parent_code, code)
    except CandidateError as exc:
        kind = getattr(exc, "kind", "syntax")
        return Candidate(dict(bodies), code=None, error=one_line(exc),
                         failure_kind=kind if kind in MUTATION_FAILURE_KINDS else "syntax")
    except ValueError as exc:  # MissingBlockError and friends
        return Candidate(dict(bodies), error=one_line(exc), failure_kind="blocks")
    full = {**request.parent_blocks, **changed}
    return Candidate(full, code=code)
