"""``alpha-evolve self-evolve | approve | reject | stop | validate``: drive and answer self-evolution sessions.

``scripts/self_evolve.py`` calls the same ``add_self_evolve_arguments`` and ``run_self_evolve``, so the two entry
points cannot disagree. Every mistake a user can make ends as one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alpha_evolve.command_hint import cli
from alpha_evolve.config import ConfigError
from alpha_evolve.session import SessionError
from alpha_evolve.session_settings import SETTING_SPECS, SessionSettings
from alpha_evolve.session_start import DEFAULT_SESSION_ROOT, decide_tracked, open_session

EXIT_CODES = {"session_complete": 0, "stopped": 0, "timed_out": 3, "failed": 1}

console = Console(highlight=False)


def _option(p: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """One ``self-evolve`` option from its setting's declaration (flag, type, choices, help with the default)."""
    spec = SETTING_SPECS[name]
    assert spec.flag is not None
    if spec.type is bool:
        kwargs.setdefault("action", "store_const")
        kwargs.setdefault("const", True)
    else:
        kwargs.setdefault("type", spec.type)
    if spec.choices is not None:
        kwargs.setdefault("choices", list(spec.choices))
    p.add_argument(spec.flag, default=None, help=spec.help(), **kwargs)


def add_self_evolve_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a session, read from ``SessionSettings``' declarations; defaults are None where ``--resume``
    must tell "given" from "default"."""
    _option(p, "mode")
    _option(p, "config_path")
    _option(p, "search_space_path")
    _option(p, "iterations")
    _option(p, "objective")
    p.add_argument(
        "--minimize",
        action="store_const",
        const=True,
        default=None,
        help="minimise the objective instead of maximising it",
    )
    _option(p, "exploration_prob")
    _option(p, "sampler")
    _option(p, "seed")
    p.add_argument("--session-root", default=None, help=f"where sessions are created ({DEFAULT_SESSION_ROOT}/)")
    p.add_argument(
        "--registry-db", default=None, help="tracked-mode registry (artifacts/experiments/experiments.sqlite)"
    )
    _option(p, "pipeline_output_dir")
    _option(p, "auto_approve")
    _option(p, "approval_poll_interval")
    _option(p, "approval_timeout")
    _option(p, "pipeline_log_level")
    _option(p, "pipeline_log_file")
    _option(p, "disable_align_cache")
    _option(p, "align_cache_dir")
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
    _option(p, "backend")
    _option(p, "ray_address", metavar="ADDRESS")
    _option(p, "parallel_runs", metavar="N")


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


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user gave on the command line, by ``SessionSettings`` field name."""
    out = {
        spec.name: getattr(args, dest)
        for spec in SETTING_SPECS.values()
        if spec.flag is not None
        and getattr(args, dest := spec.flag.lstrip("-").replace("-", "_"), None) is not None
    }
    if getattr(args, "persist_configs", None) is not None:
        out["persist_configs"] = args.persist_configs
    if getattr(args, "minimize", None):
        out["maximize"] = False
    return out


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


def _run(args: argparse.Namespace, pipeline_runner: Callable[..., Path] | None) -> int:
    from alpha_evolve.registry import registry_commands

    opened = open_session(
        given_settings(args),
        resume=args.resume,
        mode=args.mode,
        session_root=args.session_root,
        registry_db=getattr(args, "registry_db", None),
        pipeline_runner=pipeline_runner,
        out=lambda line: console.print(line, markup=False, soft_wrap=True),
        report=report,
        note=lambda line: console.print(f"[yellow]note[/yellow]: {line}"),
    )
    try:
        verb = "resuming" if opened.resuming else "starting"
        if opened.mode == "tracked":
            console.print(
                f"{verb} tracked self-evolution session [bold]{opened.session_id}[/bold] in "
                f"{opened.registry_path} ({describe_settings(opened.settings)})",
                soft_wrap=True,
            )
            console.print(f"  artefacts: {opened.artifact_dir}", markup=False)
            assert opened.registry_path is not None
            console.print(f"  dashboard: {registry_commands(opened.registry_path, opened.session_id)['dashboard']}",
                          markup=False)
        else:
            console.print(f"{verb} self-evolution session [bold]{opened.label}[/bold] "
                          f"({describe_settings(opened.settings)})")
        result = opened.loop.run()
    finally:
        opened.close()
    code = report_result(result, opened.settings, opened.label, opened.resume_command, history=opened.history)
    # A stop asked for from the dashboard or the CLI is a decision, not an interruption.
    return 0 if result.status == "stopped" and opened.stopped_by_request else code


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

        if not (Path(args.session_dir) / SUMMARY).is_file():
            try:
                info = decide_tracked(args.session_dir, status, args.notes, args.registry_db)
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
