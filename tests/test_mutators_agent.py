"""AgentMutator: a thread plays the Claude Code subagent on real files watched by real watchdog observers."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from alpha_evolve.blocks import extract_blocks, validate_candidate
from alpha_evolve.files import schema_errors
from alpha_evolve.mutators import make_mutator
from alpha_evolve.mutators.agent import AgentMutator
from alpha_evolve.mutators.base import MutationRequest

SEEDS = Path(__file__).resolve().parent.parent / "alpha_evolve" / "strategies"
MOMENTUM = (SEEDS / "momentum.py").read_text()
NEW_LOGIC = ("if self.fast_ema.value > self.slow_ema.value * 1.001:\n    self.go_long()\n"
             "elif self.fast_ema.value < self.slow_ema.value:\n    self.go_flat()\n")


def _request(rid: str = "req-1") -> MutationRequest:
    return MutationRequest(request_id=rid, experiment="exp", iteration=1, parent_id="p0", parent_code=MOMENTUM,
                           parent_blocks=extract_blocks(MOMENTUM),
                           parent_metrics={"Calmar": 0.5, "Sharpe": 0.9, "holdout_Calmar": 3.0})


class FakeAgent:
    """Watches requests/ like a Claude Code session would and answers with ``answer(request) -> dict``."""

    def __init__(self, run_dir: Path, answer: Callable[[dict], dict | bytes], write: str = "atomic") -> None:
        self.requests = run_dir / "mutations" / "requests"
        self.requests.mkdir(parents=True, exist_ok=True)
        self.answer = answer
        self.write = write
        self.seen: queue.Queue[Path] = queue.Queue()
        self.requests_seen: list[dict] = []
        self.done = threading.Event()
        self.errors: list[BaseException] = []
        agent = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                path = event.dest_path if event.event_type == "moved" else event.src_path
                if event.event_type in ("moved", "closed") and str(path).endswith(".json"):
                    agent.seen.put(Path(os.fsdecode(path)))

        self.observer = Observer()
        self.observer.schedule(Handler(), str(self.requests))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeAgent:
        self.observer.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seen.put(Path("STOP"))
        self.thread.join(5)
        self.observer.stop()
        self.observer.join(5)

    def _run(self) -> None:
        try:
            path = self.seen.get(timeout=60)
            if path.name == "STOP":
                return
            doc = json.loads(path.read_text())
            self.requests_seen.append(doc)
            answer = self.answer(doc)  # bytes are written as they are (a malformed document)
            reply = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            target = Path(doc["response_path"])
            if self.write == "atomic":  # like Claude Code's Write tool: temp file, then rename
                tmp = target.with_name(f"{target.name}.tmp.{os.getpid()}.ab12")
                tmp.write_bytes(reply)
                os.replace(tmp, target)
            else:  # a slow in-place writer: half a document, a pause, then the rest
                with open(target, "wb") as fh:
                    fh.write(reply[: len(reply) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                    time.sleep(0.3)  # simulated slowness of the writer, not synchronisation
                    fh.write(reply[len(reply) // 2:])
            self.done.set()
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)


def good_answer(doc: dict) -> dict:
    return {"request_id": doc["request_id"], "blocks": {"decision_logic": NEW_LOGIC}, "notes": "tighter entry"}


@pytest.mark.parametrize("write", ["atomic", "slow"])
async def test_agent_answer_becomes_a_valid_candidate_promptly(tmp_path, write):
    m = AgentMutator(tmp_path, timeout=20, safety_poll=30)  # only watchdog events can wake it in time
    with FakeAgent(tmp_path, good_answer, write=write) as agent:
        t0 = time.monotonic()
        resp = await m.mutate(_request())
        elapsed = time.monotonic() - t0
    assert not agent.errors
    assert resp.ok, resp.error
    validate_candidate(MOMENTUM, str(resp.code))
    assert "* 1.001" in str(resp.code) and resp.notes == "tighter entry"
    assert resp.blocks["indicators"] == extract_blocks(MOMENTUM)["indicators"]  # untouched block kept
    assert elapsed < 5, elapsed
    # the request the agent saw is schema-valid and carries train metrics only
    doc = agent.requests_seen[0]
    assert schema_errors("mutation_request", doc) == []
    assert "holdout_Calmar" not in doc["parent_metrics"] and doc["parent_metrics"]["Calmar"] == 0.5
    assert doc["blocks_to_change"] == ["indicators", "decision_logic"]
    # consumed files are archived, nothing left pending
    root = tmp_path / "mutations"
    assert not list((root / "requests").iterdir()) and not list((root / "responses").glob("*.json"))
    assert (root / "done" / "req-1-a1.request.json").exists() and (root / "done" / "req-1-a1.response.json").exists()
    assert resp.request_id == "req-1-a1" and Path(doc["response_path"]).is_absolute()


async def test_polling_fallback_without_observer(tmp_path):
    m = AgentMutator(tmp_path, timeout=20, use_observer=False, poll_interval=0.05)
    with FakeAgent(tmp_path, good_answer):
        resp = await m.mutate(_request())
    assert resp.ok, resp.error


async def test_timeout_then_late_answer_is_ignored_and_reported(tmp_path, caplog):
    m = AgentMutator(tmp_path, timeout=0.3)
    t0 = time.monotonic()
    resp = await m.mutate(_request("slowpoke"))
    assert time.monotonic() - t0 < 3
    assert resp.failure_kind == "timeout" and "0.3s" in str(resp.error)
    root = tmp_path / "mutations"
    assert not (root / "requests" / "slowpoke-a1.json").exists()
    assert (root / "expired" / "slowpoke-a1.json").exists()
    # the agent answers after all: the next call sets it aside and reports it
    (root / "responses" / "slowpoke-a1.json").write_text(json.dumps(good_answer({"request_id": "slowpoke-a1"})))
    with FakeAgent(tmp_path, good_answer):
        nxt = await m.mutate(_request("req-2"))
    assert nxt.ok
    assert m.late_answers == ["slowpoke-a1"]
    assert (root / "late" / "slowpoke-a1.json").exists()
    assert "late answer" in caplog.text


async def test_each_attempt_has_its_own_files_and_a_late_answer_never_answers_the_retry(tmp_path):
    """Attempt 2 gets a new id: attempt 1's expired request and late answer stay apart from it."""
    import asyncio

    m = AgentMutator(tmp_path, timeout=0.2, use_observer=False, poll_interval=0.05)
    first = await m.mutate(_request("it-7"))
    assert first.failure_kind == "timeout" and first.request_id == "it-7-a1"
    root = tmp_path / "mutations"
    m.timeout = 5.0
    retry = asyncio.create_task(m.mutate(_request("it-7").with_error("timed out", 2)))
    request_file = root / "requests" / "it-7-a2.json"
    while not request_file.exists():
        await asyncio.sleep(0.01)
    doc = json.loads(request_file.read_text())
    assert doc["request_id"] == "it-7-a2" and doc["attempt"] == 2 and doc["previous_error"] == "timed out"
    # attempt 1's answer arrives late: set aside, never taken for attempt 2
    (root / "responses" / "it-7-a1.json").write_text(json.dumps(good_answer({"request_id": "it-7-a1"})))
    assert m.sweep_late() == ["it-7-a1"]
    (root / "responses" / "it-7-a2.json").write_text(json.dumps(good_answer(doc)))
    resp = await retry
    assert resp.ok and resp.request_id == "it-7-a2", resp.error
    assert (root / "expired" / "it-7-a1.json").exists() and (root / "done" / "it-7-a2.request.json").exists()
    # a resumed run re-making attempt 1 does not reuse a name already on disk
    assert m.attempt_id(_request("it-7")) == "it-7-a1-r1"


async def test_a_cancelled_wait_withdraws_its_request_and_a_dead_process_leftover_is_expired(tmp_path):
    import asyncio

    m = AgentMutator(tmp_path, timeout=60, use_observer=False, poll_interval=0.05)
    task = asyncio.create_task(m.mutate(_request("stop-me")))
    root = tmp_path / "mutations"
    while not (root / "requests" / "stop-me-a1.json").exists():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not list((root / "requests").iterdir())
    assert (root / "expired" / "stop-me-a1.json").exists()
    # a request left behind by a killed process is expired when the run directory is opened again
    (root / "requests" / "orphan-a1.json").write_text("{}")
    AgentMutator(tmp_path, timeout=5)
    assert not (root / "requests" / "orphan-a1.json").exists() and (root / "expired" / "orphan-a1.json").exists()


async def test_invalid_code_in_answer_fails_with_validation_error(tmp_path):
    def bad(doc: dict) -> dict:
        return {"request_id": doc["request_id"], "blocks": {"decision_logic": "import os\nself.go_long()\n"}}

    with FakeAgent(tmp_path, bad):
        resp = await AgentMutator(tmp_path, timeout=20).mutate(_request())
    assert not resp.ok and resp.failure_kind == "policy"
    assert "forbidden-import" in str(resp.error) and "import os" in resp.blocks["decision_logic"]


async def test_malformed_and_error_answers(tmp_path):
    with FakeAgent(tmp_path, lambda d: {"request_id": d["request_id"], "blocks": {"decision_logic": 5}}):
        resp = await AgentMutator(tmp_path, timeout=20).mutate(_request("a"))
    assert resp.failure_kind == "response" and "a-a1.json: $.blocks.decision_logic" in str(resp.error)

    with FakeAgent(tmp_path, lambda d: {"request_id": d["request_id"]}):
        resp = await AgentMutator(tmp_path, timeout=20).mutate(_request("b"))
    assert resp.failure_kind == "response" and "exactly one of 'blocks'" in str(resp.error)

    with FakeAgent(tmp_path, lambda d: {"request_id": d["request_id"], "error": "cannot improve this"}):
        resp = await AgentMutator(tmp_path, timeout=20).mutate(_request("c"))
    assert resp.failure_kind == "agent" and "cannot improve this" in str(resp.error)

    with FakeAgent(tmp_path, lambda d: {"request_id": "other", "blocks": {"decision_logic": NEW_LOGIC}}):
        resp = await AgentMutator(tmp_path, timeout=20).mutate(_request("d"))
    assert resp.failure_kind == "response" and "expected 'd-a1'" in str(resp.error)


async def test_malformed_json_answer_fails_once_it_stops_changing_not_at_the_timeout(tmp_path):
    def trailing_comma(doc: dict) -> bytes:  # what a careless hand-edit leaves behind
        return json.dumps(good_answer(doc))[:-1].encode() + b",}"

    m = AgentMutator(tmp_path, timeout=60, settle=0.3)
    with FakeAgent(tmp_path, trailing_comma) as agent:
        t0 = time.monotonic()
        resp = await m.mutate(_request("mangled"))
    assert not agent.errors
    assert time.monotonic() - t0 < 10
    assert resp.failure_kind == "response" and "mangled-a1.json: not valid JSON" in str(resp.error)
    assert (tmp_path / "mutations" / "done" / "mangled-a1.response.json").exists()


async def test_unchanged_answer(tmp_path):
    same = extract_blocks(MOMENTUM)["decision_logic"]
    with FakeAgent(tmp_path, lambda d: {"request_id": d["request_id"], "blocks": {"decision_logic": same}}):
        resp = await AgentMutator(tmp_path, timeout=20).mutate(_request())
    assert resp.failure_kind == "unchanged"


def test_make_mutator_agent_needs_run_dir(tmp_path):
    with pytest.raises(ValueError, match="run_dir"):
        make_mutator("agent")
    m = make_mutator("agent", run_dir=tmp_path, timeout=5.0, model="ignored")
    assert isinstance(m, AgentMutator) and m.timeout == 5.0


def test_subagent_definition_is_well_formed():
    path = Path(__file__).resolve().parent.parent / ".claude" / "agents" / "alpha-evolve-mutator.md"
    text = path.read_text()
    assert text.startswith("---\n")
    front = text.split("---\n")[1]
    fields = dict(line.split(":", 1) for line in front.strip().splitlines())
    assert fields["name"].strip() == "alpha-evolve-mutator"
    assert {t.strip() for t in fields["tools"].split(",")} == {"Read", "Write"}
    assert fields["description"].strip() and fields["model"].strip()
    assert "response_path" in text and "nautilus_trader.indicators" in text
