"""The clean template process, its evaluation slots, the per-candidate confined children and the replay workers.

Process tree (each arrow is a fork unless noted)::

    evaluator (parent; may hold API keys, clients, configs)
      └─ exec ─> template: fresh interpreter, scrubbed environment, NautilusTrader imported, bars prepared
                   └─> slot (one per concurrent evaluation; trusted, never runs candidate code or an engine)
                         ├─> candidate child: ONE candidate run, confined (Landlock + seccomp + rlimits), then gone
                         └─> replay worker: trusted engine replays of decision logs (recycled: engines leak)

Why: the template is exec'd, not forked, so neither the environment nor inherited memory holds a secret; each
candidate runs in a fresh fork nobody else touched (no state carries over, poisoning dies with the process); the
figures come from the replay worker, where no candidate code ever ran. A candidate child talks to the trusted side
only through two pipes the slot reads with size caps: fd 3 (its claimed result, JSON) and fds 1/2 (its prints,
kept up to ``LOG_CAP`` bytes). Parent <-> template <-> slot messages are pickles between trusted processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import pickle
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from alpha_evolve.values import one_line

LOG_CAP = 64 * 1024  # bytes of candidate output kept per run
RESULT_CAP = 64 * 1024 * 1024  # a claimed result larger than this is no result
_PR_SET_PDEATHSIG = 1
_SLOT_REQUEST = "slot"

# Environment the template keeps (nothing else crosses): enough for Python, locale and time zones.
ENV_ALLOW = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONHASHSEED")
# Names that look like credentials are dropped even when allow-listed.
ENV_DENY = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|ANTHROPIC|COOKIE|SESSION|PRIVATE", re.IGNORECASE)


def scrubbed_environment(env: Mapping[str, str]) -> dict[str, str]:
    """What the template's environment may hold: an allow-list of harmless names, minus anything secret-like."""
    keep = {}
    for name, value in env.items():
        if (name in ENV_ALLOW or name.startswith("LC_")) and not ENV_DENY.search(name):
            keep[name] = value
    return keep


def _set_pdeathsig() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# ============================================================================================ parent side


class ForkServerError(RuntimeError):
    """The template could not start (one line)."""


@dataclass
class SlotHandle:
    pid: int
    conn: Connection
    replays_started: int = 0


class ForkServer:
    """Parent-side handle of the template process."""

    def __init__(self, setup: Mapping[str, Any], start_timeout: float = 120.0) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        boot = (
            "import sys; sys.path[:0] = " + repr([p for p in sys.path if p]) + "\n"
            "from alpha_evolve.forkserver import template_main; template_main(int(sys.argv[1]))"
        )
        self._sock = ours
        self._conn = Connection(os.dup(ours.fileno()))
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", boot, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=scrubbed_environment(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",
            close_fds=True,
        )
        theirs.close()
        try:
            self._conn.send(("setup", dict(setup)))
            if not self._conn.poll(start_timeout):
                raise ForkServerError(f"the evaluation template did not start within {start_timeout:g} s")
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            err = self._stderr_tail()
            self.close()
            raise ForkServerError(f"the evaluation template died at start-up: {err or exc}") from None
        except BaseException:
            self.close()
            raise
        if reply[0] != "ready":
            self.close()
            kind, message = reply[1], reply[2]
            if kind == "data":
                raise ValueError(message)
            raise ForkServerError(message)
        self.info: dict[str, Any] = reply[1]

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def spawn_slot(self) -> SlotHandle:
        self._conn.send((_SLOT_REQUEST,))
        data, fds, _flags, _addr = socket.recv_fds(self._sock, 8, 1)
        if len(data) != 8 or len(fds) != 1:
            raise ForkServerError("the evaluation template did not hand over a slot")
        (pid,) = struct.unpack("q", data)
        return SlotHandle(pid, Connection(fds[0]))

    def _stderr_tail(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        with contextlib.suppress(Exception):
            lines = [ln for ln in self.process.stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else ""
        return ""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.close()
        with contextlib.suppress(OSError):
            self._sock.close()
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5.0)
        if self.process.stderr is not None:
            with contextlib.suppress(OSError):
                self.process.stderr.close()


# ============================================================================================ template


def template_main(fd: int) -> None:
    """Receive the setup, prepare every dataset, check the kernel, then fork a slot per request until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    conn = Connection(os.dup(fd))
    try:
        _, setup = conn.recv()
    except (EOFError, OSError):
        os._exit(0)
    try:
        state = _prepare(setup)
    except ValueError as exc:
        conn.send(("error", "data", one_line(str(exc))))
        os._exit(0)
    except Exception as exc:
        conn.send(("error", "setup", f"{type(exc).__name__}: {one_line(str(exc))}"))
        os._exit(0)
    if state.kernel:
        from alpha_evolve import confinement

        problem = confinement.probe()
        if problem is not None:
            conn.send(("error", "confinement", f"kernel confinement unavailable: {problem}; refusing to run "
                       "candidate code (on such a machine set [backtest] allow_unconfined = true to opt out)"))
            os._exit(0)
    conn.send(("ready", {"kernel": state.kernel, "landlock_abi": state.landlock_abi, "pid": os.getpid()}))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # slots are reaped automatically
    gc.collect()
    gc.freeze()  # shared, read-only from here on: keep it out of every child's collections (copy-on-write)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            break
        if request[0] != _SLOT_REQUEST:
            continue
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            ours.close()
            sock.close()
            conn.close()
            code = 0
            try:
                _slot_main(Connection(theirs.detach()), state)
            except BaseException:
                code = 1
            os._exit(code)
        theirs.close()
        socket.send_fds(sock, [struct.pack("q", pid)], [ours.fileno()])
        ours.close()
    os._exit(0)


@dataclass
class _State:
    datasets: dict[tuple[str, str], Any]
    settings: Any
    kernel: bool
    landlock_abi: int
    read_paths: list[str]
    cuts: dict[tuple[str, str], int]
    log_cap: int
    python_guards: bool = True
    fast_replay: bool = True


def _prepare(setup: Mapping[str, Any]) -> _State:
    import orjson  # noqa: F401 - preload: the confined child imports nothing it can avoid

    from alpha_evolve import backtest, confinement, metrics, policy, replay, sandbox  # noqa: F401 - preload
    from alpha_evolve.strategies import base  # noqa: F401

    settings = setup["settings"]
    if setup.get("disable_python_guards_for_tests"):
        # Test-only: lets the kernel layers be shown to hold on their own (the parent's monkeypatches do not
        # cross an exec).
        policy.check_policy = lambda code: []
        policy.module_or_parent_allowed = lambda module: True
        policy.FORBIDDEN_BUILTINS = frozenset()
    datasets: dict[tuple[str, str], Any] = {}
    specs, warmups = setup.get("specs") or {}, setup.get("warmups") or {}
    for (symbol, split), frame in setup["frames"].items():
        datasets[(symbol, split)] = backtest.prepare_bars(
            symbol, frame, settings, setup["ppy"].get(symbol), spec=specs.get(symbol),
            warmup=warmups.get((symbol, split)),
        )
    rng = random.Random(int.from_bytes(os.urandom(8), "little"))
    # Cuts index the engine's bar list, whose first `warmup` bars only warm indicators up (no decisions there).
    # Every decision before the cut is compared, so a late cut checks most of the period: a strategy that peeks
    # only after some bar p escapes only when the cut falls after p (before, with a cut in the middle third, any
    # peeking confined to the last third always escaped). The candidate cannot read the cut (see _forget_all_but).
    cuts = {key: p.warmup + rng.randint(max(len(p) // 2, 2), max(len(p) - 2, 2)) for key, p in datasets.items()}
    if datasets:
        # One trusted engine run here pays the once-per-process engine set-up (~25 ms) for every fork after it.
        warm = next(iter(datasets.values()))
        replay.run_replay(warm.slice(0, min(len(warm), 40)), settings, [(warm.warmup + 5, 1), (warm.warmup + 10, 0)])
    kernel = bool(setup.get("kernel", True))
    abi = confinement.landlock_abi()
    if kernel:
        confinement.seccomp_available()  # load libseccomp now: a confined child cannot open it
    return _State(datasets, settings, kernel, abi, confinement.readable_paths(), cuts,
                  int(setup.get("log_cap", LOG_CAP)), not setup.get("disable_python_guards_for_tests"),
                  bool(setup.get("fast_replay", True)))  # fmt: skip


# ============================================================================================ slot


def _slot_main(conn: Connection, state: _State) -> None:
    replayer = _Replayer(state)
    perturbed: dict[tuple[str, str], Any] = {}
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                break
            if task is None:
                break
            conn.send(_run_task(task, state, replayer, perturbed))
    finally:
        replayer.stop()
        _reap_finished(block=True)


def _run_task(task: Mapping[str, Any], state: _State, replayer: _Replayer, perturbed: dict[Any, Any]) -> dict[
        str, Any]:  # fmt: skip
    from alpha_evolve import replay

    outcomes = []
    for symbol in task["symbols"]:
        key = (symbol, task["split"])
        prepared = state.datasets[key]
        fraction = task.get("fraction")
        if fraction:
            prepared = prepared.slice(0, max(int(len(prepared) * fraction), 2))
        outcome, decisions = _verified_run(task["code"], prepared, state, replayer, key, fraction)
        earlier = (task.get("prefix") or {}).get(symbol)
        if outcome.status == "ok" and earlier is not None and not fraction:
            cut, screen_decisions = earlier
            cut = state.datasets[key].warmup + int(cut)  # decision indexes count the warm-up bars too
            first = replay.first_divergence(decisions, screen_decisions, cut)
            if first is not None:
                outcome = _fail(outcome, "lookahead", f"{symbol}: its decision at bar {first} differs between a run "
                                f"on the first {cut} bars and the full run: the strategy uses future bars")
        if outcome.status == "ok" and task.get("causality") and not fraction:
            cut = state.cuts[key]
            if key not in perturbed:
                perturbed[key] = replay.perturbed(prepared, cut)
            problem = _causality_problem(task["code"], perturbed[key], cut, decisions, state)
            if problem is not None:
                outcome = _fail(outcome, "lookahead", f"{symbol}: {problem}")
        outcomes.append(outcome)
        if outcome.status != "ok":
            break
    return {"outcomes": outcomes, "replay_workers_started": replayer.started}


def _fail(outcome: Any, kind: str, message: str) -> Any:
    from alpha_evolve.backtest import BacktestOutcome

    return BacktestOutcome(kind, message, outcome.symbol, outcome.bars, elapsed=outcome.elapsed, log=outcome.log)


def _verified_run(code: str, prepared: Any, state: _State, replayer: _Replayer, key: tuple[str, str],
                  fraction: float | None) -> tuple[Any, list[tuple[int, int]]]:  # fmt: skip
    """Run the candidate in a fresh confined child, then score its decision log by a trusted replay."""
    from alpha_evolve import replay
    from alpha_evolve.backtest import BacktestOutcome

    started = time.perf_counter()
    claim, log = _run_candidate(code, prepared, state)
    n = len(prepared)

    def failure(kind: str, message: str) -> BacktestOutcome:
        return BacktestOutcome(kind, message, prepared.symbol, n, elapsed=time.perf_counter() - started, log=log)

    status = claim.get("status")
    if status != "ok":
        from alpha_evolve.backtest import FAILURE_KINDS

        kind = status if status in FAILURE_KINDS and status not in ("tampered", "lookahead") else "crash"
        return failure(kind, one_line(str(claim.get("error") or kind))[:500]), []
    try:
        decisions = replay.validate_decisions(claim.get("decisions"), len(prepared.bars))  # warm-up included
    except ValueError as exc:
        return failure("tampered", f"{prepared.symbol}: the candidate's run returned a forged decision log ({exc})"), []
    if state.fast_replay and key[1] == "train":
        # Train-time fitness: a numpy replay in this (clean) process confirms the claimed fills without an engine;
        # any disagreement (or a case it does not model) goes to the engine replay, which decides.
        fast = replay.vector_fills(prepared, state.settings, decisions)
        if fast is not None and replay.fills_agree(claim.get("fills"), fast):
            from alpha_evolve.backtest import scored_outcome

            scored = scored_outcome(prepared, state.settings, fast, started)
            scored.decisions, scored.fills, scored.log = decisions, fast.tolist(), log
            return scored, decisions
    trusted = replayer.replay(key, fraction, decisions)
    if trusted.status != "ok":
        return failure(trusted.status, trusted.error or trusted.status), decisions
    if not replay.fills_agree(claim.get("fills"), trusted.fills):
        return failure(
            "tampered",
            f"{prepared.symbol}: the candidate's own run reported fills that a clean replay of its decisions does "
            f"not reproduce ({len(claim.get('fills') or [])} claimed vs {len(trusted.fills)} replayed)",
        ), decisions
    trusted.log = log
    trusted.elapsed = time.perf_counter() - started
    return trusted, decisions


def _causality_problem(code: str, perturbed: Any, cut: int, decisions: list[tuple[int, int]],
                       state: _State) -> str | None:  # fmt: skip
    from alpha_evolve import replay

    claim, _log = _run_candidate(code, perturbed, state)
    if claim.get("status") != "ok":
        return (f"the causality check (same bars up to bar {cut}, different ones after) failed: "
                f"{one_line(str(claim.get('error') or claim.get('status')))[:300]}")  # fmt: skip
    try:
        other = replay.validate_decisions(claim.get("decisions"), len(perturbed.bars))
    except ValueError as exc:
        return f"the causality check run returned a forged decision log ({exc})"
    first = replay.first_divergence(decisions, other, cut)
    if first is None:
        return None
    return (f"its decision at bar {first} changed when only bars from {cut} on were changed: "
            "the strategy uses future bars (look-ahead)")  # fmt: skip


# ------------------------------------------------------------------------------------ one candidate child


def _run_candidate(code: str, prepared: Any, state: _State) -> tuple[dict[str, Any], str]:
    """Fork, confine, run, collect with caps; the claim (untrusted, plain data) and the captured output."""
    settings = state.settings
    result_r, result_w = os.pipe()
    log_r, log_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(result_r)
            os.close(log_r)
            _candidate_child(code, prepared, state, result_w, log_w)
        finally:
            os._exit(70)
    os.close(result_w)
    os.close(log_w)
    hard = float(settings.hard_timeout_seconds)
    result, log, dropped, verdict = _collect(pid, result_r, log_r, hard, state.log_cap)
    text = log.decode("utf-8", "replace")
    if dropped:
        text += f"\n[... {dropped} more bytes of output dropped]"
    if verdict is not None:
        return {"status": verdict[0], "error": verdict[1]}, text
    try:
        import orjson

        claim = orjson.loads(result)
    except Exception:
        claim = None
    if not isinstance(claim, dict):
        return {"status": "crash", "error": "the candidate process returned no readable result"}, text
    return claim, text


def _collect(pid: int, result_r: int, log_r: int, hard: float, cap: int) -> tuple[bytes, bytes, int, tuple[
        str, str] | None]:  # fmt: skip
    """Read both pipes until the child exits; enforce the hard timeout, a stop, and the result size cap."""
    deadline = time.monotonic() + hard
    result = bytearray()
    log = bytearray()
    dropped = 0
    verdict: tuple[str, str] | None = None
    poller = select.poll()
    pidfd = os.pidfd_open(pid)
    for fd in (result_r, log_r, pidfd):
        poller.register(fd, select.POLLIN | select.POLLHUP)
    open_fds = {result_r, log_r}
    exited = False
    status = 0
    _reap_finished()

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    try:
        while open_fds or not exited:
            if not open_fds and result:
                # A complete result and both pipes closed: nothing more can come from this process. Kill it
                # (a candidate that closed its pipes and kept running gets no more CPU) and reap it later.
                kill()
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                kill()
                verdict = ("timeout", f"no result after the hard timeout of {hard:g} s; candidate process killed")
                break
            events = poller.poll(max(min(remaining, 0.05), 0.001) * 1000)
            for fd, _ev in events:
                if fd == pidfd:
                    exited = True
                    poller.unregister(pidfd)
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                elif fd == result_r:
                    result += chunk
                    if len(result) > RESULT_CAP:
                        kill()
                        verdict = ("crash", "the candidate process wrote an oversized result; killed")
                        break
                else:
                    keep = max(cap - len(log), 0)
                    log += chunk[:keep]
                    dropped += len(chunk) - min(len(chunk), keep)
            if verdict is not None:
                break
            if not events and not exited:
                wpid, st = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
                if wpid and os.WIFSTOPPED(st):
                    kill()
                    name = _signal_name(os.WSTOPSIG(st))
                    verdict = ("crash", f"the candidate process stopped itself ({name}); killed")
                    break
            if exited and open_fds:
                # Exited: whatever is left in the pipes is readable now; a grandchild cannot exist (no fork).
                continue
    finally:
        os.close(pidfd)
        if verdict is None and result and not exited:
            _PENDING_REAP.append(pid)
        else:
            _, status = os.waitpid(pid, 0)
        os.close(result_r)
        os.close(log_r)
    if verdict is None and not result:
        verdict = _death_verdict(status, bytes(log))
    return bytes(result), bytes(log), dropped, verdict


_PENDING_REAP: list[int] = []


def _reap_finished(block: bool = False) -> None:
    """Collect killed candidate processes whose teardown has finished (or all of them when ``block``)."""
    for pid in list(_PENDING_REAP):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _PENDING_REAP.remove(pid)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _death_verdict(status: int, log: bytes) -> tuple[str, str]:
    tail = [ln.strip() for ln in log.decode("utf-8", "replace").splitlines() if ln.strip()]
    last = f"; last output line: {tail[-1][:200]}" if tail else ""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "timeout", "the candidate process exceeded its CPU time limit (SIGXCPU)"
        if sig == signal.SIGKILL and b"MemoryError" in log:
            return "memory", "the candidate process ran out of memory (killed)"
        return "crash", f"the candidate process died with {_signal_name(sig)}{last}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    if code == 70:
        return "crash", f"the candidate process could not start its run{last}"
    return "crash", f"the candidate process exited with code {code} before reporting{last}"


class _CandidateTimeout(BaseException):
    """SIGALRM in a candidate child; a BaseException so ``except Exception`` in candidate code cannot eat it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _CandidateTimeout()


def _candidate_child(code: str, prepared: Any, state: _State, result_w: int, log_w: int) -> None:  # pragma: no cover
    settings = state.settings
    _set_pdeathsig()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_w, 1)
    os.dup2(log_w, 2)
    os.dup2(result_w, 3)
    # Nothing else crosses into the candidate's process: not the slot's socket to the parent, not the replay pipes.
    os.closerange(4, 1 << 20)
    prepared = _forget_all_but(prepared, state)
    from alpha_evolve import confinement, sandbox

    def report(payload: dict[str, Any]) -> None:
        import orjson

        data = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
        view = memoryview(data)
        while view:
            view = view[os.write(3, view):]

    try:
        limit = sandbox._address_space_bytes() + int(settings.memory_limit_mb) * 1024 * 1024
        confinement.confine(
            confinement.Limits(limit, cpu_seconds=math.ceil(settings.hard_timeout_seconds) + 1),
            state.read_paths,
            kernel=state.kernel,
        )
    except Exception as exc:
        report({"status": "crash", "error": f"confinement failed: {one_line(str(exc))}"})
        os._exit(0)
    if state.python_guards:
        sandbox.install_audit_hook()  # early rejection with readable messages; the kernel is the boundary
    signal.signal(signal.SIGALRM, _on_alarm)
    started = time.perf_counter()
    payload: dict[str, Any]
    try:
        signal.setitimer(signal.ITIMER_REAL, settings.soft_timeout_seconds)
        try:
            from alpha_evolve.backtest import run_backtest

            with sandbox.armed() if state.python_guards else contextlib.nullcontext():
                outcome = run_backtest(code, prepared, settings)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        payload = {"status": outcome.status, "error": outcome.error, "decisions": outcome.decisions,
                   "fills": outcome.fills}  # fmt: skip
    except _CandidateTimeout:
        payload = {"status": "timeout", "error": f"{prepared.symbol}: no result after the soft timeout of "
                   f"{settings.soft_timeout_seconds:g} s"}  # fmt: skip
    except MemoryError:
        payload = {"status": "memory", "error": f"{prepared.symbol}: MemoryError (limit "
                   f"{settings.memory_limit_mb} MiB on top of the worker)"}  # fmt: skip
    except RecursionError as exc:
        payload = {"status": "runtime", "error": f"RecursionError: {exc}"}
    except BaseException as exc:
        payload = {"status": "runtime", "error": f"{type(exc).__name__}: {one_line(str(exc))[:300]}"}
    payload["elapsed"] = time.perf_counter() - started
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    try:
        report(payload)
        for fd in (3, 1, 2):  # EOF now: the slot goes on while the kernel tears this (large) process down
            os.close(fd)
    except BaseException:
        os._exit(71)
    os._exit(0)


def _forget_all_but(prepared: Any, state: _State) -> Any:  # pragma: no cover - runs in the child
    """Leave this process only the bars it is fed: a private copy of them, everything else wiped in place.

    The child is a fork of the slot, so without this it would hold every prepared split, the true bars behind a
    causality run's mirrored future, the decisions of the run being checked, the screen's decision prefix and the
    causality cut, all reachable from the stack frames or ``gc``. A candidate that read them (a frame walk, a gc
    scan) would decide identically on the true and the mirrored future and pass the look-ahead checks. Wiping
    happens in this copy-on-write child only; the slot keeps its data. Freed memory still holds old bytes: reading
    it needs raw memory access, which the policy refuses (the residual risk is named in ARCHITECTURE.md).
    """
    import dataclasses

    import numpy as np

    fed = dataclasses.replace(
        prepared,
        bars=list(prepared.bars),
        frame=prepared.frame.iloc[:0].copy(),  # the run reads bars, not the frame (the spec is built already)
        ts=np.array(prepared.ts, copy=True),
        closes=np.array(prepared.closes, copy=True),
        volume=None if prepared.volume is None else np.array(prepared.volume, copy=True),
    )
    from alpha_evolve.backtest import BacktestOutcome, PreparedBars

    seen: set[int] = {id(fed), id(state.settings)}
    kinds = (PreparedBars, BacktestOutcome)
    frame: Any = sys._getframe(1)
    while frame is not None:
        for value in list(frame.f_locals.values()):
            _wipe(value, seen, kinds)
        frame = frame.f_back
    for dataset in list(state.datasets.values()):
        _wipe(dataset, seen, kinds)
    state.datasets.clear()
    state.cuts.clear()
    gc.collect()
    return fed


def _wipe(value: Any, seen: set[int], kinds: tuple[Any, Any]) -> None:  # pragma: no cover - runs in the child
    """Empty a container, zero a prepared dataset's price arrays, clear an outcome; recursively, once per object.

    ``kinds`` is (PreparedBars, BacktestOutcome), imported once by the caller rather than on every recursion."""
    if id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type(None))):
        return
    seen.add(id(value))
    PreparedBars, BacktestOutcome = kinds

    if isinstance(value, dict):
        for item in list(value.values()):
            _wipe(item, seen, kinds)
        value.clear()
    elif isinstance(value, (list, set)):
        for item in list(value):
            _wipe(item, seen, kinds)
        value.clear()
    elif isinstance(value, tuple):
        for item in value:
            _wipe(item, seen, kinds)
    elif isinstance(value, PreparedBars):
        for array in (value.closes, value.volume, *_frame_blocks(value.frame)):
            _zero(array)
        value.bars.clear()
    elif isinstance(value, BacktestOutcome):
        for field_value in (value.metrics, value.decisions, value.fills, value.trades, value.equity_values):
            field_value.clear()
        _zero(value.equity_full)
    elif isinstance(value, _State):
        _wipe(value.datasets, seen, kinds)
        value.cuts.clear()
    elif hasattr(value, "_mgr"):  # a pandas DataFrame or Series (the raw frames the template was sent)
        for array in _frame_blocks(value):
            _zero(array)


def _frame_blocks(frame: Any) -> list[Any]:  # pragma: no cover - runs in the child
    try:
        return [block.values for block in frame._mgr.blocks]
    except AttributeError:
        return []


def _zero(array: Any) -> None:  # pragma: no cover - runs in the child
    """Overwrite an array and every array it is a view of (a slice's base holds the bars after the slice)."""
    import numpy as np

    while isinstance(array, np.ndarray):
        with contextlib.suppress(ValueError, TypeError):
            array.setflags(write=True)
            array[...] = 0
        array = array.base


# ------------------------------------------------------------------------------------ replay worker


class _Replayer:
    """A persistent trusted replay process forked from the slot (which never ran candidate code)."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.pid = 0
        self.conn: Connection | None = None
        self.tasks = 0
        self.bars = 0
        self.started = 0

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the replay worker
            ours.close()
            _set_pdeathsig()
            code = 0
            try:
                _replay_main(Connection(theirs.detach()), self.state)
            except BaseException:
                code = 1
            os._exit(code)
        theirs.close()
        self.pid, self.conn = pid, Connection(ours.detach())
        self.tasks = self.bars = 0
        self.started += 1

    def stop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0

    def replay(self, key: tuple[str, str], fraction: float | None, decisions: list[tuple[int, int]]) -> Any:
        from alpha_evolve.backtest import BacktestOutcome, scored_outcome

        prepared = self.state.datasets[key]
        if fraction:
            prepared = prepared.slice(0, max(int(len(prepared) * fraction), 2))
        if not decisions:  # no orders: the figures need no engine (and an empty log cannot stop one early)
            import numpy as np

            out = scored_outcome(prepared, self.state.settings, np.zeros((0, 4)), time.perf_counter())
            out.fills = []
            return out
        settings = self.state.settings
        if self.conn is None:
            self._start()
        assert self.conn is not None
        try:
            self.conn.send((key, fraction, decisions))
            if not self.conn.poll(max(settings.hard_timeout_seconds * 4, 60.0)):
                raise TimeoutError
            outcome = self.conn.recv()
        except (EOFError, OSError, TimeoutError, pickle.PickleError):
            self.stop()
            return BacktestOutcome("crash", f"{prepared.symbol}: the trusted replay failed", prepared.symbol,
                                   len(prepared))  # fmt: skip
        self.tasks += 1
        self.bars += len(prepared)
        if self.tasks >= settings.recycle_after or self.bars >= settings.recycle_after_bars:
            self.stop()  # finished engines leak: start a fresh one next time
        return outcome


def _replay_main(conn: Connection, state: _State) -> None:  # pragma: no cover - runs in the replay worker
    from alpha_evolve import replay
    from alpha_evolve.backtest import BacktestOutcome

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        key, fraction, decisions = msg
        prepared = state.datasets[key]
        if fraction:
            prepared = prepared.slice(0, max(int(len(prepared) * fraction), 2))
        try:
            outcome = replay.run_replay(prepared, state.settings, decisions)
        except Exception as exc:
            outcome = BacktestOutcome("crash", f"the trusted replay failed: {type(exc).__name__}: {exc}",
                                      prepared.symbol, len(prepared))  # fmt: skip
        conn.send(outcome)
