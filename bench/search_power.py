"""Search power: how much of the seed-to-oracle gap the search closes on the holdout of the planted market.

The planted synthetic market has a known rule and a strategy that trades it (``strategies/oracle.py``), so the
question "could the search find a real edge?" has a number: for each generator seed and signal strength, run the
pipeline for N generations, open the holdout through the ledgered door, and report

    gap closed = (winner's holdout Sharpe - seed's) / (oracle's - seed's)

(1 = the search reached the oracle, 0 = it did no better than the seed, < 0 = worse). This is the figure later
changes to mutators and selection must move. Two mutators are measured: the offline AST mutator and the LLM
mutator (the real Anthropic SDK) talking to a local stand-in Messages API that returns plausible edits — retuned
numbers, a tighter or looser filter, another moving average, now and then a new pull-back rule — so the LLM path
(prompts, reply parsing, validation, retries, token accounting) is measured without a network or a bill. The
stand-in is no model: its figures measure the plumbing and the selection around it, not Claude.

Run: ``uv run --no-sync python -m bench.search_power [--seeds 7 8] [--signals 0.5 1.0] [--generations 40]
[--mutators offline llm]``. Run directories go to a temporary folder (``--keep DIR`` to keep them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alpha_evolve.config import RunConfig, load_config
from alpha_evolve.mutators import prompts
from alpha_evolve.mutators.llm import DEFAULT_MODEL, extract_reply_blocks

ROOT = Path(__file__).parents[1]
_NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d+)(?![\w.])")
_FILTER = re.compile(r"(self\.efficiency\.value\s*>=?\s*)(\d+\.\d+|\d+)")


# --------------------------------------------------------------------------------------------- the stand-in


def _retune(body: str, rng: random.Random) -> str | None:
    numbers = list(_NUMBER.finditer(body))
    if not numbers:
        return None
    m = rng.choice(numbers)
    old = m.group(1)
    factor = math.exp(rng.uniform(-0.4, 0.4))
    if "." in old:
        new = f"{float(old) * factor:.3g}"
        new = new if "." in new else new + ".0"
    else:
        new = str(max(2, round(int(old) * factor)))
        if new == old:
            new = str(int(old) + 1)
    return body[: m.start(1)] + new + body[m.end(1):]


def _tighten(body: str, rng: random.Random) -> str | None:
    m = _FILTER.search(body)
    if not m:
        return None
    new = f"{min(float(m.group(2)) * rng.uniform(1.1, 1.5), 0.9):.3g}"
    return body[: m.start(2)] + new + body[m.end(2):]


def _pullback(body: str, rng: random.Random) -> str | None:
    """The idea an LLM might try on a trend filter: in a noisy market, buy a pull-back below the average."""
    anchor = re.search(r"^(\s*)elif close < self\.average\.value:", body, re.M)
    if not anchor or "1.0 -" in body or "self.efficiency" not in body:
        return None
    pad = anchor.group(1)
    rule = (f"{pad}elif self.efficiency.value < {rng.uniform(0.15, 0.4):.2f} and close < self.average.value * "
            f"(1.0 - {rng.uniform(0.005, 0.03):.3f}):\n{pad}    self.go_long()\n")
    return body[: anchor.start()] + rule + body[anchor.start():]


def _switch_average(body: str, rng: random.Random) -> str | None:
    pairs = [("SimpleMovingAverage", "ExponentialMovingAverage"), ("ExponentialMovingAverage", "SimpleMovingAverage")]
    for old, new in pairs:
        if re.search(rf"\b{old}\(", body):
            changed = re.sub(rf"\b{old}\(", f"{new}(", body, count=1)
            return f"from nautilus_trader.indicators import {new}\n" + changed
    return None


EDITS = ((_retune, 0.5), (_tighten, 0.2), (_switch_average, 0.15), (_pullback, 0.15))


def plausible_edit(blocks: dict[str, str], rng: random.Random) -> dict[str, str]:
    """One edit of the kind a model proposes, applied to one block; the blocks unchanged if none applies."""
    names = list(blocks)
    for _ in range(20):
        edit = rng.choices([e for e, _ in EDITS], weights=[w for _, w in EDITS])[0]
        name = rng.choice(names)
        new = edit(blocks[name], rng)
        if new is not None and new != blocks[name]:
            return {name: new}
    return {}


def _parent_blocks(prompt: str) -> dict[str, str]:
    section = prompt.split("Its current block bodies:", 1)[-1].split("\n## ", 1)[0]
    return extract_reply_blocks(section, ())


class _StandIn(BaseHTTPRequestHandler):
    """``POST /v1/messages``: the parent's blocks from the prompt, one plausible edit back, plausible usage."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        prompt = body["messages"][-1]["content"]
        if isinstance(prompt, list):
            prompt = "".join(part.get("text", "") for part in prompt)
        rng = random.Random(hash(prompt) & 0xFFFFFFFF)
        blocks = _parent_blocks(prompt)
        edited = plausible_edit(blocks, rng) or blocks
        text = "Here is the revised block:\n```python\n" + prompts.format_blocks(edited) + "\n```\n"
        reply = {"id": f"msg_{rng.getrandbits(32):08x}", "type": "message", "role": "assistant",
                 "model": body.get("model", DEFAULT_MODEL), "content": [{"type": "text", "text": text}],
                 "stop_reason": "end_turn", "stop_sequence": None,
                 "usage": {"input_tokens": len(prompt) // 4, "output_tokens": len(text) // 4,
                           "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def stand_in_api() -> Iterator[str]:
    """A local Messages API for the duration of the block; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------- the measurement


def run_one(base: RunConfig, out: Path, *, seed: int, signal: float, mutator: str, generations: int
            ) -> dict[str, Any]:
    from alpha_evolve.holdout import open_holdout
    from alpha_evolve.pipeline import read_summary, run_pipeline

    config = base.with_updates({"backtest.synthetic_seed": seed, "backtest.synthetic_signal": signal,
                                "evolution.mutator": mutator, "evolution.generations": generations})
    t0 = time.perf_counter()
    run = run_pipeline(config, output_dir=out, experiment=f"s{seed}_x{signal:g}_{mutator}".replace(".", "p"))
    summary = read_summary(run)
    row: dict[str, Any] = {"seed": seed, "signal": signal, "mutator": mutator, "generations": generations,
                           "status": summary["status"], "seconds": round(time.perf_counter() - t0, 1)}
    if summary["status"] != "ok":
        row["reason"] = summary["reason"]
        return row
    holdout = open_holdout(run, who="bench.search_power")
    row.update({"validation": summary["sharpe_by_split"]["validation"], "holdout": holdout["sharpe"],
                "gap_closed": holdout.get("gap_closed"),
                "failed_mutations": summary["counts"]["mutations"] - summary["counts"].get("successful_mutations", 0),
                "tokens": summary["counts"].get("input_tokens", 0) + summary["counts"].get("output_tokens", 0)})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    parser.add_argument("--signals", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--generations", type=int, default=None, help="default: the default config's")
    parser.add_argument("--mutators", nargs="+", default=["offline", "llm"], choices=["offline", "llm"])
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    base = load_config(ROOT / "configs" / "default.toml")
    generations = args.generations or base.evolution.generations
    console = Console()
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        out = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="search_power_")))
        url = stack.enter_context(stand_in_api())
        os.environ["ANTHROPIC_BASE_URL"] = url  # the real SDK, pointed at the stand-in
        os.environ["ANTHROPIC_API_KEY"] = "sk-stand-in"
        for mutator in args.mutators:
            for signal in args.signals:
                for seed in args.seeds:
                    row = run_one(base, out, seed=seed, signal=signal, mutator=mutator, generations=generations)
                    rows.append(row)
                    console.print(_line(row))
    table = Table(title=f"search power on the planted market: {generations} generations, holdout Sharpe")
    for col in ("mutator", "signal", "runs", "seed", "winner", "oracle", "buy & hold", "gap closed (median)",
                "winner > seed"):
        table.add_column(col)
    for mutator in args.mutators:
        for signal in args.signals:
            ok = [r for r in rows if r["mutator"] == mutator and r["signal"] == signal and r["status"] == "ok"]
            if not ok:
                continue
            gaps = [r["gap_closed"] for r in ok if r["gap_closed"] is not None]

            def mean(key: str, rows_: list[dict[str, Any]] = ok) -> str:
                return f"{statistics.mean(r['holdout'][key] for r in rows_):.2f}"

            table.add_row(mutator, f"{signal:g}", str(len(ok)), mean("seed"), mean("winner"), mean("oracle"),
                          mean("buy_and_hold"), f"{statistics.median(gaps):.0%}" if gaps else "-",
                          f"{sum(r['holdout']['winner'] > r['holdout']['seed'] for r in ok)}/{len(ok)}")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _line(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['mutator']:8} signal {row['signal']:<4g} seed {row['seed']:<3} FAILED: {row.get('reason')}"
    h, v = row["holdout"], row["validation"]
    gap = row["gap_closed"]
    return (f"{row['mutator']:8} signal {row['signal']:<4g} seed {row['seed']:<3} "
            f"validation winner {v['winner']:.2f} seed {v['seed']:.2f} oracle {v['oracle']:.2f} | holdout winner "
            f"{h['winner']:.2f} seed {h['seed']:.2f} oracle {h['oracle']:.2f} b&h {h['buy_and_hold']:.2f} | gap "
            f"closed {gap if gap is None else f'{gap:.0%}'} | {row['seconds']:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
