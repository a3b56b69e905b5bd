"""Evaluator benchmarks: pool vs a bare engine loop, evaluator overhead, vs a subprocess per candidate, and one
long minute-bar backtest.

Run: uv run --no-sync python -m bench.bench_evaluator [--runs 40] [--bars 2000] [--subprocess-runs 6]

Every ratio compares figures measured in this run on the same data. The bare loop runs in a forked child so
this process never builds an engine (its workers are forked from it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from alpha_evolve.backtest import BacktestSettings, PreparedBars, prepare_bars
from alpha_evolve.evaluator import StrategyEvaluator
from alpha_evolve.synthetic import synthetic_bars

ROOT = Path(__file__).resolve().parents[1]
MOMENTUM = (ROOT / "alpha_evolve" / "strategies" / "momentum.py").read_text()


def bare_loop(prepared: PreparedBars, runs: int) -> list[float]:
    """The baseline: plain BacktestEngine runs in one process, strategy class compiled once, no guards."""
    from nautilus_trader.backtest.config import BacktestEngineConfig
    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.backtest.models import MakerTakerFeeModel
    from nautilus_trader.config import LoggingConfig
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.enums import AccountType, OmsType
    from nautilus_trader.model.identifiers import Venue
    from nautilus_trader.model.objects import Money

    from alpha_evolve.strategies.base import EvolvableStrategyConfig

    namespace: dict = {}
    exec(compile(MOMENTUM, "<seed>", "exec"), namespace)
    cls = namespace["MomentumStrategy"]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        engine = BacktestEngine(
            BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR", bypass_logging=True), run_analysis=False)
        )
        engine.add_venue(
            Venue("SIM"), OmsType.HEDGING, AccountType.CASH, [Money(100_000, USD)], base_currency=USD,
            fee_model=MakerTakerFeeModel(),
        )
        engine.add_instrument(prepared.instrument)
        engine.add_data(prepared.bars, sort=False)
        config = EvolvableStrategyConfig(instrument_id=prepared.instrument.id, bar_type=prepared.bar_type)
        engine.add_strategy(cls(config))
        engine.run()
        assert engine.iteration == len(prepared.bars)
        engine.dispose()
        times.append(time.perf_counter() - t0)
    return times


SUBPROCESS_SCRIPT = """
import sys, pandas as pd
from alpha_evolve.backtest import BacktestSettings, prepare_bars, run_backtest
frame = pd.read_pickle(sys.argv[1])
out = run_backtest(open(sys.argv[2]).read(), prepare_bars("SYN", frame), BacktestSettings())
assert out.status == "ok", out.error
"""


def naive_subprocess(frame: pd.DataFrame, runs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bars.pkl"
        frame.to_pickle(data)
        code = Path(tmp) / "candidate.py"
        code.write_text(MOMENTUM)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", SUBPROCESS_SCRIPT, str(data), str(code)], check=True, cwd=ROOT)
            times.append(time.perf_counter() - t0)
    return times


def minute_bars(n: int, seed: int = 3) -> pd.DataFrame:
    """A random walk with minute-sized moves (the synthetic generator's daily drift compounds absurdly over 260k
    minutes)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0006, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.0003, n)) * close
    index = pd.date_range("2024-01-02 14:30", periods=n, freq="1min", tz="UTC")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.integers(1_000, 50_000, n).astype(float),
        },
        index=index,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--bars", type=int, default=2000)
    parser.add_argument("--subprocess-runs", type=int, default=6)
    parser.add_argument("--minute-bars", type=int, default=260_000)
    args = parser.parse_args()

    print(f"# evaluator benchmark  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
          f"{os.cpu_count()} cpus  python {platform.python_version()}")
    frame = synthetic_bars(args.bars, seed=11)
    settings = BacktestSettings(screen_fraction=0.0, recycle_after=100)
    prepared = prepare_bars("SYN", frame, settings)
    splits = {"SYN": {"train": frame}}
    codes = [MOMENTUM] * args.runs

    # 1+2. bare loop (one persistent process) and the evaluator with one worker, interleaved in chunks so that
    # load from other work on a shared machine hits both alike.
    ctx = multiprocessing.get_context("fork")
    chunk = 10
    bare: list[float] = []
    one: list[float] = []
    with (
        concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool,
        StrategyEvaluator(splits, settings, max_concurrent=1) as ev,
    ):
        pool.submit(bare_loop, prepared, 1).result()  # warm: the first engine pays the logging set-up
        ev.evaluate(MOMENTUM)
        for start in range(0, args.runs, chunk):
            n = min(chunk, args.runs - start)
            bare += pool.submit(bare_loop, prepared, n).result()
            for code in codes[start : start + n]:
                t0 = time.perf_counter()
                res = ev.evaluate(code)
                one.append(time.perf_counter() - t0)
                assert res.ok, res.error
    bare_per = statistics.median(bare)
    bare_total = sum(bare)
    one_per = statistics.median(one)
    print(f"bare loop            : {args.runs} runs of {args.bars} daily bars, median {bare_per * 1e3:.1f} ms/run, "
          f"{args.runs / bare_total:.2f} runs/s")
    print(f"evaluator, 1 worker  : median {one_per * 1e3:.1f} ms/candidate  "
          f"overhead vs bare {100 * (one_per / bare_per - 1):+.1f} %  (target <= +10 %)")

    # 3. evaluator, 2 workers: throughput
    with StrategyEvaluator(splits, settings, max_concurrent=2) as ev:
        ev.evaluate_many([MOMENTUM] * 2)
        t0 = time.perf_counter()
        results = ev.evaluate_many(codes)
        pool_total = time.perf_counter() - t0
        assert all(r.ok for r in results)
    pool_rate = args.runs / pool_total
    print(f"evaluator, 2 workers : {pool_rate:.2f} candidates/s  "
          f"throughput vs bare loop {pool_rate * bare_total / args.runs:.2f}x  (target >= 1.7x)")

    # 4. naive: a fresh python per candidate
    naive = naive_subprocess(frame, args.subprocess_runs)
    naive_per = statistics.median(naive)
    print(f"subprocess/candidate : median {naive_per * 1e3:.0f} ms/candidate  "
          f"evaluator(1 worker) is {naive_per / one_per:.1f}x faster, evaluator(2 workers) "
          f"{naive_per * pool_rate:.1f}x  (target >= 10x)")

    # 5. one long minute-bar backtest
    minute = minute_bars(args.minute_bars)
    t0 = time.perf_counter()
    long_settings = BacktestSettings(screen_fraction=0.0, soft_timeout_seconds=120, hard_timeout_seconds=180)
    with StrategyEvaluator({"MIN": {"train": minute}}, long_settings, max_concurrent=1) as ev:
        prep = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = ev.evaluate(MOMENTUM)
        run = time.perf_counter() - t1
    print(f"{args.minute_bars} 1-min bars  : wrangling {prep:.1f} s (once, in the parent), backtest {run:.1f} s "
          f"({res.status}, {res.metrics.get('Trades', 0):.0f} trades)  (target < 15 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
