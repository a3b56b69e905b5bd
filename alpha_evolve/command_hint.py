"""How to spell an ``alpha-evolve`` command so that it works where a person will type it.

``make session`` (like any ``uv run``) puts the project's ``.venv/bin`` on the PATH of the process it starts, not
on the PATH of the user's shell: a hint that says ``alpha-evolve approve …`` fails with "command not found" there.
So a hint is ``uv run alpha-evolve …`` when we run under ``uv run`` (uv sets ``UV_RUN_RECURSION_DEPTH``) or when
``alpha-evolve`` is not on the PATH but uv and the project are at hand (``--project`` added when the current folder
is not the project's), plain ``alpha-evolve …`` when the shell finds it, and ``python -m alpha_evolve …`` with this
interpreter's path as a last resort. ``AE_CLI`` overrides the prefix (wrappers, tests).
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sys
from pathlib import Path


def _project_root() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


@functools.cache
def cli_prefix() -> str:
    """The words that start a working ``alpha-evolve`` command line here."""
    override = os.environ.get("AE_CLI", "").strip()
    if override:
        return override
    under_uv = bool(os.environ.get("UV_RUN_RECURSION_DEPTH"))
    on_path = shutil.which("alpha-evolve") is not None
    if on_path and not under_uv:
        return "alpha-evolve"
    root = _project_root()
    uv = shutil.which("uv") or os.environ.get("UV")
    if root is not None and uv:
        uv_word = "uv" if shutil.which("uv") else shlex.quote(uv)
        try:
            here = Path.cwd().resolve() == root
        except OSError:
            here = False
        project = "" if here else f" --project {shlex.quote(str(root))}"
        return f"{uv_word} run{project} alpha-evolve"
    if on_path:
        return "alpha-evolve"
    return f"{shlex.quote(sys.executable)} -m alpha_evolve"


def cli(*words: str) -> str:
    """A full command line: ``cli("approve", path)`` → ``uv run alpha-evolve approve /path`` (words as given)."""
    return " ".join((cli_prefix(), *words))
