"""Cost of tamper-proof evaluation (#9): the confined, replay-verified evaluator vs the evaluator it replaced.

Run: uv run --no-sync python -m bench.bench_tamper [--candidates 24] [--rounds 2] [--generations 20]

Two ratios, both measured in this run on the same data and candidates, the two evaluators interleaved so outside
load hits both:
- evaluation: the same candidates through the train cascade (screen + full), 2 concurrent, wall time;
- pipeline: a whole offline-mutator pipeline run (evolution + validation of the top programs, SUMMARY.json) with
  each evaluator plugged into the same wiring. Target: at most +25 % wall time.
The baseline is `bench/legacy_evaluator.py`, a copy of the evaluator before #9 (persistent forked workers that
computed figures beside the candidate).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alpha_evolve.backtest import BacktestSettings
from alpha_evolve.data import DataSplits
from alpha_evolve.evaluator import StrategyEvaluator
from alpha_evolve.synthetic import synthetic_bars
from bench.legacy_evaluator import StrategyEvaluator as _Legacy


class LegacyEvaluator(_Legacy):
    """The pre-#9 evaluator behind today's wiring (which also passes the instrument specs it cannot use)."""

    def __init__(self, *args: Any, instruments: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """Today's EvalResult (the pipeline reads fields added since), filled from the legacy one."""
        import dataclasses

        from alpha_evolve.evaluator import EvalResult

        old = super().evaluate(*args, **kwargs)
        known = {f.name for f in dataclasses.fields(EvalResult)}
        return EvalResult(**{k: v for k, v in dataclasses.asdict(old).items() if k in known})

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ("momentum", "mean_reversion", "breakout")


def candidates(n: int) -> list[str]:
    """Seeds with their numeric parameters varied: distinct, realistic candidates."""
    out: list[str] = []
    for k in range(n):
        code = (ROOT / "alpha_evolve" / "strategies" / f"{SEEDS[k % len(SEEDS)]}.py").read_text()
        shift = k // len(SEEDS)
        out.append(re.sub(r"\((\d+)\)", lambda m, s=shift: f"({int(m.group(1)) + s})", code))
    return out


def evaluation_round(make: Callable[[], Any], codes: list[str]) -> tuple[float, float, list[Any]]:
    t0 = time.perf_counter()
    ev = make()
    started = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        results = ev.evaluate_many(codes, "train", "full")
        return started, time.perf_counter() - t1, results
    finally:
        ev.close()


def pipeline_round(legacy: bool, generations: int, out: Path) -> float:
    import alpha_evolve.evaluation_setup as setup
    from alpha_evolve.config import load_config
    from alpha_evolve.pipeline import run_pipeline

    config = load_config(None).with_updates(
        {"evolution.mutator": "offline", "evolution.generations": generations}, source="bench"
    )
    original = setup.StrategyEvaluator
    setup.StrategyEvaluator = LegacyEvaluator if legacy else original  # type: ignore[misc]
    try:
        t0 = time.perf_counter()
        run_dir = run_pipeline(config, output_dir=out)
        elapsed = time.perf_counter() - t0
    finally:
        setup.StrategyEvaluator = original  # type: ignore[misc]
    summary = (run_dir / "SUMMARY.json").read_text()
    if '"status": "ok"' not in summary:
        raise SystemExit(f"pipeline run failed: {summary[:300]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bars", type=int, default=1500)
    parser.add_argument("--generations", type=int, default=20)
    args = parser.parse_args()

    bars = synthetic_bars(args.bars, seed=7)
    n = len(bars)
    data = {"SYN": DataSplits(train=bars.iloc[: int(n * 0.6)], validation=bars.iloc[int(n * 0.6): int(n * 0.8)],
                              holdout=bars.iloc[int(n * 0.8):])}  # fmt: skip
    settings = BacktestSettings()
    codes = candidates(args.candidates)
    legacy_times, new_times, legacy_start, new_start = [], [], [], []
    for _ in range(args.rounds):
        s, t, old = evaluation_round(lambda: LegacyEvaluator(data, settings, 2), codes)
        legacy_start.append(s)
        legacy_times.append(t)
        s, t, new = evaluation_round(lambda: StrategyEvaluator(data, settings, 2), codes)
        new_start.append(s)
        new_times.append(t)
    same = sum(a.metrics == b.metrics and a.status == b.status for a, b in zip(old, new, strict=True))
    lt, nt = statistics.median(legacy_times), statistics.median(new_times)
    print(f"evaluation: {len(codes)} candidates x {len(data['SYN'].train)} train bars, 2 concurrent, "
          f"median of {args.rounds}")  # fmt: skip
    print(f"  legacy evaluator   {lt:7.2f} s  ({len(codes) / lt:5.1f} candidates/s), start {min(legacy_start):.2f} s")
    print(f"  verified+confined  {nt:7.2f} s  ({len(codes) / nt:5.1f} candidates/s), start {min(new_start):.2f} s")
    print(f"  ratio {nt / lt:.2f}x; identical figures for {same}/{len(codes)} candidates")

    if args.generations > 0:
        with tempfile.TemporaryDirectory() as tmp:
            lp, np_ = [], []
            for _ in range(args.rounds):
                lp.append(pipeline_round(True, args.generations, Path(tmp) / "legacy"))
                np_.append(pipeline_round(False, args.generations, Path(tmp) / "new"))
        lpm, npm = statistics.median(lp), statistics.median(np_)
        print(f"pipeline: offline mutator, {args.generations} generations, default config, median of {args.rounds}")
        print(f"  legacy {lpm:.2f} s, verified+confined {npm:.2f} s: wall time {100 * (npm / lpm - 1):+.1f} % "
              "(target <= +25 %)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
