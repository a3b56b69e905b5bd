"""The self-evolution outer loop: propose settings, wait for a decision, run the pipeline, record, repeat.

The loop is written once for every storage mode. Where state lives (a session directory of JSON files, or the
SQLite registry of tracked mode) and how a decision arrives (an edited ``pending_action.json``, or a registry row
set by the dashboard) are the job of a ``StateBackend``; everything else — numbering, proposals, validation of an
edited candidate, runs, crash recovery — is here, so the two modes cannot drift apart.

Iteration numbering: iteration 0 runs the base config unchanged (the baseline, never awaits approval);
iterations 1..N are proposals, N = ``--iterations``. ``iterations_completed`` counts proposals only.

Crash safety: the history is the source of truth for what has run. Before each step the loop persists its state
machine (``state`` in the session summary: phase ``awaiting_approval`` with the posted action, or ``running`` with
the approved candidate). On resume an iteration already in the history is never run again, a ``running`` one that
is not in it is re-run with the same candidate, and an ``awaiting_approval`` one is re-posted with the same
``action_id`` (an answer written meanwhile is kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from alpha_evolve.command_hint import cli
from alpha_evolve.config import ConfigError, PipelineOptions, RunConfig, from_mapping
from alpha_evolve.faults import InfrastructureError, as_infrastructure
from alpha_evolve.session_settings import SessionSettings
from alpha_evolve.values import finite_or_none, one_line

logger = logging.getLogger("alpha_evolve.session")

SCHEMA_VERSION = 1
DECISION_STATUSES = ("approved", "rejected", "stop")
MAX_NOTES_CHARS = 4000
"""Longest rationale recorded with a decision, whichever way it arrives (pending_action.json, ``approve --notes``,
the dashboard): notes are read back into every later briefing, so an unbounded note bloats them all."""
TERMINAL_STATUSES = ("session_complete", "stopped", "timed_out", "failed")

PipelineRunner = Callable[..., Path]
"""``runner(config, options, *, experiment) -> run_dir``, the signature of ``pipeline.run_pipeline``."""


class SessionError(ValueError):
    """A problem a user can fix (bad flag, unreadable session, session in use); one line."""


class SessionLockedError(SessionError):
    """Another process drives this session."""


class SessionInterrupted(KeyboardInterrupt):
    """Raised from the SIGINT/SIGTERM handler while a pipeline run is in progress.

    A ``KeyboardInterrupt`` on purpose: the run's event loop (asyncio or uvloop) lets only KeyboardInterrupt and
    SystemExit out of a callback. Anything else raised by a signal handler while the loop dispatches signals is
    logged as "Exception in callback" with a traceback and swallowed, and the run goes on to its end.
    """


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------- settings


# SessionSettings is declared in session_settings.py (type, default, range, doc); re-exported here.


# ------------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class Decision:
    """An accepted answer to a pending action.

    ``latency_ms`` is detection latency: from the answer's file write (or registry update) to its acceptance.
    """

    status: str  # approved | rejected | stop | auto_approved
    notes: str | None
    decided_at: str
    edited: bool
    latency_ms: float | None
    candidate: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The ``decision`` object written into pending_action.json and history (candidate lives elsewhere)."""
        return {
            "status": self.status,
            "notes": self.notes,
            "decided_at": self.decided_at,
            "edited": self.edited,
            "latency_ms": self.latency_ms,
        }


def _canonical_candidate(candidate: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``section.name`` keys for a candidate, and the problem when one field is given twice (``generations`` and
    ``evolution.generations``): which value the approver meant cannot be known, so the edit is refused."""
    from alpha_evolve.config import resolve_key

    out: dict[str, Any] = {}
    written: dict[str, str] = {}
    problems: list[str] = []
    for key, value in candidate.items():
        try:
            section, name = resolve_key(str(key))
        except ConfigError:
            out[str(key)] = value  # the search space reports unknown and ambiguous keys in its own words
            continue
        canonical = f"{section}.{name}"
        if canonical in written:
            problems.append(f"proposal.candidate: {written[canonical]!r} and {key!r} both set {canonical}; "
                            "give it once")
            continue
        written[canonical] = str(key)
        out[canonical] = value
    return out, problems


def candidate_problems(
    space: Any, base_config: Any, candidate: Mapping[str, Any], posted: Mapping[str, Any]
) -> list[str]:
    """The one rule for an approver's edit (the loop's, the dashboard's and the CLI's up-front check): keys are
    read as ``section.name``, changed values must lie in the search space (the base config's own values may lie
    outside it) and the whole candidate must pass the config's rules."""
    candidate, problems = _canonical_candidate(candidate)
    if problems:
        return problems
    posted = _canonical_candidate(posted)[0]
    changed = {k: v for k, v in candidate.items() if k not in posted or posted[k] != v}
    problems = list(space.validate_values(changed))
    if not problems:
        try:
            base_config.with_updates(dict(candidate), source="candidate")
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


@dataclass(frozen=True)
class WaitResult:
    outcome: str  # decided | timed_out | stopped
    decision: Decision | None = None


CandidateCheck = Callable[[Mapping[str, Any]], list[str]]
"""Problems with an edited candidate (search space and config rules); empty when it can run."""


@runtime_checkable
class StateBackend(Protocol):
    """Where a session's state lives and how decisions arrive; the only thing legacy and tracked modes differ in.

    Records are plain JSON-ready dicts built by the loop (schemas in ``schemas/``); a backend stores them verbatim.
    A backend must make each call durable before it returns (the loop relies on it for crash recovery).
    """

    kind: str
    """``legacy`` or ``tracked``."""

    location: str
    """Where the session is, for messages (a directory, or ``registry.sqlite#session-id``)."""

    session_id: str

    artifact_dir: Path
    """Folder for generated config snapshots and (by default) the inner pipeline runs."""

    def open(self) -> None:
        """Take exclusive ownership of the session (raise ``SessionLockedError`` naming the owner) and tidy up
        leftovers of a crash (temp files, torn log tails)."""

    def close(self) -> None:
        """Release ownership; safe to call twice."""

    def load_summary(self) -> dict[str, Any] | None:
        """The last saved session summary (with the loop ``state``), or None for a new session."""

    def save_summary(self, summary: dict[str, Any]) -> None:
        """Replace the session summary atomically."""

    def load_history(self) -> list[dict[str, Any]]:
        """All iteration records, in order (a record torn by a crash is dropped)."""

    def append_history(self, record: dict[str, Any]) -> None:
        """Add one iteration record durably."""

    def append_briefing(self, record: dict[str, Any]) -> None:
        """Add one briefing (with its proposal) durably."""

    def post_action(self, action: dict[str, Any]) -> None:
        """Publish a pending action awaiting a decision. If a decision for the same ``action_id`` was already
        written (a crash came between the answer and its acceptance), keep it so the wait accepts it at once."""

    def wait_for_decision(
        self,
        action: dict[str, Any],
        *,
        check_candidate: CandidateCheck,
        timeout: float | None,
        should_stop: Callable[[], bool],
    ) -> WaitResult:
        """Block until a valid decision for ``action['action_id']`` arrives (``decided``), ``timeout`` seconds pass
        (``timed_out``) or ``should_stop()`` becomes true (``stopped``). Invalid answers are reported to the
        approver and never end the wait."""

    def resolve_action(self, action: dict[str, Any], status: str, decision: Decision | None) -> None:
        """Record that the loop took ``decision`` (status ``running``, ``rejected``, ``auto_approved``) or that the
        session ended while the action was open (a terminal status)."""

    def approval_hint(self, action: dict[str, Any]) -> list[str]:
        """Lines telling a person where and how to decide, printed when an action is posted."""


# ----------------------------------------------------------------------------------------------- the loop


def _proposal_dict(proposal: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(proposal) and not isinstance(proposal, type):
        data = dataclasses.asdict(proposal)
    else:
        data = {k: getattr(proposal, k) for k in ("updates", "base", "base_updates", "candidate", "trial_number")}
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}


def _proposal_from_dict(data: Mapping[str, Any]) -> Any:
    from alpha_evolve.samplers import Proposal

    names = {f.name for f in dataclasses.fields(Proposal)} if dataclasses.is_dataclass(Proposal) else set(data)
    return Proposal(**{k: v for k, v in data.items() if k in names})


def _default_runner() -> PipelineRunner:
    from alpha_evolve.pipeline import run_pipeline

    return run_pipeline


@dataclass
class SessionResult:
    status: str
    summary: dict[str, Any]
    interrupted: bool = False


class SelfEvolutionLoop:
    """Drives one session to completion, a stop, a timeout or a failure; safe to kill at any instant."""

    def __init__(
        self,
        backend: StateBackend,
        settings: SessionSettings,
        *,
        base_config: RunConfig,
        space: Any,
        sampler: Any,
        pipeline_runner: PipelineRunner | None = None,
        out: Callable[[str], None] | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.base_config = base_config
        self.space = space
        self.sampler = sampler
        self._runner = pipeline_runner
        self._out = out or (lambda line: logger.info("%s", line))
        self._install_signals = install_signal_handlers and threading.current_thread() is threading.main_thread()
        self._stop_requested = False
        self._in_run = False
        self.summary: dict[str, Any] = {}
        self._last_action: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------ public

    def request_stop(self) -> None:
        """Ask the loop to stop at the next safe point (what SIGINT/SIGTERM do); callable from any thread."""
        self._stop_requested = True

    def run(self) -> SessionResult:
        try:
            self.backend.open()
        except Exception as exc:  # a read-only or full session folder or registry: nothing has run yet
            fault = as_infrastructure(exc)
            if fault is None:
                raise
            raise InfrastructureError(f"session {self.backend.location} cannot be opened: {fault}") from None
        try:
            from alpha_evolve.files import cleanup_stale_temp_files

            removed = cleanup_stale_temp_files(self.backend.artifact_dir / "generated_configs")
            if removed:
                logger.info("removed %d temp files left in generated_configs/ by an interrupted write", removed)
            with self._signals():
                return self._run_locked()
        finally:
            self.backend.close()

    # ------------------------------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if not self._install_signals:
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            self._stop_requested = True
            if self._in_run:  # a pipeline run can take minutes: abandon it, resume re-runs it
                raise SessionInterrupted(signal.Signals(signum).name)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _run_locked(self) -> SessionResult:
        try:
            return self._run_steps()
        except Exception as exc:  # also a fault met while recording a stop or a failure
            fault = as_infrastructure(exc)
            if fault is None:
                raise
            self._stop_for_fault(str(fault))
            raise InfrastructureError(
                f"session {self.backend.location} stopped: {fault}. Nothing was recorded for the interrupted "
                "iteration; free space or fix permissions, then resume the session to run it again"
            ) from None

    def _run_steps(self) -> SessionResult:
        self.history = self.backend.load_history()
        self._check_history()
        self.summary = self.backend.load_summary() or self._new_summary()
        self.summary["pid"] = os.getpid()
        self.summary["best"] = None
        for record in self.history:  # the history is the truth; the saved summary may lag it after a crash
            self._update_best(record)
        state = self.summary.get("state") or {"phase": "idle", "iteration": 0}
        resuming = bool(self.history) or state.get("phase") != "idle"
        try:
            if not self._recorded(0):
                self._set_status("running")
                rerun = state if state.get("phase") == "running" and state.get("iteration") == 0 else None
                self._run_iteration(0, {}, state=rerun)
            outcome = self._proposal_loop(state, resuming)
            if outcome is not None:
                return outcome
            return self._finish("stopped", interrupted=True)
        except SessionInterrupted:
            return self._finish("stopped", interrupted=True)
        except Exception as exc:
            if as_infrastructure(exc) is not None:
                raise  # the machine's fault: see _run_locked
            reason = one_line(exc)
            logger.debug("session failed", exc_info=True)
            self.summary["failure_reason"] = reason
            self._finish("failed")
            raise

    def _proposal_loop(self, state: dict[str, Any], resuming: bool) -> SessionResult | None:
        """Propose, decide and run iterations 1..N one at a time; a result when the session ends here, None when
        a stop was requested (``parallel_runs.ParallelRunsLoop`` keeps several approved runs in flight instead)."""
        while not self._stop_requested:
            iteration = self._last_iteration() + 1
            if iteration > self.settings.iterations:
                return self._finish("session_complete")
            state = self.summary.get("state") or {}
            if state.get("iteration") == iteration and state.get("phase") == "running":
                self._out(f"iteration {iteration}: re-running the approved candidate interrupted by a crash")
                self._set_status("running")
                self._last_action = state.get("action")
                if self._last_action:  # the pending file may say "stopped" from the interrupted attempt
                    self.backend.resolve_action(self._last_action, "running", None)
                self._run_iteration(iteration, dict(state.get("candidate") or {}), state=state)
                continue
            outcome = self._decide(self._open_action(iteration, state, resuming))
            resuming = False
            if outcome is not None:
                return outcome
        return None

    def _open_action(self, iteration: int, state: Mapping[str, Any], resuming: bool) -> dict[str, Any]:
        """The action this iteration waits on: the one already posted (re-posted after a resume), else a new one."""
        if state.get("iteration") == iteration and state.get("phase") == "awaiting_approval":
            action = dict(state["action"])
            if resuming:
                self._out(f"iteration {iteration}: re-posting pending action {action['action_id']}")
            return action
        return self._propose(iteration, rejected=[])

    def _check_history(self) -> None:
        """Refuse to resume on a history record that fails its schema (what ``validate`` reports): the loop would
        otherwise mis-number iterations or feed a wrong record to the sampler and the briefing."""
        from alpha_evolve.files import schema_errors

        for i, record in enumerate(self.history, 1):
            problems = schema_errors("history_record", record) if isinstance(record, dict) else [
                "expected a JSON object"]
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise SessionError(
                    f"{self.backend.location}: history record {i}: {problems[0]}{more}; the session cannot resume "
                    f"until it is fixed (see: {cli('validate', shlex.quote(self.backend.location))})"
                )

    def _stop_for_fault(self, reason: str) -> None:
        """Best effort: say in the summary why the session stopped. The loop state is left as it was, so a resume
        re-runs the interrupted iteration (or re-posts its action); the disk may refuse this write too."""
        with contextlib.suppress(Exception):
            self.summary["status"] = "stopped"
            self.summary["failure_reason"] = reason
            self.summary["finished_at"] = utc_now()
            self._save_summary()

    # ---- proposals and decisions

    def _check_candidate(self, candidate: Mapping[str, Any], posted: Mapping[str, Any]) -> list[str]:
        return candidate_problems(self.space, self.base_config, candidate, posted)

    def _propose(self, iteration: int, *, rejected: list[str]) -> dict[str, Any]:
        from alpha_evolve.briefing import build_briefing

        best_record = self.summary.get("best")
        best = None
        if best_record is not None:
            best_updates = dict(best_record["config_updates"])
            best = (self.base_config.with_updates(best_updates) if best_updates else self.base_config, best_updates)
        # the sampler only hands out candidates the config accepts (it redraws refused ones itself)
        proposal = self.sampler.propose(iteration, base_config=self.base_config, best=best, history=list(self.history))
        attempt = len(rejected) + 1
        view = [{**r, "updates": r.get("config_updates") or {}} for r in self.history]  # briefing's field names
        briefing = build_briefing(
            view,
            objective=self.settings.objective,
            maximize=self.settings.maximize,
            space=self.space,
            proposal=proposal,
            iteration=iteration,
        )
        pdict = _proposal_dict(proposal)
        # "status", "notes" and "proposal.candidate" come first and together: an approver (Claude Code's Edit
        # tool) can then answer with ONE edit of one contiguous snippet; a second quick edit could race the
        # loop's own rewrite of the file and lose the notes.
        action = {
            "schema_version": SCHEMA_VERSION,
            "action_id": f"it{iteration:03d}-a{attempt}-{secrets.token_hex(4)}",
            "status": "awaiting_approval",
            "notes": None,
            "proposal": {
                "candidate": dict(pdict.get("candidate") or {}),
                "base": pdict.get("base"),
                "base_updates": pdict.get("base_updates") or {},
                "trial_number": pdict.get("trial_number"),
            },
            "session_id": self.backend.session_id,
            "iteration_completed": iteration - 1,
            "next_iteration": iteration,
            "attempt": attempt,
            "objective": self.settings.objective,
            "maximize": self.settings.maximize,
            "summary": str(briefing.get("summary", "")),
            "analysis": str(briefing.get("analysis", "")),
            "proposed_updates": pdict.get("updates") or {},
            "best_so_far": self._best_brief(),
            "created_at": utc_now(),
            "decision": None,
        }
        self.backend.append_briefing(
            {
                "schema_version": SCHEMA_VERSION,
                "iteration": iteration,
                "attempt": attempt,
                "action_id": action["action_id"],
                "created_at": action["created_at"],
                "briefing": briefing,
                "proposal": pdict,
            }
        )
        self._save_state(
            {
                "phase": "awaiting_approval",
                "iteration": iteration,
                "attempt": attempt,
                "action": action,
                "proposal": pdict,
                "rejected_action_ids": rejected,
            }
        )
        return action

    def _decide(self, action: dict[str, Any]) -> SessionResult | None:
        """Post the action and act on the answer; returns a result when the session ends here."""
        iteration = action["next_iteration"]
        state = self.summary["state"]
        if self.settings.auto_approve:
            decision = Decision("auto_approved", None, utc_now(), False, 0.0, dict(action["proposal"]["candidate"]))
            self.backend.post_action(action)
            self._start_run(action, decision, state)
            return None
        self._set_status("awaiting_approval")
        self._out(f"iteration {iteration}: awaiting approval of {action['action_id']}")
        from alpha_evolve.briefing import describe_proposal

        for line in describe_proposal(action, state.get("proposal")):
            self._out("  " + line)
        for line in self.backend.approval_hint(action):
            self._out("  " + line)
        self.backend.post_action(action)
        posted = dict(action["proposal"]["candidate"])
        result = self.backend.wait_for_decision(
            action,
            check_candidate=lambda c: self._check_candidate(c, posted),
            timeout=self.settings.approval_timeout,
            should_stop=self._waiting_should_stop,
        )
        if result.outcome == "timed_out":
            self._out(f"no decision on {action['action_id']} within {self.settings.approval_timeout:g} s")
            return self._finish("timed_out", action=action)
        if result.outcome == "stopped" or result.decision is None:
            return self._finish("stopped", action=action, interrupted=True)
        # bare keys an approver typed ("generations") become section.name, so history and attribution see one name
        decision = dataclasses.replace(result.decision, candidate=_canonical_candidate(result.decision.candidate)[0])
        self._out(
            f"iteration {iteration}: {decision.status}"
            + (" (edited)" if decision.edited else "")
            + (f" — {decision.notes}" if decision.notes else "")
        )
        if decision.status == "stop":
            return self._finish("stopped", action=action, decision=decision)
        if decision.status == "rejected":
            self.sampler.discard(_proposal_from_dict(state["proposal"]))
            self.backend.resolve_action(action, "rejected", decision)
            rejected = [*state.get("rejected_action_ids", []), action["action_id"]]
            self._propose(iteration, rejected=rejected)
            return None
        self._start_run(action, decision, state)
        return None

    def _waiting_should_stop(self) -> bool:
        """Polled while a decision is awaited (a loop with runs in flight records the finished ones here)."""
        return self._stop_requested

    def _start_run(self, action: dict[str, Any], decision: Decision, state: dict[str, Any]) -> None:
        iteration = action["next_iteration"]
        self._last_action = action
        new_state = {
            **state,
            "phase": "running",
            "candidate": decision.candidate,
            "decision": decision.to_record(),
            "reruns": 0,
        }
        self._save_state(new_state)  # before the pending file says "running": resume must know the candidate
        self.backend.resolve_action(
            action, "auto_approved" if decision.status == "auto_approved" else "running", decision
        )
        self._set_status("running")
        self._run_iteration(iteration, decision.candidate, state=new_state)

    # ---- runs

    def _options(self) -> PipelineOptions:
        s, base = self.settings, self.base_config.pipeline
        out_dir = s.pipeline_output_dir or str(self.backend.artifact_dir / "pipeline_runs")
        return dataclasses.replace(
            base,
            output_dir=out_dir,
            log_level=s.pipeline_log_level or base.log_level,
            log_file=s.pipeline_log_file or base.log_file,
            disable_align_cache=s.disable_align_cache or base.disable_align_cache,
            align_cache_dir=s.align_cache_dir or base.align_cache_dir,
        )

    def _evaluation(self, config: RunConfig) -> Any:
        """Where the session's runs evaluate candidates (``--backend`` / ``--ray-address`` over the config)."""
        s = self.settings
        changes: dict[str, Any] = {k: v for k, v in (("backend", s.backend), ("ray_address", s.ray_address))
                                   if v is not None}
        if s.ray_address is not None and s.backend is None:
            changes["backend"] = "ray"
        return dataclasses.replace(config.evaluation, **changes)

    def _run_iteration(self, iteration: int, candidate: dict[str, Any], *, state: dict[str, Any] | None) -> None:
        run = self._begin_run(iteration, candidate, state)
        self._in_run = True
        try:
            self._execute_run(run)
        finally:
            self._in_run = False
        self._record_run(run)

    def _begin_run(self, iteration: int, candidate: dict[str, Any], state: dict[str, Any] | None) -> dict[str, Any]:
        """Persist that ``iteration`` runs (resume re-runs it) and write its config; the run's context."""
        state = dict(
            state or {"phase": "running", "iteration": iteration, "attempt": 1, "candidate": candidate, "reruns": 0}
        )
        reruns = int(state.get("reruns", 0))
        if self.summary.get("state", {}).get("phase") == "running" and state.get("started_at"):
            reruns += 1  # a run was started before a crash: this is a new run directory for the same candidate
        stamp = str(self.summary["session_id"]).removeprefix("self_evo_session_")
        experiment = f"se{stamp}_it{iteration:03d}" + (f"_r{reruns}" if reruns else "")
        state.update(phase="running", iteration=iteration, reruns=reruns, experiment=experiment, started_at=utc_now())
        self._save_run_state(state)

        config = (
            self.base_config.with_updates(candidate, source=f"iteration {iteration}") if candidate else self.base_config
        )
        options = self._options()
        config = dataclasses.replace(config, pipeline=options, evaluation=self._evaluation(config))
        snapshot: str | None = None
        if self.settings.persist_configs:
            from alpha_evolve.config import write_toml_snapshot

            path = self.backend.artifact_dir / "generated_configs" / f"iteration_{iteration:03d}.toml"
            write_toml_snapshot(
                config,
                path,
                header=f"self-evolution {self.backend.session_id} iteration {iteration}; updates: {candidate}",
            )
            snapshot = str(path)

        return {"iteration": iteration, "candidate": candidate, "state": state, "config": config,
                "options": options, "experiment": experiment, "reruns": reruns, "snapshot": snapshot}

    def _execute_run(self, run: dict[str, Any]) -> None:
        """Run the pipeline (the only part that may run on another thread); fills in the run's outcome."""
        runner = self._runner or _default_runner()
        run["started_at"], t0 = utc_now(), time.perf_counter()
        run_dir: Path | None = None
        failure: str | None = None
        try:
            if self._stop_requested:
                raise SessionInterrupted("stop requested")
            run_dir = Path(runner(run["config"], run["options"], experiment=run["experiment"]))
        except SessionInterrupted:
            raise
        except Exception as exc:  # a runner that raises is a failed iteration, not a failed session
            fault = as_infrastructure(exc)
            if fault is not None:  # ... unless the machine failed: then nothing is recorded (see _run_locked)
                raise fault from None
            failure = f"pipeline raised {type(exc).__name__}: {one_line(str(exc))}"
            logger.debug("pipeline runner raised", exc_info=True)
        run.update(run_dir=run_dir, failure=failure, duration=time.perf_counter() - t0)

    def _record_run(self, run: dict[str, Any]) -> None:
        """Append the run's history record and tell the sampler (on the loop's thread)."""
        iteration, candidate, state = run["iteration"], run["candidate"], run["state"]
        run_dir: Path | None = run["run_dir"]
        failure: str | None = run["failure"]
        duration, started_at = run["duration"], run["started_at"]
        snapshot, experiment, reruns = run["snapshot"], run["experiment"], run["reruns"]
        metrics: dict[str, Any] = {}
        pipeline_status: str | None = None
        if run_dir is not None:
            pipeline_status, metrics, failure = self._read_run(run_dir)
        objective = finite_or_none(metrics.get(self.settings.objective)) if failure is None else None
        if failure is None and objective is None:
            failure = f"SUMMARY.json best_metrics has no finite {self.settings.objective!r}"
        record = {
            "schema_version": SCHEMA_VERSION,
            "iteration": iteration,
            "kind": "baseline" if iteration == 0 else "candidate",
            "attempt": int(state.get("attempt", 1)),
            "action_id": (state.get("action") or {}).get("action_id"),
            "config_updates": dict(candidate),
            "config_values": {**self.space.values_of(self.base_config), **candidate},
            "proposed_updates": dict((state.get("proposal") or {}).get("updates") or {}),
            "decision": state.get("decision"),
            "rejected_action_ids": list(state.get("rejected_action_ids", [])),
            "run_dir": str(run_dir) if run_dir else None,
            "config_snapshot": snapshot,
            "experiment": experiment,
            "pipeline_status": pipeline_status,
            "metrics": metrics,
            "objective_name": self.settings.objective,
            "objective": objective,
            "success": failure is None,
            "failure_reason": failure,
            "crowned": _run_crowned(run_dir) if failure is None else None,
            "reruns": reruns,
            "timings": {
                "started_at": started_at,
                "finished_at": utc_now(),
                "run_seconds": round(duration, 4),
                "approval_latency_ms": (state.get("decision") or {}).get("latency_ms"),
            },
        }
        if self._recorded(iteration):  # cannot happen unless two drivers raced; the lock prevents it
            raise SessionError(f"iteration {iteration} is already in the history")
        self.backend.append_history(record)
        self.history.append(record)
        if iteration > 0 and state.get("proposal"):
            proposal = _proposal_from_dict(state["proposal"])
            if candidate != dict(state["proposal"].get("candidate") or {}):
                proposal = self._edited(proposal, candidate)
            self.sampler.tell(proposal, objective, success=failure is None)
        self._update_best(record)
        self._count_trials(iteration, run_dir)
        self.summary["iterations_completed"] = self._last_iteration()
        self._after_record(iteration)
        verdict = f"{self.settings.objective} = {objective:.4g}" if objective is not None else f"failed: {failure}"
        self._out(f"iteration {iteration}: {verdict} ({duration:.1f} s, {run_dir})")

    def _save_run_state(self, state: dict[str, Any]) -> None:
        """Persist a starting run's state (one run at a time: it is the loop's state)."""
        self._save_state(state)

    def _after_record(self, iteration: int) -> None:
        self._save_state({"phase": "idle", "iteration": iteration})

    @staticmethod
    def _edited(proposal: Any, candidate: dict[str, Any]) -> Any:
        """The proposal as the approver changed it, so the sampler learns what actually ran."""
        base = {**(getattr(proposal, "base_values", None) or {}), **(getattr(proposal, "base_updates", None) or {})}
        updates = {k: v for k, v in candidate.items() if base.get(k, object()) != v}
        with contextlib.suppress(TypeError):
            return dataclasses.replace(proposal, candidate=dict(candidate), updates=updates)
        return proposal

    def _read_run(self, run_dir: Path) -> tuple[str | None, dict[str, Any], str | None]:
        from alpha_evolve.files import FileFormatError, read_json

        try:
            summary = read_json(run_dir / "SUMMARY.json")
        except FileFormatError as exc:
            fault = as_infrastructure(exc)
            if fault is not None:  # an I/O error reading the run's result is not the proposal's failure
                raise fault from None
            return None, {}, str(exc)
        if not isinstance(summary, dict):
            return None, {}, f"{run_dir / 'SUMMARY.json'}: expected a JSON object"
        status = summary.get("status")
        metrics = summary.get("best_metrics") if isinstance(summary.get("best_metrics"), dict) else {}
        if status != "ok":
            return str(status), dict(metrics or {}), str(summary.get("reason") or f"pipeline status {status!r}")
        return "ok", dict(metrics or {}), None

    # ---- bookkeeping

    def _recorded(self, iteration: int) -> bool:
        return any(r.get("iteration") == iteration for r in self.history)

    def _last_iteration(self) -> int:
        return max((int(r["iteration"]) for r in self.history), default=-1)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.settings.maximize else a < b

    def _count_trials(self, iteration: int, run_dir: Path | None) -> None:
        """Session-level trial ledger and deflated Sharpe of the session best (see session_trials)."""
        from alpha_evolve import session_trials

        try:
            session_trials.absorb_run(self.backend.artifact_dir, iteration, run_dir)
            session_trials.absorb_history(self.backend.artifact_dir, self.history)  # runs a crash left uncounted
            self.summary["selection"] = session_trials.session_selection(
                self.backend.artifact_dir, self.summary.get("best"), self.summary.get("selection"))
        except Exception as exc:  # bookkeeping must not fail the session; say so in the summary instead
            logger.warning("session trial ledger not updated: %s", exc)

    def _update_best(self, record: dict[str, Any]) -> None:
        if not record["success"] or record.get("crowned") is False:  # a flagged winner cannot be crowned
            return
        best = self.summary.get("best")
        if best is None or self._better(record["objective"], best["objective"]):
            self.summary["best"] = {
                "iteration": record["iteration"],
                "objective": record["objective"],
                "config_updates": record["config_updates"],
                "metrics": record["metrics"],
                "run_dir": record["run_dir"],
                "config_snapshot": record["config_snapshot"],
            }

    def _best_brief(self) -> dict[str, Any] | None:
        best = self.summary.get("best")
        if not best:
            return None
        return {
            "iteration": best["iteration"],
            "objective": best["objective"],
            "config_updates": best["config_updates"],
        }

    def _new_summary(self) -> dict[str, Any]:
        s = self.settings
        return {
            "schema_version": SCHEMA_VERSION,
            "session_id": self.backend.session_id,
            "mode": self.backend.kind,
            "location": self.backend.location,
            "status": "running",
            "objective": s.objective,
            "maximize": s.maximize,
            "direction": "maximize" if s.maximize else "minimize",
            "iterations_completed": 0,
            "iterations_target": s.iterations,
            "best": None,
            "created_at": utc_now(),
            "updated_at": utc_now(),
            "finished_at": None,
            "failure_reason": None,
            "settings": s.to_dict(),
            "base_config": self.base_config.to_dict(),
            "files": {},
            "state": {"phase": "idle", "iteration": 0},
        }

    def _save_summary(self) -> None:
        self.summary["updated_at"] = utc_now()
        self.summary["iterations_target"] = self.settings.iterations
        self.summary["settings"] = self.settings.to_dict()
        self.summary["iterations_completed"] = max(self._last_iteration(), 0)
        self.backend.save_summary(self.summary)

    def _save_state(self, state: dict[str, Any]) -> None:
        self.summary["state"] = state
        self._save_summary()

    def _set_status(self, status: str) -> None:
        if self.summary.get("status") != status:
            self.summary["status"] = status
            self.summary["finished_at"] = None
            self._save_summary()

    def _finish(
        self,
        status: str,
        *,
        action: dict[str, Any] | None = None,
        decision: Decision | None = None,
        interrupted: bool = False,
    ) -> SessionResult:
        state = self.summary.get("state") or {}
        if action is None and state.get("phase") in ("awaiting_approval", "running"):
            action = state.get("action")
        action = action or self._last_action
        if action is not None:
            with contextlib.suppress(Exception):  # the summary below matters more than the courtesy update
                self.backend.resolve_action(action, status, decision)
        if status == "session_complete":
            self.summary["state"] = {"phase": "done", "iteration": self._last_iteration()}
            if "confirmation" not in self.summary:
                # The session ranked on validation only: its best is confirmed once on the sealed holdout.
                from alpha_evolve.session_trials import confirm_on_holdout

                self.summary["confirmation"] = confirm_on_holdout(self.summary.get("best"))
        self.summary["status"] = status
        self.summary["finished_at"] = utc_now()
        self._save_summary()
        return SessionResult(status, self.summary, interrupted=interrupted)


def _run_crowned(run_dir: Path | None) -> bool:
    from alpha_evolve.session_trials import crowned

    return crowned(run_dir)


def load_base_config(summary: Mapping[str, Any] | None, config_path: str | None) -> RunConfig:
    """The session's base config: the copy stored at its start when resuming (the file may have changed since)."""
    from alpha_evolve.config import load_config

    if summary and isinstance(summary.get("base_config"), Mapping):
        return from_mapping(summary["base_config"], source=config_path or "<session base config>")
    from alpha_evolve.pipeline import with_absolute_data_path

    return with_absolute_data_path(load_config(config_path))
