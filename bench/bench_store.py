"""Program store benchmark: parent selection and top_k at 100,000 programs vs a naive load-everything baseline.

Run: `uv run --no-sync python -m bench.bench_store [--programs N] [--ops N]`. Both sides are measured in the
same run on the same file, so the ratio is meaningful on a noisy shared machine even when absolute times drift.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alpha_evolve.selection import ELITE_FRACTION, sample_parent, select_parent
from alpha_evolve.store import Program, ProgramStore

CODE = '''"""Evolved strategy {i}."""
from alpha_evolve.strategies.base import EvolvableStrategy
from nautilus_trader.indicators import ExponentialMovingAverage, RelativeStrengthIndex


class Evolved{i}(EvolvableStrategy):
    def setup_indicators(self) -> None:
        # === EVOLVE-BLOCK: indicators ===
        self.fast = ExponentialMovingAverage({fast})
        self.slow = ExponentialMovingAverage({slow})
        self.rsi = RelativeStrengthIndex(14)
        # === END EVOLVE-BLOCK ===

    def decide(self, bar) -> None:
        # === EVOLVE-BLOCK: decision_logic ===
        spread = self.fast.value - self.slow.value
        if spread > 0 and self.rsi.value < {hi} and self.is_flat:
            self.go_long()
        elif (spread < 0 or self.rsi.value > {hi2}) and self.is_long:
            self.go_flat()
        # === END EVOLVE-BLOCK ===
''' + "# padding to a realistic size\n" * 20


def make_program(i: int, rng: random.Random, parent: int | None) -> Program:
    fast, slow = rng.randint(3, 30), rng.randint(31, 200)
    fitness = rng.gauss(0.3, 0.8)
    failed = rng.random() < 0.05
    metrics = {
        "Sharpe": fitness,
        "Sortino": fitness * 1.3,
        "Calmar": fitness * 0.7,
        "MaxDD": abs(rng.gauss(0.2, 0.1)),
        "CAGR": fitness * 0.1,
        "TotalReturn": fitness * 0.4,
        "AnnVol": abs(rng.gauss(0.15, 0.05)),
        "WinRate": rng.random(),
        "Trades": rng.randint(0, 300),
        "Exposure": rng.random(),
    }
    return Program(
        experiment="bench",
        code=CODE.format(i=i, fast=fast, slow=slow, hi=0.7, hi2=0.8),
        blocks={"indicators": f"self.fast = ExponentialMovingAverage({fast})", "decision_logic": "pass"},
        parent_id=parent,
        generation=1 + i // 1000,
        iteration=i,
        metrics={} if failed else metrics,
        fitness=None if failed else fitness,
        status="runtime" if failed else "ok",
        failure_message="ZeroDivisionError: float division by zero" if failed else None,
        stage="full",
        mutator="llm",
        model="model-x",
        input_tokens=3000,
        output_tokens=400,
        cost_usd=0.01,
        elapsed_s=0.3,
        behavior={
            "trades": metrics["Trades"],
            "exposure": round(metrics["Exposure"], 4),
            "returns": [round(rng.gauss(0.005, 0.04), 5) for _ in range(12)],
        },
    )


def naive_choose(store: ProgramStore, mode: str, rng: random.Random, columns: str) -> int:
    """What selection looks like without SQL: load every row of the experiment, filter and choose in Python."""
    rows = store._conn().execute(f"SELECT {columns} FROM programs WHERE experiment = ?", ("bench",)).fetchall()
    eligible = [r for r in rows if r["status"] == "ok" and not r["pruned"]]
    if mode == "explore":
        return int(rng.choice(eligible)["id"])
    ranked = sorted(eligible, key=lambda r: (-r["fitness"], r["id"]))
    if mode == "elite":
        return int(rng.choice(ranked[: max(1, math.ceil(ELITE_FRACTION * len(ranked)))])["id"])
    weights = [len(ranked) - k for k in range(len(ranked))]
    return int(rng.choices(ranked, weights=weights)[0]["id"])


def per_op_ms(fn: Callable[[], Any], n: int) -> float:
    """Median of 5 batches, in ms per call: robust to a noisy neighbour."""
    batch = max(1, n // 5)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) * 1000 / batch)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--programs", type=int, default=100_000)
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--naive-ops", type=int, default=5)
    args = ap.parse_args()
    console = Console()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = ProgramStore(path)
        store.create_experiment("bench", target_iterations=args.programs)
        seed = store.insert(
            Program("bench", CODE.format(i=0, fast=10, slow=50, hi=0.7, hi2=0.8), fitness=0.1, is_seed=True)
        )
        t0 = time.perf_counter()
        for start in range(0, args.programs, 10_000):
            batch = range(start, min(start + 10_000, args.programs))
            store.insert_many(make_program(i, rng, seed) for i in batch)
        insert_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        eligible = store.eligible_count("bench")

        rec_iter = iter(range(args.programs, args.programs + 10**6))
        record_ms = per_op_ms(lambda: store.record_iteration(make_program(next(rec_iter), rng, seed)), 200)

        srng = random.Random(1)
        rows: list[tuple[str, float, float | None, float | None]] = []
        for mode in ("elite", "exploit", "explore"):
            fast = per_op_ms(partial(sample_parent, store, "bench", mode, srng), args.ops)
            full = per_op_ms(partial(naive_choose, store, mode, srng, "*"), args.naive_ops)
            light = per_op_ms(partial(naive_choose, store, mode, srng, "id, fitness, status, pruned"), 25)
            rows.append((f"sample {mode}", fast, full, light))
        novelty = per_op_ms(lambda: sample_parent(store, "bench", "exploit", srng, novelty_boost_w=0.5), args.ops)
        rows.append(("sample exploit + novelty w=0.5", novelty, None, None))
        mixed = per_op_ms(lambda: select_parent(store, "bench", srng), args.ops)
        rows.append(("select_parent (0.1/0.7/0.2)", mixed, None, None))
        topk = per_op_ms(lambda: store.top_k("bench", 10), args.ops)
        topk_naive = per_op_ms(
            lambda: sorted(
                (p for p in (store.get_many(list(range(1, args.programs + 2)))) if p.status == "ok"),
                key=lambda p: -(p.fitness or 0.0),
            )[:10],
            args.naive_ops,
        )
        rows.append(("top_k(k=10)", topk, topk_naive, None))
        t0 = time.perf_counter()
        pruned = store.prune("bench", population_size=1000, archive_size=100)
        prune_s = time.perf_counter() - t0
        after = per_op_ms(lambda: select_parent(store, "bench", srng), args.ops)
        store.close()

    table = Table(title=f"Program store: {args.programs:,} programs ({eligible:,} eligible), {size_mb:.0f} MB")
    for col in ("operation", "ms/op", "naive all rows ms/op", "ratio", "naive (id,fitness) ms/op", "ratio"):
        table.add_column(col, justify="right" if col != "operation" else "left")
    for name, fast_ms, full_ms, light_ms in rows:
        table.add_row(
            name,
            f"{fast_ms:.3f}",
            "" if full_ms is None else f"{full_ms:.1f}",
            "" if full_ms is None else f"{full_ms / fast_ms:,.0f}×",
            "" if light_ms is None else f"{light_ms:.1f}",
            "" if light_ms is None else f"{light_ms / fast_ms:,.0f}×",
        )
    console.print(table)
    console.print(
        f"insert_many: {args.programs / insert_s:,.0f} programs/s ({insert_s:.1f} s); "
        f"record_iteration (synchronous=FULL): {record_ms:.2f} ms/op; "
        f"prune to 1,000 (archive 100): {prune_s * 1000:.0f} ms, {pruned:,} marked; "
        f"select_parent after prune: {after:.3f} ms/op"
    )


if __name__ == "__main__":
    main()
