"""``alpha-evolve config check|show``: validate a config file and print what a run would use."""

from __future__ import annotations

import argparse

from rich.console import Console

from alpha_evolve.config import FIELD_SPECS, load_config, render_toml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check or show a run config", description="Check or show a run config.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser("check", help="validate a TOML config (exit 2 with one line on a problem)")
    check.add_argument("path", help="TOML config file")
    check.set_defaults(func=_check)
    show = csub.add_parser("show", help="print the effective config (defaults filled in) as TOML")
    show.add_argument("path", nargs="?", default=None, help="TOML config file (default: built-in defaults)")
    show.set_defaults(func=_show)
    fields = csub.add_parser("fields", help="list every config key with its documentation")
    fields.set_defaults(func=_fields)


def _check(args: argparse.Namespace) -> int:
    load_config(args.path)
    Console().print(f"[green]ok[/green] {args.path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(render_toml(load_config(args.path)), end="")
    return 0


def _fields(args: argparse.Namespace) -> int:
    from rich.table import Table

    table = Table("key", "default", "accepts", "meaning")
    for spec in FIELD_SPECS.values():
        table.add_row(spec.key, repr(spec.default), spec.expected(), spec.doc)
    Console().print(table)
    return 0
