"""Every dashboard route through Starlette's TestClient, on a real registry with a real tracked session loop (stand-in
pipeline runner) and a real pipeline run directory (tiny config): reads, decisions, refusals, stop, TOML export,
runs and programs, starting sessions as real subprocesses, and the cross-origin guard."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from starlette.testclient import TestClient

from alpha_evolve.config import RunConfig, load_config
from alpha_evolve.dashboard.app import STATIC, DashboardConfig, create_app
from alpha_evolve.registry import ExperimentRegistry, import_session_dir
from alpha_evolve.session_settings import SessionSettings
from tests._loop_harness import Tracked, finished_legacy_session
from tests._session_helpers import ROOT, wait_until

BASE = "http://127.0.0.1:8765"
TINY = """[evolution]
generations = 3

[backtest]
synthetic_bars = 400
bt_top = 2
screen_fraction = 0
"""


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alpha_evolve.pipeline import run_pipeline

    d = tmp_path_factory.mktemp("runs")
    (d / "tiny.toml").write_text(TINY)
    cfg = load_config(d / "tiny.toml")
    run = run_pipeline(cfg, dataclasses.replace(cfg.pipeline, output_dir=str(d / "runs"), disable_align_cache=True))
    return run


class Dash:
    def __init__(self, tmp: Path, pipeline_run: Path, **kw: Any) -> None:
        self.tracked = Tracked(tmp, **kw)
        self.config = DashboardConfig(
            registry_db=self.tracked.db, run_roots=[pipeline_run.parent], session_root=tmp / "dash-sessions",
            self_evolve_cmd=(sys.executable, str(ROOT / "tests" / "_session_driver.py")), workdir=ROOT,
        )
        self.app = create_app(self.config)
        self.client = TestClient(self.app, base_url=BASE)
        self.token = self.config.token

    def post(self, url: str, body: Any, **headers: str) -> Any:
        h = {"X-AE-Token": self.token, **headers}
        return self.client.post(url, json=body, headers=h)


@pytest.fixture
def dash(tmp_path: Path, pipeline_run: Path) -> Any:
    d = Dash(tmp_path, pipeline_run, iterations=2)
    d.tracked.pending()
    yield d
    if d.tracked.thread.is_alive():
        d.tracked.registry.request_stop(d.tracked.id)
        d.tracked.finish()
    for p in d.app.state.children:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_page_and_assets_are_served_locally(dash: Dash) -> None:
    r = dash.client.get("/")
    assert r.status_code == 200 and dash.token in r.text
    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text):
        assert dash.client.get(src).status_code == 200
    for f in STATIC.iterdir():  # nothing comes from the network: no absolute URLs in any asset
        text = f.read_text()
        assert not re.search(r"(src|href)\s*=\s*[\"']https?://", text), f.name
        assert "cdn" not in text.lower(), f.name
    assert dash.client.get("/static/nope.js").status_code == 404


def test_health_revision_and_session_reads(dash: Dash) -> None:
    t = dash.tracked
    assert dash.client.get("/api/health").json()["ok"] is True
    rev = dash.client.get("/api/revision").json()["revision"]
    assert rev > 0
    rows = dash.client.get("/api/sessions").json()["sessions"]
    assert [r["id"] for r in rows] == [t.id] and rows[0]["status"] == "awaiting_approval"
    d = dash.client.get(f"/api/sessions/{t.id}").json()
    assert d["can_decide"] is True and d["pending"]["iteration"] == 1
    assert {p["key"] for p in d["space"]} == set(d["pending"]["candidate"])
    assert [i["iteration"] for i in d["iterations"]] == [0]
    missing = dash.client.get("/api/sessions/nope")
    assert missing.status_code == 404 and "no session" in missing.json()["error"]


def test_decisions_are_validated_and_refusals_change_nothing(dash: Dash) -> None:
    t = dash.tracked
    url = f"/api/sessions/{t.id}/decision"
    p = dash.client.get(f"/api/sessions/{t.id}").json()["pending"]
    good = {"action_id": p["action_id"], "decision": "approved", "notes": "ok"}
    rev = dash.client.get("/api/revision").json()["revision"]
    bad_cases = [
        ({**good, "decision": "maybe"}, 400, "expected 'approved' or 'rejected'"),
        ({**good, "notes": 5}, 400, "notes"),
        ({**good, "candidate": [1]}, 400, "candidate"),
        ({**good, "action_id": "other"}, 404, "no proposal"),
        ({**good, "candidate": {**p["candidate"], "evolution.generations": 99}}, 422, "outside"),
        ({**good, "candidate": {**p["candidate"], "backtest.bt_top": 2}}, 422, "not one of the choices"),
        ({**good, "candidate": {**p["candidate"], "evolution.nonsense": 1}}, 422, "not a value of this proposal"),
    ]
    for body, status, fragment in bad_cases:
        r = dash.post(url, body)
        assert r.status_code == status, (body, r.text)
        msg = r.json()["error"]
        assert fragment in msg and "\n" not in msg
    headers = {"X-AE-Token": dash.token, "Content-Type": "application/json"}
    r = dash.client.post(url, content=b"{not json", headers=headers)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert dash.client.get("/api/revision").json()["revision"] == rev  # nothing was written
    assert t.registry.get_proposal(p["action_id"])["status"] == "pending"  # type: ignore[index]
    # an edited, valid approval runs as edited and the session moves on
    cand = {**p["candidate"], "evolution.generations": 16}
    r = dash.post(url, {**good, "candidate": cand})
    assert r.status_code == 200 and r.json()["proposal"]["edited"] is True
    assert dash.post(url, good).status_code == 409
    nxt = t.pending(not_id=p["action_id"])
    assert nxt["iteration"] == 2
    it1 = dash.client.get(f"/api/sessions/{t.id}").json()["iterations"][1]
    assert it1["config_updates"]["evolution.generations"] == 16 and it1["decision"]["notes"] == "ok"
    # reject: a new proposal for the same iteration
    assert dash.post(url, {"action_id": nxt["action_id"], "decision": "rejected"}).status_code == 200
    again = t.pending(not_id=nxt["action_id"])
    assert again["iteration"] == 2 and again["attempt"] == 2


def test_state_changes_from_other_origins_are_refused(dash: Dash) -> None:
    t = dash.tracked
    url = f"/api/sessions/{t.id}/stop"
    cases: list[tuple[dict[str, Any], dict[str, str], int]] = [
        ({}, {"X-AE-Token": "wrong"}, 403),
        ({}, {}, 403),
        ({}, {"X-AE-Token": dash.token, "Sec-Fetch-Site": "cross-site"}, 403),
        ({}, {"X-AE-Token": dash.token, "Origin": "http://evil.example"}, 403),
        ({}, {"X-AE-Token": dash.token, "Host": "evil.example"}, 421),
    ]
    for body, headers, status in cases:
        r = dash.client.post(url, json=body, headers=headers)
        assert r.status_code == status, (headers, r.text)
    form = dash.client.post(url, data={"a": "b"}, headers={"X-AE-Token": dash.token})
    assert form.status_code == 415
    assert t.registry.require_session(t.id)["stop_requested"] == 0
    ok = dash.post(url, {}, Origin=BASE, **{"Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200 and ok.json()["status"] == "stop_requested"
    assert t.finish().status == "stopped"
    again = dash.post(url, {})
    assert again.status_code == 409 and "not running" in again.json()["error"]


def test_best_config_export_as_toml(dash: Dash) -> None:
    t = dash.tracked
    r = dash.client.get(f"/api/sessions/{t.id}/best.toml")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    doc = tomlkit.parse(r.text).unwrap()
    assert doc["evolution"]["generations"] == RunConfig().evolution.generations  # the baseline is the best so far
    with ExperimentRegistry(t.db) as reg:
        reg.create_session("empty", objective="Sharpe", maximize=True, settings={}, base_config={})
    assert dash.client.get("/api/sessions/empty/best.toml").status_code == 409
    assert dash.client.get("/api/sessions/nope/best.toml").status_code == 404


def test_runs_and_programs(dash: Dash, pipeline_run: Path) -> None:
    runs = dash.client.get("/api/runs").json()["runs"]
    paths = {r["path"] for r in runs}
    assert str(pipeline_run.resolve()) in paths
    baseline_run = dash.client.get(f"/api/sessions/{dash.tracked.id}").json()["iterations"][0]["run_dir"]
    assert str(Path(baseline_run).resolve()) in paths  # runs recorded by sessions are listed too
    q = {"path": str(pipeline_run)}
    d = dash.client.get("/api/run", params=q).json()
    assert d["summary"]["status"] == "ok" and d["top_programs"] and "class" in d["best_code"]
    eq = dash.client.get("/api/run/equity", params=q).json()
    assert eq["series"] and all(len(s["values"]) == len(eq["timestamps"]) for s in eq["series"])
    assert any(s["name"] == "buy_and_hold" for s in eq["series"])
    ev = dash.client.get("/api/run/programs", params=q).json()["experiments"][0]
    assert ev["points"] and ev["lineage"][-1]["id"] == ev["best_id"]
    assert ev["lineage"][0]["parent_id"] is None  # root first
    for url in ("/api/run", "/api/run/equity", "/api/run/programs"):
        assert dash.client.get(url, params={"path": "/etc"}).status_code == 404
        assert dash.client.get(url).status_code == 404
    # a session's stand-in run has a SUMMARY but no equity or programs
    assert dash.client.get("/api/run/equity", params={"path": baseline_run}).status_code == 404


def test_legacy_sessions_are_read_only(dash: Dash, tmp_path: Path) -> None:
    d = finished_legacy_session(tmp_path)
    with ExperimentRegistry(dash.tracked.db) as reg:
        import_session_dir(reg, d)
    sid = next(s["id"] for s in dash.client.get("/api/sessions").json()["sessions"] if s["mode"] == "legacy")
    assert sid.startswith(d.name)
    view = dash.client.get(f"/api/sessions/{sid}").json()
    assert view["session"]["mode"] == "legacy" and len(view["iterations"]) == 3 and view["can_decide"] is False
    r = dash.post(f"/api/sessions/{sid}/decision", {"action_id": "x", "decision": "approved"})
    assert r.status_code == 409 and "legacy" in r.json()["error"]


def test_start_session_validates_then_spawns_a_real_process(dash: Dash, tmp_path: Path) -> None:
    space = str(ROOT / "configs" / "self_evolution" / "default.json")
    bad = [
        ({"search_space": str(tmp_path / "none.json")}, "is not a file"),
        ({"search_space": space, "iterations": -1}, "iterations"),
        ({"search_space": space, "objective": "Luck"}, "objective"),
        ({"search_space": space, "surprise": 1}, "unknown field"),
        ({"search_space": space, "exploration_prob": 2}, "exploration_prob"),
        ({"search_space": space, "sampler": "optuna", "exploration_prob": 0.3}, "random sampler only"),
        ({"search_space": space, "seed": -1}, "seed"),
        ({"search_space": space, "config": str(ROOT / "README.md")}, ""),
    ]
    for body, fragment in bad:
        r = dash.post("/api/sessions", body)
        assert r.status_code == 422 and fragment in r.json()["error"], r.text
    assert not dash.app.state.children
    with ExperimentRegistry(dash.tracked.db) as reg:
        before = len(reg.list_sessions())
    # the form's defaults and ranges are the CLI's, from the one declaration
    declared = dash.client.get("/api/session-settings").json()["settings"]
    assert declared["exploration_prob"]["default"] == SessionSettings().exploration_prob
    assert (declared["exploration_prob"]["ge"], declared["exploration_prob"]["le"]) == (0.0, 1.0)
    assert declared["sampler"]["choices"] == ["random", "optuna"]
    assert declared["search_space_path"]["default"] == space  # what a request without one uses, like the CLI
    # no search space given: the CLI's default, as the form shows it
    r = dash.post("/api/sessions", {"iterations": 1, "auto_approve": True, "seed": 5})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    db = dash.tracked.db
    with ExperimentRegistry(db) as reg:
        wait_until(db.parent, lambda: reg.require_session(sid)["status"] == "completed", what="completion")
        s = reg.require_session(sid)
        assert s["seed"] == 5 and s["iterations_completed"] == 1
        assert Path(s["artifact_dir"]).parent == (tmp_path / "dash-sessions").resolve()
        assert len(reg.list_sessions()) == before + 1  # refused requests recorded nothing
    dash.app.state.children[0].wait(30)


def test_where_candidates_run(dash: Dash, pipeline_run: Path) -> None:
    """A running cluster run (no SUMMARY.json yet) shows its nodes; a finished local run says where it ran."""
    live = pipeline_run.parent / "run_20990101T000000Z_live"
    live.mkdir()
    node = {"node_id": "ab" * 28, "host": "gpu-7", "address": "10.0.0.7", "slots": 8, "alive": True,
            "in_flight": 3, "done": 41, "lost": 0, "restarts": 0, "secrets_removed": [], "note": ""}
    status = {"backend": "ray", "address": "10.0.0.1:6379", "nodes": [node], "live_nodes": 1, "slots": 8,
              "in_flight": 3, "done": 41, "retries": 0, "crashes": 0, "closed": False, "updated_at": 0}
    (live / "evaluation_nodes.json").write_text(json.dumps(status))
    try:
        got = dash.client.get("/api/evaluation").json()["placements"]
        assert [p["run"] for p in got] == [live.name]
        assert got[0]["running"] and got[0]["nodes"][0]["host"] == "gpu-7" and got[0]["in_flight"] == 3
        detail = dash.client.get("/api/run", params={"path": str(pipeline_run)}).json()
        assert detail["summary"]["evaluation"]["backend"] == "local"
        assert detail["summary"]["evaluation"]["nodes"][0]["slots"] >= 1
    finally:
        (live / "evaluation_nodes.json").unlink()
        live.rmdir()


def test_a_start_whose_process_fails_says_why_and_leaves_a_resumable_session(tmp_path: Path) -> None:
    """The dashboard records the session with the CLI's function, then runs it as ``--resume ID``; a child that
    dies before claiming it gives its own last line, and the session is stopped (resumable), not 'running'."""
    failing = "import sys; print('alpha-evolve: error: no room for the session'); sys.exit(2)"
    with ExperimentRegistry(tmp_path / "reg.sqlite"):
        pass
    config = DashboardConfig(registry_db=tmp_path / "reg.sqlite", run_roots=[],
                             session_root=tmp_path / "s", self_evolve_cmd=(sys.executable, "-c", failing),
                             workdir=ROOT)
    app = create_app(config)
    client = TestClient(app, base_url=BASE)
    space = str(ROOT / "configs" / "self_evolution" / "default.json")
    r = client.post("/api/sessions", json={"search_space": space, "iterations": 1},
                    headers={"X-AE-Token": config.token})
    assert r.status_code == 422 and r.json()["error"] == "alpha-evolve: error: no room for the session"
    for p in app.state.children:
        p.wait(10)
    with ExperimentRegistry(config.registry_db) as reg:
        (row,) = reg.list_sessions()
        assert row["status"] == "stopped"
