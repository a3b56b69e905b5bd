"""End to end in a real headless Chromium: the real ``alpha-evolve dashboard`` process starts a real tracked session
(the real loop and pipeline on a tiny config) from the Experiments tab, the proposal is approved with the button,
and the page shows the session moving on, without a reload. Screenshots go to ``test-artifacts/screenshots/``.

Waits are Playwright's waits on page state, never sleeps.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.registry import ExperimentRegistry
from tests._session_helpers import ROOT

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# 400 bars leave ~80 validation bars, where the seed itself makes 2 round trips: with the default minimum of 3
# every finalist could be flagged and nothing crowned, depending on which 3 mutations the search happens to make.
TINY = """[evolution]
generations = 3

[backtest]
synthetic_bars = 400
bt_top = 2
screen_fraction = 0
min_round_trips = 1
"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[dict[str, Any]]:
    db = tmp_path / "experiments.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpha_evolve", "dashboard", "--port", "0", "--registry-db", str(db),
         "--runs-dir", str(tmp_path / "runs"), "--session-root", str(tmp_path / "sessions")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AE_PIPELINE_DIR": str(tmp_path / "runs")},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the command prints its URL once it listens
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
        assert match, f"dashboard did not start: {line!r} {err}"
        yield {"url": match.group(1), "db": db, "tmp": tmp_path}
    finally:
        with contextlib.suppress(Exception), ExperimentRegistry(db, create=False) as reg:
            for s in reg.list_sessions():  # a session this test started and left running (only on failure)
                if s["owner_pid"]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(s["owner_pid"], signal.SIGTERM)
        proc.terminate()
        proc.wait(30)


def test_approve_in_the_browser_and_watch_the_session_move_on(dashboard: dict[str, Any]) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=120_000)  # a pipeline run on the tiny config takes seconds; CI machines vary
    SHOTS.mkdir(parents=True, exist_ok=True)
    tiny = dashboard["tmp"] / "tiny.toml"
    tiny.write_text(TINY)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            page.set_default_timeout(120_000)
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(dashboard["url"])
            expect(page.locator("#tab-experiments")).to_have_class(re.compile("active"))
            page.locator("#new-session summary").click()
            form = page.locator("#new-session-form")
            form.locator("input[name=config]").fill(str(tiny))
            form.locator("input[name=iterations]").fill("1")
            form.locator("input[name=seed]").fill("11")
            page.screenshot(path=str(SHOTS / "01_experiments_new_session.png"), full_page=True)
            page.locator("#start-session").click()

            # the session page opens; the baseline runs, then the proposal waits for us
            expect(page).to_have_url(re.compile(r"#/session/self_evo_session_"))
            approve = page.locator("#approve")
            expect(approve).to_be_enabled()
            proposal = page.locator("#proposal")
            action_id = proposal.get_attribute("data-action-id")
            assert action_id
            expect(page.locator("#iterations-table tr[data-iteration='0']")).to_be_visible()
            expect(page.locator("#objective-chart svg circle")).to_have_count(1)

            # an out-of-range value is refused with a clear message and nothing changes
            gens = page.locator("#cand-evolution_generations")
            gens.fill("99")
            approve.click()
            expect(page.locator("#decision-error")).to_contain_text("generations: 99 is outside [4, 48]")
            gens.fill("4.5")  # inside the range but not an integer: said so, not "outside"
            approve.click()
            expect(page.locator("#decision-error")).to_contain_text("generations: 4.5 is not a whole number")
            gens.fill("")
            approve.click()
            expect(page.locator("#decision-error")).to_contain_text("generations: enter a whole number in [4, 48]")
            expect(proposal).to_have_attribute("data-action-id", action_id)
            # the server re-checks too: a request from the page that skips the form's checks is refused
            sid_now = page.url.split("#/session/")[1]
            refused = page.evaluate(
                """async ([sid, aid]) => {
                    const token = document.querySelector('meta[name="ae-token"]').content;
                    const r = await fetch(`/api/sessions/${sid}/decision`, {method: "POST",
                        headers: {"Content-Type": "application/json", "X-AE-Token": token},
                        body: JSON.stringify({action_id: aid, decision: "approved",
                                              candidate: {"evolution.generations": 99}})});
                    return [r.status, (await r.json()).error];
                }""",
                [sid_now, action_id],
            )
            assert refused[0] == 422 and "outside" in refused[1], refused
            gens.fill("4")
            page.locator("#decision-notes").fill("approved from the browser test")
            page.screenshot(path=str(SHOTS / "02_session_pending_proposal.png"), full_page=True)
            approve.click()

            # live updates: no reload, the iteration runs and the session completes
            row = page.locator("#iterations-table tr[data-iteration='1']")
            expect(row).to_contain_text("approved (edited) — approved from the browser test")
            expect(row).to_contain_text("generations = 4")
            expect(page.locator("h1 .badge")).to_have_attribute("data-status", "completed")
            expect(page.locator("#objective-chart svg circle")).to_have_count(2)
            expect(page.locator("#export-toml")).to_be_visible()
            page.screenshot(path=str(SHOTS / "03_session_completed.png"), full_page=True)

            with ExperimentRegistry(dashboard["db"], create=False) as reg:
                sid = reg.list_sessions()[0]["id"]
                p = reg.get_proposal(action_id)
                assert p is not None and p["status"] == "approved" and p["decided_by"] == "dashboard"
                its = reg.iterations(sid)
                assert [i["iteration"] for i in its] == [0, 1]
                assert its[1]["config_updates"]["evolution.generations"] == 4

            # the run behind iteration 1: summary, equity curves, top programs, code, evolution
            row.locator("a", has_text="open run").click()
            expect(page.locator("#tab-runs")).to_have_class(re.compile("active"))
            expect(page.locator("#run-metrics")).to_be_visible()
            expect(page.locator("#equity-chart svg path").first).to_be_visible()
            expect(page.locator("#top-programs")).to_be_visible()
            expect(page.locator("#best-code")).to_contain_text("class")
            expect(page.locator("#summary-json")).to_contain_text("best_metrics")
            expect(page.locator("#evolution .fitness-chart svg circle").first).to_be_visible()
            expect(page.locator("#evolution .lineage .node.sel")).to_have_count(1)
            page.screenshot(path=str(SHOTS / "04_run_and_programs.png"), full_page=True)

            page.locator("#tab-runs").click()
            expect(page.locator("#runs-table tbody tr")).to_have_count(2)
            page.screenshot(path=str(SHOTS / "05_runs.png"), full_page=True)
            page.locator("#tab-experiments").click()
            expect(page.locator(f"#sessions-table tr[data-session='{sid}'] .badge")).to_have_text("completed")
            page.screenshot(path=str(SHOTS / "06_experiments.png"), full_page=True)
            assert not failed, f"requests that failed (offline assets?): {failed}"
        finally:
            browser.close()
