"""The hostile corpus (tests/hostile/*.py) as one suite for every evaluation backend.

The attack tests in ``HostileAttacks`` take two evaluators as fixtures: ``guarded`` (Python guards on) and
``bare`` (every Python-level guard off, so the kernel and the trusted replay are what stops the attack).
tests/test_hostile.py collects them with local ``StrategyEvaluator``s, tests/test_ray_hostile.py with
``RayEvaluator``s on a two-node cluster: the same attacks must meet the same typed refusals and leave the same
honest figures on both. Not collected by itself: its name starts with ``_`` and the class's with ``Hostile``.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests._evaluator_helpers import MOMENTUM, SETTINGS, candidate

HOSTILE = Path(__file__).parent / "hostile"
FAKE_KEY = "sk-ant-api03-FAKE-tamper-test-0123456789"
LEAN = dataclasses.replace(SETTINGS, screen_fraction=0.0, soft_timeout_seconds=4.0, hard_timeout_seconds=6.0)


def hostile(name: str, **replace: str) -> str:
    code = (HOSTILE / f"{name}.py").read_text()
    for key, value in replace.items():
        code = code.replace(f'{key} = "/tmp/never"', f"{key} = {value!r}").replace(f"{key} = 9", f"{key} = {value}")
    return code


class HostileAttacks:
    """The attacks every evaluation backend must stop. A backend's test module subclasses this as ``Test…`` and
    provides module fixtures ``guarded`` and ``bare`` (evaluators built while ``FAKE_KEY`` is in the environment)."""

    @pytest.fixture(scope="class")
    @classmethod
    def honest(cls, guarded: Any) -> dict[str, float]:
        result = guarded.evaluate(MOMENTUM)
        assert result.ok, result.error
        return result.metrics

    @pytest.mark.parametrize("name", ["purge_losers", "rebind_update_wrapper", "rebind_global_enum"])
    def test_fitness_fakes_are_refused_as_tampered(self, guarded: Any, bare: Any, name: str) -> None:
        for ev in (guarded, bare):
            result = ev.evaluate(hostile(name))
            assert result.status == "tampered", (name, result.status, result.error)
            assert not result.metrics

    def test_secret_never_reaches_the_candidate(self, guarded: Any) -> None:
        result = guarded.evaluate(hostile("secret_format"))
        dumped = json.dumps(result.to_dict())
        assert "LOOT" in dumped and "PATH" in dumped  # the format chain did reach os.environ and printed it
        assert FAKE_KEY not in dumped and "ANTHROPIC" not in dumped and "GITHUB_TOKEN" not in dumped

    def test_file_writes_are_refused_by_the_kernel(self, bare: Any, tmp_path: Path) -> None:
        target = tmp_path / "escaped"
        result = bare.evaluate(hostile("file_write", TARGET=str(target)))
        assert result.ok, result.error
        assert "refused: PermissionError" in result.log
        assert not target.exists() and not Path(str(target) + ".npy").exists()

    def test_network_is_refused_by_the_kernel(self, bare: Any) -> None:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        try:
            result = bare.evaluate(hostile("network", PORT=str(port)))
            assert result.ok, result.error
            assert result.log.count("refused:") >= 3
            with pytest.raises(TimeoutError):
                server.accept()
        finally:
            server.close()

    def test_processes_and_signals_are_refused(self, bare: Any, tmp_path: Path) -> None:
        target = tmp_path / "spawned"
        result = bare.evaluate(hostile("spawn", TARGET=str(target)))
        assert result.ok, result.error
        assert result.log.count("refused:") >= 6  # every route, on every bar
        assert not target.exists()
        assert bare.evaluate(MOMENTUM).ok  # the slots and this process are alive

    def test_stdout_forging_and_flood_are_captured(self, guarded: Any, capfd: pytest.CaptureFixture[str]) -> None:
        result = guarded.evaluate(hostile("stdout_forge"))
        out, err = capfd.readouterr()
        assert "Sharpe" not in out and "x" * 100 not in out + err
        assert result.ok and '"Sharpe": 42.0' in result.log
        assert len(result.log) < 70_000 and "more bytes of output dropped" in result.log

    def test_poisoning_does_not_reach_the_next_candidate(self, guarded: Any, honest: dict[str, float]) -> None:
        for _ in range(2):  # both slots see the poison first
            guarded.evaluate_many([hostile("poison"), hostile("poison")])
            after = guarded.evaluate(MOMENTUM)
            assert after.ok and after.metrics == honest

    def test_lookahead_is_refused_on_promoting_splits(self, bare: Any) -> None:
        code = hostile("lookahead_frames")
        train = bare.evaluate(code)  # train: no causality check, but the trusted replay still scores it
        assert train.ok and train.metrics["Sharpe"] > 3  # the attack works: it trades on the next close
        result = bare.evaluate(code, split="validation")
        assert result.status == "lookahead", (result.status, result.error)
        assert bare.evaluate(MOMENTUM, split="validation").ok  # an honest strategy passes the same check

    def test_the_candidate_process_holds_no_bars_but_its_own(self, bare: Any) -> None:
        # the worker's other datasets, the truth behind a causality run's mirrored future, the checked run's
        # decisions: a frame walk finds none of them, so this attack has nothing to peek at on any split
        code = hostile("lookahead_state")
        for split in ("train", "validation"):
            result = bare.evaluate(code, split=split)
            assert result.status == "lookahead" or (result.ok and result.metrics["Trades"] == 0), (
                split, result.status, result.metrics)

    def test_the_market_generator_cannot_be_read_to_recompute_the_future(self, bare: Any) -> None:
        result = bare.evaluate(hostile("regenerate_market"))
        assert result.status == "runtime" and "synthetic" in (result.error or ""), (result.status, result.error)

    @pytest.mark.parametrize(
        ("body", "kinds"),
        [
            ("x = []\nwhile True:\n    x.append(bytearray(10**7))", ("memory",)),
            ("while True:\n    pass", ("timeout",)),
            ("sum(range(10**13))", ("timeout",)),
            ("import os\nimport signal\nos.kill(os.getpid(), signal.SIGKILL)", ("crash",)),
            ("import os\nimport signal\nos.kill(os.getpid(), signal.SIGSTOP)", ("crash",)),
            ("import os\nos._exit(0)", ("crash",)),
        ],
        ids=["memory", "cpu-loop", "c-level-hang", "kill-self", "stop-self", "exit-self"],
    )
    def test_resource_exhaustion_is_typed_and_contained(
        self, bare: Any, honest: dict[str, float], body: str, kinds: tuple[str, ...]
    ) -> None:
        started = time.monotonic()
        result = bare.evaluate(candidate(body))
        assert result.status in kinds, (result.status, result.error)
        assert time.monotonic() - started < LEAN.hard_timeout_seconds + 5
        after = bare.evaluate(MOMENTUM)
        assert after.ok and after.metrics == honest

    def test_concurrent_hostile_and_honest(self, bare: Any, honest: dict[str, float]) -> None:
        codes = [hostile("rebind_update_wrapper"), MOMENTUM, candidate("import os\nos._exit(0)"), MOMENTUM]
        results = bare.evaluate_many(codes)
        assert [r.status for r in results] == ["tampered", "ok", "crash", "ok"]
        assert results[1].metrics == honest == results[3].metrics
