"""``alpha-evolve registry import|list``, and the tracked-mode halves of ``self-evolve`` and ``approve|reject|stop``.

``commands/session.py`` hands a tracked session to ``run_tracked`` and a tracked decision to ``tracked_decision``,
so the loop, the settings and the messages stay the ones of the legacy mode; only the backend differs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Column, Table

from alpha_evolve.command_hint import cli
from alpha_evolve.registry import (
    DEFAULT_REGISTRY_DB,
    ENV_REGISTRY_DB,
    ExperimentRegistry,
    RegistryError,
    RegistryStateBackend,
    default_registry_path,
    import_session_dir,
    registry_commands,
    search_space_record,
    session_checker,
)
from alpha_evolve.session import SessionError, SessionSettings

console = Console(highlight=False)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help="the SQLite experiment registry of tracked sessions")
    rsub = p.add_subparsers(dest="registry_command", metavar="COMMAND", required=True)
    imp = rsub.add_parser("import", help="copy a legacy session directory into the registry (idempotent)")
    imp.add_argument("session_dirs", metavar="SESSION_DIR", nargs="+")
    imp.add_argument("--registry-db", default=None, help=f"registry file (${ENV_REGISTRY_DB}, {DEFAULT_REGISTRY_DB})")
    imp.set_defaults(func=_import_handler)
    ls = rsub.add_parser("list", help="the sessions in the registry, newest first")
    ls.add_argument("--registry-db", default=None, help=f"registry file (${ENV_REGISTRY_DB}, {DEFAULT_REGISTRY_DB})")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_list_handler)


def _open(db: str | None, *, create: bool = True) -> ExperimentRegistry:
    return ExperimentRegistry(default_registry_path(db), create=create)


def _import_handler(args: argparse.Namespace) -> int:
    from alpha_evolve.cli import fail

    try:
        with _open(args.registry_db) as reg:
            for d in args.session_dirs:
                info = import_session_dir(reg, d)
                console.print(
                    f"imported {info['session_id']} ({info['status']}, {info['iterations']} iterations, "
                    f"{info['proposals']} proposals) into {reg.path}",
                    markup=False,
                )
    except SessionError as exc:
        return fail(str(exc), 1)
    return 0


def _list_handler(args: argparse.Namespace) -> int:
    from alpha_evolve.cli import fail

    try:
        with _open(args.registry_db, create=False) as reg:
            rows = reg.list_sessions()
    except SessionError as exc:
        return fail(str(exc), 1)
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    # the id is what approve/reject/stop take: never cut it to fit the terminal, fold the other columns instead
    id_width = max((len(str(r["id"])) for r in rows), default=7)
    others = ("mode", "status", "objective", "best", "iterations", "created")
    table = Table(Column("session", no_wrap=True, min_width=id_width), *(Column(c, overflow="fold") for c in others))
    for r in rows:
        best = "—" if r["best_objective"] is None else f"{r['best_objective']:.4g} (it {r['best_iteration']})"
        table.add_row(
            r["id"],
            r["mode"],
            r["status"],
            f"{r['objective']} ({'max' if r['direction'] == 'maximize' else 'min'})",
            best,
            f"{r['iterations_completed']} / {r['iterations_target']}",
            str(r["created_at"])[:16].replace("T", " "),  # to the minute: the id already carries the second
        )
    console.print(table)
    return 0


# --------------------------------------------------------------------------------------------- tracked


def resolve_session_id(reg: ExperimentRegistry, target: str) -> str:
    """A session id, or the path of a tracked session's artifact directory (its name is the id)."""
    if reg.get_session(target) is not None:
        return target
    name = Path(target).name
    if name and reg.get_session(name) is not None:
        return name
    raise RegistryError(f"registry {reg.path}: no session {target!r} (see: {cli('registry', 'list')})")


def tracked_decision(target: str, status: str, notes: str | None, registry_db: str | None) -> dict[str, Any]:
    """``approve|reject|stop`` for a tracked session: one transaction on the registry, checked like the dashboard."""
    db = default_registry_path(registry_db)
    if not db.exists():
        raise RegistryError(
            f"{target}: not a legacy session directory (no session_summary.json), and the registry {db} does not exist"
        )
    with _open(registry_db, create=False) as reg:
        session_id = resolve_session_id(reg, target)
        if status == "stop":
            reg.request_stop(session_id)
            return {"session_id": session_id, "status": "stop_requested"}
        session = reg.require_session(session_id)
        if session["mode"] != "tracked":
            raise RegistryError(
                f"session {session_id} is a legacy session imported from {session['source_dir']}: decide there"
            )
        pending = reg.pending_proposal(session_id)
        if pending is None:
            raise RegistryError(f"session {session_id} has no pending proposal (it is {session['status']})")
        row = reg.decide(
            pending["action_id"],
            status,
            notes=notes,
            decided_by=f"cli ({_user()})",
            check=session_checker(session),
        )
        return {"session_id": session_id, "action_id": row["action_id"], "next_iteration": row["iteration"]}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _check_resume_target(target: str, registry_db: str | None) -> None:
    """``--resume X`` where X is neither a legacy session directory nor a tracked session: say so in one line and
    create nothing (no registry file appears in the working directory because of a typo)."""
    from alpha_evolve.session_files import SUMMARY

    path = Path(target)
    db = default_registry_path(registry_db)
    known = False
    if db.is_file():
        with contextlib.suppress(Exception), _open(registry_db, create=False) as reg:
            resolve_session_id(reg, target)
            known = True
    if known:
        return
    summary = path / SUMMARY
    if os.path.lexists(summary):  # there, but a FIFO, a directory, a broken link...: say exactly that
        from alpha_evolve.files import not_a_file_reason

        raise SessionError(f"{summary}: {not_a_file_reason(summary) or 'cannot be read'}")
    if path.exists():
        what = "a directory" if path.is_dir() else "a file"
        raise SessionError(
            f"{target}: not a self-evolution session ({what} without {SUMMARY}"
            + (f", and no tracked session of that name in {db})" if db.is_file() else ")")
        )
    if not db.is_file():
        raise SessionError(
            f"{target}: not a self-evolution session (no such session directory, and no tracked registry at {db})"
        )
    raise SessionError(f"{target}: no such session (not a directory, and not a session in {db}; "
                       f"see: {cli('registry', 'list')})")


def run_tracked(args: argparse.Namespace, pipeline_runner: Callable[..., Path] | None = None) -> int:
    """``self-evolve --mode tracked``: the same loop and settings as legacy mode, state in the registry."""
    from alpha_evolve.commands.session import (
        DEFAULT_SESSION_ROOT,
        _check_settings,
        _given,
        build_loop,
        describe_settings,
        new_session_settings,
        report,
        report_result,
    )
    from alpha_evolve.config import load_config
    from alpha_evolve.session_files import new_session_dir

    given = _given(args)
    given["mode"] = "tracked"
    if args.resume:
        _check_resume_target(args.resume, getattr(args, "registry_db", None))
    reg = _open(getattr(args, "registry_db", None), create=not args.resume)  # a resume never creates a registry
    try:
        summary: dict[str, Any] | None = None
        if args.resume:
            session_id = resolve_session_id(reg, args.resume)
            row = reg.require_session(session_id)
            if row["mode"] != "tracked":
                raise SessionError(
                    f"session {session_id} is a legacy session: resume it with --resume {row['source_dir']}"
                )
            stored = SessionSettings.from_dict(row["settings"] or {})
            for key in SessionSettings.FIXED_ON_RESUME:
                if key in given and given[key] != getattr(stored, key):
                    raise SessionError(
                        f"--resume: {key.replace('_', '-')} cannot change within a session "
                        f"(it is {getattr(stored, key)!r})"
                    )
            settings = dataclasses.replace(stored, **given)
            _check_settings(settings)
            artifact_dir = Path(row["artifact_dir"])
            summary = row["summary"] or None
        else:
            settings = new_session_settings(given)
            assert settings.search_space_path is not None
            space_record = search_space_record(settings.search_space_path)
            base = load_config(settings.config_path)
            artifact_dir = new_session_dir(args.session_root or DEFAULT_SESSION_ROOT)
            session_id = artifact_dir.name
            reg.create_session(
                session_id,
                objective=settings.objective,
                maximize=settings.maximize,
                settings=settings.to_dict(),
                base_config=base.to_dict(),
                search_space=space_record,
                artifact_dir=str(artifact_dir.resolve()),
            )
        stop_from_registry = []
        backend = RegistryStateBackend(reg, session_id, artifact_dir, report=report)
        loop = build_loop(backend, settings, summary, artifact_dir, pipeline_runner, label=f"session {session_id}")

        def on_stop() -> None:
            stop_from_registry.append(True)
            loop.request_stop()

        backend.on_stop_request = on_stop
        console.print(
            f"{'resuming' if summary else 'starting'} tracked self-evolution session [bold]{session_id}[/bold] in "
            f"{reg.path} ({describe_settings(settings)})",
            soft_wrap=True,
        )
        console.print(f"  artefacts: {artifact_dir}", markup=False)
        console.print(f"  dashboard: {registry_commands(reg.path, session_id)['dashboard']}", markup=False)
        result = loop.run()
    finally:
        reg.close()
    code = report_result(
        result, settings, f"{session_id} ({reg.path})",
        cli("self-evolve", "--mode", "tracked", "--registry-db", shlex.quote(str(reg.path)), "--resume", session_id),
    )
    # A stop asked for from the dashboard or the CLI is a decision, not an interruption.
    return 0 if result.status == "stopped" and stop_from_registry else code
