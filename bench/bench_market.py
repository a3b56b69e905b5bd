"""Market-model cost: the explicit close fill model against NautilusTrader's default bar fills, same bars, one
process, alternating runs (CPU time, so outside load on a shared machine distorts it less); and the sizing rule.

Run: uv run --no-sync python -m bench.bench_market [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from decimal import Decimal
from pathlib import Path

from alpha_evolve import market
from alpha_evolve.backtest import BacktestSettings, prepare_bars, run_backtest
from alpha_evolve.synthetic import synthetic_bars

MOMENTUM = (Path(__file__).resolve().parents[1] / "alpha_evolve" / "strategies" / "momentum.py").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    settings = BacktestSettings()
    prepared = prepare_bars("SYN", synthetic_bars(2000, seed=3), settings)
    real = market.fill_model
    close: list[float] = []
    default: list[float] = []
    trades = 0.0
    try:
        for _ in range(args.runs):
            for model, store in ((real, close), (lambda *a, **k: None, default)):
                market.fill_model = model  # type: ignore[assignment]
                t0 = time.process_time()
                outcome = run_backtest(MOMENTUM, prepared, settings)
                store.append(time.process_time() - t0)
                trades = outcome.metrics["Trades"]
    finally:
        market.fill_model = real  # type: ignore[assignment]
    c, d = statistics.median(close), statistics.median(default)
    print(f"2,000 daily bars, momentum seed, {2 * trades:.0f} orders: close fill model {c * 1e3:.1f} ms CPU, "
          f"NautilusTrader default {d * 1e3:.1f} ms CPU, ratio {c / d:.3f}")
    t0 = time.perf_counter()
    for _ in range(10_000):
        market.order_quantity(price=101.3, equity=99_000.0, trade_fraction=0.95, spec_step=Decimal(1),
                              free_cash=99_000.0, fee_rate=0.001)
    print(f"order_quantity: {(time.perf_counter() - t0) / 10_000 * 1e6:.1f} µs a call")


if __name__ == "__main__":
    main()
