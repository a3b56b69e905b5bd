"""One door to the holdout: every path refuses without an explicit flag, and every look is ledgered with the
program's hash, in the run's ledger, its trial ledger and SUMMARY.json, and in the base folder's ledger."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from alpha_evolve.config import load_config
from alpha_evolve.evaluation_setup import build_evaluator
from alpha_evolve.files import read_jsonl
from alpha_evolve.holdout import open_holdout
from alpha_evolve.holdout_door import HoldoutRefused
from alpha_evolve.pipeline import read_summary, run_pipeline
from alpha_evolve.store import ProgramStore
from tests._cli import run_cli

TINY = """
[evolution]
generations = 2
max_concurrent = 2
[backtest]
synthetic_bars = 420
bt_top = 2
screen_fraction = 0.0
[pipeline]
disable_align_cache = true
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("door")
    (base / "tiny.toml").write_text(TINY)
    return run_pipeline(load_config(base / "tiny.toml"), experiment="door", output_dir=base / "runs")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest()


def test_python_doors_refuse_without_the_flag(tmp_path: Path) -> None:
    from alpha_evolve.commands.backtest import run_backtest_command
    from alpha_evolve.strategies import seed_source

    config = load_config(None)
    with pytest.raises(HoldoutRefused, match="sealed"):
        build_evaluator(config, include=("train", "holdout"))
    with pytest.raises(HoldoutRefused, match="sealed"):
        run_backtest_command(config, seed_source("momentum"), "holdout")


def test_every_holdout_path_is_ledgered(run: Path, tmp_path: Path) -> None:
    best = run / "best_strategy.py"
    # 1. backtest --split holdout without the flag: one line, exit 2, nothing evaluated, nothing ledgered
    proc = run_cli("backtest", "--strategy-file", str(best), "--config", str(run / "config.toml"),
                   "--split", "holdout", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "sealed" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (run / "holdout_ledger.jsonl").exists()
    assert read_summary(run)["holdout"]["openings"] == 0

    # 2. with --open-holdout: evaluated and ledgered in the run (jsonl, SUMMARY, trial ledger) and the base folder
    proc = run_cli("backtest", "--strategy-file", str(best), "--config", str(run / "config.toml"),
                   "--split", "holdout", "--open-holdout", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["split"] == "holdout" and out["holdout_look"]["program_hash"] == _sha(best)
    ledger = read_jsonl(run / "holdout_ledger.jsonl")
    assert [(e["via"], e["opening"], e["program_hash"]) for e in ledger] == [("backtest", 1, _sha(best))]
    assert [e["via"] for e in read_jsonl(run.parent / "HOLDOUT_LEDGER.jsonl")] == ["backtest"]
    summary = read_summary(run)
    assert summary["holdout"]["openings"] == 1 and summary["holdout"]["sealed"] is False
    with ProgramStore(run / "programs.sqlite") as store:
        looks = store.trials("door", "holdout")
        assert [(t["via"], t["program_hash"]) for t in looks] == [("backtest", _sha(best))]
        assert looks[0]["sharpe"] == pytest.approx(out["metrics"]["Sharpe"])

    # 3. `alpha-evolve holdout` sees the earlier look: refused, then forced and counted as look 2
    proc = run_cli("holdout", str(run))
    assert proc.returncode != 0 and "already opened 1 time" in proc.stderr
    result = open_holdout(run, force=True, who="test")
    assert result["opening"] == 2 and result["program_hash"] == _sha(best)
    assert [e["via"] for e in read_jsonl(run / "holdout_ledger.jsonl")] == ["backtest", "holdout"]
    summary = read_summary(run)
    assert summary["holdout"]["openings"] == 2
    verdict = summary["holdout"]["verdict"]
    assert verdict["period"] == "holdout" and verdict["statement"]
    assert verdict["optimism"] == pytest.approx(verdict["reported_sharpe"] - verdict["holdout_sharpe"])
    assert result["seed_metrics"] and result["buy_and_hold_metrics"]
    holdout_figures = [f for f in summary["figures"] if f["period"] == "holdout"]
    assert [f["what"] for f in holdout_figures] == ["winner", "seed"]
    assert holdout_figures[0]["buy_and_hold"]["Sharpe"] == pytest.approx(result["buy_and_hold_metrics"]["Sharpe"])

    # 4. the dashboard shows the count
    from alpha_evolve.dashboard.runs import run_headline

    assert run_headline(run)["holdout_openings"] == 2


def test_a_look_outside_any_run_goes_to_the_base_folder_ledger(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    proc = run_cli("backtest", "--strategy", "momentum", "--config", str(cfg), "--split", "holdout",
                   "--open-holdout", "--json", env={"AE_PIPELINE_DIR": str(tmp_path / "base")})
    assert proc.returncode == 0, proc.stderr
    ledger = read_jsonl(tmp_path / "base" / "HOLDOUT_LEDGER.jsonl")
    assert len(ledger) == 1 and ledger[0]["run_dir"] is None and ledger[0]["strategy"] is None
    from alpha_evolve.strategies import seed_source

    assert ledger[0]["program_hash"] == hashlib.sha256(seed_source("momentum").encode()).hexdigest()
