"""``alpha-evolve evolve``: start, watch, stop, resume and inspect evolution experiments in a program store.

Every subcommand takes ``--experiment`` (except ``list``), ``--db`` and ``--json`` (stdout then carries exactly
one JSON object). ``stop`` works from another terminal: it writes a stop request into the experiment's row
(``stop_reason = "stop_requested"``) that the running controller polls about twice a second; the run finishes the
iterations in flight and ends ``paused``. Ctrl-C in the running terminal does the same (a second Ctrl-C cancels
the iterations in flight). After a crash or ``kill -9``, ``resume`` runs exactly the iterations that were not
recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alpha_evolve.cli import UserError
from alpha_evolve.command_hint import cli
from alpha_evolve.evaluation_backend import add_backend_arguments, apply_backend_arguments
from alpha_evolve.values import json_safe

DEFAULT_DB = "artifacts/evolution/programs.sqlite"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evolve",
        help="run and inspect evolution experiments",
        description="Evolve a seed strategy; the population lives in a SQLite program store.",
    )
    evo = p.add_subparsers(dest="evolve_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser, experiment: bool = True) -> None:
        if experiment:
            q.add_argument("--experiment", required=True, help="experiment name (letters, digits, '-', '_')")
        q.add_argument("--db", default=DEFAULT_DB, help=f"program store (default: {DEFAULT_DB})")
        q.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    q = evo.add_parser("start", help="start a new experiment from a seed strategy")
    common(q)
    q.add_argument("--seed-strategy", default=None, help="seed name or strategy file (default: the config's)")
    q.add_argument(
        "--iterations", type=int, default=None, help="mutation iterations (default: [evolution] generations)"
    )
    q.add_argument(
        "--mutator",
        choices=("auto", "offline", "llm", "agent"),
        default=None,
        help="mutation source (default: the config's)",
    )
    q.add_argument("--config", default=None, help="TOML run config (default: built-in defaults)")
    add_backend_arguments(q)
    q.set_defaults(func=_start, default_log_level="INFO")

    q = evo.add_parser("resume", help="continue a paused, stopped or crashed experiment")
    common(q)
    q.add_argument("--additional-iterations", type=int, default=0, help="iterations beyond the original target")
    q.set_defaults(func=_resume, default_log_level="INFO")

    q = evo.add_parser("status", help="progress and counters of an experiment")
    common(q)
    q.set_defaults(func=_status)

    q = evo.add_parser("best", help="the best program by train fitness")
    common(q)
    q.add_argument("--export", default=None, metavar="FILE.py", help="write it as a standalone strategy file")
    q.set_defaults(func=_best)

    q = evo.add_parser("list", help="experiments in the store")
    common(q, experiment=False)
    q.set_defaults(func=_list)

    q = evo.add_parser("stop", help="ask a running experiment to stop after the iterations in flight")
    common(q)
    q.set_defaults(func=_stop)

    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ------------------------------------------------------------------------------------------------ helpers


def _name(args: argparse.Namespace) -> str:
    from alpha_evolve.store import validate_experiment_name

    try:
        return validate_experiment_name(args.experiment)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _open_store(db: str, *, create: bool) -> Any:
    from alpha_evolve.store import ProgramStore, StoreError

    path = Path(db)
    if not create and not path.exists():
        raise UserError(f"{path}: program store not found (start an experiment first, or pass --db)")
    from alpha_evolve.faults import EXIT_INFRASTRUCTURE, infrastructure_problem

    try:
        return ProgramStore(path, create=create)
    except StoreError as exc:  # full or read-only: the machine's (exit 75); corrupt or foreign: the user's (2)
        raise UserError(str(exc), EXIT_INFRASTRUCTURE if infrastructure_problem(exc) else 2) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot open program store ({exc})",
                        EXIT_INFRASTRUCTURE if infrastructure_problem(exc) else 2) from None


def _require(store: Any, name: str) -> Any:
    exp = store.get_experiment(name)
    if exp is None:
        raise UserError(f"experiment {name!r} not found in store {store.path}")
    return exp


def _emit_json(obj: Any) -> None:
    print(json.dumps(json_safe(obj), default=str))


def _run_with_signals(
    controller: Any,
    make: Callable[[Callable[[Any], None] | None], Awaitable[Any]],
    show_progress: bool,
    total: int,
    done: int,
) -> Any:
    """Run the controller coroutine; SIGINT/SIGTERM stop it gracefully (a second one cancels in-flight work)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        signals = {"n": 0}

        def on_signal() -> None:
            signals["n"] += 1
            controller.stop(force=signals["n"] > 1)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            if not show_progress:
                return await make(None)
            with Progress(
                TextColumn("[bold]evolving"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"),
                TimeElapsedColumn(),
                console=Console(stderr=False),
            ) as bar:
                task = bar.add_task("evolve", total=total, completed=done, best="n/a")

                def on_progress(event: Any) -> None:
                    best = "n/a" if event.best_fitness is None else f"{event.best_fitness:.4f}"
                    bar.update(task, completed=event.iterations_completed, best=best)

                return await make(on_progress)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


def _build_runtime(config: Any, name: str, db_path: Path) -> tuple[Any, Any, str]:
    """(evaluator, mutator, data hash) for a run: train split only — evolution never sees other bars."""
    from alpha_evolve.evaluation_setup import build_evaluator, load_run_data, mutator_from_config

    data = load_run_data(config)
    evaluator = build_evaluator(config, data=data, include=("train",))
    try:
        mutator = mutator_from_config(config, run_dir=db_path.parent / "agent" / name)
    except BaseException:
        evaluator.close()
        raise
    return evaluator, mutator, data.dataset.content_hash


def _finish(args: argparse.Namespace, result: Any) -> int:
    out = result.to_dict()
    if args.json:
        _emit_json(out)
    else:
        console = Console()
        best = out["best_fitness"]
        console.print(
            f"experiment [bold]{out['experiment']}[/]: {out['status']} ({out['stop_reason']}), "
            f"{out['iterations_completed']}/{out['target_iterations']} iterations, best fitness "
            f"{'n/a' if best is None else f'{best:.4f}'}, {out['successful_evaluations']}/"
            f"{out['total_evaluations']} evaluations ok, {out['elapsed_seconds']:.1f}s"
        )
    return 1 if out["status"] == "failed" else 0


def _controller_call(
    args: argparse.Namespace,
    store: Any,
    config: Any,
    name: str,
    call: Callable[[Any, Callable[[Any], None] | None], Awaitable[Any]],
    total: int,
    done: int,
    data_hash_expected: str | None = None,
) -> int:
    from alpha_evolve.controller import EvolutionController
    from alpha_evolve.evaluation_setup import loop_wiring
    from alpha_evolve.faults import EXIT_INFRASTRUCTURE, InfrastructureError

    evaluator, mutator, data_hash = _build_runtime(config, name, Path(args.db))
    try:
        if data_hash_expected and data_hash_expected != data_hash:
            raise UserError(
                f"experiment {name!r}: the data changed since it started (hash {data_hash[:12]} != "
                f"{data_hash_expected[:12]}); resuming would mix incomparable results"
            )
        controller = EvolutionController(config.evolution, store, evaluator, mutator, wiring=loop_wiring(config))
        controller.data_hash = data_hash
        show = sys.stdout.isatty() and not args.json
        try:
            result = _run_with_signals(controller, lambda cb: call(controller, cb), show, total, done)
        except InfrastructureError as exc:  # disk full, read-only, I/O: paused, resumable, no candidate blamed
            raise UserError(str(exc), EXIT_INFRASTRUCTURE) from None
        except RuntimeError as exc:  # store corruption: already one line, experiment marked failed
            raise UserError(str(exc), 1) from None
        return _finish(args, result)
    finally:
        evaluator.close()
        closer = getattr(mutator, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):  # closing an HTTP client must not mask the result
                asyncio.run(closer())


# ------------------------------------------------------------------------------------------------ handlers


def _start(args: argparse.Namespace) -> int:
    from alpha_evolve.config import load_config
    from alpha_evolve.evaluation_setup import load_seed

    name = _name(args)
    config = apply_backend_arguments(args, load_config(args.config))
    updates: dict[str, Any] = {}
    if args.mutator:
        updates["evolution.mutator"] = args.mutator
    seed = args.seed_strategy or config.evolution.seed_strategy
    if not seed.endswith(".py"):
        updates["evolution.seed_strategy"] = seed
    if updates:
        config = config.with_updates(updates, source=args.config or "<command line>")
    iterations = config.evolution.generations if args.iterations is None else args.iterations
    if iterations < 0:
        raise UserError(f"--iterations {iterations}: expected an integer >= 0")
    load_seed(seed)  # fail fast (ValueError, one line) before loading data and forking workers
    store = _open_store(args.db, create=True)
    try:
        if store.get_experiment(name) is not None:
            raise UserError(
                f"experiment {name!r} already exists in store {store.path}; use `{cli('evolve', 'resume')}` "
                "or another name"
            )
        return _controller_call(
            args,
            store,
            config,
            name,
            lambda c, cb: c.run(seed, name, iterations, on_progress=cb),
            iterations,
            0,
        )
    finally:
        store.close()


def _resume(args: argparse.Namespace) -> int:
    from alpha_evolve.experiment_status import config_from_experiment, experiment_is_live

    name = _name(args)
    if args.additional_iterations < 0:
        raise UserError(f"--additional-iterations {args.additional_iterations}: expected an integer >= 0")
    store = _open_store(args.db, create=False)
    try:
        exp = _require(store, name)
        if exp.status == "running" and experiment_is_live(store, name):
            raise UserError(f"experiment {name!r} is running in another process; stop it first")
        target = exp.target_iterations + args.additional_iterations
        if store.seed(name) is not None and len(set(store.completed_iterations(name)) & set(range(1, target + 1))) \
                >= target:
            raise UserError(f"experiment {name!r} has recorded all {target} iterations; pass "
                            "--additional-iterations N to continue it")
        config = config_from_experiment(store, name)
        return _controller_call(
            args,
            store,
            config,
            name,
            lambda c, cb: c.resume(name, args.additional_iterations, on_progress=cb),
            exp.target_iterations + args.additional_iterations,
            exp.completed_iterations,
            data_hash_expected=exp.data_hash,
        )
    finally:
        store.close()


def _status(args: argparse.Namespace) -> int:
    from alpha_evolve.experiment_status import progress_from_store

    name = _name(args)
    store = _open_store(args.db, create=False)
    try:
        _require(store, name)
        progress = progress_from_store(store, name).to_dict()
        progress["failures"] = {k: v for k, v in store.count_by_status(name).items() if k not in ("ok",)}
    finally:
        store.close()
    if args.json:
        _emit_json(progress)
        return 0
    table = Table(title=f"experiment {name}", show_header=False)
    for key, value in progress.items():
        table.add_row(key, "" if value is None else str(value))
    Console().print(table)
    return 0


def _best(args: argparse.Namespace) -> int:
    from alpha_evolve.files import atomic_write_text

    name = _name(args)
    store = _open_store(args.db, create=False)
    try:
        _require(store, name)
        top = store.top_k(name, 1)
    finally:
        store.close()
    if not top:
        raise UserError(f"experiment {name!r} has no successful program yet", 1)
    best = top[0]
    exported = None
    if args.export:
        path = Path(args.export)
        header = (
            f"# Best program of experiment {name!r}: program #{best.id}, iteration {best.iteration}, "
            f"generation {best.generation}.\n# Train fitness {best.fitness:.6f} (train period only; "
            "validate it before trusting it).\n"
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, header + best.code)
        except OSError as exc:
            raise UserError(f"{path}: cannot write the strategy file ({exc})") from None
        exported = str(path)
    out = {
        "experiment": name,
        "program_id": best.id,
        "iteration": best.iteration,
        "generation": best.generation,
        "parent_id": best.parent_id,
        "is_seed": best.is_seed,
        "fitness": best.fitness,
        "metrics": best.metrics,
        "mutator": best.mutator,
        "exported": exported,
    }
    if args.json:
        out["code"] = best.code
        _emit_json(out)
        return 0
    console = Console()
    console.print(
        f"best of [bold]{name}[/]: program #{best.id} (iteration {best.iteration}, generation "
        f"{best.generation}), fitness {best.fitness:.4f}"
    )
    table = Table("metric", "train value")
    for key, value in best.metrics.items():
        table.add_row(str(key), f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if exported:
        console.print(f"written to {exported}")
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _open_store(args.db, create=False)
    try:
        rows = []
        for exp in store.list_experiments():
            best = store.top_k(exp.name, 1)
            rows.append(
                {
                    "experiment": exp.name,
                    "status": exp.status,
                    "iterations_completed": exp.completed_iterations,
                    "target_iterations": exp.target_iterations,
                    "best_fitness": best[0].fitness if best else None,
                    "stop_reason": exp.stop_reason or None,
                    "created_at": exp.created_at,
                }
            )
    finally:
        store.close()
    if args.json:
        _emit_json({"db": str(args.db), "experiments": rows})
        return 0
    table = Table("experiment", "status", "iterations", "best fitness", "stop reason", "created")
    for r in rows:
        table.add_row(
            r["experiment"],
            r["status"],
            f"{r['iterations_completed']}/{r['target_iterations']}",
            "n/a" if r["best_fitness"] is None else f"{r['best_fitness']:.4f}",
            r["stop_reason"] or "",
            r["created_at"] or "",
        )
    Console().print(table)
    return 0


def _stop(args: argparse.Namespace) -> int:
    from alpha_evolve.experiment_status import request_stop

    name = _name(args)
    store = _open_store(args.db, create=False)
    try:
        _require(store, name)
        outcome = request_stop(store, name)
    finally:
        store.close()
    message = (
        "stop requested: the run finishes its iterations in flight, then pauses"
        if outcome == "requested"
        else "no live run held the experiment; marked paused"
    )
    if args.json:
        _emit_json({"experiment": name, "stop": outcome, "message": message})
    else:
        Console().print(f"experiment {name}: {message}")
    return 0
