"""EVOLVE-BLOCK markers: extract, splice and validate candidate strategy files.

The LLM may only rewrite the bodies between ``# === EVOLVE-BLOCK: <name> ===`` and ``# === END EVOLVE-BLOCK ===``;
everything else (imports, class, trusted helpers) must stay byte-for-byte the parent's, otherwise a candidate
could bypass the sandbox's assumptions or the sizing rules. Pure text and AST work: nothing here executes code.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from alpha_evolve.policy import check_policy
from alpha_evolve.source import parse as parse_source

CandidateKind = Literal["syntax", "policy", "blocks"]

_START_RE = re.compile(r"^(?P<indent>[ \t]*)# === EVOLVE-BLOCK: (?P<name>[A-Za-z_][A-Za-z0-9_]*) ===[ \t]*$")
_END_RE = re.compile(r"^(?P<indent>[ \t]*)# === END EVOLVE-BLOCK ===[ \t]*$")
_MARKER_HINT = "EVOLVE-BLOCK"


class CandidateError(ValueError):
    """A candidate file that must not be evaluated; ``kind`` is one of syntax, policy, blocks."""

    def __init__(self, kind: CandidateKind, message: str, line: int | None = None) -> None:
        self.kind: CandidateKind = kind
        self.message = message
        self.line = line
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"[{kind}] {where}{message}")

    def __reduce__(self) -> tuple[type[CandidateError], tuple[str, str, int | None]]:
        # Workers send these across process boundaries; the default pickling would call __init__ with one arg.
        return (CandidateError, (self.kind, self.message, self.line))


class MissingBlockError(CandidateError):
    """A required EVOLVE-BLOCK is absent (a ``ValueError`` like every ``CandidateError``)."""

    def __init__(self, name: str, line: int | None = None) -> None:
        self.block = name
        super().__init__("blocks", f"required EVOLVE-BLOCK {name!r} is missing", line)

    def __reduce__(self) -> tuple[type[MissingBlockError], tuple[str, int | None]]:  # type: ignore[override]
        return (MissingBlockError, (self.block, self.line))


@dataclass(frozen=True)
class Block:
    """One EVOLVE-BLOCK; line numbers are 1-based and point at the marker lines."""

    name: str
    indent: str
    start_line: int
    end_line: int


def find_blocks(code: str) -> list[Block]:
    """All blocks in file order; malformed, nested, duplicated or unbalanced markers raise ``CandidateError``."""
    blocks: list[Block] = []
    seen: dict[str, int] = {}
    open_name: str | None = None
    open_indent = ""
    open_line = 0
    for number, raw in enumerate(code.splitlines(), start=1):
        start = _START_RE.match(raw)
        end = _END_RE.match(raw)
        if start:
            name = start.group("name")
            if open_name is not None:
                raise CandidateError(
                    "blocks", f"EVOLVE-BLOCK {name!r} starts inside block {open_name!r} (line {open_line})", number
                )
            if name in seen:
                raise CandidateError(
                    "blocks", f"duplicate EVOLVE-BLOCK {name!r} (first at line {seen[name]})", number
                )
            seen[name] = number
            open_name, open_indent, open_line = name, start.group("indent"), number
        elif end:
            if open_name is None:
                raise CandidateError("blocks", "END EVOLVE-BLOCK without a matching start marker", number)
            blocks.append(Block(open_name, open_indent, open_line, number))
            open_name = None
        elif _MARKER_HINT in raw and raw.lstrip().startswith("#"):
            raise CandidateError(
                "blocks",
                "malformed EVOLVE-BLOCK marker; expected '# === EVOLVE-BLOCK: <name> ===' or "
                "'# === END EVOLVE-BLOCK ===' on its own line",
                number,
            )
    if open_name is not None:
        raise CandidateError("blocks", f"EVOLVE-BLOCK {open_name!r} has no END marker", open_line)
    return blocks


def block_names(code: str) -> list[str]:
    """Names of the blocks in file order."""
    return [block.name for block in find_blocks(code)]


def _dedent_body(lines: list[str]) -> str:
    if not lines:
        return ""
    return textwrap.dedent("\n".join(lines) + "\n")


def extract_blocks(code: str) -> dict[str, str]:
    """Dedented block bodies by name, in file order (each non-empty body ends with a newline)."""
    lines = code.splitlines()
    return {b.name: _dedent_body(lines[b.start_line : b.end_line - 1]) for b in find_blocks(code)}


def _indent_body(body: str, indent: str) -> list[str]:
    dedented = textwrap.dedent(body)
    return [f"{indent}{line}\n" if line.strip() else "\n" for line in dedented.splitlines()]


def splice_blocks(code: str, bodies: Mapping[str, str]) -> str:
    """Replace the named blocks' bodies, re-indented to their markers; markers and all other text are kept."""
    blocks = find_blocks(code)
    known = {b.name: b for b in blocks}
    unknown = sorted(set(bodies) - set(known))
    if unknown:
        raise ValueError(
            f"unknown EVOLVE-BLOCK name(s) {', '.join(map(repr, unknown))}; "
            f"the file has: {', '.join(map(repr, known)) or 'none'}"
        )
    lines = code.splitlines(keepends=True)
    out: list[str] = []
    cursor = 0  # 0-based index of the next original line to copy
    for block in blocks:
        out.extend(lines[cursor : block.start_line])  # up to and including the START marker
        if block.name in bodies:
            out.extend(_indent_body(bodies[block.name], block.indent))
        else:
            out.extend(lines[block.start_line : block.end_line - 1])
        cursor = block.end_line - 1  # the END marker
    out.extend(lines[cursor:])
    return "".join(out)


def _skeleton(code: str, blocks: Iterable[Block]) -> list[tuple[int, str]]:
    """Lines outside block bodies (markers included), trailing whitespace and trailing blank lines dropped."""
    inside: set[int] = set()
    for block in blocks:
        inside.update(range(block.start_line + 1, block.end_line))
    kept = [(n, raw.rstrip()) for n, raw in enumerate(code.splitlines(), start=1) if n not in inside]
    while kept and not kept[-1][1]:
        kept.pop()
    return kept


def validate_candidate(
    parent_code: str, candidate_code: str, required_blocks: Iterable[str] | None = None
) -> None:
    """Raise ``CandidateError`` unless the candidate parses, keeps the parent's text outside the blocks,
    has every required block (default: every parent block) and passes the static policy."""
    try:
        parse_source(candidate_code)
    except SyntaxError as exc:
        raise CandidateError("syntax", exc.msg or "invalid syntax", exc.lineno) from None

    parent_blocks = find_blocks(parent_code)
    candidate_blocks = find_blocks(candidate_code)
    present = {b.name for b in candidate_blocks}
    required = list(required_blocks) if required_blocks is not None else [b.name for b in parent_blocks]
    for name in required:
        if name not in present:
            raise MissingBlockError(name)

    parent_skeleton = _skeleton(parent_code, parent_blocks)
    candidate_skeleton = _skeleton(candidate_code, candidate_blocks)
    for (_, want), (line, got) in zip(parent_skeleton, candidate_skeleton, strict=False):
        if want != got:
            raise CandidateError(
                "blocks", f"text outside the EVOLVE-BLOCKs was changed: expected {want.strip()!r}", line
            )
    if len(candidate_skeleton) > len(parent_skeleton):
        extras = candidate_skeleton[len(parent_skeleton) :]
        line, extra = next(((n, text) for n, text in extras if text.strip()), extras[0])
        raise CandidateError("blocks", f"text added outside the EVOLVE-BLOCKs: {extra.strip()!r}", line)
    if len(candidate_skeleton) < len(parent_skeleton):
        _, missing = parent_skeleton[len(candidate_skeleton)]
        last = candidate_skeleton[-1][0] if candidate_skeleton else 1
        raise CandidateError("blocks", f"text outside the EVOLVE-BLOCKs was removed: {missing.strip()!r}", last)

    violations = check_policy(candidate_code)
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise CandidateError("policy", f"[{first.rule}] {first.message}{more}", first.line)
