"""Run every benchmark in turn (``make bench``); each prints its own ratios measured in the same run.

Figures are recorded by hand in BENCHMARKS.md with the date and the machine's load, because absolute times
on a shared 2-core machine vary by tens of percent; the ratios are what to compare.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = ("bench.bench_evaluator", "bench.bench_store", "bench.bench_approval")


def main() -> int:
    failed = 0
    for module in BENCHES:
        print(f"\n=== {module} ===", flush=True)
        failed += subprocess.call([sys.executable, "-m", module]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
