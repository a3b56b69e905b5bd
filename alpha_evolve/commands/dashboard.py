"""``alpha-evolve dashboard``: serve the experiment dashboard on loopback (offline; see docs/dashboard.md)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from rich.console import Console

from alpha_evolve.registry import DEFAULT_REGISTRY_DB, ENV_REGISTRY_DB, RegistryError, default_registry_path

console = Console(highlight=False)
DEFAULT_PORT = 8765


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="web dashboard: sessions, approvals, runs and programs (local, offline)",
        description="Serve the dashboard. It binds to 127.0.0.1 unless told otherwise; see docs/dashboard.md.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1; anything else exposes approvals)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument(
        "--registry-db", default=None, help=f"experiment registry (${ENV_REGISTRY_DB}, else {DEFAULT_REGISTRY_DB})"
    )
    p.add_argument(
        "--runs-dir",
        action="append",
        default=None,
        help="folder of pipeline run_* directories to list (repeatable; default $AE_PIPELINE_DIR and pipeline_runs_cs)",
    )
    p.add_argument("--session-root", default=None, help="where sessions started from the dashboard keep artefacts")
    p.set_defaults(func=_handler, default_log_level="WARNING")


def _handler(args: argparse.Namespace) -> int:
    import uvicorn

    from alpha_evolve.cli import fail
    from alpha_evolve.dashboard.app import DashboardConfig, create_app
    from alpha_evolve.session_start import DEFAULT_SESSION_ROOT

    if not 0 <= args.port <= 65535:
        return fail(f"--port {args.port}: expected 0-65535", 2)
    roots = [Path(r) for r in (args.runs_dir or [])]
    if not roots:
        roots = [Path(os.environ["AE_PIPELINE_DIR"])] if os.environ.get("AE_PIPELINE_DIR") else []
        roots.append(Path("pipeline_runs_cs"))
    db = default_registry_path(args.registry_db)
    config = DashboardConfig(
        registry_db=db,
        run_roots=roots,
        session_root=Path(args.session_root or DEFAULT_SESSION_ROOT),
        host=args.host,
    )
    try:
        app = create_app(config)
    except RegistryError as exc:
        return fail(str(exc), 2)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        return fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", 2)
    sock.listen(128)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{port}/"
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning[/yellow]: serving on {args.host}: anyone who can reach it can see sessions")
    console.print(f"dashboard: {url}  (registry {db.resolve()})", markup=False)
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
