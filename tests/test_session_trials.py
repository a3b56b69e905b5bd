"""Session-level honesty on real pipeline runs: every run's trials in the session ledger, the session best
deflated with the session's count, and the best confirmed once on the sealed holdout when the session completes."""

from __future__ import annotations

import json
from pathlib import Path

from alpha_evolve.files import read_jsonl
from alpha_evolve.pipeline import run_pipeline
from alpha_evolve.session_trials import LEDGER_NAME
from tests._loop_harness import LegacyState, LoopRun, session_settings

TINY = """
[evolution]
generations = 2
max_concurrent = 2
[backtest]
synthetic_bars = 420
bt_top = 1
screen_fraction = 0.0
min_round_trips = 0
[pipeline]
disable_align_cache = true
"""

SPACE = {"description": "bt_top only", "parameters": [
    {"key": "bt_top", "type": "choice", "values": [1, 2], "description": "finalists compared on validation"}]}


def test_session_counts_every_run_and_confirms_its_best_once_on_the_holdout(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    settings = session_settings("legacy", search_space_path=str(tmp_path / "space.json"), auto_approve=True,
                                config_path=str(tmp_path / "tiny.toml"))
    session = LoopRun(LegacyState(settings, tmp_path), settings, runner=run_pipeline)
    session_dir = session.dir
    result = session.run(timeout=300)
    assert result.status == "session_complete"
    summary = json.loads((session_dir / "session_summary.json").read_text())
    runs = [json.loads(x)["run_dir"] for x in (session_dir / "history.jsonl").read_text().splitlines()]
    assert len(runs) == 2
    rows = read_jsonl(session_dir / LEDGER_NAME)
    for run in runs:  # every row of every run's ledger is in the session's
        from alpha_evolve.pipeline import read_summary

        counts = read_summary(run)["counts"]["trials"]
        assert sum(1 for r in rows if r["run_dir"] == str(Path(run).resolve())) == sum(counts.values())
    selection = summary["selection"]
    assert selection["runs"] == 2 and selection["ledger"] == LEDGER_NAME
    per_run = [read_summary(r)["overfitting"]["n_trials_validation"] for r in runs]
    assert selection["n_trials_validation"] >= max(per_run)
    assert 0.0 <= selection["deflated_sharpe"] <= 1.0
    confirmation = summary["confirmation"]
    assert confirmation["status"] == "confirmed", confirmation
    best_run = Path(summary["best"]["run_dir"])
    looks = read_jsonl(best_run / "holdout_ledger.jsonl")
    assert [(e["via"], e["opening"]) for e in looks] == [("holdout", 1)]
    assert confirmation["holdout_sharpe"] == looks[0]["Sharpe"]
    assert confirmation["statement"]
