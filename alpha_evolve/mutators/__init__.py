"""Mutators: where candidate programs come from (LLM API, Claude Code agent via files, or offline AST edits).

``make_mutator`` is the one place that picks an implementation, so the CLI, the pipeline and the outer loop
agree on what "auto" means: the LLM when ``ANTHROPIC_API_KEY`` is set, the offline mutator otherwise.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from alpha_evolve.mutators.base import (
    FATAL_FAILURE_KINDS,
    MUTATION_FAILURE_KINDS,
    Budget,
    BudgetExceeded,
    Inspiration,
    MutationRequest,
    MutationResponse,
    Mutator,
    Sibling,
    build_candidate,
)

logger = logging.getLogger("alpha_evolve.mutators")

MUTATOR_KINDS = ("auto", "offline", "llm", "agent")

__all__ = [
    "FATAL_FAILURE_KINDS",
    "MUTATION_FAILURE_KINDS",
    "MUTATOR_KINDS",
    "Budget",
    "BudgetExceeded",
    "Inspiration",
    "MutationRequest",
    "MutationResponse",
    "Mutator",
    "Sibling",
    "build_candidate",
    "make_mutator",
]

_LLM_KEYS = {"model", "max_tokens", "temperature", "effort", "api_key", "base_url", "http_client", "max_retries",
             "api_retries", "backoff_base", "backoff_max", "request_timeout", "budget", "seed",
             "max_inspirations", "client"}
_OFFLINE_KEYS = {"seed", "max_attempts", "jitter", "two_op_probability"}
_AGENT_KEYS = {"run_dir", "timeout", "debounce", "poll_interval", "safety_poll", "use_observer"}


def make_mutator(kind: str = "auto", **settings: Any) -> Mutator:
    """Build a mutator; settings that do not apply to the chosen kind are ignored (one config feeds all).

    ``agent`` needs ``run_dir``. ``llm`` needs an API key (``api_key`` or ``ANTHROPIC_API_KEY``).
    """
    if kind not in MUTATOR_KINDS:
        raise ValueError(f"unknown mutator {kind!r}; expected one of {', '.join(MUTATOR_KINDS)}")
    if kind == "auto":
        has_key = bool(settings.get("api_key") or os.environ.get("ANTHROPIC_API_KEY"))
        kind = "llm" if has_key else "offline"
        logger.info("mutator auto -> %s (%s)", kind,
                    "ANTHROPIC_API_KEY is set" if has_key else "no ANTHROPIC_API_KEY; deterministic AST mutations")
    if kind == "llm":
        from alpha_evolve.mutators.llm import LLMMutator

        llm_kwargs = {k: v for k, v in settings.items() if k in _LLM_KEYS and v is not None}
        return LLMMutator(**llm_kwargs)
    if kind == "agent":
        from alpha_evolve.mutators.agent import AgentMutator

        if not settings.get("run_dir"):
            raise ValueError("the agent mutator needs run_dir (where mutations/requests and responses live)")
        agent_kwargs = {k: v for k, v in settings.items() if k in _AGENT_KEYS and v is not None}
        return AgentMutator(**agent_kwargs)
    from alpha_evolve.mutators.offline import OfflineMutator

    return OfflineMutator(**{k: v for k, v in settings.items() if k in _OFFLINE_KEYS and v is not None})
