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
- **Candidate x symbol tasks for a universe.** Each symbol of a universe is its own engine run already locally
  (the evaluator runs a stage symbol by symbol, then merges; nothing couples the symbols inside an engine), so
  splitting there is exact: a stage becomes one task per symbol on the nodes, each running the node evaluator's
  ``run_task`` (confined run, trusted replay, screen-prefix and perturbed-future checks for that symbol), and the
  driver merges the verified outcomes with the evaluator's own ``CandidateCascade.merge_outcomes`` in symbol
  order, up to the first failure. The screen's decisions travel with each symbol's full-run task. A single
  symbol stays one task per candidate (screen then full in one round trip).
- **Room per node.** The driver keeps at most ``_DEPTH`` tasks per slot on a node (one running, one waiting in
  the node's evaluator); more wait on the driver, so a 500-symbol universe never floods a node, and a task's
  deadline covers at most one task queued before it.
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

from alpha_evolve.backtest import BacktestOutcome, BacktestSettings
from alpha_evolve.evaluation_backend import EvaluationBackendError, scrub_environ, scrubbed_environ
from alpha_evolve.evaluator import (
    SPLITS,
    STAGES,
    CandidateCascade,
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
# Tasks the driver keeps on a node per slot: one running and one waiting inside the node's evaluator, so a slot
# that finishes starts its next task at once instead of idling for a driver round trip; more would only queue.
_DEPTH = 2


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


# A local instance needs no pre-started default workers: every node actor (num_cpus=0) gets a worker of its own,
# and idle pre-started workers cost ~7 ms of CPU per second each (measured; half of an idle instance's CPU).
LOCAL_SYSTEM_CONFIG = {"prestart_worker_first_driver": False, "enable_worker_prestart": False}

_CONNECT_LOCK = threading.Lock()  # concurrent pipeline runs (--parallel-runs) share one connection


def connect(address: str = "") -> str:
    """Join (``auto``, host:port) or start (empty) a Ray instance once per process; returns where it is."""
    with _CONNECT_LOCK:
        return _connect(address)


def import_ray() -> Any:
    """``ray``, with its ``uv run`` worker hook off.

    Ray (2.43+) notices a driver started by ``uv run`` (what the README's commands and ``make test`` do) and starts
    every worker through ``uv run`` too, from the worker's own directory: there uv picks another project environment,
    without ray, and each worker dies at ``import ray`` while the driver waits for it (a fresh-clone ``make test``
    hung at the first cluster start this way). Workers are started with this interpreter instead; a real cluster's
    nodes run their own install of alpha-evolve (docs/ray.md).
    """
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False  # read when ray.init runs, in case ray was imported already
    return ray


def _connect(address: str) -> str:
    ray = import_ray()

    if ray.is_initialized():
        return str(ray.get_runtime_context().gcs_address)
    kwargs: dict[str, Any] = {"namespace": _NAMESPACE, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if not address or address == "local":
            with scrubbed_environ() as removed:
                if removed:
                    logger.info("starting a local Ray instance without %s in its environment", ", ".join(removed))
                ray.init(address="local", include_dashboard=False, _system_config=LOCAL_SYSTEM_CONFIG,
                         **kwargs)  # never an instance found on disk
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

    def evaluate(self, kwargs: dict[str, Any]) -> EvalResult:
        """A whole candidate (every stage) on this node: one round trip. The result travels as the object (Ray
        pickles it in C); ``to_dict`` (``dataclasses.asdict``, recursing into every equity point) cost ~7 ms of
        this actor's CPU per candidate, as much as the rest of the Ray path together."""
        return self.evaluator.evaluate(**kwargs)

    def run_task(self, task: dict[str, Any]) -> tuple[list[Any], str]:
        """One stage of one candidate on some symbols (``evaluator.TaskRunner``): verified outcomes, merged by
        the driver."""
        return self.evaluator.run_task(task)

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


class RayEvaluator(CandidateCascade):
    """``StrategyEvaluator``'s public face, evaluating on every node of a Ray cluster (see the module doc).

    ``max_concurrent`` is how many candidates the caller keeps in flight; the cluster's capacity is the sum of
    the nodes' slots (``workers_per_node``, or each node's CPU count), reported in ``cluster_status()``.
    ``split_symbols``: a candidate on several symbols runs as one task per symbol and stage (spread over the
    nodes, merged here by the evaluator's own ``merge_outcomes``); off, a candidate is always one task.
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
        split_symbols: bool = True,
        **evaluator_options: Any,
    ) -> None:
        if not data:
            raise ValueError("the evaluator needs at least one instrument")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.settings = settings or BacktestSettings()
        self.symbols: tuple[str, ...] = tuple(data)
        self.max_task_retries = int(max_task_retries)
        self.split_symbols = bool(split_symbols)
        self.workers_per_node = int(workers_per_node)
        self.status_path = Path(status_path) if status_path else None
        self._actor_start_timeout = float(actor_start_timeout)
        self._options = dict(evaluator_options)  # StrategyEvaluator keywords for every node (causality_splits, ...)
        self.causality_splits = frozenset(self._options.get("causality_splits", ("validation", "holdout")))
        self.instruments: dict[str, Any] = dict(self._options.get("instruments") or {})  # market.InstrumentSpec
        frames: dict[str, dict[str, pd.DataFrame]] = {}
        for symbol, splits in data.items():
            frames[symbol] = {s: f for s in SPLITS if (f := _frame_of(splits, s)) is not None}
        self._available = frozenset((symbol, s) for symbol, per in frames.items() for s in per)
        for symbol, splits in data.items():  # each period's warm-up bars (market model) travel with it
            warm = {f"{s}_warmup": _frame_of(splits, f"{s}_warmup") for s in SPLITS}
            frames[symbol].update({k: f for k, f in warm.items() if f is not None})
        self._lock = threading.RLock()
        self._free = threading.Condition(self._lock)  # notified whenever a node's load or liveness changes
        self._nodes: dict[str, _Node] = {}
        self._closed = False
        self._retries = 0
        self._crashes = 0
        self._tasks = 0
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
        # Per-symbol tasks of every candidate in flight wait here (FIFO: a candidate's symbols go out together);
        # room for twice today's cluster so nodes that join are fed too. Each thread blocks in `_acquire` until
        # a node has room, so a universe of any size never floods a node's queue.
        self._task_pool = ThreadPoolExecutor(max_workers=max(2 * _DEPTH * self.capacity, 8),
                                             thread_name_prefix="ae-ray-task")
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
            self._free.notify_all()
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
                self._free.notify_all()

    def _give_up(self, node: _Node, handle: Any, why: str) -> None:
        with contextlib.suppress(Exception):
            self._ray.kill(handle)
        with self._lock:
            node.actor, node.alive, node.note = None, False, why
            self._free.notify_all()
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
    def capacity(self) -> int:
        """Confined worker slots over the live nodes."""
        return sum(n.slots for n in self._live_nodes())

    def _acquire(self, avoid: set[str], wanted: Any = None) -> tuple[_Node, Any, int] | None:
        """The least loaded live node with room (fewer than ``_DEPTH`` tasks per slot), preferring nodes this
        task has not failed on; waits for room (and for a node whose actor is being restarted). None when no node
        is live, or when ``wanted()`` turns false."""
        while True:
            self._refresh_nodes()
            with self._free:
                if self._closed:
                    raise RuntimeError("the evaluator is closed")
                if wanted is not None and not wanted():
                    return None
                live = [n for n in self._nodes.values() if n.alive and n.actor is not None]
                restarting = any(n.alive and n.actor is None for n in self._nodes.values())
                if not live and not restarting:
                    return None
                fresh = [n for n in live if n.node_id not in avoid] or live
                room = [n for n in fresh if n.in_flight < _DEPTH * n.slots]
                if room:
                    node = min(room, key=lambda n: (n.in_flight / n.slots, n.in_flight, -n.slots))
                    node.in_flight += 1
                    self._tasks += 1
                    return node, node.actor, node.generation
                self._free.wait(timeout=1.0)  # released tasks notify; the timeout lets new nodes be found

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
            self._free.notify_all()
        with contextlib.suppress(Exception):
            self._ray.kill(handle)
        logger.warning("Ray node %s (%s): %s", node.host, node.node_id[:8], node.note)
        if restart:
            self._start_actors([node])
        self._write_status(force=True)

    # ------------------------------------------------------------------ one task on the cluster

    def _deadline(self, n_symbols: int) -> float:
        """Beyond the evaluator's own hard timeouts a node is deemed hung: per symbol a screen, a full run and its
        causality re-run, the replays, for this task and the one that may wait before it on its slot."""
        hard = self.settings.hard_timeout_seconds
        return _DEPTH * (max(n_symbols, 1) * (3 * hard + 8 * max(hard, 15.0)) + 60.0) + 60.0

    def _call(self, method: str, payload: dict[str, Any], n_symbols: int,
              wanted: Any = None) -> tuple[Any, str | None]:
        """Run ``method`` of a node's actor on ``payload``, retrying on other nodes when a node or actor is lost:
        (its answer, None), or (None, the one-line reason it was lost ``max_task_retries`` + 1 times), or
        (None, None) when ``wanted()`` turned false before it was sent."""
        from ray.exceptions import GetTimeoutError, RayError, RayTaskError

        avoid: set[str] = set()
        reasons: list[str] = []
        deadline = self._deadline(n_symbols)
        for attempt in range(self.max_task_retries + 1):
            picked = self._acquire(avoid, wanted)
            if picked is None:
                if wanted is not None and not wanted():
                    return None, None
                reasons.append("no live Ray node")
                break
            node, actor, generation = picked
            ok = False
            try:
                ref = getattr(actor, method).remote(payload)
                self._write_status()
                try:
                    out = self._ray.get(ref, timeout=deadline)
                except RayTaskError as exc:  # the evaluator itself raised (a bug or a bad argument): as locally
                    cause = exc.as_instanceof_cause()
                    raise cause from None
                except GetTimeoutError:
                    raise _Lost(f"no answer within {deadline:g} s") from None
                except RayError as exc:
                    raise _Lost(f"{type(exc).__name__}: {one_line(str(exc))[:160]}") from None
                ok = True
                return out, None
            except _Lost as lost:
                reasons.append(f"{node.host or node.node_id[:8]}: {lost}")
                avoid.add(node.node_id)
                self._lost(node, generation, str(lost))
                if attempt < self.max_task_retries:
                    with self._lock:
                        self._retries += 1
            finally:
                with self._free:
                    node.in_flight -= 1
                    if ok:
                        node.done += 1
                    self._free.notify_all()
                self._write_status()
        with self._lock:
            self._crashes += 1
        return None, one_line(f"evaluation lost on the Ray cluster after {len(reasons)} attempt(s): "
                              + "; ".join(reasons))[:500]

    def _run_split(self, task: Mapping[str, Any]) -> tuple[list[BacktestOutcome], str]:
        """``evaluator.TaskRunner`` over the cluster: one task per symbol, spread over the nodes; the outcomes in
        the task's symbol order up to the first failure, exactly what one task over every symbol returns. A
        symbol after a failed one is not sent (its outcome would be dropped); one lost ``max_task_retries`` + 1
        times is a ``crash`` of that symbol."""
        symbols = list(task["symbols"])
        prefix = dict(task.get("prefix") or {})
        first_bad = [len(symbols)]
        guard = threading.Lock()

        def one(i: int, symbol: str) -> list[BacktestOutcome] | None:
            part = {**task, "symbols": [symbol], "prefix": {symbol: prefix[symbol]} if symbol in prefix else {}}
            out, lost = self._call("run_task", part, 1, wanted=lambda: first_bad[0] > i)
            if out is None and lost is None:
                return None  # an earlier symbol failed: not needed
            outcomes = list(out[0]) if out is not None else [BacktestOutcome("crash", lost, symbol)]
            if any(o.status != "ok" for o in outcomes):
                with guard:
                    first_bad[0] = min(first_bad[0], i)
            return outcomes

        futures = [self._task_pool.submit(one, i, symbol) for i, symbol in enumerate(symbols)]
        merged: list[BacktestOutcome] = []
        for future in futures:
            got = future.result()
            if got is None:
                break
            merged.extend(got)
            if any(o.status != "ok" for o in got):
                break
        for future in futures:  # the rest finished or skipped: never leave a task behind the caller's back
            with contextlib.suppress(Exception):
                future.result()
        return merged, "\n".join(o.log for o in merged if o.log)

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
        """Same contract (and result) as ``StrategyEvaluator.evaluate``. A universe runs the evaluator's cascade
        here with one task per symbol and stage on the nodes; a single symbol (or ``split_symbols`` off) is one
        task for the whole candidate (one round trip). Static checks run here either way."""
        chosen = tuple(symbols) if symbols else self.symbols
        if self.split_symbols and len(chosen) > 1:
            return self.cascade(code, split, stage, parent_code=parent_code, symbols=chosen, screen=screen,
                                run=self._run_split)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        unknown = [s for s in chosen if s not in self.symbols]
        if unknown:
            raise ValueError(f"unknown symbol(s): {', '.join(unknown)}")
        kwargs = {"code": code, "split": split, "stage": stage, "parent_code": parent_code,
                  "symbols": list(chosen), "screen": screen}
        if stage == "static" or static_check(code, parent_code) is not None:
            return self._static_only(kwargs)  # refused before anything travels
        out, lost = self._call("evaluate", kwargs, len(chosen))
        if lost is not None:
            return EvalResult("crash", "full", split, error=lost)
        return out if isinstance(out, EvalResult) else EvalResult.from_dict(out)

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
                "tasks": self._tasks,
                "task_unit": "candidate x symbol" if self.split_symbols and len(self.symbols) > 1 else "candidate",
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
        with self._free:
            self._free.notify_all()  # tasks waiting for room give up
        self._executor.shutdown(wait=True)
        self._task_pool.shutdown(wait=True)
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

