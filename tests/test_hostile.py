"""The hostile corpus (tests/hostile/*.py): candidates written as an attacker would, run for real on the local
worker pool. The attack tests shared with the Ray backend live in tests/_hostile_suite.py and are collected here.

Two evaluators: ``guarded`` is the normal one (Python guards on: policy, module views, audit hook) and runs the
attacks whose every name passes the static policy; ``bare`` switches every Python-level guard off in the template,
so what stops an attack there is the boundary alone: the kernel (Landlock + seccomp + rlimits) and the trusted
replay. Both are built while a fake ANTHROPIC_API_KEY sits in this process's environment.

Checked against the evaluator before #9 (main at 8d252c0, same data): purge_losers scored Sharpe 3.28 where its
honest replay scores far less; rebind_update_wrapper / rebind_global_enum / poison changed the figures of the next
honest candidate in the same worker; secret_format returned the parent's ANTHROPIC_API_KEY in the result's error
and printed os.environ on the CLI's stdout; stdout_forge put a forged result line on stdout; lookahead_frames (with
the Python guards off, as its frame walk needs) scored Sharpe 16.3 on validation.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpha_evolve.evaluator import StrategyEvaluator
from alpha_evolve.policy import check_policy
from tests._evaluator_helpers import MOMENTUM, splits
from tests._hostile_suite import FAKE_KEY, LEAN, HostileAttacks, hostile


def _build(**kwargs: object) -> StrategyEvaluator:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        mp.setenv("GITHUB_TOKEN", FAKE_KEY)
        return StrategyEvaluator({"SYN": splits(n=240)}, LEAN, max_concurrent=2, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def guarded() -> Iterator[StrategyEvaluator]:
    with _build() as ev:
        yield ev


@pytest.fixture(scope="module")
def bare() -> Iterator[StrategyEvaluator]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("alpha_evolve.policy.check_policy", lambda code: [])  # the parent's static stage
        with _build(disable_python_guards_for_tests=True) as ev:
            yield ev


POLICY_PASSING = ["purge_losers", "rebind_update_wrapper", "rebind_global_enum", "secret_format", "poison",
                  "stdout_forge"]  # fmt: skip


class TestHostileAttacks(HostileAttacks):
    """The shared attack suite (tests/_hostile_suite.py) on the local worker pool."""


@pytest.mark.parametrize("name", POLICY_PASSING)
def test_attack_passes_the_static_policy(name: str) -> None:
    """These attacks are not stopped early: they must be stopped by the boundary."""
    assert check_policy(hostile(name)) == []


def test_tampered_fake_is_a_real_attack() -> None:
    """Without the replay check the purge attack changes the figures its own process reports."""
    from alpha_evolve import replay
    from alpha_evolve.backtest import prepare_bars, run_backtest

    prepared = prepare_bars("SYN", splits(n=240).train, LEAN)
    claim = run_backtest(hostile("purge_losers"), prepared, LEAN)
    assert claim.status == "ok"
    trusted = replay.run_replay(prepared, LEAN, claim.decisions)
    assert len(claim.fills) < len(trusted.fills)  # losing trips vanished from the claimed fills
    assert claim.metrics["TotalReturn"] > trusted.metrics["TotalReturn"]


def test_secret_not_in_the_template_environment(guarded: StrategyEvaluator) -> None:
    environ = Path(f"/proc/{guarded.template_pid}/environ").read_bytes()
    assert FAKE_KEY.encode() not in environ and b"ANTHROPIC" not in environ



def test_backtest_json_is_one_trusted_object(tmp_path: Path) -> None:
    """The CLI with a printing, secret-hunting strategy and a key in its environment: one JSON line, no key."""
    from tests._cli import run_cli

    forge = tmp_path / "forge.py"
    forge.write_text(hostile("stdout_forge"))
    proc = run_cli("backtest", "--strategy-file", str(forge), "--json", env={"ANTHROPIC_API_KEY": FAKE_KEY})
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout[:500]
    out = json.loads(lines[0])
    assert out["status"] == "ok" and '"Sharpe": 42.0' in out["log"] and out["metrics"]["Sharpe"] != 42.0
    assert len(proc.stdout) < 200_000 and "x" * 100 not in proc.stderr
    secret = tmp_path / "secret.py"
    secret.write_text(hostile("secret_format"))
    proc = run_cli("backtest", "--strategy-file", str(secret), "--json", env={"ANTHROPIC_API_KEY": FAKE_KEY})
    assert len(proc.stdout.splitlines()) == 1 and json.loads(proc.stdout)["status"] == "runtime"
    assert "LOOT" in proc.stdout and FAKE_KEY not in proc.stdout + proc.stderr


def test_lookahead_is_caught_at_the_screen_cut_on_train(tmp_path: Path) -> None:
    """With the quick screen on, every train evaluation compares its decisions with the screen's truncated run."""
    code = hostile("lookahead_frames").replace("if i + 1 < len(self.closes) and self.closes[i + 1] > self.closes[i]",
                                                "if max(self.closes[i + 1:i + 6] or [0.0]) > self.closes[i]")
    settings = dataclasses.replace(LEAN, screen_fraction=0.5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("alpha_evolve.policy.check_policy", lambda code: [])
        with StrategyEvaluator({"SYN": splits(n=240)}, settings, 1, disable_python_guards_for_tests=True) as ev:
            result = ev.evaluate(code)
            assert result.status == "lookahead", (result.status, result.error)
            assert ev.evaluate(MOMENTUM).ok


def test_kernel_confinement_probe_and_documented_opt_out() -> None:
    from alpha_evolve import confinement

    assert confinement.landlock_abi() >= 1 and confinement.probe() is None  # this machine: fail closed is moot
    settings = dataclasses.replace(LEAN, allow_unconfined=True)
    with StrategyEvaluator({"SYN": splits(n=240)}, settings, 1) as ev:
        assert ev.confinement.startswith("off")
        assert ev.evaluate(MOMENTUM).ok  # still scored by the trusted replay


def test_vector_replay_reproduces_the_engine_replay() -> None:
    """The train-time numpy replay against the engine replay, on seeds and random logs, thick and thin books."""
    import random

    from alpha_evolve import replay
    from alpha_evolve.backtest import prepare_bars, run_backtest
    from alpha_evolve.synthetic import synthetic_bars

    compared = 0
    for seed, thin in ((1, False), (2, True)):
        settings = dataclasses.replace(LEAN, taker_fee=0.002 if thin else 0.001, trade_fraction=0.6 if thin else 0.95,
                                       fill_model="volume" if thin else "close", slippage_bps=7.0 if thin else 0.0)
        bars = synthetic_bars(300, seed=seed)
        if thin:  # partial fills: the "volume" model fills only volume_share of a bar's volume at the close
            bars["volume"] = (bars["volume"] / 2000).round() + 1
        prepared = prepare_bars("SYN", bars, settings)
        rng = random.Random(seed)
        logs = [run_backtest(MOMENTUM, prepared, settings).decisions]
        logs += [sorted((rng.randrange(300), rng.choice([0, 1, 1, 2])) for _ in range(40)) for _ in range(3)]
        for log in logs:
            vector = replay.vector_fills(prepared, settings, log)
            if vector is None:  # a case the numpy replay leaves to the engine (two orders in one bar)
                continue
            engine = replay.run_replay(prepared, settings, log)
            assert replay.fills_agree(engine.fills, vector), (seed, thin)
            compared += 1
    assert compared >= 6


def test_fast_and_engine_replay_give_identical_figures() -> None:
    data = {"SYN": splits(n=240)}
    with StrategyEvaluator(data, LEAN, 1) as fast, StrategyEvaluator(data, LEAN, 1, fast_replay=False) as engine:
        for code in (MOMENTUM, hostile("purge_losers")):
            a, b = fast.evaluate(code), engine.evaluate(code)
            assert (a.status, a.metrics, a.equity) == (b.status, b.metrics, b.equity)
