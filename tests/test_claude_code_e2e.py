"""End to end through the REAL Claude Code CLI (bundled in the ``claude-agent-sdk`` dev dependency).

The CLI runs in its default permission mode in a project holding exactly the shipped ``.claude/`` (settings,
agents, commands) and ``CLAUDE.md``, against a local stand-in Messages API (``tests/_stand_in_api.py``) whose
scripted "model" makes the tool calls a real model would: the main agent delegates to the shipped subagents with
the Agent tool (they run in the background) and reads results only after the completion notification; the
approver makes one Edit of ``pending_action.json``; the mutator writes its response at the request's absolute
``response_path``. What is checked is what Claude Code really does with those calls: which agents and tools it
offers, whether the shipped permission rules let the edits through unattended, and whether the session loop and
the agent mutator take the results.

Workspace trust is recorded in the CLI's (temporary) home, as it is once a person has accepted the trust prompt:
Claude Code ignores a project's permission rules in a folder it was never told to trust.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._session_helpers import history, read_json_or_none, wait_for_new_action, wait_for_status, wait_until
from tests._stand_in_api import (
    StandInAPI,
    block_text,
    latest_user_text,
    read_result_json,
    read_result_text,
    system_text,
    text,
    tool,
    tool_calls,
    user_texts,
)

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "_session_driver.py"
NEW_LOGIC = ("if self.fast_ema.value > self.slow_ema.value * 1.002:\n    self.go_long()\n"
             "elif self.fast_ema.value < self.slow_ema.value:\n    self.go_flat()\n")
NOTIFICATION = ("SYSTEM NOTIFICATION", "<task-notification>")
REFUSED = ("haven't granted", "has been denied")

pytestmark = pytest.mark.timeout(180)


def _cli() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("claude_agent_sdk")  # located, not imported (its imports take seconds)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("claude-agent-sdk is not installed (dev dependency): no Claude Code CLI to drive")
    path = Path(next(iter(spec.submodule_search_locations))) / "_bundled" / "claude"
    if not path.is_file():
        pytest.skip(f"the claude-agent-sdk wheel for this platform bundles no Claude Code CLI ({path})")
    try:
        proc = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60, check=False,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"})
    except OSError as exc:
        pytest.skip(f"the Claude Code CLI cannot start here: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"the Claude Code CLI cannot start here: {(proc.stderr or proc.stdout).strip()[:200]}")
    return path


# ------------------------------------------------------------------------------------------- the model


class Brain:
    """Plays the model for the main agent and the two shipped subagents, from what each request shows."""

    def __init__(self) -> None:
        self.decisions: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.refusals: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        system = system_text(body)
        calls = tool_calls(body)
        self.refusals += [r for _, r in calls if any(m in r for m in REFUSED)]
        if "You are the approver of an alpha-evolve" in system:
            return self.approver(body, calls)
        if "You are the mutation operator of alpha-evolve" in system:
            return self.mutator(body, calls)
        if any(t.get("name") == "Agent" for t in body.get("tools", [])):
            return self.main(body, calls)
        return [text("OK")]  # side requests of the CLI (titles, summaries)

    # -- the main agent: /approve, or "answer this mutation request"

    def main(self, body: dict[str, Any], calls: list[tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
        first = "\n".join(user_texts(body))
        context = system_text(body) + "\n".join(block_text(b) for m in body.get("messages", [])
                                                 for b in (m["content"] if isinstance(m["content"], list)
                                                           else [text(m["content"])]))
        cwd = re.search(r"Primary working directory: (\S+)", context)
        assert cwd, "the main agent's system prompt names its working directory"
        request = re.search(r"mutation request (\S+\.json)", first)
        if request:
            task = {"subagent_type": "alpha-evolve-mutator", "description": "answer a mutation request",
                    "prompt": f"Answer the alpha-evolve mutation request {request.group(1)}"}
            feedback = None
        else:
            given = re.search(r'Session directory given: "([^"]*)"', first)
            assert given, f"/approve expanded to the shipped command text, got: {first[-600:]}"
            session = given.group(1).strip()
            if not session:
                newest = re.search(r"\(relative to the\s+project directory\): (\S+)/pending_action\.json", first)
                if newest is None:
                    return [text("no self-evolution session is awaiting approval")]
                session = newest.group(1)
            session = os.path.join(cwd.group(1), session)  # absolute stays absolute
            self.events.append(f"main: session {session}")
            task = {"subagent_type": "alpha-evolve-approver", "description": "decide the pending action",
                    "prompt": f"Decide the pending action of the self-evolution session {session}"}
            feedback = os.path.join(session, "approval_feedback.json")
        if not any(c["name"] == "Agent" for c, _ in calls):
            return [tool("Agent", **task)]
        if not any(m in latest_user_text(body) for m in NOTIFICATION) and not any(
                c["name"] == "Read" for c, _ in calls):
            self.events.append("main: waiting for the notification")
            return [text("The subagent is working in the background; I will report when it has finished.")]
        if feedback is None:
            self.events.append("main: notified")
            return [text("The mutation request is answered.")]
        reads = [r for c, r in calls if c["name"] == "Read"]
        if not reads:
            self.events.append("main: notified, reading the feedback")
            return [tool("Read", file_path=feedback)]
        return [text(f"approval feedback: {read_result_json(reads[-1]).get('status')}")]

    # -- the approver subagent

    def approver(self, body: dict[str, Any], calls: list[tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
        session = re.search(r"self-evolution session (\S+)", latest_user_text(body) if not calls else
                            "\n".join(user_texts(body)))
        assert session, "the approver was told the session directory"
        pending = os.path.join(session.group(1), "pending_action.json")
        feedback = os.path.join(session.group(1), "approval_feedback.json")
        if not calls:
            return [tool("Read", file_path=pending)]
        last, result = calls[-1]
        if last["name"] == "Read" and last["input"]["file_path"] == pending:
            with self.lock:
                decision = self.decisions.pop(0)
            return [tool("Edit", file_path=pending, **_one_edit(read_result_text(result), decision))]
        if last["name"] == "Edit":
            self.events.append(f"approver: edit -> {result[:80]}")
            return [tool("Read", file_path=feedback)]
        data = read_json_or_none(Path(feedback))  # what the loop has written meanwhile decides whether to re-read
        if (not isinstance(data, dict) or data.get("status") not in ("accepted", "problem")) and len(calls) < 8:
            return [tool("Read", file_path=feedback)]
        return [text(f"decided: {result[:200]}")]

    # -- the mutator subagent

    def mutator(self, body: dict[str, Any], calls: list[tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
        path = re.search(r"mutation request (\S+\.json)", "\n".join(user_texts(body)))
        assert path, "the mutator was told the request file"
        if not calls:
            return [tool("Read", file_path=path.group(1))]
        last, result = calls[-1]
        if last["name"] == "Read":
            shown = read_result_text(result)
            request_id = re.search(r'"request_id": "([^"]+)"', shown)
            response_path = re.search(r'"response_path": "([^"]+)"', shown)
            assert request_id and response_path, f"the request shows its id and response_path: {shown[:300]}"
            answer = {"request_id": request_id.group(1), "blocks": {"decision_logic": NEW_LOGIC},
                      "notes": "demand a 0.2 % gap before going long"}
            self.events.append(f"mutator: writing {response_path.group(1)}")
            return [tool("Write", file_path=response_path.group(1), content=json.dumps(answer, indent=2))]
        return [text(f"wrote the response: {result[:120]}")]


def _one_edit(file_text: str, decision: dict[str, Any]) -> dict[str, str]:
    """The single Edit the shipped approver definition asks for: status, notes and (when approving with changes)
    candidate values, as one contiguous snippet of pending_action.json."""
    start = file_text.index('"status": "awaiting_approval"')
    end = file_text.index('"notes": null', start) + len('"notes": null')
    changes = decision.get("candidate") or {}
    if changes:
        end = file_text.index("}", file_text.index('"candidate": {', start))
    old = file_text[start:end]
    new = old.replace('"awaiting_approval"', json.dumps(decision["status"]), 1)
    new = new.replace('"notes": null', f'"notes": {json.dumps(decision["notes"])}', 1)
    for key, value in changes.items():
        new, n = re.subn(rf'("(?:[a-z_]+\.)?{re.escape(key)}": )[^,\n]+', rf"\g<1>{json.dumps(value)}", new)
        assert n == 1, f"candidate key {key} in {old}"
    return {"old_string": old, "new_string": new}


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def claude() -> Path:
    return _cli()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with exactly the shipped Claude Code files, trusted in a private CLI home."""
    proj = tmp_path / "project"
    proj.mkdir()
    shutil.copytree(ROOT / ".claude", proj / ".claude")
    shutil.copy(ROOT / "CLAUDE.md", proj / "CLAUDE.md")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"projects": {str(proj): {"hasTrustDialogAccepted": True}}}))
    return proj


def run_claude(claude: Path, api: StandInAPI, project: Path, prompt: str) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(project.parent / "home"),
           "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-stand-in",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1"}
    try:
        proc = subprocess.run([str(claude), "-p", prompt, "--output-format", "json"], cwd=project, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"claude -p {prompt!r} did not finish; errors {api.errors[:1]}; the model was asked: "
                             f"{_trace(api)[-3000:]}") from None
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    if os.environ.get("AE_TRACE_CLAUDE"):
        print(f"\n--- {prompt} ({len(api.requests)} requests)")
        t0 = api.times[0]
        for t, line in zip(api.times, _trace(api).splitlines(), strict=False):
            print(f"{t - t0:6.2f} {line[:150]}")
    result = json.loads(proc.stdout)
    assert not api.errors, api.errors
    assert result["permission_denials"] == [], result["permission_denials"]  # default mode, shipped rules
    return result


def _trace(api: StandInAPI) -> str:
    """Who asked what, for a failure message: role and the last thing each request showed the model."""
    lines = []
    for body in api.requests:
        system = system_text(body)
        role = ("approver" if "You are the approver" in system else "mutator" if "mutation operator" in system
                else "main" if any(t.get("name") == "Agent" for t in body.get("tools", [])) else "other")
        lines.append(f"{role}: {latest_user_text(body)[-300:]!r}")
    return "\n".join(lines)


@pytest.fixture
def session_driver(project: Path) -> Iterator[subprocess.Popen[str]]:
    """A legacy session (stand-in pipeline runner) under the project's sessions/, as `make session` makes one."""
    proc = subprocess.Popen([sys.executable, str(DRIVER), "--mode", "legacy", "--session-root",
                             str(project / "sessions"), "--iterations", "3", "--approval-poll-interval", "60"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc
    proc.kill()
    proc.communicate()


# ------------------------------------------------------------------------------------------- tests


def test_approve_reject_edit_and_stop_through_the_shipped_approver(
        claude: Path, project: Path, session_driver: subprocess.Popen[str]) -> None:
    root = project / "sessions"
    root.mkdir(exist_ok=True)
    session = wait_until(root, lambda: next(iter(root.glob("self_evo_session_*")), None), what="a session")
    first = wait_for_status(session, "awaiting_approval")
    brain = Brain()
    with StandInAPI(brain) as api:
        # /approve without an argument finds the newest session awaiting approval under sessions/
        brain.decisions.append({"status": "approved", "notes": "first proposal looks sound"})
        run_claude(claude, api, project, "/approve")
        second = wait_for_new_action(session, first["action_id"])
        assert f"main: session {session}" in brain.events
        # /approve SESSION: reject, the loop proposes again for the same iteration
        brain.decisions.append({"status": "rejected", "notes": "repeats a change that did not help"})
        run_claude(claude, api, project, f"/approve {session}")
        third = wait_for_new_action(session, second["action_id"])
        assert third["next_iteration"] == second["next_iteration"] == 2 and third["attempt"] == 2
        # approve with an edited candidate value (inside the search space)
        key = next(k for k in third["proposal"]["candidate"] if k.endswith("generations"))
        value = next(v for v in (4, 8, 12, 16) if v != third["proposal"]["candidate"][key])
        brain.decisions.append({"status": "approved", "notes": "try a different budget",
                                "candidate": {"generations": value}})
        run_claude(claude, api, project, f"/approve {session}")
        fourth = wait_for_new_action(session, third["action_id"])
        # stop
        brain.decisions.append({"status": "stop", "notes": "enough for today"})
        run_claude(claude, api, project, f"/approve {session}")
        stopped = wait_for_status(session, "stopped", action_id=fourth["action_id"])
    assert not brain.refusals, brain.refusals
    assert session_driver.wait(30) == 0
    runs = history(session)
    assert [r["iteration"] for r in runs] == [0, 1, 2]
    assert runs[1]["decision"]["status"] == "approved" and runs[1]["decision"]["notes"] == "first proposal looks sound"
    assert runs[2]["rejected_action_ids"] == [second["action_id"]]
    assert runs[2]["decision"]["edited"] is True and runs[2]["config_updates"][key] == value
    assert stopped["decision"]["status"] == "stop" and stopped["notes"] == "enough for today"
    summary = json.loads((session / "session_summary.json").read_text())
    assert summary["status"] == "stopped"
    # every decision was one Edit, and the main agent read the feedback only after the approver had finished
    assert sum(e.startswith("approver: edit") for e in brain.events) == 4
    waits = [i for i, e in enumerate(brain.events) if e == "main: waiting for the notification"]
    reads = [i for i, e in enumerate(brain.events) if e == "main: notified, reading the feedback"]
    assert len(waits) == len(reads) == 4 and all(w < r for w, r in zip(waits, reads, strict=True))


def test_approve_without_argument_and_nothing_pending_says_so(claude: Path, project: Path) -> None:
    brain = Brain()
    with StandInAPI(brain) as api:
        result = run_claude(claude, api, project, "/approve")
    assert "no self-evolution session is awaiting approval" in result["result"]


async def test_agent_mutator_answered_by_claude_code_started_elsewhere(
        claude: Path, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline runs in one directory (a relative run dir outside the project), Claude Code in another."""
    from alpha_evolve.blocks import extract_blocks
    from alpha_evolve.mutators.agent import AgentMutator
    from alpha_evolve.mutators.base import MutationRequest

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code = (ROOT / "alpha_evolve" / "strategies" / "momentum.py").read_text()
    mutator = AgentMutator("pipeline_runs_cs/run_x", timeout=90)
    request = MutationRequest(request_id="x-1", experiment="x", iteration=1, parent_id="1", parent_code=code,
                              parent_blocks=extract_blocks(code), parent_metrics={"Sharpe": 0.4})
    task = asyncio.create_task(mutator.mutate(request))
    pending = elsewhere / "pipeline_runs_cs" / "run_x" / "mutations" / "requests" / "x-1-a1.json"
    while not pending.exists() and not task.done():
        await asyncio.sleep(0.02)
    brain = Brain()
    with StandInAPI(brain) as api:
        prompt = f"Answer the alpha-evolve mutation request {pending} with the alpha-evolve-mutator agent."
        await asyncio.to_thread(run_claude, claude, api, project, prompt)
        response = await asyncio.wait_for(task, 60)
    assert not brain.refusals, brain.refusals
    assert response.ok, response.error
    assert "* 1.002" in str(response.code) and response.request_id == "x-1-a1"
    done = elsewhere / "pipeline_runs_cs" / "run_x" / "mutations" / "done"
    assert (done / "x-1-a1.response.json").exists() and not list(project.rglob("x-1-a1*"))
