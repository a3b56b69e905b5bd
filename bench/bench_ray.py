"""Ray backend vs the local pool on the same cores, in one run; and a modelled scaling table.

Run: uv run --no-sync python -m bench.bench_ray [--candidates 24] [--rounds 3] [--cores 2] [--symbols 1]

Both evaluators score the same candidates (the seed strategies, repeated) on the same data with the same number
of confined workers (``--cores``); rounds alternate local, ray, local, ray so load drift on a shared machine hits
both alike. Two ratios are reported:

- **wall-clock throughput**, best and median rounds, and the median of each Ray round against the mean of the
  local rounds around it (paired, so a load change between rounds cancels out);
- **CPU cost per candidate**: the CPU seconds every process involved spent in a round (this driver; for the local
  pool its template, slots, replay workers and candidate processes; for Ray the same on the node plus the node
  actor, raylet, GCS and Ray's helper processes), per candidate. On cores of its own, throughput is cores / CPU
  cost, so local cost / Ray cost is the throughput ratio without the other tenants' noise of a shared machine.

Measured as well: the driver's CPU time per task (the serial cost that bounds a cluster's throughput no matter
how many nodes), the Ray round trip of an empty actor call, and the node start-up (actor + template + bars). The
scaling table models a cluster of C cores as ``min(C * e / t, 1 / d)`` candidates/s, with t the per-candidate CPU
seconds on one core, e the measured ray/local efficiency (CPU-cost ratio) and d the driver CPU seconds per
candidate; start-up is paid once per node, in parallel. ``--symbols N`` evaluates a universe of N synthetic
symbols (candidate x symbol tasks on Ray).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any

import psutil

from alpha_evolve.config import RunConfig
from alpha_evolve.evaluation_setup import backtest_settings, load_run_data
from alpha_evolve.evaluator import StrategyEvaluator
from alpha_evolve.strategies import SEEDS, seed_source
from alpha_evolve.synthetic import synthetic_bars


def _frames(config: RunConfig, symbols: int) -> dict[str, Any]:
    data = load_run_data(config)
    frames = {symbol: {"train": s.train} for symbol, s in data.splits.items()}
    if symbols > 1:  # more synthetic symbols, each its own random walk of the same length
        n = len(next(iter(frames.values()))["train"])
        frames = {f"SYN{i}": {"train": synthetic_bars(n, seed=100 + i)} for i in range(symbols)}
    return frames


def _cpu(pids: set[int]) -> dict[int, float]:
    """CPU seconds of each live process (its own and its reaped children's: candidate processes, old replay
    workers), so a round's cost is the sum of the differences."""
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[pid] = t.user + t.system + t.children_user + t.children_system
    return out


def _tree(root: int) -> set[int]:
    try:
        proc = psutil.Process(root)
        return {root, *(c.pid for c in proc.children(recursive=True))}
    except psutil.Error:
        return set()


def _timed(evaluator: Any, codes: list[str], pids: Any) -> tuple[float, float, float]:
    """(wall seconds, this process's CPU seconds, CPU seconds of the evaluator's processes) of evaluating every
    code on train (screen + full); ``pids()`` names the processes that work for this evaluator."""
    before = _cpu(pids())
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = evaluator.evaluate_many(codes, "train", "full")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    after = _cpu(pids())
    others = sum(v - before.get(pid, 0.0) for pid, v in after.items())
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"benchmark candidate failed: {bad[0].status}: {bad[0].error}")
    return wall, cpu, others


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--bars", type=int, default=1500)
    ap.add_argument("--symbols", type=int, default=1)
    args = ap.parse_args()

    from alpha_evolve.ray_backend import LOCAL_SYSTEM_CONFIG, RayEvaluator, import_ray

    ray = import_ray()

    config = RunConfig().with_updates({"backtest.synthetic_bars": args.bars})
    frames = _frames(config, args.symbols)
    settings = backtest_settings(config)
    names = sorted(n for n in SEEDS if n != "buy_and_hold")
    codes = [seed_source(names[i % len(names)]) for i in range(args.candidates)]
    print(f"# {platform.node()} {platform.machine()} python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; ray {ray.__version__}; {args.candidates} candidates x {args.rounds} "
          f"rounds; {len(frames)} symbol(s) of {args.bars} bars ({len(next(iter(frames.values()))['train'])} "
          "train)")

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.cores, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _system_config=LOCAL_SYSTEM_CONFIG)  # as ray_backend.connect starts a local instance
    ray_start = time.perf_counter() - t0
    me = os.getpid()
    local = StrategyEvaluator(frames, settings, max_concurrent=args.cores)
    t0 = time.perf_counter()
    remote = RayEvaluator(frames, settings, max_concurrent=args.cores, workers_per_node=args.cores)
    node_start = time.perf_counter() - t0
    local_pids = lambda: _tree(local.template_pid)  # noqa: E731 - template, slots, replay workers, candidates
    ray_pids = lambda: _tree(me) - {me} - local_pids()  # noqa: E731 - Ray's processes, the actor and its pool
    try:
        _timed(local, codes[: args.cores], local_pids)  # warm both (first engine in a process pays logging set-up)
        _timed(remote, codes[: args.cores], ray_pids)
        local_runs, ray_runs = [], []
        for _ in range(args.rounds):
            local_runs.append(_timed(local, codes, local_pids))
            ray_runs.append(_timed(remote, codes, ray_pids))
        local_runs.append(_timed(local, codes, local_pids))  # each Ray round sits between two local ones
        actor = remote._live_nodes()[0].actor
        ray.get(actor.info.remote())
        trips = []
        for _ in range(50):
            t = time.perf_counter()
            ray.get(actor.info.remote())
            trips.append(time.perf_counter() - t)
        tasks = remote.cluster_status()["tasks"]
    finally:
        remote.close()
        local.close()
        ray.shutdown()

    n = args.candidates
    local_walls = [w for w, _, _ in local_runs]
    ray_walls = [w for w, _, _ in ray_runs]
    best = min(local_walls) / min(ray_walls)
    median = statistics.median(local_walls) / statistics.median(ray_walls)
    paired = statistics.median((local_walls[i] + local_walls[i + 1]) / 2 / ray_walls[i]
                               for i in range(len(ray_walls)))
    local_cost = [(c + o) / n for _, c, o in local_runs]
    ray_cost = [(c + o) / n for _, c, o in ray_runs]
    cost_ratio = statistics.median(local_cost) / statistics.median(ray_cost)
    per_task_cpu = statistics.median(local_cost)  # CPU seconds per candidate (screen + full)
    driver_cpu = min(c for _, c, _ in ray_runs) / n
    trip_ms = statistics.median(trips) * 1e3
    print(f"local pool : {n / min(local_walls):6.2f} candidates/s best round ({len(local_walls)} rounds: "
          + ", ".join(f"{w:.2f}" for w in local_walls) + " s)")
    print(f"ray backend: {n / min(ray_walls):6.2f} candidates/s best round ({len(ray_walls)} rounds: "
          + ", ".join(f"{w:.2f}" for w in ray_walls) + " s)")
    print(f"ray / local wall-clock throughput: {best:.1%} best rounds, {median:.1%} median rounds, {paired:.1%} "
          "median of paired rounds (target >= 90 %)")
    print(f"CPU cost per candidate: local {per_task_cpu * 1e3:.0f} ms, ray {statistics.median(ray_cost) * 1e3:.0f} "
          f"ms (rounds: local " + ", ".join(f"{c * 1e3:.0f}" for c in local_cost) + "; ray "
          + ", ".join(f"{c * 1e3:.0f}" for c in ray_cost) + f") -> ray / local throughput on own cores "
          f"{cost_ratio:.1%}")
    print(f"driver CPU {driver_cpu * 1e3:.1f} ms per candidate ({tasks} tasks in all); empty actor round trip "
          f"{trip_ms:.2f} ms (median of 50)")
    print(f"start-up: local Ray instance {ray_start:.1f} s, node actor + template + bars {node_start:.1f} s")
    print("\nmodelled cluster throughput (candidates/s) = min(C x e / t, 1 / d), e = CPU-cost ratio:")
    print("| cores | nodes (8 cores each) | modelled candidates/s | bound | start-up |")
    print("|---:|---:|---:|---|---|")
    for cores in (8, 64, 512):
        compute = cores * cost_ratio / per_task_cpu
        ceiling = 1.0 / driver_cpu if driver_cpu > 0 else float("inf")
        bound = "workers" if compute <= ceiling else "driver"
        print(f"| {cores} | {max(cores // 8, 1)} | {min(compute, ceiling):,.0f} | {bound} | ~{node_start:.0f} s "
              f"(nodes start in parallel) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
