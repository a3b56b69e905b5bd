"""Honest selection on the real engine: every trial in the ledger, DSR that bt_top cannot inflate, the
minimum-trades rule, the out-of-sample verdict, and fold fitness."""

from __future__ import annotations

import hashlib
import itertools
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from alpha_evolve.config import load_config
from alpha_evolve.crowning import (
    NO_BEAT_SEED,
    RankedProgram,
    crown_key,
    information_ratio,
    paired_sharpe_test,
    round_trip_flags,
    seed_gate,
    verdict,
)
from alpha_evolve.files import schema_errors
from alpha_evolve.folds import fold_bounds, fold_fitness, fold_metrics
from alpha_evolve.metrics import compute_metrics
from alpha_evolve.pipeline import read_summary, run_pipeline, select_winner
from alpha_evolve.store import Program, ProgramStore
from alpha_evolve.trials import Deflation, deflate_winner, stage_stats, trial_row


def _copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a store (its WAL included)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


SMALL = """
[evolution]
generations = 14
seed_strategy = "mean_reversion"
random_seed = 5
max_concurrent = 2
[backtest]
synthetic_bars = 700
bt_top = 1
screen_fraction = 0.0
min_round_trips = 0
[pipeline]
disable_align_cache = true
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("honest")
    cfg = base / "small.toml"
    cfg.write_text(SMALL)
    return run_pipeline(load_config(cfg), experiment="honest", output_dir=base), cfg


def test_trial_ledger_holds_every_train_and_validation_evaluation(small_run: tuple[Path, Path]) -> None:
    run, _ = small_run
    summary = read_summary(run)
    assert summary["status"] == "ok", summary["reason"]
    assert schema_errors("summary", summary) == []
    with ProgramStore(run / "programs.sqlite") as store:
        evaluated = store.evaluated_programs("honest")
        train = store.trials("honest", "train")
        validation = store.trials("honest", "validation")
        assert len(evaluated) >= 2
        assert [t["program_id"] for t in train] == [p.id for p in evaluated]
        code = {p.id: p.code for p in evaluated}
        for t in train:
            assert t["program_hash"] == hashlib.sha256(code[t["program_id"]].encode()).hexdigest()
            assert t["sharpe"] == pytest.approx(next(p.metrics["Sharpe"] for p in evaluated
                                                     if p.id == t["program_id"]))
        finalists = [t for t in validation if t["role"] != "benchmark"]
        assert len(finalists) == summary["selection"]["finalists"]
        assert [t["role"] for t in validation].count("benchmark") == 1
        assert summary["counts"]["trials"] == {"train": len(train), "validation": len(validation)}
    over = summary["overfitting"]
    assert over["n_trials"] == over["n_trials_train"] + over["n_trials_validation"]
    assert 1 <= over["n_trials_train"] <= len(train)
    assert over["deflated_sharpe_nested_minimum"] <= over["deflated_sharpe_validation_stage"] + 1e-9
    assert over["deflated_sharpe"] == pytest.approx(min(over["deflated_sharpe_train_stage"],
                                                        over["deflated_sharpe_nested_minimum"]), abs=1e-6)
    # every reported figure stands next to buy-and-hold's on the same period
    assert summary["figures"] and all(f["buy_and_hold"]["Sharpe"] is not None for f in summary["figures"])
    assert {f["period"] for f in summary["figures"]} == {"train", "validation"}
    assert summary["verdict"]["statement"]


def test_seed_gate_in_summary_matches_the_validation_curves(small_run: tuple[Path, Path]) -> None:
    """The paired test the run reported, recomputed from the validation curves it wrote (equity_curves.csv)."""
    import json
    import statistics

    import pandas as pd

    run, _ = small_run
    summary = read_summary(run)
    gate = summary["selection"]["seed_test"]
    assert gate["confidence"] == 0.95 and gate["statement"]
    top = json.loads((run / "top_programs.json").read_text())
    curves = pd.read_csv(run / "equity_curves.csv", index_col=0, parse_dates=True)
    column = {int(c.split("program")[1]): c for c in curves.columns if c.startswith("rank")}
    seed_row = next(r for r in top if r["is_seed"])
    seed_returns = curves[column[seed_row["program_id"]]].pct_change().dropna().tolist()
    assert gate["finalists"], "bt_top = 1 draws one evolved finalist besides the seed"
    for entry in gate["finalists"]:
        mine = curves[column[entry["program_id"]]].pct_change().dropna().tolist()
        sa = statistics.mean(mine) / statistics.stdev(mine)
        sb = statistics.mean(seed_returns) / statistics.stdev(seed_returns)
        rho = statistics.correlation(mine, seed_returns)
        z = (sa - sb) / math.sqrt((2 - 2 * rho + 0.5 * (sa**2 + sb**2 - 2 * sa * sb * rho**2)) / len(mine))
        assert entry["p_value"] == pytest.approx(1 - statistics.NormalDist().cdf(z), abs=1e-5)
        assert entry["admitted"] == (entry["p_value"] <= 0.05)
    crowned = next(r for r in top if r["program_id"] == summary["best_program"]["id"])
    if crowned["is_seed"]:
        assert gate["statement"].startswith(NO_BEAT_SEED)
    else:
        assert crowned["admitted_by_seed_test"] and "beat the seed on validation" in gate["statement"]


def test_dsr_does_not_rise_as_bt_top_grows_on_a_fixed_evolution(small_run: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    from alpha_evolve.evaluation_setup import build_evaluator, load_run_data
    from alpha_evolve.strategies import seed_source

    run, cfg_path = small_run
    config = load_config(cfg_path)
    data = load_run_data(config)
    dsr, val_sharpe, compared, nested, train_stage = [], [], [], [], []
    with build_evaluator(config, data=data) as evaluator:
        bh = evaluator.evaluate(seed_source("buy_and_hold"), "train", "full", screen=False)
        for k in (1, 3, 6, 12):
            db = tmp_path / f"k{k}.sqlite"
            _copy_db(run / "programs.sqlite", db)
            with ProgramStore(db) as store:
                store._conn().execute("DELETE FROM trials")  # a fresh ledger for this bt_top
                c = config.with_updates({"backtest.bt_top": k})
                ranked, *_rest, over = select_winner(c, store, evaluator, "honest",
                                                     seed_source("mean_reversion"), data, bh_train=bh)
                dsr.append(over["deflated_sharpe"])
                nested.append(over["deflated_sharpe_nested_minimum"])
                train_stage.append(over["deflated_sharpe_train_stage"])
                val_sharpe.append(ranked[0].validation["Sharpe"])
                compared.append(over["n_trials_validation"])
    assert val_sharpe == sorted(val_sharpe)  # more finalists: the reported maximum can only grow ...
    assert compared[-1] > compared[0]  # ... from genuinely more comparisons ...
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(dsr)), dsr  # ... but its credibility cannot
    # neither at the validation stage (the reported nested minimum) nor at the train stage (the train selection's
    # pick is the same program whatever bt_top is)
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(nested)), nested
    assert max(train_stage) - min(train_stage) < 1e-9, train_stage


def test_more_comparisons_raise_the_bar_even_for_an_unchanged_winner() -> None:
    rng = np.random.default_rng(0)
    returns = rng.normal(0.001, 0.01, 300)
    sr = float(np.mean(returns) / np.std(returns, ddof=1) * math.sqrt(252))

    def rows(n_val: int) -> list[dict]:
        out = [trial_row(f"x = {i}", "train", metrics={"Sharpe": 1.0 + 0.01 * i}, n_obs=900) for i in range(20)]
        out += [trial_row(f"y = {i}", "validation", metrics={"Sharpe": sr - 0.1 * i}, n_obs=300)
                for i in range(n_val)]
        return out

    values = [deflate_winner(rows(n), validation_sharpe=sr, validation_obs=300, validation_returns=returns,
                             train_sharpe=1.19, train_obs=900, periods_per_year=252).dsr for n in (1, 2, 5, 20)]
    assert values == sorted(values, reverse=True) and values[0] > values[-1]


def test_trial_variance_is_floored_and_duplicates_count_once() -> None:
    same = [trial_row("a = 1", "validation", metrics={"Sharpe": 1.0}, n_obs=101),
            trial_row("a  =  1  # same program", "validation", metrics={"Sharpe": 1.0}, n_obs=101),
            trial_row("b = 2", "validation", metrics={"Sharpe": 1.0}, n_obs=101, behavior_key="k"),
            trial_row("c = 3", "validation", metrics={"Sharpe": 1.0}, n_obs=101, behavior_key="k")]
    stats = stage_stats(same, "validation")
    assert stats.n_trials == 2  # whitespace/comments and identical behaviour are one trial each
    assert stats.empirical_variance == 0.0 and stats.sr_variance == pytest.approx(1 / 100)


def _ranked(pid: int, sharpe: float, trades: float, minimum: int, *, seed: bool = False) -> RankedProgram:
    program = Program("e", f"p = {pid}", id=pid, is_seed=seed, fitness=sharpe, metrics={"Trades": trades})
    validation = {"Sharpe": sharpe, "Trades": trades}
    return RankedProgram(program, {"Trades": trades}, validation,
                         flags=round_trip_flags({"Trades": trades}, validation, minimum))


def test_a_program_under_the_minimum_round_trips_is_flagged_and_never_crowned() -> None:
    ranked = [_ranked(1, 3.0, 1, 3), _ranked(2, 0.8, 6, 3), _ranked(3, 1.2, 2, 3)]
    ranked.sort(key=crown_key("Sharpe"), reverse=True)
    assert ranked[0].program.id == 2 and ranked[0].crownable
    assert [r.program.id for r in ranked] == [2, 1, 3]  # flagged ones after every crownable one
    assert ranked[2].flags == ["too few round trips on train: 2 < 3", "too few round trips on validation: 2 < 3"]
    assert round_trip_flags({"Trades": 1}, {"Trades": 1}, 0) == []  # 0 disables the rule


def test_pipeline_flags_buy_and_hold_in_disguise(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.replace("generations = 14", "generations = 2").replace("min_round_trips = 0",
                                                                               "min_round_trips = 1000"))
    summary = read_summary(run_pipeline(load_config(cfg), experiment="flags", output_dir=tmp_path))
    assert summary["status"] == "ok", summary["reason"]
    assert summary["best_program"]["crowned"] is False and summary["selection"]["crowned"] is False
    assert "too few round trips" in summary["best_program"]["flags"][0]
    assert NO_BEAT_SEED in summary["verdict"]["statement"] and "nothing was crowned" in summary["verdict"]["statement"]
    assert summary["verdict"]["evolved_beat_seed"] is False


def test_verdict_says_no_evolved_program_beat_the_seed() -> None:
    v = verdict("Sharpe", period="holdout", evolved={"Sharpe": 0.2}, evolved_id=9, seed={"Sharpe": 0.5},
                bh={"Sharpe": 0.1}, basis="crowned program")
    assert not v["evolved_beat_seed"] and v["evolved_beat_buy_and_hold"]
    assert v["statement"].startswith(NO_BEAT_SEED)
    v = verdict("MaxDD", period="validation", evolved={"MaxDD": 0.1}, evolved_id=9, seed={"MaxDD": 0.3},
                bh={"MaxDD": 0.05}, basis="b")
    assert v["evolved_beat_seed"] and not v["evolved_beat_buy_and_hold"]  # lower drawdown is better


def test_information_ratio_matches_a_hand_calculation() -> None:
    stamps = [f"2020-01-{d:02d}T00:00:00Z" for d in range(1, 21)]
    rng = np.random.default_rng(3)
    a = 100 * np.cumprod(1 + rng.normal(0.002, 0.01, 20))
    b = 100 * np.cumprod(1 + rng.normal(0.001, 0.01, 20))
    excess = (a[1:] / a[:-1] - 1) - (b[1:] / b[:-1] - 1)
    span = 19 / 365.25
    expected = excess.mean() / excess.std(ddof=1) * math.sqrt(19 / span)
    got = information_ratio(list(zip(stamps, a, strict=True)), list(zip(stamps, b, strict=True)))
    assert got == pytest.approx(expected)


def test_fold_metrics_are_the_metrics_of_each_purged_slice() -> None:
    stamps = ["2021-01-01T00:00:00Z"] + [f"2021-{1 + d // 28:02d}-{1 + d % 28:02d}T00:00:00Z" for d in range(1, 120)]
    rng = np.random.default_rng(1)
    values = 1e5 * np.cumprod(1 + rng.normal(0.0005, 0.01, 120))
    bounds = fold_bounds(120, 3, 0.05)
    assert bounds == [(0, 40), (45, 80), (85, 120)]  # 6 points purged after each boundary (one kept as a base)
    per = fold_metrics(list(zip(stamps, values, strict=True)), 3, 0.05)
    import pandas as pd

    for (lo, hi), m in zip(bounds, per, strict=True):
        idx = pd.to_datetime(stamps[lo:hi], utc=True)
        ppy = (hi - lo - 1) / ((idx[-1] - idx[0]).total_seconds() / (365.25 * 86400))
        assert m["Sharpe"] == pytest.approx(compute_metrics(values[lo:hi], ppy)["Sharpe"])
    assert fold_fitness(per, "Sharpe", "worst") == pytest.approx(min(m["Sharpe"] for m in per))
    assert fold_fitness(per, "MaxDD", "worst") == pytest.approx(-max(m["MaxDD"] for m in per))
    with pytest.raises(ValueError):
        fold_bounds(10, 5, 0.2)


def test_fold_fitness_in_a_pipeline_run(tmp_path: Path) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text(SMALL.replace("generations = 14", "generations = 3\nfitness_folds = 3\n"
                                 "fitness_fold_aggregate = \"worst\""))
    run = run_pipeline(load_config(cfg), experiment="folds", output_dir=tmp_path)
    assert read_summary(run)["status"] == "ok"
    with ProgramStore(run / "programs.sqlite") as store:
        programs = [p for p in store.evaluated_programs("folds") if p.status == "ok"]
        assert programs
        for p in programs:
            folds = [p.metrics[f"fold{k}_Sharpe"] for k in (1, 2, 3)]
            assert p.fitness == pytest.approx(min(folds))
            assert p.fitness <= p.metrics["Sharpe"] + 1.0  # a fold can beat the whole, but not the worst of all
        assert {t["period"] for t in store.trials("folds")} >= {"train_fold1", "train_fold2", "train_fold3"}


def test_study_report_prints_each_dataset_with_its_optimism() -> None:
    from bench.study_honest import _garch_series, report

    bars = _garch_series(1, 300, drift=0.07, vol=0.16, start="2010-01-04")
    assert len(bars) == 300 and (bars["High"] >= bars[["Open", "Close"]].max(axis=1)).all()
    assert (bars["Low"] <= bars[["Open", "Close"]].min(axis=1)).all()
    row = {"status": "ok", "winner_is_seed": False, "crowned": True, "reported": 1.5, "deflated": 0.4,
           "dsr": 0.3, "best_on_train_validation": 0.9, "seed_validation": 0.5, "bh_validation": 0.7,
           "holdout": 0.2, "seed_holdout": 0.4, "bh_holdout": 0.6, "oos_beat_seed": True,
           "holdout_beat_seed": False, "holdout_beat_bh": False, "best_on_train_holdout": 0.5}
    text = report([{**row, "dataset": "a"}, {**row, "dataset": "b", "status": "failed"}])
    line = next(x for x in text.splitlines() if x.startswith("a "))
    assert "1.30" in line and "0.20" in line  # optimism 1.5 - 0.2 and deflated optimism 0.4 - 0.2
    assert "b" in text and "all runs failed" in text
    assert "validation pick did worse than the best-on-train program in 1 of 1 runs and better in 0" in text


def _ledger_case(case: int) -> dict:
    """A fixed random evolution: train fitness (ties, zeros and failures included), each program's validation
    figures (failures and behaviour twins included), the minimum-trades rule and the objective."""
    rng = np.random.default_rng(case)
    n = int(rng.integers(3, 16))
    objective = ["Sharpe", "Sortino", "MaxDD", "InfoRatio"][case % 4]
    programs: list[Program] = []
    validation: dict[int, dict] = {}
    for pid in range(1, n + 1):
        code = f"x = {pid}" if rng.random() > 0.1 or pid == 1 else f"x = {pid - 1}  # same code as the last"
        fitness: float | None = float(np.round(rng.normal(0.0, 1.0), 1))  # rounded: ties happen
        if rng.random() < 0.15:
            fitness = 0.0  # e.g. a program that never trades
        status = "ok" if pid == 1 or rng.random() > 0.1 else "crash"
        if status != "ok":
            fitness = None
        train = {"Sharpe": fitness or 0.0, "Trades": float(rng.integers(0, 12)),
                 **{f"fold{f}_Sharpe": float(rng.normal()) for f in (1, 2, 3)}}
        programs.append(Program("e", code, id=pid, is_seed=pid == 1, fitness=fitness, status=status, metrics=train))
        if pid > 2 and rng.random() < 0.2:  # behaves on validation exactly like an earlier program
            validation[pid] = validation[int(rng.integers(1, pid))]
        else:
            sharpe = float(rng.normal(0.3, 1.0))
            validation[pid] = {
                "status": "ok" if rng.random() > 0.1 else "timeout",
                "metrics": {"Sharpe": sharpe, "Sortino": sharpe * 1.3, "MaxDD": float(rng.uniform(0.02, 0.5)),
                            "InfoRatio": float(rng.normal()), "Trades": float(rng.integers(0, 12)),
                            "TotalReturn": sharpe / 10},
                "stats": {"n_obs": 200.0, "skew": float(rng.normal(0, 0.5)), "kurtosis": float(rng.uniform(2.5, 8))},
            }
    by_train = sorted((p for p in programs if p.status == "ok" and p.fitness is not None),
                      key=lambda p: (-float(p.fitness or 0.0), p.id))  # the store's top_k order
    return {"programs": programs, "by_train": by_train, "validation": validation, "objective": objective,
            "minimum": int(rng.integers(0, 4)), "obs": int(rng.integers(60, 600)),
            "ppy": [252.0, 8760.0][case % 2], "folds": case % 3 == 0, "gate": [0.0, 0.9, 0.5][case % 3]}


def _validation_curve(case: dict, program_id: int) -> list[tuple[str, float]]:
    """A validation curve per program: the seed's returns, scaled, plus the program's own drift and noise, so the
    seed gate admits some finalists and holds others back."""
    base = np.random.default_rng(case["obs"]).normal(0.0005, 0.01, case["obs"])
    rng = np.random.default_rng(case["obs"] * 1000 + program_id)
    own = base * rng.uniform(0.5, 1.2) + rng.normal(rng.uniform(-0.001, 0.003), rng.uniform(0.001, 0.01), base.size)
    values = 100.0 * np.cumprod(1.0 + own)
    stamps = [f"{t}Z" for t in _hourly_stamps(case["obs"])]
    return list(zip(stamps, (float(v) for v in values), strict=True))


def _hourly_stamps(n: int) -> list[str]:
    return [str(t)[:19] for t in np.datetime64("2020-01-01T00:00:00") + np.arange(n) * np.timedelta64(1, "h")]


def _deflate_at(case: dict, k: int) -> tuple[Deflation | None, RankedProgram | None]:
    """What a pipeline run with ``bt_top = k`` would report on this evolution (None: nothing survived)."""
    from alpha_evolve.crowning import deflate_crowned, draw_finalists, validation_rows

    seed = next(p for p in case["programs"] if p.is_seed)
    finalists = []
    for position, p in enumerate(draw_finalists(case["by_train"], seed, k)):
        v = case["validation"][p.id]
        ok = v["status"] == "ok"
        finalists.append(RankedProgram(p, dict(p.metrics), dict(v["metrics"]) if ok else {}, [], v["status"],
                                       flags=round_trip_flags(p.metrics, v["metrics"], case["minimum"]) if ok else [],
                                       return_stats=dict(v["stats"]) if ok else {}, train_position=position))
        if case["gate"] and ok:  # the seed gate as the pipeline runs it, on curves paired with the seed's
            finalists[-1].equity = _validation_curve(case, p.id)
    seed_gate(finalists, case["gate"])
    if not any(r.status == "ok" for r in finalists):
        return None, None
    ppy, obs = case["ppy"], case["obs"]
    rows = []
    for p in case["programs"]:
        rows.append(trial_row(p.code, "train", metrics=p.metrics, status=p.status, program_id=p.id,
                              periods_per_year=ppy, n_obs=3 * obs))
        if case["folds"]:
            rows += [trial_row(p.code, f"train_fold{f}", metrics={"Sharpe": p.metrics[f"fold{f}_Sharpe"]},
                               status=p.status, program_id=p.id, periods_per_year=ppy) for f in (1, 2, 3)]
    rows += validation_rows(finalists, periods_per_year=ppy, n_obs=obs)
    rows.append(trial_row("buy_and_hold", "validation", metrics={"Sharpe": 0.5}, role="benchmark",
                          periods_per_year=ppy, n_obs=obs))
    deflation = deflate_crowned(finalists, rows, objective=case["objective"], validation_obs=obs, train_obs=3 * obs,
                                periods_per_year=ppy, train_period="train_folds" if case["folds"] else "train")
    crowned = sorted(finalists, key=crown_key(case["objective"]), reverse=True)[0]  # the pipeline's crowning
    return deflation, crowned


def _gate_held(case: dict, k: int) -> bool:
    """Would the plain best-on-validation rule have crowned an evolved program here?"""
    _, crowned = _deflate_at({**case, "gate": 0.0}, k)
    return crowned is not None and not crowned.is_seed


def test_dsr_never_rises_with_bt_top_over_many_fixed_ledgers() -> None:
    """The property, for the class of inputs: seeds anywhere in the train order, fitness ties and zeros, failures,
    behaviour twins, flags, four objectives, folds or not, daily or hourly bars."""
    rises_without_the_nest = held_by_the_gate = 0
    for case_no in range(40):
        case = _ledger_case(case_no)
        reports: list[tuple[Deflation, RankedProgram]] = []
        for k in range(1, len(case["programs"]) + 2):
            deflation, crowned = _deflate_at(case, k)
            if deflation is not None and crowned is not None:
                reports.append((deflation, crowned))
                held_by_the_gate += crowned.is_seed and case["gate"] > 0 and _gate_held(case, k)
        assert reports, case_no
        for d, crowned in reports:
            assert d.sharpe_validation == crowned.validation["Sharpe"]  # deflates the program actually crowned
            assert d.dsr_validation_nested is not None and d.dsr_validation_nested <= d.dsr_validation + 1e-12
        for (a, _), (b, _) in itertools.pairwise(reports):
            assert b.dsr <= a.dsr + 1e-12, (case_no, a.to_dict(), b.to_dict())
            assert b.validation.n_trials >= a.validation.n_trials  # more compared, never fewer trials ...
            assert b.validation.sr_variance >= a.validation.sr_variance  # ... nor a smaller trial variance
            assert b.dsr_train == a.dsr_train and b.train == a.train  # the train selection does not depend on k
            rises_without_the_nest += b.dsr_validation > a.dsr_validation + 1e-9
    # the nested minimum does real work: the DSR of the selection alone does rise on some of these ledgers
    assert rises_without_the_nest > 0
    assert held_by_the_gate > 0  # the seed gate changed some crowns, and the property held through it


def _curve(returns: list[float], start: float = 100.0) -> list[tuple[str, float]]:
    values = [start]
    for r in returns:
        values.append(values[-1] * (1.0 + r))
    return list(zip([f"{t}Z" for t in _hourly_stamps(len(values))], values, strict=True))


def test_paired_sharpe_test_matches_a_hand_calculation() -> None:
    """Jobson-Korkie with Memmel's correction, worked out with the standard library on the same returns."""
    import statistics

    a = [0.010, -0.004, 0.012, 0.003, -0.006, 0.009, 0.002, 0.007]
    b = [0.006, -0.005, 0.008, 0.004, -0.009, 0.005, 0.001, 0.002]
    got = paired_sharpe_test(_curve(a), _curve(b))
    sa, sb = statistics.mean(a) / statistics.stdev(a), statistics.mean(b) / statistics.stdev(b)
    rho = statistics.correlation(a, b)
    var = (2 - 2 * rho + 0.5 * (sa**2 + sb**2 - 2 * sa * sb * rho**2)) / len(a)
    z = (sa - sb) / math.sqrt(var)
    assert got["n_obs"] == len(a)
    assert got["correlation"] == pytest.approx(rho, rel=1e-9)
    assert got["sharpe_diff"] == pytest.approx(sa - sb, rel=1e-9)
    assert got["z"] == pytest.approx(z, rel=1e-9)
    assert got["p_value"] == pytest.approx(1 - statistics.NormalDist().cdf(z), rel=1e-9)
    assert paired_sharpe_test(_curve(b), _curve(b))["p_value"] == 1.0  # the seed's own curve is no better
    assert paired_sharpe_test(_curve(b)[:3], _curve(b)[:3])["p_value"] == 1.0  # too few bars to tell


def _finalist(pid: int, returns: list[float], *, seed: bool = False, position: int = 0) -> RankedProgram:
    curve = _curve(returns)
    sharpe = statistics_sharpe(returns)
    program = Program("e", f"p = {pid}", id=pid, is_seed=seed, fitness=1.0, metrics={"Trades": 10})
    return RankedProgram(program, {"Trades": 10.0}, {"Sharpe": sharpe, "Trades": 10.0}, curve,
                         train_position=position)


def statistics_sharpe(returns: list[float]) -> float:
    import statistics

    return statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(252)


def test_seed_gate_crowns_a_clearly_better_finalist_and_keeps_the_seed_on_a_noisy_tie() -> None:
    rng = np.random.default_rng(11)
    seed_r = list(rng.normal(0.0003, 0.01, 220))
    # Clearly better: the seed's returns plus a steady 0.1 % a bar (z ~ 8 on 220 bars).
    better = [r + 0.001 + e for r, e in zip(seed_r, rng.normal(0, 0.001, 220), strict=True)]
    # A noisy tie: independent noise on the seed's returns, with a higher Sharpe on these bars by luck only.
    tie_rng = next(np.random.default_rng(s) for s in range(200)
                   if statistics_sharpe([r + e for r, e in zip(seed_r, np.random.default_rng(s).normal(
                       0, 0.008, 220), strict=True)]) > statistics_sharpe(seed_r) + 0.3)
    tie = [r + e for r, e in zip(seed_r, tie_rng.normal(0, 0.008, 220), strict=True)]

    ranked = [_finalist(1, tie, position=0), _finalist(2, seed_r, seed=True, position=1)]
    seed_gate(ranked, 0.9)
    assert ranked[0].validation["Sharpe"] > ranked[1].validation["Sharpe"] + 0.3  # best on validation ...
    assert not ranked[0].admitted and ranked[0].seed_test["p_value"] > 0.1  # ... but not better at 90 %
    assert max(ranked, key=crown_key("Sharpe")).is_seed  # the seed stays crowned
    seed_gate(ranked, 0.0)
    assert max(ranked, key=crown_key("Sharpe")).program.id == 1  # gate off: the plain best on validation

    ranked = [_finalist(1, tie, position=0), _finalist(3, better, position=1),
              _finalist(2, seed_r, seed=True, position=2)]
    seed_gate(ranked, 0.9)
    assert ranked[1].admitted and ranked[1].seed_test["p_value"] < 1e-6
    assert max(ranked, key=crown_key("Sharpe")).program.id == 3
    ranked.sort(key=crown_key("Sharpe"), reverse=True)
    assert [r.program.id for r in ranked] == [3, 2, 1]  # the held-back finalist ranks below the seed
