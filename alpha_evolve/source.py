"""Parsing Python source safely from several threads.

CPython 3.11's ``ast`` module keeps its recursion-depth bookkeeping in shared module state, so two threads
building AST objects at once can fail with ``SystemError: AST constructor recursion depth mismatch``
(CPython gh-106905, fixed only in later versions). The controller parses candidates on the event loop while the
evaluator's threads run the static checks, so every ``ast.parse`` of the toolkit goes through this one lock.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` serialised across threads; raises ``SyntaxError`` like it."""
    with _LOCK:
        return ast.parse(source, filename)
