"""A real ``self-evolve`` process with the stand-in pipeline runner, for kill/signal/resume tests.

Same argument parser and entry point as ``alpha-evolve self-evolve``; only the pipeline runner differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alpha_evolve.cli import setup_logging
from alpha_evolve.commands.session import add_self_evolve_arguments, run_self_evolve
from tests._session_helpers import StubRunner

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="session-driver")
    add_self_evolve_arguments(parser)
    setup_logging("WARNING")
    sys.exit(run_self_evolve(parser.parse_args(), pipeline_runner=StubRunner.from_env()))
