"""Approval latency of a legacy self-evolution session: inotify watcher vs polling at 1 s, measured in one run.

Latency = from the moment an approver's atomic write of ``"status": "approved"`` to pending_action.json starts
until pending_action.json shows ``"status": "running"`` for that action (seen by this script's own inotify
watcher, which adds ~1-2 ms to both modes alike). The pipeline runner is a stand-in that returns as soon as
this script has seen "running", so the loop moves straight on to the next proposal.

    uv run --no-sync python bench/bench_approval.py [--n 50] [--polling-n 20] [--poll-interval 1.0]

Target: median < 50 ms with inotify.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alpha_evolve.config import METRIC_NAMES, RunConfig
from alpha_evolve.samplers import make_sampler
from alpha_evolve.search_space import load_search_space
from alpha_evolve.session import SelfEvolutionLoop, SessionSettings
from alpha_evolve.session_files import FileStateBackend, new_session_dir

SPACE = Path(__file__).resolve().parent.parent / "configs" / "self_evolution" / "default.json"


class Observed(FileSystemEventHandler):
    """Reads pending_action.json on every change; wakes the main thread on a new action or on "running"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cond = threading.Condition()
        self.awaiting: dict[str, Any] | None = None
        self.running: dict[str, float] = {}

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if self.path.name not in (os.path.basename(event.src_path), os.path.basename(
                    getattr(event, "dest_path", "") or "")):
                return
            now = time.perf_counter()
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return
            with self.cond:
                if data.get("status") == "awaiting_approval":
                    self.awaiting = data
                elif data.get("status") == "running":
                    self.running.setdefault(data["action_id"], now)
                self.cond.notify_all()
        except Exception as exc:  # keep the observer thread alive
            print(f"watcher error: {exc}", file=sys.stderr)


def measure(n: int, *, force_polling: bool, poll_interval: float) -> tuple[list[float], list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-approval-"))
    session_dir = new_session_dir(tmp)
    pending = session_dir / "pending_action.json"
    seen = Observed(pending)
    observer = Observer()
    observer.schedule(seen, str(session_dir))
    observer.start()

    def runner(config: RunConfig, options: Any, *, experiment: str) -> Path:
        run_dir = Path(options.output_dir) / f"run_{experiment}"
        run_dir.mkdir(parents=True, exist_ok=True)
        action = json.loads(pending.read_text()) if pending.exists() else {}
        if action.get("status") == "running":  # hold the run until the watcher has seen "running"
            with seen.cond:
                seen.cond.wait_for(lambda: action["action_id"] in seen.running, timeout=30)
        metrics = {m: 0.0 for m in METRIC_NAMES}
        metrics["Sharpe"] = float(config.get("bt_top")) / 10
        (run_dir / "SUMMARY.json").write_text(json.dumps({"status": "ok", "reason": None, "best_metrics": metrics}))
        return run_dir

    settings = SessionSettings(mode="legacy", search_space_path=str(SPACE), iterations=n, seed=1,
                               approval_poll_interval=poll_interval, force_polling=force_polling,
                               persist_configs=False)
    space = load_search_space(SPACE)
    sampler = make_sampler("random", space, seed=1, exploration_prob=0.2, maximize=True, state_dir=session_dir)
    backend = FileStateBackend(session_dir, poll_interval=poll_interval, force_polling=force_polling,
                               report=lambda line: None)
    loop = SelfEvolutionLoop(backend, settings, base_config=RunConfig(), space=space, sampler=sampler,
                             pipeline_runner=runner, out=lambda line: None, install_signal_handlers=False)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    latencies: list[float] = []
    done: set[str] = set()
    try:
        for _ in range(n):
            with seen.cond:
                assert seen.cond.wait_for(lambda: seen.awaiting is not None and seen.awaiting["action_id"] not in done,
                                          timeout=60), "no pending action"
                action = dict(seen.awaiting or {})
            action_id = action["action_id"]
            done.add(action_id)
            action["status"] = "approved"
            tmp_file = pending.with_name(f"{pending.name}.tmp.{os.getpid()}.bench")
            t0 = time.perf_counter()
            tmp_file.write_text(json.dumps(action))
            os.replace(tmp_file, pending)
            def is_running(aid: str = action_id) -> bool:
                return aid in seen.running

            with seen.cond:
                assert seen.cond.wait_for(is_running, timeout=60), "never running"
                latencies.append((seen.running[action_id] - t0) * 1e3)
        thread.join(60)
    finally:
        loop.request_stop()
        observer.stop()
        observer.join()
    own = []
    for line in (session_dir / "history.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("decision") and rec["decision"].get("latency_ms") is not None:
            own.append(float(rec["decision"]["latency_ms"]))
    return latencies, own


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="approvals measured with inotify")
    ap.add_argument("--polling-n", type=int, default=20, help="approvals measured with polling")
    ap.add_argument("--poll-interval", type=float, default=1.0)
    args = ap.parse_args()
    rows = []
    for label, polling, n in (("inotify", False, args.n), (f"polling {args.poll_interval:g} s", True, args.polling_n)):
        lat, own = measure(n, force_polling=polling, poll_interval=args.poll_interval)
        rows.append((label, n, statistics.median(lat), pct(lat, 0.95), max(lat), statistics.median(own),
                     pct(own, 0.95)))
    print(f"{'mode':<14} {'n':>4} {'median ms':>10} {'p95 ms':>9} {'max ms':>9} {'detect median':>14} "
          f"{'detect p95':>11}")
    for label, n, med, p95, mx, own_med, own_p95 in rows:
        print(f"{label:<14} {n:>4} {med:>10.1f} {p95:>9.1f} {mx:>9.1f} {own_med:>14.1f} {own_p95:>11.1f}")
    ratio = rows[1][2] / rows[0][2]
    print(f"polling / inotify median ratio: {ratio:.0f}x; target inotify median < 50 ms: "
          f"{'met' if rows[0][2] < 50 else 'NOT met'}")
    return 0 if rows[0][2] < 50 else 1


if __name__ == "__main__":
    sys.exit(main())
