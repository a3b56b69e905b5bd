"""Print the package's import layers, top (imports the most) to bottom (imports nothing of ours).

ARCHITECTURE.md's "Import direction" block is this output with a note per line; run it after adding a module or an
import and update the block. Subpackages count as one node; lazy imports count. Exit 1 on an import cycle (a cycle
has no layering; ``tests/test_structure.py`` names it).

Usage: python scripts/import_layers.py [PACKAGE_DIR]
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

SUBPACKAGES = ("commands", "dashboard", "data", "mutators", "strategies")


def node_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1] + "/" if parts[1] in SUBPACKAGES else parts[1]


def layers(package: Path) -> dict[str, int]:
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package.name):
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith(package.name)]
            for target in targets:
                a, b = node_of(name), node_of(target)
                if a and b and a != b and target in modules:
                    edges[a].add(b)
    nodes = {n for n in map(node_of, modules) if n}
    level: dict[str, int] = {}
    visiting: set[str] = set()

    def depth(n: str) -> int:
        if n in level:
            return level[n]
        if n in visiting:
            raise SystemExit(f"import cycle through {n}")
        visiting.add(n)
        level[n] = 1 + max((depth(m) for m in edges[n]), default=-1)
        visiting.discard(n)
        return level[n]

    for n in sorted(nodes):
        depth(n)
    return level


def main() -> int:
    package = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "alpha_evolve")
    by_level: dict[int, list[str]] = defaultdict(list)
    for name, lvl in layers(package).items():
        by_level[lvl].append(name)
    for lvl in sorted(by_level, reverse=True):
        print("  ".join(sorted(by_level[lvl])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
