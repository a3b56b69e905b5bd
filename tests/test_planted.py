"""The planted synthetic market really holds its rule, and the default demo really shows progress.

The oracle (strategies/oracle.py) must beat buy-and-hold and the default seed on every split for several generator
seeds — computed on NautilusTrader's engine and, independently, by a vectorised numpy re-implementation that must
agree with it. The default pipeline run (configs/default.toml, offline mutator) must beat its seed on validation
and on the holdout, opened through the ledgered door.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alpha_evolve.config import RunConfig, load_config
from alpha_evolve.evaluation_setup import build_evaluator, load_run_data
from alpha_evolve.strategies import oracle, seed_source
from alpha_evolve.synthetic import planted_market
from tests import _planted_replica as replica
from tests._cli import run_cli

ROOT = Path(__file__).parents[1]
SPLITS = ("train", "validation", "holdout")


def test_planted_market_is_deterministic_and_its_regimes_recur_in_every_split() -> None:
    a, b = planted_market(seed=3), planted_market(seed=3)
    assert a.bars.equals(b.bars) and np.array_equal(a.regimes, b.regimes)
    assert not planted_market(seed=4).bars["close"].equals(a.bars["close"])
    n = len(a.regimes)
    for lo, hi in ((0, int(n * 0.6)), (int(n * 0.6), int(n * 0.8)), (int(n * 0.8), n)):
        part = a.regimes[lo:hi]
        starts = np.flatnonzero(np.diff(part) != 0) + 1
        spells = [part[s] for s in np.concatenate(([0], starts))]
        assert spells.count(0) >= 2 and spells.count(1) >= 2, (lo, hi, spells)
    # The rule is what the docstring says: trends move more efficiently than chop, and chop is more volatile.
    close = a.bars["close"].to_numpy()
    er = replica.efficiency_ratio(close, 15)
    returns = np.abs(np.diff(np.log(close)))
    assert np.nanmean(er[a.regimes == 0]) > np.nanmean(er[a.regimes == 1]) + 0.1
    assert returns[a.regimes[1:] == 1].mean() > 1.5 * returns[a.regimes[1:] == 0].mean()


@pytest.mark.parametrize("generator_seed", [7, 8, 9, 10])
def test_oracle_beats_buy_and_hold_and_the_seed_on_every_split(generator_seed: int) -> None:
    config = RunConfig().with_updates({"backtest.synthetic_seed": generator_seed})
    data = load_run_data(config)
    ppy = data.describe()["periods_per_year"]
    names = ("oracle", "buy_and_hold", config.evolution.seed_strategy)
    codes = [seed_source(n) for n in names]
    # A check of the generator, not of a run: no run's holdout is looked at, so there is nothing to ledger.
    with build_evaluator(config, data=data, include=SPLITS, unseal=True) as evaluator:
        engine = {split: dict(zip(names, evaluator.evaluate_many(codes, split=split, stage="full"), strict=True))
                  for split in SPLITS}
    for split in SPLITS:
        # Indicators see the bars just before a validation or holdout period (the engine's warm-up); decisions
        # and figures start with the period's first bar.
        before = data.splits["SYN"].warmup(split, config.backtest.warmup_bars)
        warm = before["close"].to_numpy() if before is not None else np.zeros(0)
        close = getattr(data.splits["SYN"], split)["close"].to_numpy()
        seen = np.concatenate([warm, close])
        targets = {
            "oracle": replica.oracle_targets(seen, oracle.EFFICIENCY_PERIOD, oracle.AVERAGE_PERIOD,
                                             oracle.TREND_THRESHOLD, oracle.DIP, warmup=len(warm)),
            "buy_and_hold": np.ones(len(close)),
            "trend_filter": replica.trend_filter_targets(seen, warmup=len(warm)),
        }
        numpy_sharpe = {}
        for name in names:
            equity, entries = replica.cash_account(close, targets[name])
            numpy_sharpe[name] = replica.sharpe(equity, ppy)
            result = engine[split][name]
            assert result.ok, result.error
            assert result.metrics["Sharpe"] == pytest.approx(numpy_sharpe[name], abs=0.02), (split, name)
            assert result.metrics["Trades"] == entries, (split, name)
        for sharpes in ({n: engine[split][n].metrics["Sharpe"] for n in names}, numpy_sharpe):
            assert sharpes["oracle"] > sharpes["buy_and_hold"] + 0.5, (generator_seed, split, sharpes)
            assert sharpes["oracle"] > sharpes[names[2]] + 0.5, (generator_seed, split, sharpes)


def test_default_config_and_default_search_space_agree() -> None:
    from alpha_evolve.search_space import load_search_space

    config = load_config(ROOT / "configs" / "default.toml")
    assert config.to_dict() == RunConfig().to_dict()  # the file shows the defaults, as its header says
    space = load_search_space(ROOT / "configs" / "self_evolution" / "default.json")
    values = space.values_of(config)
    assert space.validate_values(values) == [] and space.contains(values), values


def test_default_pipeline_beats_its_seed_on_validation_and_on_the_holdout(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from alpha_evolve.holdout import openings
    from alpha_evolve.pipeline import read_summary, run_pipeline

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # the default mutator is then the offline one
    config = load_config(ROOT / "configs" / "default.toml")
    run = run_pipeline(config, output_dir=tmp_path)
    summary = read_summary(run)
    assert summary["status"] == "ok", summary["reason"]
    assert summary["data"]["generator"]["generator"] == "planted"
    assert summary["best_program"]["mutator"] == "offline"
    val = summary["sharpe_by_split"]["validation"]
    assert val["winner"] > val["seed"], val  # (the winner was chosen on validation: only the holdout is unbiased)
    gate = summary["selection"]["seed_test"]  # and it passed the paired test against the seed at 95 %
    assert gate["confidence"] == 0.95 and not summary["selection"]["winner_is_seed"]
    assert next(f for f in gate["finalists"] if f["program_id"] == summary["best_program"]["id"])["p_value"] <= 0.05
    assert summary["oracle_metrics"]["validation"]["Sharpe"] == val["oracle"]
    assert summary["gap_closed"]["validation"] == pytest.approx(
        (val["winner"] - val["seed"]) / (val["oracle"] - val["seed"]), abs=1e-4)

    proc = run_cli("holdout", str(run))  # the ledgered door, as a user opens it: the look is counted
    assert proc.returncode == 0, proc.stderr
    holdout = json.loads((run / "holdout.json").read_text())
    assert len(openings(run)) == 1 and read_summary(run)["holdout"]["openings"] == 1
    hold = holdout["sharpe"]
    line = " ".join(proc.stdout.split())
    assert (f"holdout Sharpe: winner {hold['winner']:.3f}, seed {hold['seed']:.3f}, buy & hold "
            f"{hold['buy_and_hold']:.3f}, oracle (planted rule) {hold['oracle']:.3f}") in line, line
    assert hold["winner"] > hold["seed"], hold
    assert hold["oracle"] > hold["winner"] + 0.5, hold  # a ceiling the search has not reached
    assert hold["buy_and_hold"] == holdout["buy_and_hold_metrics"]["Sharpe"]
    assert 0 < holdout["gap_closed"] < 1
