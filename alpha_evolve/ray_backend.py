"""Evaluate candidates on a Ray cluster with the same isolation and the same figures as the local pool.

Design (docs/ray.md):
- **One actor per node owns a local ``StrategyEvaluator``.** Candidate code never runs in a Ray worker: the actor
  is trusted code that hands the candidate to the evaluator's confined, forked workers exactly as the local
  backend does, so every guard of ``evaluator.py`` holds on every node and the result is the local one.
- **Bars travel once per node.** The split frames are ``ray.put`` once; each node's actor receives the reference
  as a constructor argument (Ray copies the object to a node once) and prepares the bars there. A task carries
  only the candidate's source text.
- **Secrets stay home.** A local Ray instance is started with secret-looking variables out of the environment
  (Ray copies it into every process it starts); every actor also removes any it finds in its own environment
  before forking workers, and reports their names. Nothing is passed through ``runtime_env``.
- **One candidate, one task.** A candidate's evaluation (every symbol of a universe, screen then full) is one
  call of the node's ``StrategyEvaluator.evaluate``: the result is by construction the local one, including the
  evaluator's cross-symbol figures (return statistics from every bar) and its screen-vs-full decision-prefix
  check. Candidates in flight spread over the nodes. (A candidate × symbol split was built and withdrawn: those
  figures need every bar's equity of each symbol, which ``evaluate`` does not return; it would need a seam in
  ``evaluator.py`` returning per-symbol outcomes.)
- **Lost nodes.** A task whose actor or node dies (or that outlives a generous deadline) is retried on another
  node up to ``max_task_retries`` times, then recorded as ``crash``; the actor of a node still alive is restarted.
  Results are deterministic, so a retried candidate scores what it would have scored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from alpha_evolve.backtest import BacktestSettings
from alpha_evolve.evaluation_backend import EvaluationBackendError, scrub_environ, scrubbed_environ
from alpha_evolve.evaluator import (
    SPLITS,
    STAGES,
    EvalResult,
    StrategyEvaluator,
    _frame_of,
    static_check,
)
from alpha_evolve.values import one_line

logger = logging.getLogger("alpha_evolve.ray_backend")

_NAMESPACE = "alpha-evolve"
_ACTOR_THREADS = 256  # calls an actor accepts at once; beyond its pool's slots they queue inside the evaluator
_ACTOR_RESTARTS = 3  # per node, for actors lost while their node stays alive
_STATUS_INTERVAL = 0.5  # seconds between writes of the status file


# ============================================================================================ connecting


def _probe(address: str, timeout: float = 5.0) -> None:
    """A TCP connect to ``host:port`` first: ``ray.init`` on an unreachable address retries for minutes."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise EvaluationBackendError(f"Ray address {address!r}: expected 'auto', host:port or ray://host:port")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise EvaluationBackendError(
            f"Ray cluster at {address} cannot be reached ({exc.strerror or exc}); start it with 'ray start --head' "
            "or fix [evaluation] ray_address / --ray-address"
        ) from None


_CONNECT_LOCK = threading.Lock()  # concurrent pipeline runs (--parallel-runs) share one connection


def connect(address: str = "") -> str:
    """Join (``auto``, host:port) or start (empty) a Ray instance once per process; returns where it is."""
    with _CONNECT_LOCK:
        return _connect(address)


def _connect(address: str) -> str:
    import ray

    if ray.is_initialized():
        return str(ray.get_runtime_context().gcs_address)
    kwargs: dict[str, Any] = {"namespace": _NAMESPACE, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if not address or address == "local":
            with scrubbed_environ() as removed:
                if removed:
                    logger.info("starting a local Ray instance without %s in its environment", ", ".join(removed))
                ray.init(address="local", include_dashboard=False, **kwargs)  # never an instance found on disk
        else:
            if address != "auto":
                _probe(address)
            ray.init(address=address, **kwargs)
    except EvaluationBackendError:
        raise
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = "the running Ray cluster (auto)" if address == "auto" else f"Ray at {address or 'a local instance'}"
        raise EvaluationBackendError(f"cannot use {where}: {one_line(str(exc))[:300]}") from None
    return str(ray.get_runtime_context().gcs_address)


# ============================================================================================ node side


class NodeEvaluator:
    """Ray actor body: one per node, owning that node's confined ``StrategyEvaluator``. Trusted code only."""

    def __init__(self, payload: tuple[Mapping[str, Any], BacktestSettings, Mapping[str, float]], slots: int,
                 options: Mapping[str, Any]) -> None:
        # The evaluator execs its template with a scrubbed environment; this process is cleaned too (defence in
        # depth: nothing of a node's secrets should sit in the memory of the process that talks to the driver).
        self.secrets_removed = scrub_environ(wipe=True)
        frames, settings, ppy = payload
        options = dict(options)
        if options.get("disable_python_guards_for_tests"):  # the hostile corpus's "bare" evaluator, under Ray
            import alpha_evolve.policy

            alpha_evolve.policy.check_policy = lambda code: []
        self.evaluator = StrategyEvaluator(frames, settings, max_concurrent=max(int(slots), 1),
                                           periods_per_year=ppy, **options)
        self.slots = self.evaluator.max_concurrent

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slots": self.slots,
            "worker_pids": self.evaluator.worker_pids,
            "template_pids": [self.evaluator.template_pid],
            "confinement": self.evaluator.confinement,
            "secrets_removed": list(self.secrets_removed),
        }

    def evaluate(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return self.evaluator.evaluate(**kwargs).to_dict()

    def close(self) -> None:
        self.evaluator.close()


# ============================================================================================ driver side


@dataclass
class _Node:
    node_id: str
    host: str
    address: str
    slots: int
    actor: Any = None
    generation: int = 0
    alive: bool = True
    in_flight: int = 0
    done: int = 0
    lost: int = 0
    restarts: int = 0
    secrets_removed: list[str] = field(default_factory=list)
    confinement: str = ""
    note: str = ""

    def view(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "host": self.host,
            "address": self.address,
            "slots": self.slots,
            "alive": self.alive and self.actor is not None,
            "in_flight": self.in_flight,
            "done": self.done,
            "lost": self.lost,
            "restarts": self.restarts,
            "secrets_removed": list(self.secrets_removed),
            "note": self.note,
        }


class _Lost(Exception):
    """A task's actor or node went away (or stopped answering)."""


class RayEvaluator:
    """``StrategyEvaluator``'s public face, evaluating on every node of a Ray cluster (see the module doc).

    ``max_concurrent`` is how many candidates the caller keeps in flight; the cluster's capacity is the sum of
    the nodes' slots (``workers_per_node``, or each node's CPU count), reported in ``cluster_status()``.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        settings: BacktestSettings | None = None,
        max_concurrent: int = 2,
        periods_per_year: Mapping[str, float] | None = None,
        *,
        address: str = "",
        workers_per_node: int = 0,
        max_task_retries: int = 2,
        status_path: str | Path | None = None,
        actor_start_timeout: float = 180.0,
        **evaluator_options: Any,
    ) -> None:
        if not data:
            raise ValueError("the evaluator needs at least one instrument")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.settings = settings or BacktestSettings()
        self.symbols: tuple[str, ...] = tuple(data)
        self.max_task_retries = int(max_task_retries)
        self.workers_per_node = int(workers_per_node)
        self.status_path = Path(status_path) if status_path else None
        self._actor_start_timeout = float(actor_start_timeout)
        self._options = dict(evaluator_options)  # StrategyEvaluator keywords for every node (causality_splits, ...)
        self.instruments: dict[str, Any] = dict(self._options.get("instruments") or {})  # market.InstrumentSpec
        frames: dict[str, dict[str, pd.DataFrame]] = {}
        for symbol, splits in data.items():
            frames[symbol] = {s: f for s in SPLITS if (f := _frame_of(splits, s)) is not None}
        self._available = {(symbol, s) for symbol, per in frames.items() for s in per}
        for symbol, splits in data.items():  # each period's warm-up bars (market model) travel with it
            warm = {f"{s}_warmup": _frame_of(splits, f"{s}_warmup") for s in SPLITS}
            frames[symbol].update({k: f for k, f in warm.items() if f is not None})
        self._lock = threading.RLock()
        self._nodes: dict[str, _Node] = {}
        self._closed = False
        self._retries = 0
        self._crashes = 0
        self._last_status = 0.0
        self._last_refresh = 0.0
        self.address = connect(address)
        import ray

        self._ray = ray
        self._actor_class: Any = ray.remote(NodeEvaluator)
        started = time.perf_counter()
        self._payload = ray.put((frames, self.settings, dict(periods_per_year or {})))
        self._refresh_nodes(force=True)
        if not self._live_nodes():
            notes = "; ".join(f"{n.host}: {n.note}" for n in self._nodes.values() if n.note) or "no node with CPUs"
            raise EvaluationBackendError(f"no Ray node could start an evaluator ({notes})")
        self.startup_seconds = time.perf_counter() - started
        self.max_concurrent = int(max_concurrent)
        threads = max(self.max_concurrent, self.capacity)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ae-ray")
        removed = sorted({name for n in self._nodes.values() for name in n.secrets_removed})
        if removed:
            logger.warning("Ray node environments held %s; removed before any candidate process started (start Ray "
                           "nodes without secrets, see docs/ray.md)", ", ".join(removed))
        logger.info("Ray backend: %d node(s), %d slots, ready in %.1f s", len(self._live_nodes()), self.capacity,
                    self.startup_seconds)
        self._write_status(force=True)

    # ------------------------------------------------------------------ nodes

    def _cluster_nodes(self) -> list[dict[str, Any]]:
        return [n for n in self._ray.nodes() if n.get("Alive") and float(n.get("Resources", {}).get("CPU", 0)) > 0]

    def _refresh_nodes(self, force: bool = False) -> None:
        """Start an actor on every live node that has none (new nodes join a running evaluation)."""
        now = time.monotonic()
        if not force and now - self._last_refresh < 10.0:
            return
        self._last_refresh = now
        started: list[_Node] = []
        with self._lock:
            alive_ids = set()
            for info in self._cluster_nodes():
                node_id = str(info["NodeID"])
                alive_ids.add(node_id)
                if node_id in self._nodes:
                    continue
                cpus = int(float(info.get("Resources", {}).get("CPU", 1)))
                slots = self.workers_per_node or max(cpus, 1)
                node = _Node(node_id, str(info.get("NodeManagerHostname", "")),
                             str(info.get("NodeManagerAddress", "")), slots)
                self._nodes[node_id] = node
                started.append(node)
            for node in self._nodes.values():
                if node.node_id not in alive_ids and node.alive:
                    node.alive, node.note = False, "node left the cluster"
        self._start_actors(started)

    def _start_actors(self, nodes: Sequence[_Node]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        pending: dict[Any, tuple[_Node, Any]] = {}
        for node in nodes:
            handle = self._actor_class.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
                num_cpus=0,
                max_concurrency=_ACTOR_THREADS,
                max_restarts=0,
            ).remote(self._payload, node.slots, self._options)
            pending[handle.info.remote()] = (node, handle)
        deadline = time.monotonic() + self._actor_start_timeout
        while pending:
            ready, _ = self._ray.wait(list(pending), num_returns=1, timeout=max(deadline - time.monotonic(), 0.0))
            if not ready:
                for node, handle in pending.values():
                    self._give_up(node, handle, "evaluator actor did not start in time")
                break
            ref = ready[0]
            node, handle = pending.pop(ref)
            try:
                info = self._ray.get(ref)
            except Exception as exc:
                self._give_up(node, handle, one_line(str(exc))[:200])
                continue
            with self._lock:
                node.actor, node.alive, node.note = handle, True, ""
                node.generation += 1
                node.slots = int(info["slots"])
                node.host = str(info.get("host") or node.host)
                node.secrets_removed = list(info.get("secrets_removed", []))
                node.confinement = str(info.get("confinement", ""))

    def _give_up(self, node: _Node, handle: Any, why: str) -> None:
        with contextlib.suppress(Exception):
            self._ray.kill(handle)
        with self._lock:
            node.actor, node.alive, node.note = None, False, why
        logger.warning("Ray node %s (%s): %s", node.host, node.node_id[:8], why)

    def _live_nodes(self) -> list[_Node]:
        with self._lock:
            return [n for n in self._nodes.values() if n.alive and n.actor is not None]

    @property
    def confinement(self) -> str:
        """How the nodes confine candidate processes (SUMMARY.json's evaluation_security), e.g. all kernel-confined."""
        kinds = sorted({n.confinement for n in self._nodes.values() if n.confinement})
        return kinds[0] if len(kinds) == 1 else ("mixed: " + "; ".join(kinds) if kinds else "unknown")

    @property
    def causality_splits(self) -> frozenset[str]:
        return frozenset(self._options.get("causality_splits", ("validation", "holdout")))

    @property
    def capacity(self) -> int:
        """Confined worker slots over the live nodes."""
        return sum(n.slots for n in self._live_nodes())

    def _acquire(self, avoid: set[str]) -> tuple[_Node, Any, int] | None:
        """The least loaded live node (relative to its slots), preferring nodes this task has not failed on."""
        self._refresh_nodes()
        with self._lock:
            live = [n for n in self._nodes.values() if n.alive and n.actor is not None]
            fresh = [n for n in live if n.node_id not in avoid] or live
            if not fresh:
                return None
            node = min(fresh, key=lambda n: (n.in_flight / n.slots, n.in_flight, -n.slots))
            node.in_flight += 1
            return node, node.actor, node.generation

    def _lost(self, node: _Node, generation: int, why: str) -> None:
        """The actor of ``generation`` on ``node`` is gone: restart it if the node lives, else drop the node."""
        with self._lock:
            node.lost += 1
            if node.generation != generation or node.actor is None:
                return  # another task already noticed
            handle, node.actor = node.actor, None
            alive = any(str(i["NodeID"]) == node.node_id for i in self._cluster_nodes())
            restart = alive and node.restarts < _ACTOR_RESTARTS and not self._closed
            if restart:
                node.restarts += 1
                node.note = f"actor lost ({why}); restarting"
            else:
                node.alive = False
                node.note = f"lost: {why}"
        with contextlib.suppress(Exception):
            self._ray.kill(handle)
        logger.warning("Ray node %s (%s): %s", node.host, node.node_id[:8], node.note)
        if restart:
            self._start_actors([node])
        self._write_status(force=True)

    # ------------------------------------------------------------------ one task on the cluster

    def _deadline(self, n_symbols: int) -> float:
        """Beyond the evaluator's own hard timeouts (screen + full per symbol) a node is deemed hung."""
        return 2.0 * self.settings.hard_timeout_seconds * max(n_symbols, 1) + 120.0

    def _call(self, kwargs: dict[str, Any], split: str) -> EvalResult:
        from ray.exceptions import GetTimeoutError, RayError, RayTaskError

        avoid: set[str] = set()
        reasons: list[str] = []
        n = len(kwargs.get("symbols") or self.symbols)
        for attempt in range(self.max_task_retries + 1):
            if self._closed:
                raise RuntimeError("the evaluator is closed")
            picked = self._acquire(avoid)
            if picked is None:
                reasons.append("no live Ray node")
                break
            node, actor, generation = picked
            ok = False
            try:
                ref = actor.evaluate.remote(kwargs)
                self._write_status()
                try:
                    out = self._ray.get(ref, timeout=self._deadline(n))
                except RayTaskError as exc:  # the evaluator itself raised (a bug or a bad argument): as locally
                    cause = exc.as_instanceof_cause()
                    raise cause from None
                except GetTimeoutError:
                    raise _Lost(f"no answer within {self._deadline(n):g} s") from None
                except RayError as exc:
                    raise _Lost(f"{type(exc).__name__}: {one_line(str(exc))[:160]}") from None
                ok = True
                return EvalResult.from_dict(out)
            except _Lost as lost:
                reasons.append(f"{node.host or node.node_id[:8]}: {lost}")
                avoid.add(node.node_id)
                self._lost(node, generation, str(lost))
                if attempt < self.max_task_retries:
                    with self._lock:
                        self._retries += 1
            finally:
                with self._lock:
                    node.in_flight -= 1
                    if ok:
                        node.done += 1
                self._write_status()
        with self._lock:
            self._crashes += 1
        tries = len(reasons)
        return EvalResult("crash", "full", split,
                          error=one_line(f"evaluation lost on the Ray cluster after {tries} attempt(s): "
                                          + "; ".join(reasons))[:500])

    # ------------------------------------------------------------------ public API

    def evaluate(
        self,
        code: str,
        split: str = "train",
        stage: str = "full",
        *,
        parent_code: str | None = None,
        symbols: Sequence[str] | None = None,
        screen: bool = True,
    ) -> EvalResult:
        """Same contract as ``StrategyEvaluator.evaluate``: static checks here, everything else in one task on
        the least loaded node."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        chosen = tuple(symbols) if symbols else self.symbols
        unknown = [s for s in chosen if s not in self.symbols]
        if unknown:
            raise ValueError(f"unknown symbol(s): {', '.join(unknown)}")
        kwargs = {"code": code, "split": split, "stage": stage, "parent_code": parent_code,
                  "symbols": list(chosen), "screen": screen}
        if stage == "static" or static_check(code, parent_code) is not None:
            return self._static_only(kwargs)  # refused before anything travels
        return self._call(kwargs, split)

    def _static_only(self, kwargs: dict[str, Any]) -> EvalResult:
        """Static checks need no node: the same function the local evaluator runs, on the driver."""
        started = time.perf_counter()
        failure = static_check(kwargs["code"], kwargs["parent_code"])
        split = kwargs["split"]
        if failure is not None:
            kind, message = failure
            return EvalResult(kind, "static", split, error=message, elapsed=time.perf_counter() - started)
        return EvalResult("ok", "static", split, passed=True, elapsed=time.perf_counter() - started)

    async def aevaluate(
        self,
        code: str,
        split: str = "train",
        stage: str = "full",
        *,
        parent_code: str | None = None,
        symbols: Sequence[str] | None = None,
        screen: bool = True,
    ) -> EvalResult:
        loop = asyncio.get_running_loop()
        call = functools.partial(self.evaluate, code, split, stage, parent_code=parent_code, symbols=symbols,
                                 screen=screen)
        return await loop.run_in_executor(self._executor, call)

    def evaluate_many(self, codes: Iterable[str], split: str = "train", stage: str = "full") -> list[EvalResult]:
        futures = [self._executor.submit(self.evaluate, code, split, stage) for code in codes]
        return [f.result() for f in futures]

    # ------------------------------------------------------------------ where candidates run

    def cluster_status(self) -> dict[str, Any]:
        """Nodes with their slots, candidates in flight and done; written live to ``status_path``."""
        with self._lock:
            nodes = [n.view() for n in self._nodes.values()]
            return {
                "backend": "ray",
                "address": self.address,
                "nodes": nodes,
                "live_nodes": sum(1 for n in nodes if n["alive"]),
                "slots": sum(n["slots"] for n in nodes if n["alive"]),
                "in_flight": sum(n["in_flight"] for n in nodes),
                "done": sum(n["done"] for n in nodes),
                "retries": self._retries,
                "crashes": self._crashes,
                "closed": self._closed,
                "updated_at": time.time(),
            }

    def placement_line(self) -> str:
        """One line for progress output: where candidates run right now."""
        s = self.cluster_status()
        parts = [f"{n['host'] or n['node_id'][:8]} {n['in_flight']}/{n['slots']} ({n['done']} done)"
                 for n in s["nodes"] if n["alive"]]
        lost = sum(1 for n in s["nodes"] if not n["alive"])
        return "ray: " + ", ".join(parts) + (f"; {lost} node(s) lost" if lost else "")

    def _write_status(self, force: bool = False) -> None:
        if self.status_path is None:
            return
        now = time.monotonic()
        if not force and now - self._last_status < _STATUS_INTERVAL:
            return
        self._last_status = now
        from alpha_evolve.files import atomic_write_json

        try:
            atomic_write_json(self.status_path, self.cluster_status())
        except OSError as exc:  # progress display only: never fail an evaluation over it
            logger.debug("cannot write %s: %s", self.status_path, exc)

    def node_probes(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """What each live node's actor reports of itself: node id, host, pid, slots, confined worker pids and
        the secret names it removed from its environment (for diagnostics and the isolation tests)."""
        nodes = self._live_nodes()
        refs = [n.actor.info.remote() for n in nodes]
        return [dict(self._ray.get(ref, timeout=timeout)) for ref in refs]

    # ------------------------------------------------------------------ lifecycle

    @property
    def worker_pids(self) -> list[int]:
        """Confined worker processes live on the nodes, not here."""
        return []

    def close(self) -> None:
        """Stop the node actors (and with them their workers); the Ray instance stays up for other runs."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        handles = [n.actor for n in self._nodes.values() if n.actor is not None]
        refs = []
        for handle in handles:
            with contextlib.suppress(Exception):
                refs.append(handle.close.remote())
        with contextlib.suppress(Exception):
            self._ray.wait(refs, num_returns=len(refs), timeout=10.0)
        for handle in handles:
            with contextlib.suppress(Exception):
                self._ray.kill(handle)
        self._write_status(force=True)

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RayEvaluator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)


def _replace(result: EvalResult, **changes: Any) -> EvalResult:
    import dataclasses

    return dataclasses.replace(result, **changes)
