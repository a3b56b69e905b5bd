"""Several approved pipeline runs in flight at once (``self-evolve --parallel-runs N``); approvals unchanged.

What "concurrent" means for a loop that proposes one action at a time: the loop still posts **one** pending action
at a time and waits for its decision exactly as a sequential session does (same files or registry rows, same
validation of edits, same rejections and stops). What changes is what happens after an approval: the run starts
in the background and the loop goes on to propose the next iteration, as long as fewer than N approved runs are
running. A proposal is made from the history recorded so far (runs still in flight are not in it yet: the sampler
proposes without their results, as an asynchronous optimiser does). On a cluster (``--backend ray``) the runs
share its nodes; locally they share this machine's cores.

Records go into the history strictly in iteration order (a run that finishes early waits for the earlier ones), so
numbering, ``iterations_completed``, briefings and the best-so-far mean what they mean in a sequential session.

Crash safety: before a run starts, its approved candidate and decision are listed in the session state
(``state.in_flight``); a resumed session re-runs every listed run that is not in the history, with the same
candidate (a new run directory, ``reruns`` + 1). A stop decision or an approval time-out lets the runs in flight
finish and records them; a signal abandons them (resume re-runs them).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from alpha_evolve.session import SelfEvolutionLoop, SessionInterrupted, SessionResult

logger = logging.getLogger("alpha_evolve.parallel_runs")


@dataclass
class _Run:
    iteration: int
    context: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    thread: threading.Thread | None = None


class ParallelRunsLoop(SelfEvolutionLoop):
    """``SelfEvolutionLoop`` with up to ``settings.parallel_runs`` approved runs in flight (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runs: dict[int, _Run] = {}
        self._finished = threading.Event()
        self._draining = False

    # ------------------------------------------------------------------ the loop

    def _proposal_loop(self, state: dict[str, Any], resuming: bool) -> SessionResult | None:
        self._resume_in_flight(state)
        while not self._stop_requested:
            self._drain()
            iteration = self._next_iteration()
            if iteration > self.settings.iterations:
                if not self._runs:
                    return self._finish("session_complete")
                self._wait_for_first()
                continue
            if self._running() >= self.settings.parallel_runs:
                self._wait_for_a_slot()
                continue
            outcome = self._decide(self._open_action(iteration, self.summary.get("state") or {}, resuming))
            resuming = False
            if outcome is not None:
                return outcome
        return None

    def _resume_in_flight(self, state: dict[str, Any]) -> None:
        """Re-run the approved runs a crash interrupted (also a sequential session's ``running`` state)."""
        listed = [dict(s) for s in state.get("in_flight") or []]
        if state.get("phase") == "running" and state.get("candidate") is not None:
            listed.append(dict(state))
        for run_state in sorted(listed, key=lambda s: int(s.get("iteration", 0))):
            iteration = int(run_state.get("iteration", 0))
            if iteration == 0 or self._recorded(iteration) or iteration in self._runs:
                continue
            self._out(f"iteration {iteration}: re-running the approved candidate interrupted by a crash")
            if run_state.pop("started_at", None):
                run_state["reruns"] = int(run_state.get("reruns", 0)) + 1  # a new run directory, same candidate
            if run_state.get("action"):
                self.backend.resolve_action(run_state["action"], "running", None)
            self._launch(iteration, dict(run_state.get("candidate") or {}), run_state)

    def _next_iteration(self) -> int:
        return max([self._last_iteration(), *self._runs]) + 1

    def _running(self) -> int:
        return sum(1 for run in self._runs.values() if not run.done.is_set())

    # ------------------------------------------------------------------ runs in the background

    def _start_run(self, action: dict[str, Any], decision: Any, state: dict[str, Any]) -> None:
        """An approval starts the run in the background; the loop goes on proposing."""
        iteration = action["next_iteration"]
        self._last_action = action
        run_state = {**state, "phase": "running", "candidate": decision.candidate,
                     "decision": decision.to_record(), "reruns": 0}
        run_state.pop("in_flight", None)
        self._launch(iteration, decision.candidate, run_state,
                     resolve=(action, "auto_approved" if decision.status == "auto_approved" else "running", decision))

    def _launch(self, iteration: int, candidate: dict[str, Any], run_state: dict[str, Any],
                resolve: tuple[dict[str, Any], str, Any] | None = None) -> None:
        self._set_status("running")
        context = self._begin_run(iteration, candidate, run_state)  # listed in state.in_flight before it starts
        if resolve is not None:
            self.backend.resolve_action(*resolve)
        run = self._runs[iteration]
        run.context = context
        run.thread = threading.Thread(target=self._execute_in_background, args=(run,), daemon=True,
                                      name=f"ae-session-run-{iteration}")
        run.thread.start()
        self._out(f"iteration {iteration}: running ({self._running()} of {self.settings.parallel_runs} run slots "
                  "busy)")

    def _execute_in_background(self, run: _Run) -> None:
        try:
            self._execute_run(run.context)
        except BaseException as exc:  # re-raised on the loop's thread when the run is collected
            run.error = exc
        finally:
            run.done.set()
            self._finished.set()

    def _drain(self) -> None:
        """Record finished runs, in iteration order (a later run that finished first waits for earlier ones)."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._runs:
                first = min(self._runs)
                run = self._runs[first]
                if not run.done.is_set():
                    return
                del self._runs[first]
                if run.error is not None:
                    raise run.error
                self._record_run(run.context)
        finally:
            self._draining = False

    def _wait_for_a_slot(self) -> None:
        """Block until fewer than N runs are running (a signal meanwhile abandons them: resume re-runs them)."""
        self._in_run = True
        try:
            while self._running() >= self.settings.parallel_runs:
                if self._stop_requested:
                    raise SessionInterrupted("stop requested")
                self._finished.wait(0.5)
                self._finished.clear()
        finally:
            self._in_run = False
        self._drain()

    def _wait_for_first(self) -> None:
        """The earliest run must finish before any later one can be recorded."""
        if not self._runs:
            return
        first = self._runs[min(self._runs)]
        self._in_run = True
        try:
            while not first.done.wait(0.5):
                if self._stop_requested:
                    raise SessionInterrupted("stop requested")
        finally:
            self._in_run = False
        self._drain()

    def _waiting_should_stop(self) -> bool:
        self._drain()  # finished runs are recorded while a decision is awaited
        return self._stop_requested

    # ------------------------------------------------------------------ state

    def _save_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["in_flight"] = [dict(run.context.get("state", run.context)) for _, run in sorted(self._runs.items())]
        super()._save_state(state)

    def _save_run_state(self, state: dict[str, Any]) -> None:
        iteration = int(state["iteration"])
        if iteration == 0:  # the baseline runs alone, before any proposal
            super()._save_run_state(state)
            return
        self._runs[iteration] = _Run(iteration, {"state": dict(state)})
        self._save_state({"phase": "idle", "iteration": iteration})

    def _after_record(self, iteration: int) -> None:
        if iteration == 0:
            super()._after_record(iteration)
            return
        current = dict(self.summary.get("state") or {"phase": "idle", "iteration": iteration})
        current.pop("in_flight", None)
        self._save_state(current)

    def _finish(self, status: str, *, action: dict[str, Any] | None = None, decision: Any = None,
                interrupted: bool = False) -> SessionResult:
        if self._runs and not interrupted and status in ("stopped", "timed_out", "session_complete"):
            self._out(f"waiting for {len(self._runs)} approved run(s) in flight before ending the session")
            while self._runs:
                self._wait_for_first()
        return super()._finish(status, action=action, decision=decision, interrupted=interrupted)
