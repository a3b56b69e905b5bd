"""Session-level honesty on real pipeline runs: every run's trials in the session ledger, the session best
deflated with the session's count, and the best confirmed once on the sealed holdout when the session completes."""

from __future__ import annotations

import itertools
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


def test_session_dsr_never_rises_as_more_runs_are_counted_for_the_same_best(tmp_path: Path) -> None:
    """More iterations, more trials: the session best's DSR may only fall (every earlier state of the session
    was a nested selection of the current one), whatever the added runs' Sharpes do to the pooled variance."""
    import numpy as np

    from alpha_evolve.files import append_jsonl, atomic_write_json
    from alpha_evolve.session_trials import session_selection
    from alpha_evolve.trials import trial_row

    best_run = tmp_path / "best_run"
    best_run.mkdir()
    splits = {"SYM": {"train": {"bars": 600}, "validation": {"bars": 250, "start": "2020-01-01", "end": "2020-12-31"}}}
    atomic_write_json(best_run / "SUMMARY.json", {"experiment": "e", "best_metrics": {"Sharpe": 1.4},
                                                   "data": {"splits": splits}})
    best = {"run_dir": str(best_run), "metrics": {"Sharpe": 1.4}, "iteration": 0}
    rises_without_the_rule = 0
    for case in range(8):
        session = tmp_path / f"session{case}"
        session.mkdir()
        rng = np.random.default_rng(case)
        previous = None
        reported, counted, raw, lost = [], [], [], []
        for iteration in range(8):
            run = str(best_run) if iteration == 0 else f"/runs/{case}/{iteration}"
            spread = float(rng.choice([0.05, 0.3, 1.5]))  # some runs add near-identical trials, some wide ones
            centre = float(rng.normal(0.0, 0.5))
            rows = [trial_row(f"v{iteration}_{i}", "validation", metrics={"Sharpe": centre + spread * rng.normal()},
                              n_obs=250) for i in range(int(rng.integers(2, 7)))]
            rows += [trial_row(f"t{iteration}_{i}", "train", metrics={"Sharpe": float(rng.normal(0.3, 1.0))},
                               n_obs=600) for i in range(int(rng.integers(3, 15)))]
            for row in rows:
                append_jsonl(session / LEDGER_NAME, {**row, "run_dir": run, "iteration": iteration})
            selection = session_selection(session, best, previous)
            assert selection is not None
            without_summary = session_selection(session, best, None)  # the saved summary lost in a crash
            assert without_summary is not None
            reported.append(selection["deflated_sharpe"])
            counted.append(selection["n_trials_validation"])
            raw.append(selection["deflated_sharpe_current"])  # this iteration's deflation alone
            lost.append(without_summary["deflated_sharpe"])
            previous = selection
        assert all(b <= a for a, b in itertools.pairwise(reported)), (case, reported)
        assert all(b <= a for a, b in itertools.pairwise(lost)), (case, lost)  # the ledger alone suffices
        assert all(b >= a for a, b in itertools.pairwise(counted)), (case, counted)
        assert all(r <= f + 1e-12 for r, f in zip(reported, raw, strict=True))
        rises_without_the_rule += any(b > a + 1e-9 for a, b in itertools.pairwise(raw))
    assert rises_without_the_rule > 0  # the current deflation alone does rise on some of these sessions


def test_a_run_recorded_but_not_counted_before_a_crash_is_counted_at_the_next_iteration(tmp_path: Path) -> None:
    from alpha_evolve.files import atomic_write_json
    from alpha_evolve.session_trials import absorb_history, session_rows
    from alpha_evolve.store import ProgramStore
    from alpha_evolve.trials import trial_row

    runs = []
    for i in range(2):
        run = tmp_path / f"run{i}"
        run.mkdir()
        atomic_write_json(run / "SUMMARY.json", {"experiment": "e"})
        with ProgramStore(run / "programs.sqlite") as store:
            store.record_trials("e", [trial_row(f"x = {i}", "validation", metrics={"Sharpe": 0.1 * i}, n_obs=50),
                                      trial_row(f"x = {i}", "train", metrics={"Sharpe": 0.2}, n_obs=90)])
        runs.append(run)
    session = tmp_path / "session"
    session.mkdir()
    history = [{"iteration": i, "run_dir": str(r)} for i, r in enumerate(runs)] + [{"iteration": 2, "run_dir": None}]
    assert absorb_history(session, history[:1]) == 2  # the first run was counted ...
    assert absorb_history(session, history) == 2  # ... the second (recorded, then a crash) is counted now
    assert absorb_history(session, history) == 0  # once
    rows = session_rows(session)
    assert sorted((r["iteration"], r["period"]) for r in rows) == [(0, "train"), (0, "validation"),
                                                                   (1, "train"), (1, "validation")]
