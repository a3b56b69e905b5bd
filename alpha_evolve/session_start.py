"""Starting, resuming and deciding self-evolution sessions: the one path every entry point takes.

``alpha-evolve self-evolve`` (and ``scripts/self_evolve.py``) and the dashboard call these functions; only the
backend differs between modes (``FileStateBackend`` for a legacy session directory, ``RegistryStateBackend`` for a
tracked session in the SQLite registry). Every input problem is a ``SessionError`` with one line, raised before
anything is created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import logging
import os
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alpha_evolve.command_hint import cli
from alpha_evolve.metric_names import LOWER_IS_BETTER_METRICS
from alpha_evolve.session import SessionError
from alpha_evolve.session_settings import (
    SETTING_SPECS,
    SessionSettings,
    sampler_problem,
    setting_problems,
)

logger = logging.getLogger("alpha_evolve.session_start")

__all__ = [
    "DEFAULT_SESSION_ROOT",
    "OpenedSession",
    "build_loop",
    "check_resume_target",
    "check_settings",
    "create_tracked_session",
    "decide_tracked",
    "default_search_space",
    "new_session_settings",
    "open_session",
    "resolve_session_id",
    "resume_settings",
    "session_mode",
    "tracked_resume_args",
]

DEFAULT_SESSION_ROOT = "pipeline_runs_cs/self_evolution"

Say = Callable[[str], None]


def _quiet(line: str) -> None:
    logger.info("%s", line)


# ---------------------------------------------------------------------------------------------- settings


def check_settings(settings: SessionSettings) -> None:
    """Raise the first value outside its declaration (type, range, choices) as one line."""
    problems = setting_problems(settings)
    if problems:
        raise SessionError(problems[0])


def default_search_space() -> str | None:
    root = Path(__file__).resolve().parents[1] / "configs" / "self_evolution"
    for name in ("default.json", "default.toml"):
        if (root / name).is_file():
            return str(root / name)
    return None


def new_session_settings(given: Mapping[str, Any], *, note: Say = _quiet) -> SessionSettings:
    """Settings of a new session (either mode): the default search space filled in, every value checked, and the
    files it needs read, so a bad input leaves nothing behind."""
    given = dict(given)
    if given.get("search_space_path") is None:
        default = default_search_space()
        if default is None:
            raise SessionError("--search-space is required (a JSON or TOML file; see configs/self_evolution/)")
        given["search_space_path"] = default
    settings = SessionSettings(**given)
    check_settings(settings)
    problem = sampler_problem(given, settings.sampler)
    if problem:
        raise SessionError(problem)
    _preflight(settings)
    if settings.objective in LOWER_IS_BETTER_METRICS and settings.maximize:
        note(f"{settings.objective} is lower-is-better; did you mean --minimize?")
    return settings


def resume_settings(stored: SessionSettings, given: Mapping[str, Any]) -> SessionSettings:
    """The one resume rule: stored settings, with the given ones that may change applied and checked."""
    for key in SessionSettings.FIXED_ON_RESUME:
        if key in given and given[key] != getattr(stored, key):
            raise SessionError(
                f"--resume: {key.replace('_', '-')} cannot change within a session (it is {getattr(stored, key)!r})"
            )
    settings = dataclasses.replace(stored, **given)
    check_settings(settings)
    problem = sampler_problem(given, settings.sampler)
    if problem:
        raise SessionError(problem)
    return settings


def _preflight(settings: SessionSettings) -> None:
    """A base config whose data is missing stops here instead of failing every iteration of the session."""
    from alpha_evolve.search_space import load_search_space
    from alpha_evolve.session import load_base_config

    base = load_base_config(None, settings.config_path)
    assert settings.search_space_path is not None
    load_search_space(settings.search_space_path)
    data = base.backtest.data
    if data and not Path(data).exists():
        where = settings.config_path or "the base config"
        raise SessionError(
            f"{where}: [backtest] data {data!r} not found (a relative path is read from the folder you start in); "
            "provide the data there, or use a config whose data exists (configs/default.toml runs on built-in "
            "synthetic data)"
        )


def session_mode(resume: str | None, mode: str | None) -> str:
    """Legacy when resuming a session directory (tracked sessions resume by id), else the asked-for mode, else the
    declared default."""
    from alpha_evolve.session_files import SUMMARY

    if resume and (Path(resume) / SUMMARY).is_file():
        return "legacy"
    return mode or str(SETTING_SPECS["mode"].default)


# ------------------------------------------------------------------------------------------------- loop


def build_loop(
    backend: Any,
    settings: SessionSettings,
    summary: Mapping[str, Any] | None,
    state_dir: Path,
    pipeline_runner: Callable[..., Path] | None,
    *,
    label: str,
    out: Say = _quiet,
) -> Any:
    """The one self-evolution loop, whatever the backend: base config, search space and sampler from settings."""
    from alpha_evolve.samplers import make_sampler
    from alpha_evolve.search_space import load_search_space
    from alpha_evolve.session import SelfEvolutionLoop, load_base_config

    base_config = load_base_config(summary, settings.config_path)
    if not settings.search_space_path:
        raise SessionError(f"{label}: the session records no search space")
    space = load_search_space(settings.search_space_path)
    sampler = make_sampler(
        settings.sampler,
        space,
        seed=settings.seed,
        exploration_prob=settings.exploration_prob if settings.sampler == "random" else None,  # TPE's own
        maximize=settings.maximize,
        state_dir=state_dir,
    )
    loop_class: Any = SelfEvolutionLoop
    if settings.parallel_runs > 1:
        from alpha_evolve.parallel_runs import ParallelRunsLoop

        loop_class = ParallelRunsLoop
    return loop_class(
        backend,
        settings,
        base_config=base_config,
        space=space,
        sampler=sampler,
        pipeline_runner=pipeline_runner,
        out=out,
    )


@dataclass
class OpenedSession:
    """A session ready to run: its loop, and what a front end says about it."""

    loop: Any
    settings: SessionSettings
    mode: str
    session_id: str
    label: str  # for the closing table and messages
    resuming: bool
    resume_command: str
    artifact_dir: Path
    registry_path: Path | None = None
    _close: Callable[[], None] = field(default=lambda: None, repr=False)
    _stop_requests: list[bool] = field(default_factory=list, repr=False)

    @property
    def stopped_by_request(self) -> bool:
        """A stop asked for from the dashboard or the CLI (a decision, not an interruption)."""
        return bool(self._stop_requests)

    @property
    def history(self) -> list[Any]:
        """The session's iteration records so far (after ``loop.run()``: all of them)."""
        return list(self.loop.history)

    def close(self) -> None:
        self._close()


def open_session(
    given: Mapping[str, Any],
    *,
    resume: str | None = None,
    mode: str | None = None,
    session_root: str | os.PathLike[str] | None = None,
    registry_db: str | os.PathLike[str] | None = None,
    pipeline_runner: Callable[..., Path] | None = None,
    out: Say = _quiet,
    report: Say = _quiet,
    note: Say = _quiet,
) -> OpenedSession:
    """Start or resume a session, legacy or tracked: settings resolved and checked, backend chosen, loop built.
    ``given`` holds the settings the user gave (``SessionSettings`` field names); ``run()`` the returned loop."""
    given = {k: v for k, v in given.items() if v is not None}
    if mode is not None:
        given["mode"] = mode  # a resume refuses a different mode, as it refuses any fixed setting
    if session_mode(resume, given.get("mode")) == "tracked":
        return _open_tracked(given, resume, session_root, registry_db, pipeline_runner, out, report, note)
    return _open_legacy(given, resume, session_root, pipeline_runner, out, report, note)


def _open_legacy(given: dict[str, Any], resume: str | None, session_root: Any,
                 pipeline_runner: Callable[..., Path] | None, out: Say, report: Say, note: Say) -> OpenedSession:
    from alpha_evolve.files import FileFormatError, read_json
    from alpha_evolve.session_files import SUMMARY, FileStateBackend, new_session_dir

    summary: dict[str, Any] | None = None
    if resume:
        session_dir = Path(resume)
        path = session_dir / SUMMARY
        if not path.is_file():
            raise SessionError(f"{session_dir}: not a self-evolution session (no {SUMMARY})")
        try:
            summary = read_json(path)
        except FileFormatError as exc:
            raise SessionError(str(exc)) from None
        stored = dict(summary.get("settings") or {})
        stored.setdefault("mode", "legacy")  # summaries written before the mode was recorded
        settings = resume_settings(SessionSettings.from_dict(stored), given)
        if settings.mode != "legacy":
            raise SessionError(f"{session_dir}: a {settings.mode} session cannot be resumed by this install")
    else:
        settings = new_session_settings({**given, "mode": "legacy"}, note=note)
        session_dir = new_session_dir(session_root or DEFAULT_SESSION_ROOT)
    backend = FileStateBackend(
        session_dir, poll_interval=settings.approval_poll_interval, force_polling=settings.force_polling, report=report
    )
    try:
        loop = build_loop(backend, settings, summary, session_dir, pipeline_runner, label=str(session_dir), out=out)
    except BaseException:
        if summary is None:
            _discard_unstarted(session_dir)
        raise
    return OpenedSession(
        loop, settings, "legacy", session_dir.name, str(session_dir), summary is not None,
        cli("self-evolve", "--resume", shlex.quote(str(session_dir))), session_dir,
    )


def _discard_unstarted(session_dir: Path) -> None:
    """Remove a session folder this command created if the session never started (no summary was written)."""
    from alpha_evolve.session_files import SUMMARY

    if session_dir.is_dir() and not (session_dir / SUMMARY).exists():
        shutil.rmtree(session_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- tracked


def _registry(db: str | os.PathLike[str] | None, *, create: bool) -> Any:
    from alpha_evolve.registry import ExperimentRegistry, default_registry_path

    return ExperimentRegistry(default_registry_path(None if db is None else str(db)), create=create)


def create_tracked_session(
    given: Mapping[str, Any],
    *,
    registry_db: str | os.PathLike[str] | None = None,
    session_root: str | os.PathLike[str] | None = None,
    note: Say = _quiet,
) -> str:
    """Check the settings of a new tracked session and record it in the registry, not yet started: its id is
    returned, and ``open_session(resume=id)`` (in this process or another) runs it."""
    given = {k: v for k, v in given.items() if v is not None and k != "mode"}
    settings = new_session_settings({**given, "mode": "tracked"}, note=note)  # before a registry file is created
    with contextlib.closing(_registry(registry_db, create=True)) as reg:
        return _create_tracked(reg, settings, session_root)


def tracked_resume_args(registry_db: str | os.PathLike[str], session_id: str) -> list[str]:
    """The ``self-evolve`` arguments that run (or continue) tracked session ``session_id``: the resume hint a
    session prints and the process the dashboard starts for a session it created are spelled here once."""
    return ["--mode", "tracked", "--registry-db", str(registry_db), "--resume", session_id]


def _create_tracked(reg: Any, settings: SessionSettings, session_root: Any) -> str:
    from alpha_evolve.config import load_config
    from alpha_evolve.registry import search_space_record
    from alpha_evolve.session_files import new_session_dir

    assert settings.search_space_path is not None
    space_record = search_space_record(settings.search_space_path)
    base = load_config(settings.config_path)
    artifact_dir = new_session_dir(session_root or DEFAULT_SESSION_ROOT,
                                   taken=lambda name: reg.get_session(name) is not None)
    session_id = artifact_dir.name
    reg.create_session(
        session_id,
        objective=settings.objective,
        maximize=settings.maximize,
        settings=settings.to_dict(),
        base_config=base.to_dict(),
        search_space=space_record,
        artifact_dir=str(artifact_dir.resolve()),
    )
    return session_id


def _open_tracked(given: dict[str, Any], resume: str | None, session_root: Any, registry_db: Any,
                  pipeline_runner: Callable[..., Path] | None, out: Say, report: Say, note: Say) -> OpenedSession:
    from alpha_evolve.registry import RegistryStateBackend

    new_settings = None
    if resume:
        check_resume_target(resume, registry_db)
    else:  # checked before a registry file is created
        new_settings = new_session_settings({**given, "mode": "tracked"}, note=note)
    reg = _registry(registry_db, create=not resume)  # a resume never creates a registry
    try:
        summary: dict[str, Any] | None = None
        if new_settings is None:
            session_id = resolve_session_id(reg, str(resume))
        else:
            session_id = _create_tracked(reg, new_settings, session_root)
        row = reg.require_session(session_id)
        if row["mode"] != "tracked":
            raise SessionError(f"session {session_id} is a legacy session: resume it with --resume {row['source_dir']}")
        stored = SessionSettings.from_dict({**(row["settings"] or {}), "mode": "tracked"})
        settings = resume_settings(stored, given) if resume else stored
        artifact_dir = Path(row["artifact_dir"])
        summary = row["summary"] or None
        backend = RegistryStateBackend(reg, session_id, artifact_dir, report=report)
        loop = build_loop(backend, settings, summary, artifact_dir, pipeline_runner, label=f"session {session_id}",
                          out=out)
    except BaseException:
        reg.close()
        raise
    opened = OpenedSession(
        loop, settings, "tracked", session_id, f"{session_id} ({reg.path})", summary is not None,
        cli("self-evolve", *map(shlex.quote, tracked_resume_args(reg.path, session_id))),
        artifact_dir, registry_path=reg.path, _close=reg.close,
    )

    def on_stop() -> None:
        opened._stop_requests.append(True)
        loop.request_stop()

    backend.on_stop_request = on_stop
    return opened


def resolve_session_id(reg: Any, target: str) -> str:
    """A session id, or the path of a tracked session's artifact directory (its name is the id)."""
    from alpha_evolve.registry import RegistryError

    if reg.get_session(target) is not None:
        return target
    name = Path(target).name
    if name and reg.get_session(name) is not None:
        return name
    raise RegistryError(f"registry {reg.path}: no session {target!r} (see: {cli('registry', 'list')})")


def check_resume_target(target: str, registry_db: str | os.PathLike[str] | None) -> None:
    """``--resume X`` where X is neither a legacy session directory nor a tracked session: say so in one line and
    create nothing (no registry file appears in the working directory because of a typo)."""
    from alpha_evolve.registry import default_registry_path
    from alpha_evolve.session_files import SUMMARY

    path = Path(target)
    db = default_registry_path(None if registry_db is None else str(registry_db))
    if db.is_file():
        with contextlib.suppress(Exception), contextlib.closing(_registry(registry_db, create=False)) as reg:
            resolve_session_id(reg, target)
            return
    summary = path / SUMMARY
    if os.path.lexists(summary):  # there, but a FIFO, a directory, a broken link...: say exactly that
        from alpha_evolve.files import not_a_file_reason

        raise SessionError(f"{summary}: {not_a_file_reason(summary) or 'cannot be read'}")
    if path.exists():
        what = "a directory" if path.is_dir() else "a file"
        raise SessionError(
            f"{target}: not a self-evolution session ({what} without {SUMMARY}"
            + (f", and no tracked session of that name in {db})" if db.is_file() else ")")
        )
    if not db.is_file():
        raise SessionError(
            f"{target}: not a self-evolution session (no such session directory, and no tracked registry at {db})"
        )
    raise SessionError(f"{target}: no such session (not a directory, and not a session in {db}; "
                       f"see: {cli('registry', 'list')})")


# --------------------------------------------------------------------------------------------- decisions


def decide_tracked(target: str, status: str, notes: str | None,
                   registry_db: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``approve|reject|stop`` for a tracked session: one transaction on the registry, checked like the dashboard."""
    from alpha_evolve.registry import RegistryError, default_registry_path, session_checker

    db = default_registry_path(None if registry_db is None else str(registry_db))
    if not db.exists():
        raise RegistryError(
            f"{target}: not a legacy session directory (no session_summary.json), and the registry {db} does not exist"
        )
    with contextlib.closing(_registry(registry_db, create=False)) as reg:
        session_id = resolve_session_id(reg, target)
        if status == "stop":
            reg.request_stop(session_id)
            return {"session_id": session_id, "status": "stop_requested"}
        session = reg.require_session(session_id)
        if session["mode"] != "tracked":
            raise RegistryError(
                f"session {session_id} is a legacy session imported from {session['source_dir']}: decide there"
            )
        pending = reg.pending_proposal(session_id)
        if pending is None:
            raise RegistryError(f"session {session_id} has no pending proposal (it is {session['status']})")
        row = reg.decide(
            pending["action_id"],
            status,
            notes=notes,
            decided_by=f"cli ({_user()})",
            check=session_checker(session),
        )
        return {"session_id": session_id, "action_id": row["action_id"], "next_iteration": row["iteration"]}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
