"""The ``alpha-evolve`` command in a real subprocess, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``alpha-evolve`` as a user would: a separate process, its own stdout/stderr and exit code."""
    full_env = dict(os.environ)
    full_env.pop("ANTHROPIC_API_KEY", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "alpha_evolve", *args],
        cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
    )
