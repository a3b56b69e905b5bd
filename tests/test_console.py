"""What a person at the console meets, through real ``alpha-evolve`` processes: Ctrl-C during a real pipeline run,
bad input, a session where nothing succeeds, answers written by hand or typed wrong, hints that work as printed,
the proposal shown while waiting."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests._session_helpers import (
    atomic_json,
    history,
    read_json_or_none,
    wait_for_feedback,
    wait_for_new_action,
    wait_for_status,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "_session_driver.py"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(240)


def _env(**extra: str) -> dict[str, str]:
    drop = ("ANTHROPIC_API_KEY", "UV_RUN_RECURSION_DEPTH", "UV", "AE_CLI")  # `make test` runs under `uv run`
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alpha_evolve", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=180, check=False)


def sessions(root: Path) -> list[Path]:
    return sorted(root.glob("self_evo_session_*")) if root.exists() else []


def driver(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A legacy session with the stand-in pipeline runner (tests/_session_driver.py): fast, same entry point."""
    return subprocess.Popen([sys.executable, str(DRIVER), "--mode", "legacy", "--session-root", str(root),
                             "--approval-poll-interval", "60", *args], cwd=ROOT, env=env or _env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ------------------------------------------------------------------------------- 7: Ctrl-C in a real run


def test_ctrl_c_during_a_real_pipeline_run_abandons_it_promptly(tmp_path: Path) -> None:
    """The run waits on the agent mutator (its event loop idle, where a signal handler's exception used to be
    swallowed as "Exception in callback"): SIGINT must end the session at once, stopped, exit 130, no traceback,
    and withdraw the pending mutation request."""
    config = tmp_path / "agent.toml"
    config.write_text('[evolution]\ngenerations = 3\nmutator = "agent"\nmax_concurrent = 1\n'
                      "agent_timeout_seconds = 600.0\n\n[backtest]\nsynthetic_bars = 300\n")
    root = tmp_path / "sessions"
    proc = subprocess.Popen([sys.executable, "-m", "alpha_evolve", "self-evolve", "--mode", "legacy", "--config",
                             str(config), "--session-root", str(root), "--iterations", "1", "--auto-approve"],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        request = wait_until(tmp_path, lambda: next(iter(root.glob(
            "self_evo_session_*/pipeline_runs/*/mutations/requests/*.json")), None), timeout=150,
            what="the run's first mutation request")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err and "Exception in callback" not in out + err, out + err
    session = sessions(root)[0]
    summary = json.loads((session / "session_summary.json").read_text())
    assert summary["status"] == "stopped" and summary["state"]["phase"] == "running"
    assert not request.exists() and (request.parent.parent / "expired" / request.name).exists()
    assert "resume with:" in out and str(session) in out.replace("\n", "")


# ------------------------------------------------------------------------ 8 and 12: bad input, no success


@pytest.mark.parametrize("mode", ["legacy", "tracked"])
def test_missing_data_fails_fast_and_creates_nothing(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "sessions"
    proc = cli("self-evolve", "--mode", mode, "--config", str(ROOT / "configs" / "sp500.toml"), "--session-root",
               str(root), "--registry-db", str(tmp_path / "registry.sqlite"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "data/sp500" in proc.stderr and "not found" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert sessions(root) == []


def test_bad_input_leaves_no_session_folder(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    bad_space = tmp_path / "space.json"
    bad_space.write_text('{"parameters": [{"key": "no_such_setting", "type": "choice", "values": [1, 2]}]}')
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[evolution]\ngenerations = -3\n")
    for args in (["--config", str(tmp_path / "missing.toml")], ["--config", str(bad_config)],
                 ["--search-space", str(bad_space)], ["--search-space", str(tmp_path / "missing.json")]):
        proc = cli("self-evolve", "--mode", "legacy", "--session-root", str(root), *args)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert sessions(root) == [], args


def test_a_session_where_nothing_succeeds_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "BAD.csv"
    bad.write_text("Date,Open,High,Low,Close,Volume\n2020-01-01,x,y,z,w,1\n2020-01-02,x,y,z,w,1\n")
    config = tmp_path / "bad_data.toml"
    config.write_text(f'[backtest]\ndata = "{bad}"\n')
    root = tmp_path / "sessions"
    proc = cli("self-evolve", "--mode", "legacy", "--config", str(config), "--session-root", str(root),
               "--iterations", "1", "--auto-approve")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "no iteration succeeded (last:" in proc.stderr and "BAD.csv" in proc.stderr
    runs = history(sessions(root)[0])
    assert [r["success"] for r in runs] == [False, False]


# ------------------------------------------------------ 9, 10, 11: answers, hints, the proposal on screen


def test_bare_answers_typos_and_cli_decisions_after_a_refused_edit(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    env = _env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # alpha-evolve is on this PATH
    proc = driver(root, "--iterations", "4", env=env)
    try:
        session = wait_until(root, lambda: next(iter(sessions(root)), None), what="a session")
        pending = session / "pending_action.json"
        first = wait_for_status(session, "awaiting_approval")
        # the seed's own answer: status and notes only, written over the whole file
        pending.write_text(json.dumps({"status": "approved", "notes": "bare answer"}))
        second = wait_for_new_action(session, first["action_id"])
        # a typo is refused with a hint; the command line then decides
        atomic_json(pending, {**second, "status": "aproved", "notes": "typo"})
        wait_for_feedback(session, "did you mean 'approved'")
        approved = cli("approve", str(session), env=env)
        assert approved.returncode == 0, approved.stderr
        third = wait_for_new_action(session, second["action_id"])
        # a refused candidate edit, then `reject` from the command line
        key = next(iter(third["proposal"]["candidate"]))
        atomic_json(pending, {**third, "status": "approved",
                              "proposal": {**third["proposal"], "candidate": {**third["proposal"]["candidate"],
                                                                               key: 10_000}}})
        wait_for_feedback(session, "refused")
        rejected = cli("reject", str(session), "--notes", "not this one", env=env)
        assert rejected.returncode == 0, rejected.stderr
        fourth = wait_for_new_action(session, third["action_id"])
        assert fourth["next_iteration"] == third["next_iteration"] and fourth["attempt"] == 2
        # broken JSON, then `stop` from the command line: the notes of the broken edit cannot be read, --notes wins
        pending.write_text('{"status": "stop", "notes": ')
        wait_for_feedback(session, "invalid JSON")
        assert cli("stop", str(session), "--notes", "enough", env=env).returncode == 0
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    runs = history(session)
    assert runs[1]["decision"]["notes"] == "bare answer" and runs[1]["action_id"] == first["action_id"]
    assert runs[2]["decision"]["status"] == "approved" and runs[2]["decision"]["notes"] == "typo"
    assert [r["iteration"] for r in runs] == [0, 1, 2]
    final = read_json_or_none(pending)
    assert final["status"] == "stopped" and final["notes"] == "enough"
    # 11: each wait showed the proposal (changed keys old → new) and the briefing's summary
    assert out.count("awaiting approval of") == 4
    assert "proposal (" in out and " → " in out and "briefing: " in out
    # 10: with alpha-evolve on the PATH the hint is the plain command
    assert f"or run: alpha-evolve approve {session}" in out.replace("\n", " ") or \
        f"alpha-evolve approve {shlex.quote(str(session))}" in out


@pytest.mark.parametrize("setup", ["on_path", "not_on_path", "under_uv_run"])
def test_printed_hints_work_in_the_shell_they_are_printed_in(tmp_path: Path, setup: str) -> None:
    """The approve hint printed by a waiting session, run as printed by a shell with the session's PATH."""
    root = tmp_path / "sessions"
    path = os.environ.get("PATH", "")
    bare_path = os.pathsep.join(p for p in path.split(os.pathsep)
                                if p and not (Path(p) / "alpha-evolve").exists() and not (Path(p) / "uv").exists())
    env = {"on_path": _env(PATH=f"{VENV_BIN}{os.pathsep}{path}"),
           "not_on_path": _env(PATH=bare_path),
           "under_uv_run": _env(PATH=f"{VENV_BIN}{os.pathsep}{path}", UV_RUN_RECURSION_DEPTH="1")}[setup]
    proc = driver(root, "--iterations", "1", env=env)
    try:
        session = wait_until(root, lambda: next(iter(sessions(root)), None), what="a session")
        pending = wait_for_status(session, "awaiting_approval")
        hint = pending["commands"]["approve"]
        if setup == "under_uv_run":  # `make session`: the venv is on the PATH of the session only
            if shutil.which("uv", path=env["PATH"]):
                assert hint.startswith("uv run alpha-evolve approve "), hint
            assert cli("stop", str(session), env=env).returncode == 0
        else:
            python = f"{shlex.quote(sys.executable)} -m alpha_evolve"
            expected = "alpha-evolve approve" if setup == "on_path" else python
            assert hint.startswith(expected), hint
            ran = subprocess.run(["bash", "-c", hint.replace("'...'", "'as printed'")], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120, check=False)
            assert ran.returncode == 0, (hint, ran.stderr)
            wait_for_status(session, "running", "session_complete", action_id=pending["action_id"])
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0


def test_watchdog_shutdown_race_is_not_printed() -> None:
    import logging

    import alpha_evolve.approval  # noqa: F401  (installs the filter)

    log = logging.getLogger("watchdog.observers.inotify")
    race = log.makeRecord(log.name, logging.ERROR, __file__, 1, "InotifyEmitter.queue_events() called when the "
                          "thread is inactive", (), None)
    other = log.makeRecord(log.name, logging.ERROR, __file__, 1, "inotify watch limit reached", (), None)
    assert not log.filter(race) and log.filter(other)

