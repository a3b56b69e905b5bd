"""Search-quality study: what the offline mutator's evaluations buy, and whether its winners hold up on the holdout.

Run: `uv run --no-sync python -m bench.bench_search` (the full study: 8 runs x 50 generations) or `--quick`
(3 runs x 15 generations on 1000 bars, ~2 minutes on a shared 2-core machine). `--data FILE_OR_FOLDER` runs
on real bars instead of the generated ones (one run per random seed on the same data).

Each run is a real pipeline run (offline mutator, real NautilusTrader backtests, validation crowning) followed by
one ledgered look at its holdout through ``holdout.open_holdout``. Per run it reports:

- valid mutations: mutations that produced a program the engine could score (ok or screened) / all mutations;
- logic-changing share: valid mutations whose ``program_keys.logic_key`` differs from the parent's (more than
  numbers, moving-average family or ``>`` vs ``>=``);
- wasted-evaluation share: backtests that traded exactly like an earlier program / candidate backtests
  (cache hits and repeats the decision trace caught before a backtest cost none and are counted apart);
- distinct behaviours: distinct behaviour keys among the evaluated programs;
- holdout: the winner's objective metric against the seed's and buy-and-hold's on the same holdout bars;
- the seed gate (``crowning.seed_gate``, ``[backtest] crown_confidence``): every finalist is also looked at on the
  holdout (each look ledgered, ``via = bench_search counterfactual``) and the crown is worked out again from the
  run's recorded paired-test p-values at each confidence of ``--confidences``, so "before" (0 = best on validation)
  and "after" come from the same evolution and the same finalists.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alpha_evolve.config import RunConfig, load_config
from alpha_evolve.crowning import RankedProgram, crown_key
from alpha_evolve.holdout import open_holdout
from alpha_evolve.pipeline import read_summary, run_pipeline
from alpha_evolve.program_keys import changes_logic
from alpha_evolve.store import ProgramStore

_VALID = ("ok", "screened")


def run_stats(run_dir: Path, experiment: str, screen_fraction: float = 0.3) -> dict[str, Any]:
    """Mutation validity, logic change, waste and behaviours of one run, read from its program store."""
    with ProgramStore(run_dir / "programs.sqlite") as store, store.snapshot() as conn:
        rows = [dict(r) for r in conn.execute(
            "SELECT id, parent_id, code, status, stage, is_seed, behavior_key, duplicate_kind FROM programs"
            " WHERE experiment = ? ORDER BY id", (experiment,))]
    code = {r["id"]: r["code"] for r in rows}
    mutations = [r for r in rows if not r["is_seed"]]
    valid = [r for r in mutations if r["status"] in _VALID]
    logic = sum(changes_logic(code[r["parent_id"]], r["code"]) for r in valid if r["parent_id"] in code)
    backtests = [r for r in mutations if r["stage"] is not None and r["duplicate_kind"] != "code"]
    wasted = sum(r["duplicate_kind"] == "behavior" for r in backtests)
    # Cost in train-bar units: a screened-out candidate ran the screen only, a full one the screen and the split.
    cost = {r["id"]: (screen_fraction if r["stage"] == "screen" else 1.0 + screen_fraction) for r in backtests}
    wasted_cost = sum(cost[r["id"]] for r in backtests if r["duplicate_kind"] == "behavior")
    behaviours = {r["behavior_key"] for r in rows if r["behavior_key"]}
    with ProgramStore(run_dir / "programs.sqlite") as store:
        attempts = store.attempts(experiment)
    traced = sum(a["status"] == "duplicate" and "without a backtest" in (a["error"] or "") for a in attempts)
    return {
        "mutations": len(mutations),
        "valid": len(valid),
        "valid_share": len(valid) / max(1, len(mutations)),
        "logic_share": logic / max(1, len(valid)),
        "backtests": len(backtests),
        "wasted": wasted,
        "wasted_share": wasted / max(1, len(backtests)),
        "wasted_cost_share": wasted_cost / max(1e-9, sum(cost.values())),
        "cache_hits": sum(r["duplicate_kind"] == "code" for r in mutations),
        "traced": traced,
        "distinct_behaviours": len(behaviours),
    }


def one_run(index: int, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    updates: dict[str, Any] = {
        "evolution.generations": args.generations,
        "evolution.mutator": "offline",
        "evolution.random_seed": 1000 + index,
        "evolution.seed_strategy": args.seed_strategy,
        "evolution.max_concurrent": 2,
        "pipeline.disable_align_cache": True,
        "pipeline.log_level": "WARNING",
    }
    if args.data:
        updates["backtest.data"] = args.data
    else:
        updates["backtest.synthetic_seed"] = 100 + index
        updates["backtest.synthetic_bars"] = args.bars
    for item in args.set or ():
        key, _, value = item.partition("=")
        updates[key] = json.loads(value) if value[:1] in "0123456789-[{tf\"" else value
    config = RunConfig().with_updates(updates)
    t0 = time.perf_counter()
    run = run_pipeline(config, experiment=f"study{index}", output_dir=base)
    summary = read_summary(run)
    if summary["status"] != "ok":
        return {"run": index, "status": "failed", "reason": summary.get("reason")}
    stats = run_stats(run, f"study{index}", config.backtest.screen_fraction)
    hold = open_holdout(run, who="bench_search")
    metric = config.backtest.objective if config.backtest.objective in hold["metrics"] else "Sharpe"
    winner = float(hold["metrics"].get(metric, 0.0))
    seed = float((hold.get("seed_metrics") or {}).get(metric, float("nan")))
    bh = float((hold.get("buy_and_hold_metrics") or {}).get(metric, float("nan")))
    gated = counterfactual_crowns(run, metric, seed, args.confidences)
    return {"run": index, "status": "ok", "seconds": round(time.perf_counter() - t0, 1), **stats, **gated,
            "metric": metric, "winner_is_seed": bool(summary.get("best_program", {}).get("is_seed")
                                                      or _is_seed(run, summary)),
            "holdout_winner": winner, "holdout_seed": seed, "holdout_bh": bh,
            "winner_ge_seed": winner >= seed - 1e-9, "winner_ge_bh": winner >= bh - 1e-9}


def counterfactual_crowns(run: Path, metric: str, seed_holdout: float, confidences: list[float]
                          ) -> dict[str, Any]:
    """The holdout figure of the program each ``crown_confidence`` would have crowned on this run's finalists."""
    from alpha_evolve.evaluation_setup import build_evaluator, load_run_data
    from alpha_evolve.holdout_door import record_look

    rows = json.loads((run / "top_programs.json").read_text(encoding="utf-8"))
    config = load_config(run / "config.toml")
    objective = config.backtest.objective
    ok = [r for r in rows if r["validation_status"] == "ok"]
    with ProgramStore(run / "programs.sqlite") as store:
        codes = [store.get(int(r["program_id"])).code for r in ok]  # type: ignore[union-attr]
    with build_evaluator(config, data=load_run_data(config), include=("holdout",), max_concurrent=2,
                         unseal=True) as evaluator:
        results = evaluator.evaluate_many(codes, split="holdout", stage="full")
    holdout: dict[int, float] = {}
    for r, code, res in zip(ok, codes, results, strict=True):
        record_look(code=code, via="bench_search counterfactual", metrics=res.metrics, status=res.status,
                    run_dir=run, program_id=int(r["program_id"]), forced=True, who="bench_search")
        holdout[int(r["program_id"])] = float(res.metrics.get(metric, float("nan"))) if res.ok else float("nan")
    out: dict[str, Any] = {}
    for c in confidences:
        finalists = [RankedProgram(_Prog(bool(r["is_seed"]), int(r["program_id"])), {},
                                   {objective: float(r.get(f"validation_{objective}") or 0.0)},
                                   flags=[] if r["crownable"] else ["flagged"],
                                   admitted=bool(r["is_seed"]) or r.get("seed_test_p_value") is None
                                   or c <= 0.0 or float(r["seed_test_p_value"]) <= 1.0 - c) for r in ok]
        crowned = max(finalists, key=crown_key(objective))
        value = holdout[crowned.program.id]
        out[f"c{c:g}_winner_is_seed"] = crowned.is_seed
        out[f"c{c:g}_holdout_winner"] = value
        out[f"c{c:g}_ge_seed"] = bool(crowned.is_seed or value >= seed_holdout - 1e-9)
    return out


class _Prog:
    def __init__(self, is_seed: bool, pid: int) -> None:
        self.is_seed, self.id, self.code, self.fitness = is_seed, pid, "", None


def _is_seed(run: Path, summary: dict[str, Any]) -> bool:
    pid = (summary.get("best_program") or {}).get("id")
    with ProgramStore(run / "programs.sqlite") as store:
        program = store.get(int(pid)) if pid is not None else None
    return bool(program and program.is_seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--bars", type=int, default=1500)
    parser.add_argument("--seed-strategy", default="momentum")
    parser.add_argument("--data", default="", help="real bars (file or folder) instead of generated ones")
    parser.add_argument("--set", action="append", help="extra config update, e.g. evolution.fitness_folds=3")
    parser.add_argument("--quick", action="store_true", help="3 runs x 15 generations on 1000 bars (~2 min)")
    parser.add_argument("--json", default="", help="also write the per-run figures here")
    parser.add_argument("--confidences", default="0,0.5,0.8,0.9,0.95",
                        help="crown_confidence values to work the crown out again at (0 = best on validation)")
    args = parser.parse_args(argv)
    args.confidences = [float(c) for c in args.confidences.split(",") if c.strip()]
    if args.quick:
        args.runs, args.generations, args.bars = 3, 15, 1000
    logging.getLogger("alpha_evolve").setLevel(logging.ERROR)
    console = Console()
    results = []
    with tempfile.TemporaryDirectory(prefix="ae-search-") as tmp:
        for i in range(args.runs):
            results.append(one_run(i, args, Path(tmp)))
            r = results[-1]
            console.print(f"run {i}: " + (json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                                      for k, v in r.items()}) if r["status"] == "ok"
                                          else f"failed: {r['reason']}"))
    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        console.print("[red]no run succeeded[/red]")
        return 1
    table = Table(title=f"search study: {len(ok)} runs x {args.generations} generations, offline mutator, "
                        f"seed {args.seed_strategy}, {'data ' + args.data if args.data else 'generated bars'}")
    for col in ("figure", "value", "target"):
        table.add_column(col)
    mutations = sum(r["mutations"] for r in ok)
    valid = sum(r["valid"] for r in ok)
    logic = sum(r["logic_share"] * r["valid"] for r in ok)
    backtests = sum(r["backtests"] for r in ok)
    wasted = sum(r["wasted"] for r in ok)
    table.add_row("valid mutations", f"{valid}/{mutations} = {valid / max(1, mutations):.1%}", ">= 90 %")
    table.add_row("logic-changing (of valid)", f"{logic / max(1, valid):.1%}", ">= 40 %")
    table.add_row("wasted evaluations", f"{wasted}/{backtests} = {wasted / max(1, backtests):.1%}", "<= 5 %")
    table.add_row("wasted backtest cost (bars run)",
                  f"{statistics.mean(r['wasted_cost_share'] for r in ok):.1%}", "")
    table.add_row("cache hits (no backtest)", str(sum(r["cache_hits"] for r in ok)), "")
    table.add_row("repeats caught by the decision trace (no backtest)", str(sum(r["traced"] for r in ok)), "")
    table.add_row("distinct behaviours per run",
                  f"mean {statistics.mean(r['distinct_behaviours'] for r in ok):.1f} "
                  f"(min {min(r['distinct_behaviours'] for r in ok)})", "")
    ge_seed = sum(r["winner_ge_seed"] for r in ok)
    ge_bh = sum(r["winner_ge_bh"] for r in ok)
    table.add_row(f"holdout {ok[0]['metric']}: winner >= seed", f"{ge_seed}/{len(ok)} = {ge_seed / len(ok):.0%}",
                  ">= 70 %")
    table.add_row(f"holdout {ok[0]['metric']}: winner >= buy & hold", f"{ge_bh}/{len(ok)}", "")
    table.add_row("winner is the seed itself", str(sum(r["winner_is_seed"] for r in ok)), "")
    table.add_row("holdout mean winner / seed / b&h",
                  " / ".join(f"{statistics.mean(r[k] for r in ok):.2f}"
                             for k in ("holdout_winner", "holdout_seed", "holdout_bh")), "")
    for c in args.confidences:
        ge = sum(r[f"c{c:g}_ge_seed"] for r in ok)
        table.add_row(f"seed gate {c:g}: winner >= seed on holdout (winner is seed)",
                      f"{ge}/{len(ok)} = {ge / len(ok):.0%} ({sum(r[f'c{c:g}_winner_is_seed'] for r in ok)})",
                      ">= 70 %")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
