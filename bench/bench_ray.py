"""Ray backend vs the local pool on the same cores, in one run; and a modelled scaling table.

Run: uv run --no-sync python -m bench.bench_ray [--candidates 24] [--rounds 2] [--cores 2]

Both evaluators score the same candidates (the seed strategies, repeated) on the same data with the same number
of confined workers (``--cores``); rounds alternate local, ray, local, ray so load drift on a shared machine hits
both alike, and the best round of each is compared. Measured as well: the driver's CPU time per task (the serial
cost that bounds a cluster's throughput no matter how many nodes), the Ray round trip of an empty actor call, and
the node start-up (actor + template + bars). The scaling table models a cluster of C cores as
``min(C * e / t, 1 / d)`` candidates/s, with t the per-candidate CPU seconds on one core, e the measured ray/local
efficiency and d the driver CPU seconds per candidate; start-up is paid once per node, in parallel.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any

from alpha_evolve.config import RunConfig
from alpha_evolve.evaluation_setup import backtest_settings, load_run_data
from alpha_evolve.evaluator import StrategyEvaluator
from alpha_evolve.strategies import SEEDS, seed_source


def _frames(config: RunConfig) -> dict[str, Any]:
    data = load_run_data(config)
    return {symbol: {"train": s.train} for symbol, s in data.splits.items()}


def _timed(evaluator: Any, codes: list[str]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of evaluating every code on train (screen + full)."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = evaluator.evaluate_many(codes, "train", "full")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"benchmark candidate failed: {bad[0].status}: {bad[0].error}")
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--bars", type=int, default=1500)
    args = ap.parse_args()

    import ray

    from alpha_evolve.ray_backend import RayEvaluator

    config = RunConfig().with_updates({"backtest.synthetic_bars": args.bars})
    frames = _frames(config)
    settings = backtest_settings(config)
    names = sorted(n for n in SEEDS if n != "buy_and_hold")
    codes = [seed_source(names[i % len(names)]) for i in range(args.candidates)]
    print(f"# {platform.node()} {platform.machine()} python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; ray {ray.__version__}; {args.candidates} candidates x {args.rounds} "
          f"rounds; {args.bars} bars ({len(next(iter(frames.values()))['train'])} train)")

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.cores, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_start = time.perf_counter() - t0
    local = StrategyEvaluator(frames, settings, max_concurrent=args.cores)
    t0 = time.perf_counter()
    remote = RayEvaluator(frames, settings, max_concurrent=args.cores, workers_per_node=args.cores)
    node_start = time.perf_counter() - t0
    try:
        _timed(local, codes[: args.cores])  # warm both (first engine in a process pays logging set-up)
        _timed(remote, codes[: args.cores])
        local_runs, ray_runs = [], []
        for _ in range(args.rounds):
            local_runs.append(_timed(local, codes))
            ray_runs.append(_timed(remote, codes))
        actor = remote._live_nodes()[0].actor
        ray.get(actor.info.remote())
        trips = []
        for _ in range(50):
            t = time.perf_counter()
            ray.get(actor.info.remote())
            trips.append(time.perf_counter() - t)
    finally:
        remote.close()
        local.close()
        ray.shutdown()

    n = args.candidates
    local_wall = min(w for w, _ in local_runs)
    ray_wall = min(w for w, _ in ray_runs)
    efficiency = local_wall / ray_wall
    per_task_cpu = local_wall * args.cores / n  # seconds of one core per candidate (screen + full)
    driver_cpu = min(c for _, c in ray_runs) / n
    trip_ms = statistics.median(trips) * 1e3
    print(f"local pool : {n / local_wall:6.2f} candidates/s (best of {args.rounds}: {local_wall:.2f} s; all "
          + ", ".join(f"{w:.2f}" for w, _ in local_runs) + ")")
    print(f"ray backend: {n / ray_wall:6.2f} candidates/s (best of {args.rounds}: {ray_wall:.2f} s; all "
          + ", ".join(f"{w:.2f}" for w, _ in ray_runs) + ")")
    median_ratio = statistics.median(w for w, _ in local_runs) / statistics.median(w for w, _ in ray_runs)
    print(f"ray / local throughput: {efficiency:.1%} best rounds, {median_ratio:.1%} median rounds (target >= 90 %)")
    print(f"per candidate: {per_task_cpu * 1e3:.0f} ms of one core; driver CPU {driver_cpu * 1e3:.1f} ms; "
          f"empty actor round trip {trip_ms:.2f} ms (median of 50)")
    print(f"start-up: local Ray instance {ray_start:.1f} s, node actor + template + bars {node_start:.1f} s")
    print("\nmodelled cluster throughput (candidates/s) = min(C x e / t, 1 / d):")
    print("| cores | nodes (8 cores each) | modelled candidates/s | bound | start-up |")
    print("|---:|---:|---:|---|---|")
    for cores in (8, 64, 512):
        compute = cores * efficiency / per_task_cpu
        ceiling = 1.0 / driver_cpu if driver_cpu > 0 else float("inf")
        bound = "workers" if compute <= ceiling else "driver"
        print(f"| {cores} | {max(cores // 8, 1)} | {min(compute, ceiling):,.0f} | {bound} | ~{node_start:.0f} s "
              f"(nodes start in parallel) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
