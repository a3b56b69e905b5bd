"""The dashboard: a Starlette app over the experiment registry and the pipeline run directories.

Offline by construction: the page, its script, stylesheet and charts are files in ``static/`` served by this app.
Live updates are polling: the page asks ``/api/revision`` every second (one indexed read) and re-fetches its view
when the registry's revision counter moved.

State-changing requests (POST) are refused unless they come from this app's own page: ``Sec-Fetch-Site`` must be
``same-origin`` (or absent/``none``), an ``Origin`` must be this server's, the body must be JSON, and the
``X-AE-Token`` header must carry the per-server token embedded in the page. ``Host`` must be one this server
answers to, against DNS rebinding. Bad input gets a one-line JSON error (``{"error": ...}``) and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from alpha_evolve.dashboard.runs import RunIndex, RunNotFound, equity_curves, evolution, run_detail, run_headline
from alpha_evolve.registry import (
    DecisionError,
    ExperimentRegistry,
    RegistryError,
    driver_alive,
    session_checker,
)
from alpha_evolve.session import MAX_NOTES_CHARS
from alpha_evolve.values import json_safe, one_line

logger = logging.getLogger("alpha_evolve.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
TOKEN_HEADER = "x-ae-token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_BODY = 64 * 1024
MAX_NOTES = MAX_NOTES_CHARS  # one limit for the dashboard, pending_action.json and approve --notes
START_WAIT_SECONDS = 30.0


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def error(status: int, message: str) -> ORJSONResponse:
    return ORJSONResponse({"error": one_line(str(message))}, status_code=status)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class DashboardConfig:
    registry_db: Path
    run_roots: list[Path] = field(default_factory=list)
    session_root: Path = Path("pipeline_runs_cs/self_evolution")
    host: str = "127.0.0.1"
    allowed_hosts: Sequence[str] = ()
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    self_evolve_cmd: Sequence[str] = (sys.executable, "-m", "alpha_evolve", "self-evolve")
    log_dir: Path | None = None
    workdir: Path | None = None


# ------------------------------------------------------------------------------------------------ security


class GuardMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: Any, config: DashboardConfig) -> None:
        super().__init__(app)
        self.config = config
        hosts = {h.lower() for h in (*LOOPBACK_HOSTS, config.host, *config.allowed_hosts)}
        self.any_host = "0.0.0.0" in hosts or "::" in hosts or "*" in hosts
        self.hosts = hosts

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host_header = request.headers.get("host", "")
        hostname = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        if not self.any_host and hostname.lower() not in self.hosts:
            return error(421, f"host {host_header!r} is not served here (the dashboard answers on loopback)")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            refusal = self._refuse_write(request, host_header)
            if refusal is not None:
                return error(*refusal)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    def _refuse_write(self, request: Request, host_header: str) -> tuple[int, str] | None:
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return 403, f"cross-site request refused (Sec-Fetch-Site: {site})"
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{host_header}":
            return 403, f"request from origin {origin} refused"
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 415, "expected Content-Type: application/json"
        token = request.headers.get(TOKEN_HEADER, "")
        if not secrets.compare_digest(token, self.config.token):
            return 403, f"missing or wrong {TOKEN_HEADER} header (reload the dashboard page)"
        return None


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes", 413)
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


# ------------------------------------------------------------------------------------------------ the app


def create_app(config: DashboardConfig) -> Starlette:
    registry = ExperimentRegistry(config.registry_db)
    children: list[subprocess.Popen[bytes]] = []

    def reap() -> None:
        for p in list(children):
            if p.poll() is not None:
                children.remove(p)

    def recorded_runs() -> list[str | None]:
        return list(registry.recorded_run_dirs())

    class _Recorded:
        def __iter__(self) -> Any:
            return iter(recorded_runs())

    runs = RunIndex(config.run_roots, _Recorded())

    # ---- pages

    async def index(request: Request) -> Response:
        html = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{TOKEN}}", config.token)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    # ---- read API

    def health(request: Request) -> Response:
        return ORJSONResponse({"ok": True, "registry": str(registry.path), "revision": registry.revision()})

    def revision(request: Request) -> Response:
        return ORJSONResponse({"revision": registry.revision()})

    def sessions(request: Request) -> Response:
        reap()
        return ORJSONResponse({"sessions": registry.list_sessions(), "revision": registry.revision()})

    def session(request: Request) -> Response:
        sid = request.path_params["session_id"]
        try:
            detail = registry.session_detail(sid)
        except DecisionError as exc:
            return error(exc.http_status, str(exc))
        return ORJSONResponse(_session_view(detail))

    def best_toml(request: Request) -> Response:
        from alpha_evolve.config import ConfigError, from_mapping, render_toml

        sid = request.path_params["session_id"]
        s = registry.get_session(sid)
        if s is None:
            return error(404, f"no session {sid!r}")
        best = (s.get("summary") or {}).get("best")
        if not best:
            return error(409, f"session {sid} has no successful iteration yet")
        try:
            base = from_mapping(s.get("base_config") or {}, source=f"session {sid} base config")
            cfg = base.with_updates(dict(best.get("config_updates") or {}), source=f"session {sid} best")
        except ConfigError as exc:
            return error(422, str(exc))
        header = (
            f"Best config of self-evolution session {sid}: iteration {best['iteration']}, "
            f"{s['objective']} = {best['objective']:.6g}; updates {best.get('config_updates')}"
        )
        text = render_toml(cfg, header=header)
        return Response(
            text,
            media_type="application/toml; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{sid}_best.toml"'},
        )

    def runs_list(request: Request) -> Response:
        rows = [run_headline(p) for p in runs.known().values()]
        rows.sort(key=lambda r: str(r.get("started_at") or ""), reverse=True)
        return ORJSONResponse({"runs": rows, "roots": [str(r) for r in config.run_roots]})

    def evaluation(request: Request) -> Response:
        return ORJSONResponse({"placements": runs.placements()})

    def _run_endpoint(fn: Callable[[Path], Any]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                run_dir = runs.resolve(request.query_params.get("path"))
                return ORJSONResponse(fn(run_dir))
            except RunNotFound as exc:
                return error(404, str(exc))
            except (OSError, ValueError) as exc:
                return error(422, f"cannot read the run: {exc}")

        return endpoint

    # ---- write API

    async def decide(request: Request) -> Response:
        sid = request.path_params["session_id"]
        try:
            body = await _json_body(request)
            decision = body.get("decision")
            if decision not in ("approved", "rejected"):
                raise BadRequest(f"decision {decision!r}: expected 'approved' or 'rejected'")
            action_id = body.get("action_id")
            if not isinstance(action_id, str) or not action_id:
                raise BadRequest("action_id: expected the id of the pending proposal")
            notes = body.get("notes")
            if notes is not None and not isinstance(notes, str):
                raise BadRequest("notes: expected a string")
            if notes is not None and len(notes) > MAX_NOTES:
                raise BadRequest(f"notes: longer than {MAX_NOTES} characters")
            candidate = body.get("candidate")
            if candidate is not None and not isinstance(candidate, dict):
                raise BadRequest("candidate: expected an object of config values")
            s = registry.require_session(sid)
            if s["mode"] != "tracked":
                raise DecisionError(
                    f"session {sid} is a legacy session: decide by editing {s['source_dir']}/pending_action.json", 409
                )
            p = registry.get_proposal(action_id)
            if p is None or p["session_id"] != sid:
                raise DecisionError(f"session {sid} has no proposal {action_id!r}", 404)
            row = registry.decide(
                action_id,
                decision,
                notes=(notes or None),
                candidate=candidate,
                decided_by="dashboard",
                check=session_checker(s) if candidate else None,
            )
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except DecisionError as exc:
            return error(exc.http_status, str(exc))
        return ORJSONResponse({"ok": True, "proposal": _proposal_view(row)})

    async def stop(request: Request) -> Response:
        sid = request.path_params["session_id"]
        try:
            await _json_body(request)
            row = registry.request_stop(sid)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except DecisionError as exc:
            return error(exc.http_status, str(exc))
        return ORJSONResponse({"ok": True, "status": row["status"]})

    async def start(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        try:
            body = await _json_body(request)
            given = _start_settings(body, config)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        return await run_in_threadpool(_create_and_spawn, given)

    def session_settings(request: Request) -> Response:
        """The declared session settings, so the new-session form shows the CLI's defaults and ranges."""
        from alpha_evolve.session_settings import SETTING_SPECS
        from alpha_evolve.session_start import default_search_space

        defaults = {"search_space_path": default_search_space()}  # what a session without one uses
        return ORJSONResponse({"settings": {
            name: {"default": defaults.get(name, spec.default), "doc": spec.doc, "ge": spec.ge, "le": spec.le,
                   "gt": spec.gt, "choices": list(spec.choices) if spec.choices is not None else None}
            for name, spec in SETTING_SPECS.items() if name in _FORM_SETTINGS.values()
        }})

    def _create_and_spawn(given: dict[str, Any]) -> Response:
        """Create the session with the CLI's own function (same checks, same record), then run it in a process of
        its own (it outlives the dashboard and is driven by the registry) as a resume of that id."""
        from alpha_evolve.config import ConfigError
        from alpha_evolve.session import SessionError
        from alpha_evolve.session_start import create_tracked_session, tracked_resume_args

        try:
            sid = create_tracked_session(given, registry_db=config.registry_db, session_root=config.session_root)
        except (SessionError, ConfigError, ValueError) as exc:  # ValueError: SearchSpaceError and kin
            return error(422, str(exc))
        argv = [*config.self_evolve_cmd, *tracked_resume_args(config.registry_db.resolve(), sid)]
        log_dir = config.log_dir or (config.registry_db.parent / "logs")
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        log_path = log_dir / f"self-evolve_{stamp}_{secrets.token_hex(3)}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=config.workdir or os.getcwd(),
                env=env,
                start_new_session=True,  # the session outlives the dashboard; it is driven by the registry
            )
        children.append(proc)
        started = {"ok": True, "session_id": sid, "pid": proc.pid, "log": str(log_path)}
        deadline = time.monotonic() + START_WAIT_SECONDS
        while time.monotonic() < deadline:
            if registry.session_of_process(proc.pid) == sid:  # the child has claimed the session it was given
                return ORJSONResponse(started, 201)
            if proc.poll() is not None:  # a short session may finish (and release owner_pid) before we look
                row = registry.get_session(sid)
                if proc.returncode == 0 and row is not None:
                    return ORJSONResponse(started, 201)
                with contextlib.suppress(Exception):  # never claimed: record it stopped (resumable), not running
                    registry.request_stop(sid)
                return error(422, _last_error_line(log_path) or f"self-evolve exited with code {proc.returncode}")
            time.sleep(0.1)
        return error(504, f"the session process (pid {proc.pid}) did not start session {sid} within "
                          f"{START_WAIT_SECONDS:g} s")

    routes = [
        Route("/", index),
        Route("/api/health", health),
        Route("/api/revision", revision),
        Route("/api/sessions", sessions, methods=["GET"]),
        Route("/api/sessions", start, methods=["POST"]),
        Route("/api/session-settings", session_settings),
        Route("/api/sessions/{session_id}", session),
        Route("/api/sessions/{session_id}/decision", decide, methods=["POST"]),
        Route("/api/sessions/{session_id}/stop", stop, methods=["POST"]),
        Route("/api/sessions/{session_id}/best.toml", best_toml),
        Route("/api/runs", runs_list),
        Route("/api/evaluation", evaluation),
        Route("/api/run", _run_endpoint(run_detail)),
        Route("/api/run/equity", _run_endpoint(equity_curves)),
        Route("/api/run/programs", _run_endpoint(evolution)),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("dashboard request failed")
        if isinstance(exc, RegistryError):
            return error(500, str(exc))
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    app = Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, config=config)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.config = config
    app.state.registry = registry
    app.state.children = children
    return app


# ------------------------------------------------------------------------------------------------ views


def _proposal_view(p: dict[str, Any] | None) -> dict[str, Any] | None:
    if p is None:
        return None
    action = p.get("action") or {}
    return {
        "action_id": p["action_id"],
        "iteration": p["iteration"],
        "attempt": p["attempt"],
        "status": p["status"],
        "loop_status": p["loop_status"],
        "proposed_updates": p["proposed_updates"],
        "base_kind": p["base_kind"],
        "base": p["base_snapshot"],
        "candidate": p["candidate_snapshot"],
        "decided_candidate": p["decided_candidate"],
        "edited": bool(p["edited"]),
        "decided_by": p["decided_by"],
        "decided_at": p["decided_at"],
        "notes": p["notes"],
        "problem": p["problem"],
        "summary": action.get("summary"),
        "analysis": action.get("analysis"),
        "created_at": p["created_at"],
    }


def _session_view(detail: dict[str, Any]) -> dict[str, Any]:
    s = dict(detail["session"])
    summary = s.pop("summary", None) or {}
    space = s.pop("search_space", None) or {}
    s["best"] = summary.get("best")
    s["alive"] = driver_alive(s.get("owner_pid"), s.get("heartbeat_at"))
    state = summary.get("state") or {}
    s["phase"] = {k: state.get(k) for k in ("phase", "iteration", "started_at", "attempt")}
    s["base_config"] = s.get("base_config")
    iterations = []
    for it in detail["iterations"]:
        rec = it.get("record") or {}
        iterations.append(
            {
                "iteration": it["iteration"],
                "kind": it["kind"],
                "config_updates": it["config_updates"],
                "metrics": {k: json_safe(v) for k, v in (it["metrics"] or {}).items()},
                "objective": it["objective"],
                "success": bool(it["success"]),
                "failure_reason": it["failure_reason"],
                "run_dir": it["run_dir"],
                "decision": rec.get("decision"),
                "run_seconds": (rec.get("timings") or {}).get("run_seconds"),
                "finished_at": (rec.get("timings") or {}).get("finished_at"),
            }
        )
    pending = detail["pending"]
    can_decide = bool(
        pending is not None and s["mode"] == "tracked" and s["status"] in ("awaiting_approval", "stop_requested")
    )
    return {
        "session": s,
        "space": space.get("parameters") or [],
        "space_description": space.get("description") or "",
        "iterations": iterations,
        "proposals": [_proposal_view(p) for p in detail["proposals"]],
        "pending": _proposal_view(pending),
        "can_decide": can_decide,
        "revision": detail["revision"],
    }


# ------------------------------------------------------------------------------------------ new sessions


_FORM_SETTINGS = {"config": "config_path", "search_space": "search_space_path", "iterations": "iterations",
                  "objective": "objective", "seed": "seed", "sampler": "sampler",
                  "exploration_prob": "exploration_prob", "auto_approve": "auto_approve"}
"""The new-session form's fields and the session settings they set (``minimize`` sets ``maximize``)."""


def _start_settings(body: dict[str, Any], config: DashboardConfig) -> dict[str, Any]:
    """A new-session request as ``SessionSettings`` values: field names and file paths checked here, values by
    the settings' declarations (in ``create_tracked_session``, like the CLI's)."""
    known = {*_FORM_SETTINGS, "minimize"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (expected {', '.join(sorted(known))})", 422)
    cwd = config.workdir or Path.cwd()

    def path_field(name: str) -> str | None:
        """A given file path, resolved from the dashboard's folder; None when not given (the CLI's default)."""
        value = body.get(name)
        if value in (None, ""):
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{name}: expected a file path", 422)
        p = Path(value).expanduser()
        p = p if p.is_absolute() else cwd / p
        if not p.is_file():
            raise BadRequest(f"{name}: {value} is not a file", 422)
        return str(p)

    given: dict[str, Any] = {"config_path": path_field("config"), "search_space_path": path_field("search_space")}
    for name in ("iterations", "objective", "seed", "sampler", "exploration_prob", "auto_approve"):
        if body.get(name) not in (None, ""):
            given[_FORM_SETTINGS[name]] = body[name]
    for flag in ("minimize", "auto_approve"):
        if not isinstance(body.get(flag, False), bool):
            raise BadRequest(f"{flag}: expected true or false", 422)
    if body.get("minimize"):
        given["maximize"] = False
    for name in ("iterations", "seed", "exploration_prob"):  # the form's names in the messages, not the flags
        value = given.get(_FORM_SETTINGS[name])
        if value is not None:
            from alpha_evolve.session_settings import SETTING_SPECS

            problem = SETTING_SPECS[_FORM_SETTINGS[name]].problem(value)
            if problem:
                raise BadRequest(f"{name}: {problem}", 422)
    return given


def _last_error_line(log_path: Path) -> str | None:
    with contextlib.suppress(OSError):
        lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        for ln in reversed(lines):
            if "error" in ln.lower():
                return ln
        return lines[-1] if lines else None
    return None
