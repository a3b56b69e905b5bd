"""Pipeline runs end to end on the real engine: the run directory, SUMMARY.json's contract, the sealed holdout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from alpha_evolve.config import METRIC_NAMES, load_config
from alpha_evolve.files import read_jsonl, schema_errors
from alpha_evolve.holdout import HoldoutError, open_holdout
from alpha_evolve.pipeline import latest_run, read_summary, run_pipeline
from tests._cli import run_cli

TINY = """
[evolution]
generations = 4
max_concurrent = 2
[backtest]
synthetic_bars = 420
bt_top = 2
screen_fraction = 0.0
[pipeline]
disable_align_cache = true
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("runs")
    cfg_path = base / "tiny.toml"
    cfg_path.write_text(TINY)
    return run_pipeline(load_config(cfg_path), experiment="tiny", output_dir=base)


def test_run_directory_is_complete_and_summary_validates(tiny_run: Path) -> None:
    summary = read_summary(tiny_run)
    assert summary["status"] == "ok", summary["reason"]
    assert schema_errors("summary", summary) == []
    assert tiny_run.name.startswith("run_tiny_")
    assert latest_run(tiny_run.parent) == tiny_run
    for name in ("best_strategy.py", "top_programs.csv", "top_programs.json", "equity_curves.csv", "report.png",
                 "config.toml", "pipeline.log", "programs.sqlite"):
        assert (tiny_run / name).is_file(), name
    assert set(summary["best_metrics"]) >= {"Sharpe", "Sortino", "Calmar", "MaxDD", "CAGR", "TotalReturn",
                                            "WinRate", "Trades"}
    assert summary["counts"]["iterations"] == 4
    assert summary["data"]["synthetic"] is True and summary["data"]["hash"]
    assert summary["holdout"] == {"sealed": True, "openings": 0}
    over = summary["overfitting"]
    assert 0.0 <= over["deflated_sharpe"] <= over["probabilistic_sharpe"] + 1e-9 <= 1.0 + 1e-9
    assert over["sharpe_gap"] == pytest.approx(over["sharpe_train"] - over["sharpe_validation"])
    market = summary["market"]  # the instrument and fill model every figure used, and any market warnings
    assert market["fill"]["model"] == "close" and market["warmup_bars"] == 250
    assert market["instruments"]["SYN"]["asset_class"] == "equity" and market["warnings"] == []
    assert (tiny_run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tiny_run / "report.png").stat().st_size > 20_000


def test_best_metrics_are_validation_figures_of_the_best_program(tiny_run: Path) -> None:
    summary = read_summary(tiny_run)
    top = json.loads((tiny_run / "top_programs.json").read_text())
    assert top[0]["program_id"] == summary["best_program"]["id"]
    for name in METRIC_NAMES:
        assert summary["best_metrics"][name] == pytest.approx(top[0][f"validation_{name}"])
        assert summary["train_metrics"][name] == pytest.approx(top[0][f"train_{name}"])
    objective = summary["objective"]["metric"]
    ok = [row for row in top if row["validation_status"] == "ok"]
    # Crownable programs rank first (crowning.crown_key), then those the seed test admitted (the seed among them),
    # each group by the objective.
    groups = [(row["crownable"], row["admitted_by_seed_test"]) for row in ok]
    assert groups == sorted(groups, reverse=True)
    for group in set(groups):
        values = [row[f"validation_{objective}"] for row in ok
                  if (row["crownable"], row["admitted_by_seed_test"]) == group]
        assert values == sorted(values, reverse=True)


def test_equity_curves_cover_only_the_validation_period(tiny_run: Path) -> None:
    summary = read_summary(tiny_run)
    period = summary["data"]["splits"]["SYN"]
    curves = pd.read_csv(tiny_run / "equity_curves.csv", index_col=0, parse_dates=True)
    assert {"seed", "buy_and_hold"} <= set(curves.columns)
    assert curves.index.min() >= pd.Timestamp(period["validation"]["start"])
    assert curves.index.max() <= pd.Timestamp(period["validation"]["end"])
    assert curves.index.max() < pd.Timestamp(period["holdout"]["start"])


def test_best_strategy_file_backtests_standalone(tiny_run: Path) -> None:
    proc = run_cli("backtest", "--strategy-file", str(tiny_run / "best_strategy.py"), "--config",
                   str(tiny_run / "config.toml"), "--split", "validation", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    summary = read_summary(tiny_run)
    assert out["metrics"]["Sharpe"] == pytest.approx(summary["best_metrics"]["Sharpe"], rel=1e-9)


def test_holdout_opens_once_and_every_look_is_ledgered(tiny_run: Path) -> None:
    result = open_holdout(tiny_run, who="test")
    assert result["opening"] == 1 and set(METRIC_NAMES) <= set(result["metrics"])
    assert (tiny_run / "holdout.json").is_file()
    with pytest.raises(HoldoutError, match="already opened 1 time"):
        open_holdout(tiny_run)
    again = open_holdout(tiny_run, force=True, who="test")
    assert again["opening"] == 2 and again["forced"] is True
    assert again["metrics"] == result["metrics"]  # same program, same data: the same figures
    ledger = read_jsonl(tiny_run / "holdout_ledger.jsonl")
    assert [e["opening"] for e in ledger] == [1, 2]
    assert len(read_jsonl(tiny_run.parent / "HOLDOUT_LEDGER.jsonl")) == 2
    summary = read_summary(tiny_run)
    assert summary["holdout"]["sealed"] is False and summary["holdout"]["openings"] == 2
    assert schema_errors("summary", summary) == []


def test_broken_config_writes_failed_summary_and_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[evolution]\ngeneratons = 3\n")
    proc = run_cli("pipeline", "--config", str(bad), "--output-dir", str(tmp_path / "runs"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'generations'" in lines[0]
    run = latest_run(tmp_path / "runs")
    assert run is not None
    summary = read_summary(run)
    assert summary["status"] == "failed" and "generatons" in summary["reason"]
    assert schema_errors("summary", summary) == []


def test_data_error_is_a_failed_run_not_a_crash(tmp_path: Path) -> None:
    csv = tmp_path / "prices.csv"
    csv.write_text("Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1.5,10\n2020-01-01,1,2,0.5,1.5,10\n"
                   "2020-01-03,1,2,0.5,1.5,10\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[backtest]\ndata = "{csv}"\n')
    run = run_pipeline(load_config(cfg), experiment="bad_data", output_dir=tmp_path / "runs")
    summary = read_summary(run)
    assert summary["status"] == "failed"
    assert "prices.csv" in summary["reason"] and "line 3" in summary["reason"] and "\n" not in summary["reason"]
    assert schema_errors("summary", summary) == []


def test_output_dir_from_environment(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[backtest]\nbt_top = 0\n")
    proc = run_cli("pipeline", "--config", str(bad), env={"AE_PIPELINE_DIR": str(tmp_path / "envruns")})
    assert proc.returncode != 0
    assert latest_run(tmp_path / "envruns") is not None


def test_too_little_data_names_the_file(tmp_path: Path, real_goog_csv: Path) -> None:
    short = tmp_path / "SHORT.csv"
    short.write_text("\n".join(real_goog_csv.read_text().splitlines()[:40]) + "\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[backtest]\ndata = "{short}"\n')
    summary = read_summary(run_pipeline(load_config(cfg), experiment="short", output_dir=tmp_path / "runs"))
    assert summary["status"] == "failed" and "SHORT.csv" in summary["reason"] and "fewer than" in summary["reason"]


def test_relative_data_and_output_paths_still_work_from_another_directory(
    tmp_path: Path, real_goog_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "goog.csv").write_text(real_goog_csv.read_text())
    cfg = work / "c.toml"
    cfg.write_text('[evolution]\ngenerations = 1\n[backtest]\ndata = "data/goog.csv"\nbt_top = 1\n'
                   "[pipeline]\ndisable_align_cache = true\n")
    monkeypatch.chdir(work)
    run = run_pipeline(load_config("c.toml"), experiment="rel", output_dir="runs")
    summary = read_summary(run)
    assert summary["status"] == "ok", summary["reason"]
    assert Path(summary["run_dir"]).is_absolute() and Path(summary["run_dir"]) == work / "runs" / run.name
    assert load_config(run / "config.toml").backtest.data == str(work / "data" / "goog.csv")
    monkeypatch.chdir(tmp_path)  # somewhere else: the run must still name its own data
    assert open_holdout(work / "runs" / run.name, who="test")["opening"] == 1


def test_holdout_of_a_missing_run_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("holdout", str(tmp_path / "nowhere"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a pipeline run directory" in lines[0]


def test_same_config_same_results_whatever_the_experiment_name(tmp_path: Path) -> None:
    """Reproducible runs: the experiment name (a session stamps it with the time) must not change the outcome."""
    cfg_path = tmp_path / "tiny.toml"
    cfg_path.write_text(TINY.replace("generations = 4", "generations = 3"))
    config = load_config(cfg_path)
    a = read_summary(run_pipeline(config, experiment="first_name", output_dir=tmp_path / "a"))
    b = read_summary(run_pipeline(config, experiment="another_name", output_dir=tmp_path / "b"))
    assert a["status"] == b["status"] == "ok"
    assert a["best_metrics"] == b["best_metrics"] and a["train_metrics"] == b["train_metrics"]
    assert (Path(a["run_dir"]) / "best_strategy.py").read_text().split("\n", 3)[3] == \
        (Path(b["run_dir"]) / "best_strategy.py").read_text().split("\n", 3)[3]


def test_seed_strategy_from_a_file(tmp_path: Path) -> None:
    from alpha_evolve.strategies import seed_source

    seed = tmp_path / "my-seed.py"
    seed.write_text(seed_source("mean_reversion"))
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(TINY.replace("generations = 4", f'generations = 2\nseed_strategy = "{seed}"'))
    run = run_pipeline(load_config(cfg_path), output_dir=tmp_path / "runs")
    summary = read_summary(run)
    assert summary["status"] == "ok", summary["reason"]
    assert run.name.startswith("run_my-seed_")
    assert "MeanReversionStrategy" in (run / "best_strategy.py").read_text()


def test_counts_include_tokens_spent_on_failed_programs(tmp_path: Path) -> None:
    from alpha_evolve.pipeline import _counts
    from alpha_evolve.store import Program, ProgramStore

    with ProgramStore(tmp_path / "p.sqlite") as store:
        store.create_experiment("e")
        store.insert(Program("e", "code", iteration=0, is_seed=True, fitness=1.0, metrics={"Sharpe": 1.0},
                             input_tokens=10, output_tokens=5, cost_usd=0.01))
        store.insert(Program("e", "bad", iteration=1, status="syntax", failure_kind="syntax",
                             failure_message="x", input_tokens=1000, output_tokens=500, cost_usd=0.5))
        counts = _counts(store, "e", None, 0)
        assert (counts["input_tokens"], counts["output_tokens"]) == (1010, 505)
        assert counts["cost_usd"] == pytest.approx(0.51)
        assert counts["failures"] == {"syntax": 1, "tampered": 0, "lookahead": 0}
        assert store.train_sharpes("e") == [1.0]
