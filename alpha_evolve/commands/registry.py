"""``alpha-evolve registry import|list``: the SQLite experiment registry of tracked sessions.

Starting, resuming and deciding tracked sessions is ``session_start``'s (called by ``commands/session.py``, the
only self-evolve CLI, and by the dashboard).
"""

from __future__ import annotations

import argparse

import orjson
from rich.console import Console
from rich.table import Column, Table

from alpha_evolve.registry import (
    DEFAULT_REGISTRY_DB,
    ENV_REGISTRY_DB,
    ExperimentRegistry,
    default_registry_path,
    import_session_dir,
)
from alpha_evolve.session import SessionError

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
