"""The ``alpha-evolve`` command: one argparse tree, each area registering its own subcommands.

Areas live in ``alpha_evolve.commands.<area>`` and expose ``register(subparsers)``; a missing area module is
skipped so a partial install still answers ``--help``. Every handler returns an exit code. Anything a user can
get wrong ends as one line on stderr (``alpha-evolve: error: ...``); only a genuine bug shows a traceback, and
then only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.logging import RichHandler

from alpha_evolve import __version__
from alpha_evolve.values import one_line

logger = logging.getLogger("alpha_evolve.cli")

AREAS = ("backtest", "config", "evolve", "pipeline", "session", "registry", "dashboard")

err_console = Console(stderr=True)


class UserError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2 unless given."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> int:
    """Print a one-line error the way every subcommand does, and return the exit code."""
    err_console.print(f"alpha-evolve: error: {one_line(str(message))}", markup=False, highlight=False, soft_wrap=True)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alpha-evolve",
        description="Evolve NautilusTrader strategies with an LLM, AlphaEvolve-style, and self-evolve the pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"alpha-evolve {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="console log level (default WARNING; subcommands may set their own)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        try:
            module = importlib.import_module(f"alpha_evolve.commands.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"alpha_evolve.commands.{area}":
                continue
            raise
        module.register(sub)
    return parser


def setup_logging(level: str | None) -> None:
    root = logging.getLogger("alpha_evolve")
    if any(isinstance(h, RichHandler) for h in root.handlers):
        return
    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    # The console keeps its own level: a run may lower the logger's level to fill its log file.
    handler.setLevel(level or "WARNING")
    root.addHandler(handler)
    root.setLevel(level or "WARNING")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    setup_logging(args.log_level or getattr(args, "default_log_level", None))
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        return fail(str(exc), exc.code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:
        from alpha_evolve.faults import EXIT_INFRASTRUCTURE, infrastructure_problem

        reason = infrastructure_problem(exc)
        if reason is None or args.debug:
            return _unexpected(args, exc)
        # The machine's failure (disk full, read-only, I/O): one line, its own exit code, nothing to debug here.
        own = isinstance(exc, ValueError) or type(exc).__name__ == "InfrastructureError"  # already one good line
        return fail(str(exc) if own and str(exc) else f"stopped: {reason}", EXIT_INFRASTRUCTURE)


def _unexpected(args: argparse.Namespace, exc: Exception) -> int:
    try:
        raise exc
    except (ValueError, OSError, LookupError) as exc:
        # Library code raises ValueError subclasses (ConfigError, DataError, ...) with one-line messages.
        if args.debug:
            raise
        return fail(str(exc) or type(exc).__name__, 2)
    except Exception as exc:  # a bug or an unforeseen failure: still one line, the traceback on request
        if args.debug:
            raise
        logger.debug("unexpected error", exc_info=True)
        detail = str(exc) or "no message"
        if not isinstance(exc, RuntimeError) and type(exc).__module__.startswith("alpha_evolve"):
            return fail(detail, 1)
        return fail(f"{type(exc).__name__}: {detail} (run with --debug for the traceback)", 1)


if __name__ == "__main__":  # pragma: no cover - use ``python -m alpha_evolve`` (one copy of this module)
    from alpha_evolve.cli import main as _main

    sys.exit(_main())
