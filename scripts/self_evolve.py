#!/usr/bin/env python3
"""``uv run scripts/self_evolve.py`` — the same self-evolution session as ``alpha-evolve self-evolve``.

Thin on purpose: it parses the same options and calls the same function, so the two entry points cannot drift.
"""

from __future__ import annotations

import argparse
import sys

from alpha_evolve.cli import setup_logging
from alpha_evolve.commands.session import add_self_evolve_arguments, run_self_evolve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="self_evolve.py", description="Run or resume a self-evolution session "
                                     "(see docs/self-evolution.md).")
    add_self_evolve_arguments(parser)
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="console log level")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return run_self_evolve(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
