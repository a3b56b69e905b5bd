"""``alpha-evolve backtest`` end to end, in real subprocesses, on synthetic and on real market data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alpha_evolve.config import METRIC_NAMES
from tests._cli import run_cli

REQUIRED = {"status", "error", "stage", "split", "bars", "metrics"}


def _one_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one JSON line on stdout, got {stdout!r}"
    return json.loads(lines[0])


def test_momentum_on_embedded_default_prints_one_json_object() -> None:
    proc = run_cli("backtest", "--strategy", "momentum", "--json")
    assert proc.returncode == 0, proc.stderr
    out = _one_json(proc.stdout)
    assert set(out) >= REQUIRED
    assert out["status"] == "ok" and out["error"] is None and out["stage"] == "full" and out["split"] == "train"
    assert set(METRIC_NAMES) <= set(out["metrics"])
    assert out["data"]["synthetic"] is True and "synthetic" in out["data"]["source"]
    assert out["bars"] == 1500  # 60 % of the 2,500 default synthetic bars
    assert out["metrics"]["Trades"] > 0


def test_real_daily_csv_all_splits(real_goog_csv: Path) -> None:
    results = {}
    for split in ("train", "validation", "all"):
        proc = run_cli("backtest", "--strategy", "momentum", "--data", str(real_goog_csv), "--split", split,
                       "--json")
        assert proc.returncode == 0, proc.stderr
        results[split] = _one_json(proc.stdout)
        assert results[split]["status"] == "ok"
    assert results["all"]["bars"] == results["train"]["bars"] + results["validation"]["bars"]
    assert results["train"]["data"]["synthetic"] is False
    # The holdout is never part of "all": the last bar of "all" is the last validation bar.
    assert results["all"]["periods"]["GOOG"]["end"] == results["validation"]["periods"]["GOOG"]["end"]


def test_failing_strategy_is_a_typed_result_not_a_crash(tmp_path: Path) -> None:
    from alpha_evolve.strategies import seed_source

    bad = seed_source("momentum").replace("self.go_long()", "self.go_long()\n            raise ValueError('boom')", 1)
    path = tmp_path / "bad.py"
    path.write_text(bad)
    proc = run_cli("backtest", "--strategy-file", str(path), "--json")
    assert proc.returncode == 1
    out = _one_json(proc.stdout)
    assert out["status"] == "runtime" and "boom" in out["error"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--strategy", "nope"], "unknown seed strategy 'nope'"),
        (["--strategy-file", "/nonexistent/x.py"], "strategy file not found"),
        (["--data", "/nonexistent/data.csv"], "not found"),
        (["--config", "/nonexistent/c.toml"], "config file not found"),
    ],
)
def test_bad_input_is_one_line_on_stderr(args: list[str], fragment: str) -> None:
    proc = run_cli("backtest", *args, "--json")
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr


def test_bad_data_row_is_named(tmp_path: Path, real_goog_csv: Path) -> None:
    lines = real_goog_csv.read_text().splitlines()
    fields = lines[10].split(",")
    fields[2], fields[3] = fields[3], str(float(fields[3]) / 2)  # high below low on file line 11
    lines[10] = ",".join(fields)
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + "\n")
    proc = run_cli("backtest", "--data", str(path), "--json")
    assert proc.returncode != 0
    message = proc.stderr.strip()
    assert "broken.csv" in message and "11" in message and len(message.splitlines()) == 1
