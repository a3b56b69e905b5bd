"""The worker pool for real: forked workers, real engines, real signals, real kills."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from alpha_evolve.backtest import BacktestSettings
from alpha_evolve.evaluator import EvalResult, StrategyEvaluator
from tests._evaluator_helpers import MOMENTUM, SETTINGS, candidate, splits

# Runtime-guard tests: touching 256 MiB of pages takes ~0.5 s alone and several times that on a loaded machine.
GUARD_SOFT = 4.0
GUARD_SETTINGS = dataclasses.replace(SETTINGS, soft_timeout_seconds=GUARD_SOFT, hard_timeout_seconds=GUARD_SOFT + 2)


@pytest.fixture(scope="module")
def evaluator() -> Iterator[StrategyEvaluator]:
    with StrategyEvaluator({"SYN": splits()}, SETTINGS, max_concurrent=2) as ev:
        yield ev


@pytest.fixture(scope="module")
def unpoliced() -> Iterator[StrategyEvaluator]:
    """An evaluator whose static policy and restricted imports/builtins are switched off (in the parent and, by
    fork, in its workers), so the audit hook, timeouts and limits are what stops the candidate."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("alpha_evolve.policy.check_policy", lambda code: [])
        mp.setattr("alpha_evolve.policy.module_or_parent_allowed", lambda module: True)
        mp.setattr("alpha_evolve.policy.FORBIDDEN_BUILTINS", frozenset())
        with StrategyEvaluator(
            {"SYN": splits()}, GUARD_SETTINGS, max_concurrent=2, disable_python_guards_for_tests=True
        ) as ev:
            yield ev


def test_momentum_seed_full_cascade(evaluator: StrategyEvaluator) -> None:
    result = evaluator.evaluate(MOMENTUM)
    assert result.status == "ok", result.error
    assert (result.stage, result.split, result.passed) == ("full", "train", True)
    assert result.bars == 400
    assert result.metrics["Trades"] >= 1 and result.metrics["worst_Sharpe"] == result.metrics["Sharpe"]
    assert set(result.per_instrument) == {"SYN"}
    assert result.equity[0][0].startswith("2015-01-02") and result.equity[0][1] == pytest.approx(100_000.0)
    again = EvalResult.from_dict(orjson.loads(orjson.dumps(result.to_dict())))
    assert again == result


def test_validation_and_holdout_only_when_asked(evaluator: StrategyEvaluator) -> None:
    val = evaluator.evaluate(MOMENTUM, split="validation")
    assert (val.status, val.stage, val.bars) == ("ok", "full", 200)
    hold = evaluator.evaluate(MOMENTUM, split="holdout")
    assert (hold.status, hold.bars) == ("ok", 200)
    assert hold.equity[0][0] > val.equity[-1][0] > evaluator.evaluate(MOMENTUM).equity[-1][0]
    with pytest.raises(ValueError, match="split"):
        evaluator.evaluate(MOMENTUM, split="test")


def test_evaluator_without_holdout_bars() -> None:
    s = splits()
    with StrategyEvaluator({"SYN": {"train": s.train, "validation": s.validation}}, SETTINGS, 1) as ev:
        result = ev.evaluate(MOMENTUM, split="holdout")
    assert result.status == "data" and "holdout" in (result.error or "")


def test_static_stage_runs_nothing(evaluator: StrategyEvaluator, tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    bad = candidate(f"open({str(target)!r}, 'w').write('x')")
    result = evaluator.evaluate(bad)
    assert (result.status, result.stage) == ("policy", "static")
    assert "open" in (result.error or "")
    assert not target.exists()
    assert evaluator.evaluate("def broken(:\n", stage="full").status == "syntax"
    only_static = evaluator.evaluate(MOMENTUM, stage="static")
    assert (only_static.status, only_static.stage, only_static.passed, only_static.bars) == ("ok", "static", True, 0)


def test_screen_rejects_a_candidate_that_never_trades(evaluator: StrategyEvaluator) -> None:
    result = evaluator.evaluate(candidate("pass"))
    assert (result.status, result.stage, result.passed) == ("ok", "screen", False)
    assert "round trips" in (result.reason or "")
    assert result.bars == int(400 * SETTINGS.screen_fraction)
    screened = evaluator.evaluate(MOMENTUM, stage="screen")
    assert (screened.stage, screened.passed, screened.bars) == ("screen", True, 120)


def test_runtime_error_names_the_line(evaluator: StrategyEvaluator) -> None:
    result = evaluator.evaluate(candidate("raise ValueError('bad signal')"))
    assert result.status == "runtime"
    assert result.error == "ValueError: bad signal (line 10)"


def test_infinite_loop_times_out(unpoliced: StrategyEvaluator) -> None:
    started = time.monotonic()
    result = unpoliced.evaluate(candidate("while True:\n    pass"))
    assert result.status == "timeout" and "soft timeout" in (result.error or "")
    assert time.monotonic() - started < GUARD_SOFT + 5


def test_c_level_hang_is_killed_at_the_hard_timeout(unpoliced: StrategyEvaluator) -> None:
    before = set(unpoliced.worker_pids)
    started = time.monotonic()
    result = unpoliced.evaluate(candidate("sum(range(10**13))"))  # one C call: SIGALRM cannot interrupt it
    assert result.status == "timeout" and "hard timeout" in (result.error or "")
    assert time.monotonic() - started < GUARD_SETTINGS.hard_timeout_seconds + 5
    # Only the single-use candidate process was killed: the slots live on and the next candidate is unaffected.
    assert set(unpoliced.worker_pids) == before
    assert unpoliced.evaluate(MOMENTUM).status == "ok"


@pytest.mark.parametrize("body", ["x = [0] * 10**10", "x = []\nwhile len(x) >= 0:\n    x.append([0] * 10**6)"])
def test_memory_bomb(unpoliced: StrategyEvaluator, body: str) -> None:
    started = time.monotonic()
    result = unpoliced.evaluate(candidate(body))
    assert result.status == "memory", result.error
    assert time.monotonic() - started < GUARD_SOFT + 5


def test_worker_crash(unpoliced: StrategyEvaluator) -> None:
    before = set(unpoliced.worker_pids)
    started = time.monotonic()
    result = unpoliced.evaluate(candidate("import os\nos._exit(3)"))
    assert result.status == "crash" and "code 3" in (result.error or "")
    assert time.monotonic() - started < 5
    assert set(unpoliced.worker_pids) == before  # the candidate's own process died, not the slot
    assert unpoliced.evaluate(MOMENTUM).status == "ok"


def test_sandbox_refuses_writes_and_network(unpoliced: StrategyEvaluator, tmp_path: Path) -> None:
    """With every Python-level guard off, the kernel (Landlock + seccomp) is what refuses."""
    target = tmp_path / "written.txt"
    wrote = unpoliced.evaluate(candidate(f"open({str(target)!r}, 'w').write('x')"))
    assert wrote.status == "runtime" and "PermissionError" in (wrote.error or "")
    assert not target.exists()
    net = unpoliced.evaluate(candidate("import socket\nsocket.create_connection(('127.0.0.1', 9))"))
    assert net.status == "runtime" and "PermissionError" in (net.error or "")
    proc = unpoliced.evaluate(candidate(f"import os\nos.system('touch {target}')\nself.go_long()"))
    assert proc.status == "ok"  # os.system returned an error code: no shell ever ran
    assert not target.exists()


def test_recycling_replaces_the_replay_process() -> None:
    """Candidate processes are single-use; the trusted replay worker (engines leak) is recycled by tasks."""
    settings = BacktestSettings(recycle_after=2, screen_fraction=0.0)
    with StrategyEvaluator({"SYN": splits()}, settings, max_concurrent=1, fast_replay=False) as ev:
        slots = ev.worker_pids
        assert ev.evaluate(MOMENTUM).ok and ev.replay_workers_started == 1
        assert ev.evaluate(MOMENTUM).ok and ev.replay_workers_started == 1
        assert ev.evaluate(MOMENTUM).ok and ev.replay_workers_started == 2
        assert ev.worker_pids == slots and ev.workers_started == 1


def test_recycling_by_bars_run() -> None:
    settings = BacktestSettings(recycle_after_bars=500, screen_fraction=0.0)
    with StrategyEvaluator({"SYN": splits()}, settings, max_concurrent=1, fast_replay=False) as ev:
        assert ev.evaluate(MOMENTUM).ok and ev.replay_workers_started == 1  # 400 bars
        assert ev.evaluate(MOMENTUM).ok and ev.replay_workers_started == 1  # 800 >= 500: recycled after it
        assert ev.evaluate(MOMENTUM).ok and ev.replay_workers_started == 2


def test_concurrency_limit_and_order(evaluator: StrategyEvaluator) -> None:
    codes = [MOMENTUM, candidate("raise KeyError('k')")] * 3
    results = evaluator.evaluate_many(codes)
    assert [r.status for r in results] == ["ok", "runtime"] * 3
    assert evaluator.peak_concurrency == 2


async def test_async_api_respects_the_limit() -> None:
    async with StrategyEvaluator({"SYN": splits()}, SETTINGS, max_concurrent=1) as ev:
        results = await asyncio.gather(*(ev.aevaluate(MOMENTUM) for _ in range(3)))
        assert all(r.ok for r in results)
        assert ev.peak_concurrency == 1


def test_universe_mean_and_worst() -> None:
    data = {"AAA": splits(seed=1), "BBB": splits(seed=2)}
    with StrategyEvaluator(data, SETTINGS, max_concurrent=1) as ev:
        result = ev.evaluate(MOMENTUM, split="validation")
    assert result.ok and set(result.per_instrument) == {"AAA", "BBB"}
    sharpes = [m["Sharpe"] for m in result.per_instrument.values()]
    assert result.metrics["worst_Sharpe"] == min(sharpes)
    assert result.metrics["Sharpe"] == pytest.approx(sum(sharpes) / 2)
    assert result.equity[0][1] == pytest.approx(100_000.0)


def test_close_stops_workers() -> None:
    ev = StrategyEvaluator({"SYN": splits()}, SETTINGS, max_concurrent=2)
    pids = [*ev.worker_pids, ev.template_pid]
    ev.close()
    ev.close()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    assert os.getpid() not in pids
    with pytest.raises(RuntimeError):
        ev.evaluate(MOMENTUM)
