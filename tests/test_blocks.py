"""EVOLVE-BLOCK extraction, splicing and candidate validation on the real seed files."""

from __future__ import annotations

import pickle

import pytest

from alpha_evolve.blocks import (
    CandidateError,
    MissingBlockError,
    block_names,
    extract_blocks,
    find_blocks,
    splice_blocks,
    validate_candidate,
)
from alpha_evolve.strategies import list_seeds, seed_source

PARENT = seed_source("momentum")


def _line_of(code: str, needle: str) -> int:
    return next(n for n, line in enumerate(code.splitlines(), start=1) if needle in line)


@pytest.mark.parametrize("name", list_seeds())
def test_round_trip_is_identical(name: str) -> None:
    code = seed_source(name)
    assert block_names(code) == ["indicators", "decision_logic"]
    assert splice_blocks(code, extract_blocks(code)) == code
    validate_candidate(code, code)


def test_extracted_bodies_are_dedented() -> None:
    bodies = extract_blocks(PARENT)
    assert bodies["indicators"].startswith("self.fast_ema = ExponentialMovingAverage(10)\n")
    assert all(not line.startswith(" ") for line in bodies["indicators"].splitlines())


def test_splice_changes_only_the_block_and_reindents() -> None:
    new = splice_blocks(PARENT, {"indicators": "    self.fast_ema = ExponentialMovingAverage(5)\n"
                                               "    self.slow_ema = ExponentialMovingAverage(50)\n"})
    old_lines, new_lines = PARENT.splitlines(), new.splitlines()
    changed = [i + 1 for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    start = _line_of(PARENT, "EVOLVE-BLOCK: indicators")
    assert changed == [start + 1, start + 2]
    marker_indent = old_lines[start - 1][: len(old_lines[start - 1]) - len(old_lines[start - 1].lstrip())]
    assert new_lines[start] == f"{marker_indent}self.fast_ema = ExponentialMovingAverage(5)"
    assert extract_blocks(new)["decision_logic"] == extract_blocks(PARENT)["decision_logic"]
    validate_candidate(PARENT, new)


def test_splice_longer_body_keeps_everything_after_it() -> None:
    body = "if self.fast_ema.value > self.slow_ema.value:\n    self.go_long()\n\nelse:\n    self.go_flat()\n"
    new = splice_blocks(PARENT, {"decision_logic": body})
    assert extract_blocks(new)["decision_logic"] == body
    assert new.count("# === END EVOLVE-BLOCK ===") == 2
    validate_candidate(PARENT, new)


def test_splice_unknown_block_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"'nope'.*'indicators', 'decision_logic'"):
        splice_blocks(PARENT, {"nope": "x = 1\n"})


def _expect(kind: str, line: int | None, candidate: str, **kwargs: object) -> CandidateError:
    with pytest.raises(CandidateError) as info:
        validate_candidate(PARENT, candidate, **kwargs)  # type: ignore[arg-type]
    assert (info.value.kind, info.value.line) == (kind, line), str(info.value)
    return info.value


def test_syntax_error_reports_its_line() -> None:
    candidate = splice_blocks(PARENT, {"decision_logic": "if self.fast_ema.value >:\n    self.go_long()\n"})
    _expect("syntax", _line_of(PARENT, "EVOLVE-BLOCK: decision_logic") + 1, candidate)


def test_policy_violation_inside_a_block_reports_its_line() -> None:
    candidate = splice_blocks(PARENT, {"decision_logic": "self.go_long()\nopen('/tmp/x', 'w')\n"})
    error = _expect("policy", _line_of(PARENT, "EVOLVE-BLOCK: decision_logic") + 2, candidate)
    assert "forbidden-call" in error.message


def test_tampering_outside_a_block_is_detected() -> None:
    candidate = PARENT.replace("    def decide(self, bar: Bar) -> None:", "    def decide(self, bar) -> None:")
    _expect("blocks", _line_of(PARENT, "def decide"), candidate)


def test_added_import_outside_blocks_is_detected() -> None:
    candidate = PARENT.replace("import ExponentialMovingAverage\n", "import ExponentialMovingAverage\nimport math\n")
    _expect("blocks", _line_of(PARENT, "import ExponentialMovingAverage") + 1, candidate)


def test_text_appended_after_the_class_is_detected() -> None:
    candidate = PARENT + "\nx = 1\n"
    _expect("blocks", len(PARENT.splitlines()) + 2, candidate)


def test_trailing_whitespace_outside_blocks_is_tolerated() -> None:
    header = "class MomentumStrategy(EvolvableStrategy):"
    candidate = PARENT.replace(header, header + "  \t")
    validate_candidate(PARENT, candidate + "\n\n")


def test_deleted_end_marker_is_detected() -> None:
    lines = PARENT.splitlines(keepends=True)
    end = _line_of(PARENT, "END EVOLVE-BLOCK")
    candidate = "".join(lines[: end - 1] + lines[end:])
    # the next START marker (one line higher now) opens inside the unterminated block
    _expect("blocks", _line_of(PARENT, "EVOLVE-BLOCK: decision_logic") - 1, candidate)


def test_deleted_start_marker_is_detected() -> None:
    start = _line_of(PARENT, "EVOLVE-BLOCK: decision_logic")
    lines = PARENT.splitlines(keepends=True)
    candidate = "".join(lines[: start - 1] + lines[start:])
    end = len(PARENT.splitlines()) - 1  # the last END marker moves up one line
    _expect("blocks", end, candidate)


def test_duplicated_block_is_detected() -> None:
    duplicate = "        # === EVOLVE-BLOCK: indicators ===\n        x = 1\n        # === END EVOLVE-BLOCK ===\n"
    anchor = "        # === EVOLVE-BLOCK: decision_logic ===\n"
    candidate = PARENT.replace(anchor, duplicate + anchor)
    _expect("blocks", _line_of(PARENT, "EVOLVE-BLOCK: decision_logic"), candidate)


def test_nested_block_is_detected() -> None:
    candidate = splice_blocks(PARENT, {"decision_logic": "# === EVOLVE-BLOCK: inner ===\nx = 1\n"})
    _expect("blocks", _line_of(PARENT, "EVOLVE-BLOCK: decision_logic") + 1, candidate)


def test_malformed_marker_is_detected() -> None:
    candidate = PARENT.replace("# === END EVOLVE-BLOCK ===", "# === END EVOLVE-BLOCK", 1)
    _expect("blocks", _line_of(PARENT, "END EVOLVE-BLOCK"), candidate)


def test_both_markers_deleted_is_a_missing_block() -> None:
    candidate = PARENT.replace("        # === EVOLVE-BLOCK: indicators ===\n", "")
    candidate = candidate.replace("        # === END EVOLVE-BLOCK ===\n", "", 1)
    with pytest.raises(MissingBlockError) as info:
        validate_candidate(PARENT, candidate)
    assert isinstance(info.value, ValueError)
    assert info.value.block == "indicators"
    assert info.value.kind == "blocks"


def test_required_blocks_are_checked_by_name() -> None:
    with pytest.raises(MissingBlockError, match="'risk'"):
        validate_candidate(PARENT, PARENT, required_blocks=["indicators", "risk"])
    validate_candidate(PARENT, PARENT, required_blocks=["decision_logic"])


def test_unbalanced_end_without_start() -> None:
    with pytest.raises(CandidateError) as info:
        find_blocks("x = 1\n# === END EVOLVE-BLOCK ===\n")
    assert (info.value.kind, info.value.line) == ("blocks", 2)


def test_candidate_errors_survive_pickling() -> None:
    for error in (CandidateError("policy", "[forbidden-call] open() is not allowed", 12), MissingBlockError("risk")):
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is type(error)
        assert (clone.kind, clone.message, clone.line, str(clone)) == (
            error.kind, error.message, error.line, str(error)
        )
