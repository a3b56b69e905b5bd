"""What the rest of the toolkit needs of an evaluator, whatever runs it (this machine's pool or a Ray cluster).

``StrategyEvaluator`` (local, ``evaluator.py``) and ``RayEvaluator`` (``ray_backend.py``) both satisfy
``Evaluator``; ``evaluation_setup.build_evaluator`` picks one from ``[evaluation] backend``. The secret scrub lives
here because both the local Ray start and every Ray node actor apply it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from alpha_evolve.backtest import BacktestSettings
    from alpha_evolve.config import RunConfig
    from alpha_evolve.evaluator import EvalResult


NODES_FILE = "evaluation_nodes.json"
"""Live placement of a run's candidates (node, slots, in flight, done), kept in the run directory."""


class EvaluationBackendError(ConnectionError):
    """The evaluation backend cannot be used (e.g. a Ray cluster that cannot be reached); one line."""


@runtime_checkable
class Evaluator(Protocol):
    """The public face both backends keep: same calls, same results for the same code and data."""

    symbols: tuple[str, ...]
    settings: BacktestSettings
    max_concurrent: int

    def evaluate(
        self,
        code: str,
        split: str = "train",
        stage: str = "full",
        *,
        parent_code: str | None = None,
        symbols: Sequence[str] | None = None,
        screen: bool = True,
    ) -> EvalResult: ...

    async def aevaluate(
        self,
        code: str,
        split: str = "train",
        stage: str = "full",
        *,
        parent_code: str | None = None,
        symbols: Sequence[str] | None = None,
        screen: bool = True,
    ) -> EvalResult: ...

    def evaluate_many(self, codes: Iterable[str], split: str = "train", stage: str = "full") -> list[EvalResult]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


# ----------------------------------------------------------------------------------------------- placement


def placement(evaluator: Any) -> dict[str, Any]:
    """Where an evaluator's candidates ran: a cluster's per-node status, or this machine's pool."""
    status = getattr(evaluator, "cluster_status", None)
    if callable(status):
        out = dict(status())
        out.pop("updated_at", None)
        return out
    import socket

    return {"backend": "local", "nodes": [{"host": socket.gethostname(), "slots": int(evaluator.max_concurrent),
                                           "alive": True}]}


def with_placement(on_progress: Callable[[Any], None] | None, evaluator: Any) -> Callable[[Any], None] | None:
    """A progress callback whose events also carry ``placement``: one line saying where candidates run now."""
    line = getattr(evaluator, "placement_line", None)
    if on_progress is None or not callable(line):
        return on_progress
    inner = on_progress

    def forward(event: Any) -> None:
        fields = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        inner(SimpleNamespace(**fields, placement=line()))

    return forward


# ----------------------------------------------------------------------------------------------- secrets

# Names that hold credentials by convention: the fork server's deny pattern plus well-known credential prefixes.
# Ray's own settings (RAY_*) are kept: a node cannot join or serve the cluster without them, and they open nothing
# a confined candidate process could use (it has no network, and its template's environment is an allow-list).
_SECRET_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "OPENAI_", "AWS_", "AZURE_", "GOOGLE_", "GCP_", "GH_", "GITHUB_",
                    "HF_", "HUGGING", "SSH_", "GPG_", "NETRC", "DOCKER_", "NPM_", "PYPI_", "UV_INDEX", "PIP_INDEX")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable name looks like it carries a credential (and is not Ray's own)."""
    upper = name.upper()
    if upper.startswith("RAY_") or upper.endswith("CA_BUNDLE"):  # Ray's own settings; a CA bundle is a path
        return False
    from alpha_evolve.forkserver import ENV_DENY

    return upper.startswith(_SECRET_PREFIXES) or bool(ENV_DENY.search(upper))


def secret_names(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return sorted(name for name in env if is_secret_name(name))


def scrub_environ(environ: MutableMapping[str, str] | None = None, *, wipe: bool = False) -> list[str]:
    """Remove secret-looking variables in place; returns the names removed.

    ``wipe`` (on ``os.environ`` only) also overwrites the values in the process's C environment block with zeros
    first: ``unsetenv`` only unlinks them, and a forked child would still carry the bytes in its memory and in
    ``/proc/<pid>/environ``.
    """
    env = os.environ if environ is None else environ
    removed = secret_names(env)
    if wipe and env is os.environ:
        _wipe_c_values(removed)
    for name in removed:
        env.pop(name, None)
    return removed


def _wipe_c_values(names: Iterable[str]) -> None:
    import ctypes

    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_void_p
    libc.getenv.argtypes = [ctypes.c_char_p]
    for name in names:
        address = libc.getenv(os.fsencode(name))
        if address:
            ctypes.memset(address, 0, len(ctypes.string_at(address)))


@contextlib.contextmanager
def scrubbed_environ() -> Iterator[list[str]]:
    """Secrets out of ``os.environ`` while processes are started (a local Ray instance copies the environment
    into every node process it starts), restored afterwards for the trusted side (the LLM mutator)."""
    saved = {name: os.environ[name] for name in secret_names()}
    for name in saved:
        del os.environ[name]
    try:
        yield sorted(saved)
    finally:
        os.environ.update(saved)


# ----------------------------------------------------------------------------------------------- the CLI


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--ray-address`` for every command that evaluates candidates."""
    p.add_argument("--backend", choices=["local", "ray"], default=None,
                   help="where candidates are evaluated (default: [evaluation] backend of the config, local)")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="Ray cluster for --backend ray: 'auto' joins the running cluster, host:port a given one; "
                        "without it a local Ray instance is started (implies --backend ray)")


def apply_backend_arguments(args: argparse.Namespace, config: RunConfig) -> RunConfig:
    """The config with the CLI's backend flags applied (a ``--ray-address`` alone means ``--backend ray``)."""
    updates: dict[str, Any] = {}
    address = getattr(args, "ray_address", None)
    backend = getattr(args, "backend", None)
    if address is not None:
        updates["evaluation.ray_address"] = address
        backend = backend or "ray"
    if backend is not None:
        updates["evaluation.backend"] = backend
    return config.with_updates(updates, source=config.source) if updates else config
