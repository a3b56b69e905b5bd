"""One start-up path and one declaration of session settings: the CLI's options, the checks, the resume rule and
the candidate check all come from ``session_settings`` / ``session_start``; every refusal is one line, before
anything is created."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.commands.session import add_self_evolve_arguments, given_settings, run_self_evolve
from alpha_evolve.config import RunConfig
from alpha_evolve.search_space import load_search_space
from alpha_evolve.session import SessionError, candidate_problems
from alpha_evolve.session_settings import (
    DEFAULT_EXPLORATION_PROB,
    SETTING_SPECS,
    SessionSettings,
    setting_problems,
)
from alpha_evolve.session_start import (
    create_tracked_session,
    open_session,
    resume_settings,
    session_mode,
)
from tests._session_helpers import DEFAULT_SPACE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="self-evolve")
    add_self_evolve_arguments(p)
    return p


def test_cli_options_are_read_from_the_declaration() -> None:
    p = _parser()
    by_dest = {a.dest: a for a in p._actions}
    for spec in SETTING_SPECS.values():
        if spec.flag is None:
            continue
        action = by_dest[spec.flag.lstrip("-").replace("-", "_")]
        assert action.default is None  # a resume must tell "given" from "default"
        assert spec.doc in (action.help or "")
        if spec.choices is not None:
            assert list(action.choices or ()) == list(spec.choices)
    assert f"({DEFAULT_EXPLORATION_PROB:g})" in (by_dest["exploration_prob"].help or "")
    for name in ("seed", "parallel_runs", "iterations"):  # 0 and 1 are defaults too
        assert f"({SETTING_SPECS[name].default})" in (by_dest[name].help or "")
    assert given_settings(p.parse_args([])) == {}
    given = given_settings(p.parse_args(["--exploration-prob", "0.4", "--minimize", "--no-persist-configs",
                                         "--config", "c.toml", "--parallel-runs", "2"]))
    assert given == {"exploration_prob": 0.4, "maximize": False, "persist_configs": False, "config_path": "c.toml",
                     "parallel_runs": 2}
    assert SessionSettings(**given).exploration_prob == 0.4  # every given name is a settings field


def test_one_default_mode_for_the_settings_and_the_cli() -> None:
    assert session_mode(None, None) == SessionSettings().mode == SETTING_SPECS["mode"].default == "tracked"
    assert session_mode(None, "legacy") == "legacy"


@pytest.mark.parametrize(("change", "fragment"), [
    ({"exploration_prob": 1.5}, "--exploration-prob 1.5: expected a probability in [0, 1]"),
    ({"exploration_prob": -0.1}, "--exploration-prob"),
    ({"iterations": -1}, "--iterations -1"),
    ({"parallel_runs": 0}, "--parallel-runs 0"),
    ({"parallel_runs": 65}, "--parallel-runs 65"),
    ({"approval_poll_interval": 0.0}, "--approval-poll-interval 0"),
    ({"approval_timeout": -1.0}, "--approval-timeout"),
    ({"objective": "Luck"}, "--objective 'Luck'"),
    ({"sampler": "grid"}, "--sampler 'grid'"),
    ({"seed": -1}, "--seed -1"),
    ({"iterations": 2.5}, "expected an integer"),
])
def test_values_outside_the_declaration_are_one_line(change: dict[str, Any], fragment: str) -> None:
    problems = setting_problems(dataclasses.replace(SessionSettings(), **change))
    assert len(problems) == 1 and fragment in problems[0] and "\n" not in problems[0]
    assert setting_problems(SessionSettings()) == []


def test_optuna_refuses_an_explicit_exploration_prob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, db = tmp_path / "sessions", tmp_path / "reg.sqlite"
    for mode in ("legacy", "tracked"):
        args = _parser().parse_args(["--mode", mode, "--sampler", "optuna", "--exploration-prob", "0.3",
                                     "--session-root", str(root), "--registry-db", str(db), "--iterations", "1"])
        assert run_self_evolve(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--exploration-prob applies to the random sampler only" in err
    assert not root.exists() and not db.exists()  # nothing created
    with pytest.raises(SessionError, match="random sampler only"):
        create_tracked_session({"sampler": "optuna", "exploration_prob": 0.2}, registry_db=db, session_root=root)
    assert not db.exists()
    # a resumed optuna session may not be handed one either; its stored default is fine
    stored = SessionSettings(sampler="optuna", search_space_path=str(DEFAULT_SPACE))
    assert resume_settings(stored, {"iterations": 3}).iterations == 3
    with pytest.raises(SessionError, match="random sampler only"):
        resume_settings(stored, {"exploration_prob": 0.5})


def test_one_resume_rule() -> None:
    stored = SessionSettings(mode="tracked", search_space_path=str(DEFAULT_SPACE), seed=4)
    with pytest.raises(SessionError, match="--resume: seed cannot change within a session"):
        resume_settings(stored, {"seed": 5})
    with pytest.raises(SessionError, match="--resume: mode cannot change"):
        resume_settings(stored, {"mode": "legacy"})
    with pytest.raises(SessionError, match="--iterations -2"):
        resume_settings(stored, {"iterations": -2})
    assert resume_settings(stored, {"seed": 4, "iterations": 9, "auto_approve": True}).iterations == 9


def test_one_candidate_check_reads_keys_as_section_name() -> None:
    """The loop, the dashboard and ``approve`` share one check: a short key is its ``section.name`` (so an
    out-of-range value cannot slip past under another spelling), and a field given twice is refused."""
    space = load_search_space(DEFAULT_SPACE)
    base = RunConfig()
    posted = {"evolution.generations": 5}
    assert candidate_problems(space, base, {"generations": 8}, posted) == []
    outside = candidate_problems(space, base, {"generations": 99}, posted)
    assert len(outside) == 1 and "outside" in outside[0]
    both = candidate_problems(space, base, {"generations": 8, "evolution.generations": 8}, posted)
    assert len(both) == 1 and "both set" in both[0]


def test_open_session_builds_the_loop_both_modes(tmp_path: Path) -> None:
    """The same function starts a legacy and a tracked session (nothing is run here); a tracked session created
    up front (as the dashboard does) is opened by id."""
    legacy = open_session({"iterations": 1, "auto_approve": True}, mode="legacy", session_root=tmp_path / "s")
    assert legacy.mode == "legacy" and not legacy.resuming and legacy.settings.mode == "legacy"
    assert legacy.artifact_dir.parent == tmp_path / "s" and "--resume" in legacy.resume_command
    legacy.close()
    db = tmp_path / "reg.sqlite"
    sid = create_tracked_session({"iterations": 2, "seed": 7}, registry_db=db, session_root=tmp_path / "t")
    tracked = open_session({}, resume=sid, registry_db=db)
    try:
        assert tracked.mode == "tracked" and tracked.session_id == sid and not tracked.resuming
        assert tracked.settings.seed == 7 and tracked.settings.iterations == 2
        assert tracked.registry_path == db and sid in tracked.resume_command
    finally:
        tracked.close()
    with pytest.raises(SessionError, match="no such session"):
        open_session({}, resume="nope", registry_db=db)


def test_tracked_ids_never_collide_across_session_roots(tmp_path: Path) -> None:
    """Ids are named by the second; sessions of one registry may live under different roots."""
    db = tmp_path / "reg.sqlite"
    ids = [create_tracked_session({"iterations": 1}, registry_db=db, session_root=tmp_path / f"root{i}")
           for i in range(3)]
    assert len(set(ids)) == 3
