"""The Ray backend on a real two-node local Ray cluster (``ray.cluster_utils.Cluster``), against the local pool.

One cluster serves the whole module (starting one costs seconds); the test that kills a node adds its own node
first. The driver's environment holds a fake API key for the whole module: it must never reach a node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import RunConfig
from alpha_evolve.controller import EvolutionController
from alpha_evolve.dashboard.runs import RunIndex
from alpha_evolve.evaluation_backend import NODES_FILE
from alpha_evolve.evaluation_setup import build_evaluator, load_run_data, loop_wiring
from alpha_evolve.evaluator import StrategyEvaluator
from alpha_evolve.mutators.offline import OfflineMutator
from alpha_evolve.ray_backend import RayEvaluator
from alpha_evolve.store import ProgramStore
from alpha_evolve.strategies import SEEDS, seed_source
from alpha_evolve.synthetic import synthetic_bars
from tests._evaluator_helpers import SETTINGS, candidate, splits
from tests._ray_cluster import two_node_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # incl. waiting for the one test cluster

# Generous limits: figures are compared with the local pool, and a loaded machine must not turn one into a timeout.
CALM = dataclasses.replace(SETTINGS, soft_timeout_seconds=60.0, hard_timeout_seconds=90.0)
SECRET = "sk-ant-test-9f3c1d2e7a6b5c4d"
SEED_CODES = [seed_source(name) for name in sorted(SEEDS)]
BASE = RunConfig().with_updates({"backtest.synthetic_bars": 300, "evolution.mutator": "offline",
                                 "evolution.max_concurrent": 2})


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with two_node_cluster(SECRET) as c:
        yield c


@pytest.fixture(scope="module")
def universe() -> dict[str, Any]:
    return {"AAA": splits(seed=5, n=300), "BBB": splits(seed=9, n=240), "CCC": splits(seed=13, n=260)}


def fails_on(symbol: str) -> str:
    """A trading candidate that raises on one symbol of the universe only."""
    return candidate(f"if '{symbol}' in str(self.instrument_id):\n    raise RuntimeError('not on {symbol}')\n"
                     "if self.bars_seen % 10 == 0:\n    self.go_long()\nelif self.bars_seen % 10 == 5:\n"
                     "    self.go_flat()")


@pytest.fixture(scope="module")
def ray_ev(cluster: Any, universe: dict[str, Any]) -> Iterator[RayEvaluator]:
    with RayEvaluator(universe, CALM, max_concurrent=2, address=cluster.address) as ev:
        yield ev


@pytest.fixture(scope="module")
def local_ev(universe: dict[str, Any]) -> Iterator[StrategyEvaluator]:
    with StrategyEvaluator(universe, CALM, max_concurrent=2) as ev:
        yield ev


def _plain(result: Any) -> dict[str, Any]:
    out = result.to_dict()
    out.pop("elapsed")
    return out


def _diff(remote: list[Any], local: list[Any]) -> list[str]:
    return [f"#{i} {k}: ray {str(a[k])[:150]} local {str(b[k])[:150]}"
            for i, (x, y) in enumerate(zip(remote, local, strict=True))
            for a, b in [(_plain(x), _plain(y))] for k in a if a[k] != b[k]]


def _program_rows(store: ProgramStore, experiment: str) -> list[dict[str, Any]]:
    with store.snapshot() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM programs WHERE experiment = ? ORDER BY iteration, id",
                                          (experiment,))]
    rows = []
    for p in store.get_many(ids):
        row = p.to_dict()
        for volatile in ("id", "parent_id", "elapsed_s", "created_at", "experiment"):
            row.pop(volatile)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- same figures


def test_both_nodes_serve_and_figures_equal_the_local_pool(ray_ev: RayEvaluator, local_ev: StrategyEvaluator) -> None:
    broken = candidate("self.go_long(\n")  # syntax: refused on the driver, like locally
    crashing = candidate("raise RuntimeError('boom')")
    codes = [*SEED_CODES, broken, crashing, fails_on("BBB"), fails_on("AAA"), fails_on("CCC")]
    # one symbol (one task per candidate) and the universe (one task per candidate x symbol x stage, merged on
    # the driver): screen + full on train; validation runs the perturbed-future causality check too
    tasks = 0
    for split, symbols in (("train", ["AAA"]), ("validation", None), ("train", None)):
        remote = ray_ev.evaluate_many(codes, split) if symbols is None else [
            ray_ev.evaluate(c, split, symbols=symbols) for c in codes]
        local = local_ev.evaluate_many(codes, split) if symbols is None else [
            local_ev.evaluate(c, split, symbols=symbols) for c in codes]
        assert [_plain(r) for r in remote] == [_plain(r) for r in local], _diff(remote, local)
        if symbols is None:  # the universe went out per symbol: more tasks than candidates
            assert ray_ev.cluster_status()["tasks"] - tasks > len(codes)
        tasks = ray_ev.cluster_status()["tasks"]
    assert {r.status for r in remote} >= {"ok", "syntax", "runtime"}
    assert len(remote[0].per_instrument) == 3
    assert [r.error.split(":")[0] for r in remote[-3:] if r.error] == ["BBB", "AAA", "CCC"]
    assert ray_ev.cluster_status()["task_unit"] == "candidate x symbol"
    screened = ray_ev.evaluate(SEED_CODES[0], "train", "screen")
    assert _plain(screened) == _plain(local_ev.evaluate(SEED_CODES[0], "train", "screen"))
    status = ray_ev.cluster_status()
    assert status["live_nodes"] == 2 and status["slots"] == 2
    assert all(n["done"] > 0 for n in status["nodes"]), status  # both nodes evaluated candidates
    assert status["in_flight"] == 0 and status["crashes"] == 0


@pytest.mark.parametrize("symbols", [1, 3], ids=["one-symbol", "universe"])
async def test_evolution_run_stores_the_same_programs(cluster: Any, tmp_path: Path, symbols: int) -> None:
    """A controller run with backend = ray records exactly what the local backend records for the same seed, for
    one symbol (one task per candidate) and a 3-symbol universe (candidate x symbol tasks)."""
    base = BASE
    if symbols > 1:  # a universe from a folder of CSV files, as a user would give one
        folder = tmp_path / "universe"
        folder.mkdir()
        for i, symbol in enumerate(("AAA", "BBB", "CCC")[:symbols]):
            synthetic_bars(300, seed=5 + 4 * i, symbol=symbol).to_csv(folder / f"{symbol}.csv", index_label="timestamp")
        base = BASE.with_updates({"backtest.data": str(folder)})
    data = load_run_data(base)
    assert len(data.splits) == symbols
    rows = {}
    for backend in ("local", "ray"):
        cfg = base.with_updates({"evaluation.backend": backend, "evaluation.ray_address": cluster.address})
        status = tmp_path / f"run_{backend}" / NODES_FILE
        status.parent.mkdir()
        evaluator = build_evaluator(cfg, data=data, include=("train",), status_path=status)
        try:
            with ProgramStore(tmp_path / f"{backend}.sqlite") as store:
                mutator = OfflineMutator(seed=cfg.evolution.random_seed)
                ctl = EvolutionController(cfg.evolution, store, evaluator, mutator, wiring=loop_wiring(cfg))
                result = await ctl.run("momentum", "same", 6)
                assert result.iterations_completed == 6
                rows[backend] = _program_rows(store, "same")
        finally:
            evaluator.close()
    assert len(rows["ray"]) >= 7  # the seed and six iterations (failed mutations are stored too)
    assert rows["ray"] == rows["local"]
    # where the candidates ran, as the dashboard reads it (the local pool writes no placement file)
    placements = RunIndex([tmp_path], []).placements()
    assert [p["run"] for p in placements] == ["run_ray"]
    live = placements[0]
    assert live["backend"] == "ray" and live["closed"] and len(live["nodes"]) == 2
    assert live["done"] == sum(n["done"] for n in live["nodes"]) >= 7 and live["in_flight"] == 0
    assert live["task_unit"] == ("candidate x symbol" if symbols > 1 else "candidate")
    if symbols > 1:  # universe figures: the worst instrument differs from the mean
        assert any(r["metrics"].get("worst_Sharpe") != r["metrics"].get("Sharpe") for r in rows["ray"])


# ------------------------------------------------------------------------------------------- isolation


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def test_candidates_run_in_confined_workers_without_secrets(ray_ev: RayEvaluator,
                                                           local_ev: StrategyEvaluator) -> None:
    assert os.environ.get("ANTHROPIC_API_KEY") == SECRET  # the driver holds it; the nodes must not
    probes = ray_ev.node_probes()
    assert len(probes) == 2
    # what SUMMARY.json's evaluation_security reports for the run
    assert ray_ev.confinement == "landlock+seccomp+rlimits" == local_ev.confinement
    assert ray_ev.causality_splits == local_ev.causality_splits
    for probe in probes:
        assert probe["confinement"] == "landlock+seccomp+rlimits"
        assert probe["secrets_removed"] == []  # the nodes were started without it
        # actor -> exec'd template (a node StrategyEvaluator) -> slots -> single-use candidate processes
        assert probe["template_pids"] and all(_parent(t) == probe["pid"] for t in probe["template_pids"])
        assert probe["worker_pids"]
        for pid in [probe["pid"], *probe["template_pids"], *probe["worker_pids"]]:
            assert SECRET.encode() not in _environ(pid)
        for wpid in probe["worker_pids"]:
            assert _parent(wpid) in probe["template_pids"]


def test_node_guards_hold_under_ray(cluster: Any, universe: dict[str, Any]) -> None:
    """The evaluator's own guards (soft timeout, typed failures) act on the node, and a node started with a
    secret in its environment has it removed (and its bytes wiped) before any worker is forked."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", SECRET)  # deliberately not scrubbed: a carelessly started node
        dirty = cluster.add_node(num_cpus=1, resources={"dirty": 1})
        cluster.wait_for_nodes()
    try:
        with RayEvaluator({"AAA": universe["AAA"]}, SETTINGS, address=cluster.address) as ev:
            probes = {p["node_id"]: p for p in ev.node_probes()}
            assert dirty.node_id in probes
            on_dirty = probes[dirty.node_id]
            assert "ANTHROPIC_API_KEY" in on_dirty["secrets_removed"]
            for pid in [on_dirty["pid"], *on_dirty["template_pids"], *on_dirty["worker_pids"]]:
                assert SECRET.encode() not in _environ(pid)
            looping = ev.evaluate(candidate("for i in range(10**12):\n    pass"), "validation")
            assert looping.status == "timeout", looping
            after = ev.evaluate(SEED_CODES[0], "validation")
            assert after.status == "ok"
    finally:
        cluster.remove_node(dirty)


# ------------------------------------------------------------------------------------------- lost nodes


def test_a_node_killed_mid_run_is_survived(cluster: Any, universe: dict[str, Any],
                                           local_ev: StrategyEvaluator) -> None:
    """Kill a node while candidates are in flight on it: they are retried on the others and every result is
    the one the local pool gives (evaluation is deterministic); the run is complete."""
    extra = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    codes = SEED_CODES * 2
    pair = {s: universe[s] for s in ("AAA", "BBB")}  # candidate x symbol tasks: each is retried on its own
    with RayEvaluator(pair, CALM, max_concurrent=4, address=cluster.address, max_task_retries=2) as ev:
        results: list[Any] = []
        busy = threading.Event()

        def watch() -> None:
            while not busy.is_set():
                nodes = {n["node_id"]: n for n in ev.cluster_status()["nodes"]}
                if nodes.get(extra.node_id, {}).get("in_flight", 0) > 0:
                    busy.set()
                    return
                threading.Event().wait(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        runner = threading.Thread(target=lambda: results.extend(ev.evaluate_many(codes, "validation")))
        runner.start()
        assert busy.wait(120), "no candidate ever ran on the extra node"
        cluster.remove_node(extra, allow_graceful=False)
        runner.join(240)
        assert not runner.is_alive()
        status = ev.cluster_status()
    expected = [local_ev.evaluate(c, "validation", symbols=["AAA", "BBB"]) for c in codes]
    assert len(results) == len(codes)
    assert [_plain(r) for r in results] == [_plain(r) for r in expected]
    lost = next(n for n in status["nodes"] if n["node_id"] == extra.node_id)
    assert not lost["alive"] and lost["lost"] >= 1
    assert status["retries"] >= 1 and status["crashes"] == 0


@pytest.mark.parametrize("symbols", [("AAA",), ("AAA", "BBB")], ids=["candidate", "candidate-x-symbol"])
def test_retries_are_bounded_then_crash(cluster: Any, universe: dict[str, Any], symbols: tuple[str, ...]) -> None:
    """With no retry allowed, a candidate whose node actor is lost is recorded as ``crash`` with one line; in a
    universe each lost symbol task is one crash, and the first symbol's decides the candidate's result."""
    import ray

    with RayEvaluator({s: universe[s] for s in symbols}, CALM, max_concurrent=1, address=cluster.address,
                      max_task_retries=0) as ev:
        results: list[Any] = []
        runner = threading.Thread(target=lambda: results.append(
            ev.evaluate(candidate("for i in range(10**12):\n    pass"), "validation")))
        runner.start()
        busy: list[Any] = []
        while sum(n.in_flight for n in busy) < len(symbols) and runner.is_alive():
            busy = [n for n in ev._live_nodes() if n.in_flight > 0]
            threading.Event().wait(0.02)
        assert busy
        for node in busy:
            with contextlib.suppress(Exception):
                ray.kill(node.actor)
        runner.join(120)
        assert results and results[0].status == "crash"
        error = results[0].error or ""
        assert "lost on the Ray cluster after 1 attempt" in error and "\n" not in error
        assert error.startswith("AAA: ") == (len(symbols) > 1)
        assert ev.cluster_status()["crashes"] == len(symbols) and ev.cluster_status()["retries"] == 0
        # the nodes are still alive: their actors were restarted and evaluate again
        assert ev.evaluate(SEED_CODES[0], "validation").status == "ok"


def test_default_starts_its_own_local_instance_without_secrets(cluster: Any, tmp_path: Path) -> None:
    """``ray_address = ""``: a new local instance, never the cluster another process left on this machine, and
    the driver's API key is in none of the processes it starts (gcs, raylet, workers, actor, template, slots)."""
    script = tmp_path / "local_start.py"
    script.write_text(
        "import json, os, sys\n"
        "import psutil\n"
        "from alpha_evolve.ray_backend import RayEvaluator\n"
        "from tests._evaluator_helpers import SETTINGS, splits\n"
        "secret = os.environ['ANTHROPIC_API_KEY'].encode()\n"
        "with RayEvaluator({'AAA': splits(seed=5, n=200)}, SETTINGS) as ev:\n"
        "    result = ev.evaluate(open(sys.argv[1]).read(), 'validation')\n"
        "    probe = ev.node_probes()[0]\n"
        "    leaks, seen = [], 0\n"
        "    for proc in psutil.Process().children(recursive=True):\n"
        "        try:\n"
        "            raw = open(f'/proc/{proc.pid}/environ', 'rb').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        seen += 1\n"
        "        if secret in raw:\n"
        "            leaks.append(' '.join(proc.cmdline())[:120])\n"
        "    print(json.dumps({'address': ev.address, 'probe': probe, 'status': result.status,\n"
        "                      'seen': seen, 'leaks': leaks}))\n"
    )
    code = tmp_path / "momentum.py"
    code.write_text(SEED_CODES[0])
    env = {**os.environ, "ANTHROPIC_API_KEY": SECRET, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, str(script), str(code)], env=env, capture_output=True, text=True,
                         timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == "ok"
    assert report["address"] != cluster.address  # its own instance
    assert report["probe"]["secrets_removed"] == []  # started without it: nothing to remove
    probed = {report["probe"]["pid"], *report["probe"]["template_pids"], *report["probe"]["worker_pids"]}
    assert report["seen"] >= len(probed) + 2  # gcs, raylet, the actor and the evaluator's processes at least
    assert report["leaks"] == []
