"""The test suite's own layout rules (ARCHITECTURE.md, "Tests mirror the design"), checked on the source: no test
module imports another (shared helpers live in private ``tests/_*.py`` modules), and loops and state backends are
built only by the loop harness, so every in-process session goes through the real ``build_loop``.

These read the code as text (``ast``) and run nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
HARNESS = "_loop_harness.py"
BUILT_BY_THE_HARNESS = {"SelfEvolutionLoop", "ParallelRunsLoop", "FileStateBackend", "RegistryStateBackend"}


def _trees() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in sorted(TESTS.glob("*.py"))}


def _imported_modules(tree: ast.Module) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, node.lineno))
    return out


def _is_test_module(module: str) -> bool:
    """``tests.test_x`` or ``tests.conftest``: modules pytest collects or loads itself, never a helper to import."""
    head, _, name = module.partition(".")
    return head == "tests" and (name.startswith("test_") or name == "conftest")


def test_no_test_module_imports_another() -> None:
    found = [f"tests/{file}:{line} imports {module}" for file, tree in _trees().items()
             for module, line in _imported_modules(tree) if _is_test_module(module)]
    assert found == [], "move what they share into a tests/_*.py helper module:\n" + "\n".join(found)


def test_loops_and_backends_are_built_by_the_harness_only() -> None:
    found = []
    for file, tree in _trees().items():
        if file == HARNESS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in BUILT_BY_THE_HARNESS:
                    found.append(f"tests/{file}:{node.lineno} builds {name}")
    assert found == [], f"use tests/{HARNESS} (LoopRun, SessionState.backend):\n" + "\n".join(found)


def test_the_rules_see_what_they_forbid() -> None:
    """The checks above find a violation when there is one (so an empty result means something)."""
    bad = ast.parse("from tests.test_session import x\nimport tests.conftest\nfrom tests._cli import run_cli\n"
                    "loop = SelfEvolutionLoop(b)\nbackend = session_files.FileStateBackend(d)\n")
    assert [m for m, _ in _imported_modules(bad) if _is_test_module(m)] == ["tests.test_session", "tests.conftest"]
    calls = [getattr(n.func, "id", None) or getattr(n.func, "attr", None) for n in ast.walk(bad)
             if isinstance(n, ast.Call)]
    assert set(calls) == {"SelfEvolutionLoop", "FileStateBackend"}
