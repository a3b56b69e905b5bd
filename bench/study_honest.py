"""Study: is a run's reported figure honest? Winner vs seed vs buy-and-hold on validation and on the holdout.

Reproduces the 40-run experiment of issue #11 (S&P 500, NASDAQ, GOOG, synthetic; several random seeds each;
offline mutator) at any size: for every dataset and seed it runs the pipeline, opens the sealed holdout once
through the ledgered door (``holdout.open_holdout``), and prints per dataset

* the reported validation Sharpe of the winner (the maximum over the finalists), its deflated figure and DSR;
* the validation Sharpe of the best-on-train program, the seed and buy-and-hold;
* the holdout Sharpe of the winner, the seed and buy-and-hold;
* the optimism of the reported figure (reported - holdout) and of the deflated figure (deflated - holdout);
* how often an evolved winner beat the seed / buy-and-hold on the holdout, and how often the best-on-train
  program would have done better on the holdout than the validation pick.

Data: by default four generated, real-looking daily series (GARCH(1,1) returns with Student-t shocks and
regime-switching drift, calibrated loosely to the S&P 500 and the NASDAQ, plus the package's synthetic series)
and the GOOG 2004-2008 daily bars matplotlib ships (real data). ``--data FILE ...`` runs on your own CSV/Parquet
files instead (one dataset per file), e.g. the real S&P 500 / NASDAQ series the issue used.

Examples::

    python -m bench.study_honest --seeds 2 --generations 6            # small, ~3 minutes on 2 cores
    python -m bench.study_honest --full                               # the issue's 40 runs (10 x 50 gen.)
    python -m bench.study_honest --folds 3 --fold-aggregate worst     # the robust-fitness option
    python -m bench.study_honest --data spx.csv ndx.csv --seeds 10
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _garch_series(seed: int, n: int, *, drift: float, vol: float, start: str) -> pd.DataFrame:
    """Daily OHLCV bars whose returns have volatility clustering, fat tails and drift regimes."""
    rng = np.random.default_rng(seed)
    omega, alpha, beta = (vol / math.sqrt(252)) ** 2 * 0.05, 0.08, 0.87
    var = (vol / math.sqrt(252)) ** 2
    regime_drift = drift / 252
    closes, opens, highs, lows = [], [], [], []
    price = 100.0
    for _ in range(n):
        if rng.random() < 1 / 150:  # a regime lasts ~150 days: bull, bear or flat
            regime_drift = rng.choice([drift * 2, -drift * 1.5, 0.0]) / 252
        shock = rng.standard_t(5) / math.sqrt(5 / 3)
        ret = regime_drift + math.sqrt(var) * shock
        var = omega + alpha * (ret - regime_drift) ** 2 + beta * var
        open_ = price * (1 + rng.normal(0, math.sqrt(var) * 0.2))
        price = max(price * math.exp(ret), 0.01)
        hi = max(open_, price) * (1 + abs(rng.normal(0, math.sqrt(var) * 0.5)))
        lo = min(open_, price) * (1 - abs(rng.normal(0, math.sqrt(var) * 0.5)))
        opens.append(open_)
        closes.append(price)
        highs.append(hi)
        lows.append(lo)
    index = pd.bdate_range(start, periods=n)
    return pd.DataFrame({"Date": index.strftime("%Y-%m-%d"), "Open": opens, "High": highs, "Low": lows,
                         "Close": closes, "Volume": rng.integers(1_000_000, 5_000_000, n)})


def _goog(path: Path) -> Path | None:
    try:
        import matplotlib

        sample = Path(matplotlib.get_data_path()) / "sample_data" / "goog.npz"
        data = np.load(sample, allow_pickle=True)["price_data"]
    except Exception:
        return None
    frame = pd.DataFrame(data)
    frame.columns = ["Date", "Open", "High", "Low", "Close", "Volume", "Adj Close"]
    frame.to_csv(path, index=False)
    return path


def default_datasets(folder: Path, bars: int) -> dict[str, Path | None]:
    """Name -> data file (None = the package's embedded synthetic series)."""
    out: dict[str, Path | None] = {}
    spx = folder / "SPX.csv"
    _garch_series(101, bars, drift=0.07, vol=0.16, start="2005-01-03").to_csv(spx, index=False)
    out["sp500-like"] = spx
    ndx = folder / "NDX.csv"
    _garch_series(202, bars, drift=0.10, vol=0.24, start="2005-01-03").to_csv(ndx, index=False)
    out["nasdaq-like"] = ndx
    goog = _goog(folder / "GOOG.csv")
    if goog is not None:
        out["GOOG (real, 2004-2008)"] = goog
    out["synthetic"] = None
    return out


def _config_text(data: Path | None, seed: int, args: argparse.Namespace) -> str:
    lines = ["[evolution]", f"generations = {args.generations}", f"random_seed = {seed}", 'mutator = "offline"',
             f'seed_strategy = "{args.seed_strategy}"', "max_concurrent = 2", f"fitness_folds = {args.folds}",
             f'fitness_fold_aggregate = "{args.fold_aggregate}"', f'fitness_metric = "{args.fitness}"',
             "[backtest]", f"bt_top = {args.bt_top}", f"min_round_trips = {args.min_round_trips}",
             f'objective = "{args.objective}"', f"synthetic_bars = {args.bars}", f"synthetic_seed = {seed}",
             "[pipeline]", "disable_align_cache = true", 'log_level = "WARNING"']
    if data is not None:
        lines.insert(lines.index("[backtest]") + 1, f'data = "{data}"')
    return "\n".join(lines) + "\n"


def one_run(name: str, data: Path | None, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from alpha_evolve.config import load_config
    from alpha_evolve.holdout import open_holdout
    from alpha_evolve.pipeline import read_summary, run_pipeline

    cfg = work / f"{abs(hash(name)) % 10_000}_{seed}.toml"
    cfg.write_text(_config_text(data, seed, args))
    run = run_pipeline(load_config(cfg), experiment=f"study_{seed}", output_dir=work / "runs")
    summary = read_summary(run)
    if summary["status"] != "ok":
        return {"dataset": name, "seed": seed, "status": "failed", "reason": summary.get("reason")}
    hold = open_holdout(run, who="study")
    sel, over = summary["selection"], summary["overfitting"]
    best_on_train = sel.get("best_on_train_validation") or {}
    verdict = hold.get("verdict") or {}
    return {
        "best_on_train_holdout": _best_on_train_holdout(run, summary, hold),
        "dataset": name,
        "seed": seed,
        "status": "ok",
        "winner_is_seed": sel["winner_is_seed"],
        "crowned": sel["crowned"],
        "reported": summary["best_metrics"]["Sharpe"],
        "deflated": over.get("sharpe_validation_deflated"),
        "dsr": over["deflated_sharpe"],
        "n_trials": over["n_trials"],
        "best_on_train_validation": best_on_train.get("Sharpe"),
        "seed_validation": summary["seed_metrics"]["validation"]["Sharpe"],
        "bh_validation": summary["buy_and_hold_metrics"]["Sharpe"],
        "holdout": hold["metrics"]["Sharpe"],
        "seed_holdout": (hold.get("seed_metrics") or {}).get("Sharpe"),
        "bh_holdout": (hold.get("buy_and_hold_metrics") or {}).get("Sharpe"),
        "oos_beat_seed": summary["verdict"]["evolved_beat_seed"],
        "holdout_beat_seed": verdict.get("evolved_beat_seed"),
        "holdout_beat_bh": verdict.get("evolved_beat_buy_and_hold"),
        "statement": summary["verdict"]["statement"],
        "best_on_train_id": sel.get("best_on_train_id"),
        "winner_id": sel.get("winner_id"),
        "run_dir": str(run),
    }


def _best_on_train_holdout(run: Path, summary: dict[str, Any], hold: dict[str, Any]) -> float | None:
    """The holdout Sharpe of the best-on-train program (the issue's comparison: did validation pick better?).

    A second look at the holdout, made through the door on purpose and ledgered in the run (``via = "study"``).
    """
    from alpha_evolve.commands.backtest import run_backtest_command
    from alpha_evolve.config import load_config
    from alpha_evolve.store import ProgramStore

    sel = summary["selection"]
    program_id = sel.get("best_on_train_id")
    if program_id is None:
        return None
    if program_id == sel.get("winner_id"):
        return float(hold["metrics"]["Sharpe"])
    with ProgramStore(run / "programs.sqlite", create=False) as store:
        program = store.get(int(program_id))
    if program is None:
        return None
    path = run / "best_on_train_strategy.py"
    path.write_text(program.code)
    config = load_config(run / (summary.get("config_file") or "config.toml"))
    out = run_backtest_command(config, program.code, "holdout", open_holdout=True, strategy_path=path, via="study")
    return float(out["metrics"]["Sharpe"]) if out["status"] == "ok" else None


def _mean(values: list[Any]) -> float:
    vals = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(float(v))]
    return statistics.fmean(vals) if vals else float("nan")


def report(rows: list[dict[str, Any]]) -> str:
    lines = []
    head = (f"{'dataset':24s} {'runs':>4s} | {'valid: winner':>13s} {'deflated':>8s} {'DSR':>5s} {'on-train':>8s} "
            f"{'seed':>6s} {'B&H':>6s} | {'holdout: winner':>15s} {'on-train':>8s} {'seed':>6s} {'B&H':>6s} | "
            f"{'optimism':>8s} {'defl.opt':>8s} | {'beat seed':>9s} {'beat B&H':>8s}")
    lines.append(head)
    lines.append("-" * len(head))
    for name in dict.fromkeys(r["dataset"] for r in rows):
        ok = [r for r in rows if r["dataset"] == name and r["status"] == "ok"]
        if not ok:
            lines.append(f"{name:24s} all runs failed")
            continue
        evolved = [r for r in ok if not r["winner_is_seed"] and r["crowned"]]
        optimism = [r["reported"] - r["holdout"] for r in ok]
        deflated_opt = [r["deflated"] - r["holdout"] for r in ok if r["deflated"] is not None]
        lines.append(
            f"{name:24s} {len(ok):4d} | {_mean([r['reported'] for r in ok]):13.2f} "
            f"{_mean([r['deflated'] for r in ok]):8.2f} {_mean([r['dsr'] for r in ok]):5.2f} "
            f"{_mean([r['best_on_train_validation'] for r in ok]):8.2f} "
            f"{_mean([r['seed_validation'] for r in ok]):6.2f} "
            f"{_mean([r['bh_validation'] for r in ok]):6.2f} | {_mean([r['holdout'] for r in ok]):15.2f} "
            f"{_mean([r.get('best_on_train_holdout') for r in ok]):8.2f} "
            f"{_mean([r['seed_holdout'] for r in ok]):6.2f} {_mean([r['bh_holdout'] for r in ok]):6.2f} | "
            f"{_mean(optimism):8.2f} {_mean(deflated_opt):8.2f} | "
            f"{sum(bool(r['holdout_beat_seed']) for r in evolved):4d}/{len(ok):<4d} "
            f"{sum(bool(r['holdout_beat_bh']) for r in evolved):3d}/{len(ok):<4d}")
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        lines.append("")
        lines.append(f"all datasets: {len(ok)} runs; mean optimism of the reported figure "
                     f"{_mean([r['reported'] - r['holdout'] for r in ok]):.2f}, of the deflated figure "
                     f"{_mean([r['deflated'] - r['holdout'] for r in ok]):.2f}; DSR >= 0.95 in "
                     f"{sum(r['dsr'] >= 0.95 for r in ok)}; winner = seed in {sum(r['winner_is_seed'] for r in ok)}; "
                     f"not crowned (too few round trips) in {sum(not r['crowned'] for r in ok)}; "
                     f"out-of-sample verdict 'beat the seed' in {sum(r['oos_beat_seed'] for r in ok)}")
        pairs = [(r["holdout"], r["best_on_train_holdout"]) for r in ok
                 if isinstance(r.get("best_on_train_holdout"), int | float)]
        lines.append(f"on the holdout the validation pick did worse than the best-on-train program in "
                     f"{sum(w < b - 1e-12 for w, b in pairs)} of {len(pairs)} runs and better in "
                     f"{sum(w > b + 1e-12 for w, b in pairs)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=2, help="random seeds per dataset (the issue used 10)")
    p.add_argument("--generations", type=int, default=6, help="generations per run (the issue used 50)")
    p.add_argument("--bt-top", type=int, default=5)
    p.add_argument("--bars", type=int, default=1500, help="bars of each generated series")
    p.add_argument("--folds", type=int, default=1, help="robust fitness folds (1 = whole train period)")
    p.add_argument("--fold-aggregate", choices=("mean", "worst"), default="mean")
    p.add_argument("--fitness", default="Sharpe")
    p.add_argument("--objective", default="Sharpe")
    p.add_argument("--min-round-trips", type=int, default=3)
    p.add_argument("--seed-strategy", default="momentum")
    p.add_argument("--data", nargs="*", help="CSV/Parquet files to study instead of the generated datasets")
    p.add_argument("--json", help="also write every run's figures to this JSON file")
    p.add_argument("--full", action="store_true",
                   help="the issue's 40-run experiment: 10 seeds x 50 generations on the four datasets (hours)")
    args = p.parse_args(argv)
    if args.full:
        args.seeds, args.generations = 10, 50
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="study-honest-") as tmp:
        work = Path(tmp)
        datasets: dict[str, Path | None] = (
            {Path(d).stem: Path(d).resolve() for d in args.data} if args.data else default_datasets(work, args.bars))
        rows = []
        for name, path in datasets.items():
            for seed in range(1, args.seeds + 1):
                row = one_run(name, path, seed, args, work)
                rows.append(row)
                print(f"  {name} seed {seed}: " + (f"reported {row['reported']:.2f}, holdout {row['holdout']:.2f}, "
                                                    f"DSR {row['dsr']:.2f}" if row["status"] == "ok"
                                                    else f"failed: {row['reason']}"), flush=True)
        print()
        print(f"study: {len(rows)} runs, {args.generations} generations, bt_top {args.bt_top}, folds {args.folds} "
              f"({args.fold_aggregate}), fitness {args.fitness}, objective {args.objective}, "
              f"{time.perf_counter() - started:.0f} s")
        print(report(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
