"""``alpha-evolve self-evolve | approve | reject | stop | validate``: drive and answer self-evolution sessions.

``scripts/self_evolve.py`` calls the same ``add_self_evolve_arguments`` and ``run_self_evolve``, so the two entry
points cannot disagree. Every mistake a user can make ends as one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alpha_evolve.command_hint import cli
from alpha_evolve.config import LOG_LEVELS, LOWER_IS_BETTER, METRIC_NAMES, ConfigError
from alpha_evolve.session import SessionError, SessionSettings

DEFAULT_SESSION_ROOT = "pipeline_runs_cs/self_evolution"
EXIT_CODES = {"session_complete": 0, "stopped": 0, "timed_out": 3, "failed": 1}

console = Console(highlight=False)


def _registry_available() -> bool:
    return importlib.util.find_spec("alpha_evolve.registry") is not None


def add_self_evolve_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a session; defaults are None where ``--resume`` must tell "given" from "default"."""
    p.add_argument(
        "--mode",
        choices=["tracked", "legacy"],
        default=None,
        help="tracked (SQLite registry, the default) or legacy (session directory files)",
    )
    p.add_argument("--config", default=None, help="base TOML config (default: built-in defaults)")
    p.add_argument("--search-space", default=None, help="JSON/TOML search space (see configs/self_evolution/)")
    p.add_argument("--iterations", type=int, default=None, help="proposals to evaluate after the baseline (5)")
    p.add_argument(
        "--objective",
        default=None,
        choices=METRIC_NAMES,
        help="metric from SUMMARY.json best_metrics to optimise (Sharpe)",
    )
    p.add_argument(
        "--minimize",
        action="store_const",
        const=True,
        default=None,
        help="minimise the objective instead of maximising it",
    )
    p.add_argument(
        "--exploration-prob",
        type=float,
        default=None,
        help="probability of exploring around the base rather than the best (0.2)",
    )
    p.add_argument("--sampler", choices=["random", "optuna"], default=None, help="proposal sampler (random)")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (0)")
    p.add_argument("--session-root", default=None, help=f"where sessions are created ({DEFAULT_SESSION_ROOT}/)")
    p.add_argument(
        "--registry-db", default=None, help="tracked-mode registry (artifacts/experiments/experiments.sqlite)"
    )
    p.add_argument(
        "--pipeline-output-dir", default=None, help="base folder for inner runs (default: SESSION/pipeline_runs)"
    )
    p.add_argument(
        "--auto-approve",
        action="store_const",
        const=True,
        default=None,
        help="run every proposal without waiting for a decision",
    )
    p.add_argument(
        "--approval-poll-interval",
        type=float,
        default=None,
        help="seconds between re-reads of pending_action.json (the only mechanism without inotify; 1)",
    )
    p.add_argument(
        "--approval-timeout",
        type=float,
        default=None,
        help="end the session as timed_out after this many seconds without a decision",
    )
    p.add_argument("--pipeline-log-level", choices=LOG_LEVELS, default=None, help="log level of inner runs")
    p.add_argument("--pipeline-log-file", default=None, help="also log inner runs to this file")
    p.add_argument(
        "--disable-align-cache",
        action="store_const",
        const=True,
        default=None,
        help="do not cache prepared data on disk",
    )
    p.add_argument("--align-cache-dir", default=None, help="where prepared data is cached")
    p.add_argument(
        "--no-persist-configs",
        dest="persist_configs",
        action="store_const",
        const=False,
        default=None,
        help="do not write generated_configs/ TOML snapshots",
    )
    p.add_argument(
        "--resume", metavar="SESSION", default=None, help="continue an interrupted session (legacy dir or tracked id)"
    )
    p.add_argument("--backend", choices=["local", "ray"], default=None,
                   help="where every run evaluates candidates (default: the config's [evaluation] backend)")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="Ray cluster of every run ('auto', host:port; implies --backend ray; default: a local "
                        "Ray instance)")
    p.add_argument("--parallel-runs", type=int, default=None, metavar="N",
                   help="approved candidates whose pipeline runs may be in flight at once (1); each is still "
                        "approved one at a time")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "self-evolve",
        help="tune pipeline settings in an outer loop, with approvals",
        description="Tune pipeline settings in an outer loop; see docs/self-evolution.md.",
    )
    add_self_evolve_arguments(p)
    p.set_defaults(func=_self_evolve_handler, default_log_level="WARNING")
    for status, verb, text in (
        ("approved", "approve", "run the proposed candidate"),
        ("rejected", "reject", "discard the candidate; the loop proposes another"),
        ("stop", "stop", "end the session (resumable with --resume)"),
    ):
        q = sub.add_parser(verb, help=f"answer a session's pending action: {text}")
        q.add_argument("session_dir", metavar="SESSION", help="a legacy SESSION_DIR, or a tracked session's id")
        q.add_argument("--notes", default=None, help="rationale recorded with the decision")
        q.add_argument("--registry-db", default=None, help="registry of tracked sessions ($AE_EXPERIMENTS_DB)")
        q.set_defaults(func=_decision_handler(status))
    v = sub.add_parser("validate", help="check a self-evolution session's files against their JSON schemas")
    v.add_argument("session_dir", metavar="SESSION_DIR")
    v.set_defaults(func=_validate_handler)


# ------------------------------------------------------------------------------------------- self-evolve


_ARG_TO_SETTING = {
    "mode": "mode",
    "config": "config_path",
    "search_space": "search_space_path",
    "iterations": "iterations",
    "objective": "objective",
    "exploration_prob": "exploration_prob",
    "sampler": "sampler",
    "seed": "seed",
    "pipeline_output_dir": "pipeline_output_dir",
    "auto_approve": "auto_approve",
    "approval_poll_interval": "approval_poll_interval",
    "approval_timeout": "approval_timeout",
    "pipeline_log_level": "pipeline_log_level",
    "pipeline_log_file": "pipeline_log_file",
    "disable_align_cache": "disable_align_cache",
    "align_cache_dir": "align_cache_dir",
    "persist_configs": "persist_configs",
    "backend": "backend",
    "ray_address": "ray_address",
    "parallel_runs": "parallel_runs",
}


def _given(args: argparse.Namespace) -> dict[str, Any]:
    out = {
        setting: getattr(args, arg) for arg, setting in _ARG_TO_SETTING.items() if getattr(args, arg, None) is not None
    }
    if getattr(args, "minimize", None):
        out["maximize"] = False
    return out


def _check_settings(s: SessionSettings) -> None:
    if s.iterations < 0:
        raise SessionError(f"--iterations {s.iterations}: expected 0 or more")
    if not 0.0 <= s.exploration_prob <= 1.0:
        raise SessionError(f"--exploration-prob {s.exploration_prob:g}: expected a probability in [0, 1]")
    if not s.approval_poll_interval > 0:
        raise SessionError(f"--approval-poll-interval {s.approval_poll_interval:g}: expected seconds > 0")
    if s.approval_timeout is not None and not s.approval_timeout > 0:
        raise SessionError(f"--approval-timeout {s.approval_timeout:g}: expected seconds > 0")
    if not 1 <= s.parallel_runs <= 64:
        raise SessionError(f"--parallel-runs {s.parallel_runs}: expected an integer from 1 to 64")
    if s.objective not in METRIC_NAMES:
        raise SessionError(f"--objective {s.objective!r}: expected one of {', '.join(METRIC_NAMES)}")


def _default_search_space() -> str | None:
    root = Path(__file__).resolve().parents[2] / "configs" / "self_evolution"
    for name in ("default.json", "default.toml"):
        if (root / name).is_file():
            return str(root / name)
    return None


def _resolve(args: argparse.Namespace) -> tuple[SessionSettings, Path, dict[str, Any] | None]:
    """Settings and session directory for a new session or a resumed one (stored settings + allowed overrides)."""
    from alpha_evolve.files import FileFormatError, read_json
    from alpha_evolve.session_files import SUMMARY, new_session_dir

    given = _given(args)
    if args.resume:
        session_dir = Path(args.resume)
        path = session_dir / SUMMARY
        if not path.is_file():
            raise SessionError(f"{session_dir}: not a self-evolution session (no {SUMMARY})")
        try:
            summary = read_json(path)
        except FileFormatError as exc:
            raise SessionError(str(exc)) from None
        stored = SessionSettings.from_dict(summary.get("settings") or {})
        for key in SessionSettings.FIXED_ON_RESUME:
            if key in given and given[key] != getattr(stored, key):
                raise SessionError(
                    f"--resume: {key.replace('_', '-')} cannot change within a session (it is {getattr(stored, key)!r})"
                )
        settings = dataclasses.replace(stored, **given)
        _check_settings(settings)
        return settings, session_dir, summary
    given.setdefault("mode", "tracked" if _registry_available() else "legacy")
    settings = new_session_settings(given)
    return settings, new_session_dir(args.session_root or DEFAULT_SESSION_ROOT), None


def new_session_settings(given: dict[str, Any]) -> SessionSettings:
    """Settings of a new session (either mode): the default search space filled in, every value checked."""
    if given.get("search_space_path") is None:
        default = _default_search_space()
        if default is None:
            raise SessionError("--search-space is required (a JSON or TOML file; see configs/self_evolution/)")
        given["search_space_path"] = default
    settings = SessionSettings(**given)
    _check_settings(settings)
    _preflight(settings)
    if settings.objective in LOWER_IS_BETTER and settings.maximize:
        console.print(f"[yellow]note[/yellow]: {settings.objective} is lower-is-better; did you mean --minimize?")
    return settings


def _preflight(settings: SessionSettings) -> None:
    """Read what a new session will need before anything is created: a bad input leaves no session folder, and a
    base config whose data is missing stops here instead of failing every iteration of the session."""
    from alpha_evolve.search_space import load_search_space
    from alpha_evolve.session import load_base_config

    base = load_base_config(None, settings.config_path)
    assert settings.search_space_path is not None
    load_search_space(settings.search_space_path)
    data = base.backtest.data
    if data and not Path(data).exists():
        where = settings.config_path or "the base config"
        raise SessionError(
            f"{where}: [backtest] data {data!r} not found (a relative path is read from the folder you start in); "
            "provide the data there, or use a config whose data exists (configs/default.toml runs on built-in "
            "synthetic data)"
        )


def _discard_unstarted(session_dir: Path) -> None:
    """Remove a session folder this command created if the session never started (no summary was written)."""
    import shutil

    from alpha_evolve.session_files import SUMMARY

    if session_dir.is_dir() and not (session_dir / SUMMARY).exists():
        shutil.rmtree(session_dir, ignore_errors=True)


def run_self_evolve(args: argparse.Namespace, *, pipeline_runner: Callable[..., Path] | None = None) -> int:
    """The whole of ``self-evolve``: one-line errors for bad input, exit code from the session's end status."""
    from alpha_evolve.cli import fail
    from alpha_evolve.faults import EXIT_INFRASTRUCTURE, InfrastructureError

    try:
        return _run(args, pipeline_runner)
    except InfrastructureError as exc:  # disk full, read-only, I/O error: stopped cleanly, resumable
        return fail(str(exc), EXIT_INFRASTRUCTURE)
    except (SessionError, ConfigError) as exc:
        return fail(str(exc), 2)
    except ValueError as exc:  # SearchSpaceError and other one-line input errors of the modules we call
        return fail(str(exc), 2)
    except OSError as exc:  # the machine's (read-only, full) before the loop could say so in its own words
        from alpha_evolve.faults import infrastructure_problem

        reason = infrastructure_problem(exc)
        if reason is None:
            raise
        return fail(f"session stopped: {reason}", EXIT_INFRASTRUCTURE)


def _is_tracked(args: argparse.Namespace) -> bool:
    """Tracked unless asked for legacy or resuming a session directory (tracked sessions resume by id)."""
    from alpha_evolve.session_files import SUMMARY

    if args.resume and (Path(args.resume) / SUMMARY).is_file():
        return False
    if args.mode is not None:
        return bool(args.mode == "tracked")
    return _registry_available()


def _run(args: argparse.Namespace, pipeline_runner: Callable[..., Path] | None) -> int:
    from alpha_evolve.session_files import FileStateBackend

    if _is_tracked(args):
        from alpha_evolve.commands.registry import run_tracked

        return run_tracked(args, pipeline_runner)
    settings, session_dir, summary = _resolve(args)
    if settings.mode != "legacy":
        raise SessionError(f"{session_dir}: a {settings.mode} session cannot be resumed by this install")
    backend = FileStateBackend(
        session_dir, poll_interval=settings.approval_poll_interval, force_polling=settings.force_polling, report=report
    )
    try:
        loop = build_loop(backend, settings, summary, session_dir, pipeline_runner, label=str(session_dir))
    except BaseException:
        if summary is None:
            _discard_unstarted(session_dir)
        raise
    console.print(
        f"{'resuming' if summary else 'starting'} self-evolution session [bold]{session_dir}[/bold] "
        f"({describe_settings(settings)})"
    )
    result = loop.run()
    return report_result(result, settings, str(session_dir),
                         cli("self-evolve", "--resume", shlex.quote(str(session_dir))), history=loop.history)


def report(line: str) -> None:
    """How a backend tells the person at the terminal about a refused edit or a fallback."""
    console.print(f"[yellow]{line}[/yellow]", markup=True, soft_wrap=True)


def describe_settings(settings: SessionSettings) -> str:
    return (
        f"objective {settings.objective}, {'maximise' if settings.maximize else 'minimise'}, {settings.iterations} "
        f"iterations after the baseline, {'auto-approve' if settings.auto_approve else 'manual approval'}"
        + (f", up to {settings.parallel_runs} approved runs in flight" if settings.parallel_runs > 1 else "")
        + (f", evaluation on {settings.backend or 'ray'} {settings.ray_address or ''}".rstrip()
           if settings.backend or settings.ray_address is not None else "")
    )


def build_loop(
    backend: Any,
    settings: SessionSettings,
    summary: Mapping[str, Any] | None,
    state_dir: Path,
    pipeline_runner: Callable[..., Path] | None,
    *,
    label: str,
) -> Any:
    """The one self-evolution loop, whatever the backend: base config, search space and sampler from settings."""
    from alpha_evolve.samplers import make_sampler
    from alpha_evolve.search_space import load_search_space
    from alpha_evolve.session import SelfEvolutionLoop, load_base_config

    base_config = load_base_config(summary, settings.config_path)
    if not settings.search_space_path:
        raise SessionError(f"{label}: the session records no search space")
    space = load_search_space(settings.search_space_path)
    sampler = make_sampler(
        settings.sampler,
        space,
        seed=settings.seed,
        exploration_prob=settings.exploration_prob,
        maximize=settings.maximize,
        state_dir=state_dir,
    )
    loop_class: Any = SelfEvolutionLoop
    if settings.parallel_runs > 1:
        from alpha_evolve.parallel_runs import ParallelRunsLoop

        loop_class = ParallelRunsLoop
    return loop_class(
        backend,
        settings,
        base_config=base_config,
        space=space,
        sampler=sampler,
        pipeline_runner=pipeline_runner,
        out=lambda line: console.print(line, markup=False, soft_wrap=True),
    )


def report_result(
    result: Any, settings: SessionSettings, label: str, resume_command: str, *, history: list[Any] | None = None
) -> int:
    """The closing table and exit code of a session: 0 complete or stopped by a decision, 1 failed or no iteration
    succeeded, 3 timed out, 130 interrupted by a signal."""
    from alpha_evolve.cli import fail

    best = result.summary.get("best")
    table = Table(title=f"session {result.status}", show_header=False)
    table.add_row("session", label)
    table.add_row("iterations", f"{result.summary.get('iterations_completed', 0)} / {settings.iterations}")
    if best:
        table.add_row(
            "best",
            f"iteration {best['iteration']}: {settings.objective} = {best['objective']:.4g} "
            f"{best['config_updates'] or '(the base settings)'}",
        )
    confirmation = result.summary.get("confirmation") or {}
    if confirmation.get("statement") or confirmation.get("reason"):
        # The session ranked on validation only; this is the figure from data it never ranked on.
        table.add_row("holdout", str(confirmation.get("statement") or confirmation.get("reason")))
    console.print(table)
    if result.status in ("stopped", "timed_out"):
        console.print(f"resume with: {resume_command}", markup=False)
    if result.status == "failed":
        return fail(f"session failed: {result.summary.get('failure_reason')}", 1)
    if result.interrupted:
        return 130
    if result.status in ("session_complete", "stopped") and not best:
        reasons = [str(r.get("failure_reason")) for r in history or () if isinstance(r, dict) and
                   r.get("failure_reason")]
        last = f" (last: {reasons[-1]})" if reasons else ""
        return fail(f"no iteration succeeded{last}; see {label}", 1)
    return EXIT_CODES.get(result.status, 1)


def _self_evolve_handler(args: argparse.Namespace) -> int:
    return run_self_evolve(args)


# ------------------------------------------------------------------------------------ approve/reject/stop


def _decision_handler(status: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from alpha_evolve.cli import fail
        from alpha_evolve.session import TERMINAL_STATUSES
        from alpha_evolve.session_files import SUMMARY, open_action, write_decision

        if not (Path(args.session_dir) / SUMMARY).is_file() and _registry_available():
            from alpha_evolve.commands.registry import tracked_decision

            try:
                info = tracked_decision(args.session_dir, status, args.notes, args.registry_db)
            except SessionError as exc:
                return fail(str(exc), 1)
            what = "requested"
            if "action_id" in info:
                what = f"action {info['action_id']} (iteration {info['next_iteration']})"
            console.print(f"{status}: session {info['session_id']} {what}", markup=False)
            return 0
        try:
            data = write_decision(args.session_dir, status, args.notes)
        except SessionError as exc:
            return fail(str(exc), 1)
        console.print(f"{status}: action {data['action_id']} (iteration {data.get('next_iteration')})", markup=False)
        _, session_status = open_action(args.session_dir)
        if session_status in TERMINAL_STATUSES:  # nobody drives it now: the answer waits for the resume
            console.print(f"the session is {session_status}; the decision is taken when it resumes: "
                          f"{cli('self-evolve', '--resume', shlex.quote(str(args.session_dir)))}", markup=False)
        return 0

    return handler


def _validate_handler(args: argparse.Namespace) -> int:
    from alpha_evolve.cli import fail
    from alpha_evolve.session_files import validate_session

    rows, problems = validate_session(args.session_dir)
    if rows:
        table = Table("file", "records", "problems", title=f"session {args.session_dir}")
        for name, count, n in rows:
            table.add_row(name, str(count), "[green]0[/green]" if n == 0 else f"[red]{n}[/red]")
        console.print(table)
    for line in problems:
        fail(line, 1)
    return 1 if problems else 0
