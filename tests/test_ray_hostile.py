"""The tamper-proof evaluation's hostile corpus (tests/_hostile_suite.py), run through the Ray backend on a real
two-node local cluster: the same attacks, the same typed refusals and unchanged honest figures, because every node
evaluates inside the same confined, single-use processes (a node actor owns a local ``StrategyEvaluator``).

The attack tests are imported from ``tests/_hostile_suite.py`` and collected here with this module's fixtures:
``guarded`` and ``bare`` are ``RayEvaluator``s built while a fake API key sits in the driver's environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.ray_backend import RayEvaluator
from tests._evaluator_helpers import splits
from tests._hostile_suite import FAKE_KEY, LEAN, HostileAttacks, hostile
from tests._ray_cluster import two_node_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # incl. waiting for the one test cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with two_node_cluster(FAKE_KEY) as c:
        yield c


def _build(cluster: Any, **options: Any) -> RayEvaluator:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        mp.setenv("GITHUB_TOKEN", FAKE_KEY)
        return RayEvaluator({"SYN": splits(n=240)}, LEAN, max_concurrent=2, address=cluster.address, **options)


@pytest.fixture(scope="module")
def guarded(cluster: Any) -> Iterator[RayEvaluator]:
    with _build(cluster) as ev:
        yield ev


@pytest.fixture(scope="module")
def bare(cluster: Any) -> Iterator[RayEvaluator]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("alpha_evolve.policy.check_policy", lambda code: [])  # the driver's static stage
        with _build(cluster, disable_python_guards_for_tests=True) as ev:  # the nodes' guards and static stage
            yield ev


class TestHostileAttacks(HostileAttacks):
    """The shared attack suite (tests/_hostile_suite.py) on the Ray backend on a two-node cluster."""


def test_every_node_served_and_holds_no_secret(guarded: RayEvaluator, bare: RayEvaluator) -> None:
    """Runs last in this module: both nodes evaluated attacks, and no process of any node holds the key."""
    for ev in (guarded, bare):
        status = ev.cluster_status()
        assert status["live_nodes"] == 2 and all(n["done"] > 0 for n in status["nodes"]), status
        for probe in ev.node_probes():
            assert probe["confinement"] == "landlock+seccomp+rlimits"
            for pid in (probe["pid"], *probe["template_pids"], *probe["worker_pids"]):
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                assert FAKE_KEY.encode() not in environ and b"ANTHROPIC" not in environ


def test_a_hostile_universe_is_refused_like_one_symbol(cluster: Any) -> None:
    """A universe on Ray: the tampering refusal of one symbol decides the universe's result, as locally."""
    universe = {"SYN": splits(n=240), "ALT": splits(seed=11, n=240)}
    with RayEvaluator(universe, LEAN, max_concurrent=2, address=cluster.address) as ev:
        result = ev.evaluate(hostile("purge_losers"))
    assert result.status == "tampered" and not result.metrics
    assert result.error and result.error.startswith("SYN: ")


def test_lookahead_in_a_universe_equals_the_local_pool(cluster: Any) -> None:
    """Both causality checks hold for a universe split into candidate x symbol tasks on Ray: the screen-vs-full
    decision-prefix check on train (the screen's decisions travel to each symbol's full-run task) and the
    perturbed-future check on validation; a look-ahead caught locally is caught the same way, same message."""
    import dataclasses

    from alpha_evolve.evaluator import StrategyEvaluator

    peek = hostile("lookahead_frames")
    window = peek.replace("if i + 1 < len(self.closes) and self.closes[i + 1] > self.closes[i]",
                          "if max(self.closes[i + 1:i + 6] or [0.0]) > self.closes[i]")
    settings = dataclasses.replace(LEAN, screen_fraction=0.5)
    universe = {"SYN": splits(n=240), "ALT": splits(seed=11, n=240)}
    cases = [(window, "train"), (peek, "validation")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("alpha_evolve.policy.check_policy", lambda code: [])
        with StrategyEvaluator(universe, settings, 1, disable_python_guards_for_tests=True) as local:
            expected = [local.evaluate(code, split) for code, split in cases]
        with RayEvaluator(universe, settings, 2, address=cluster.address, disable_python_guards_for_tests=True) as ev:
            got = [ev.evaluate(code, split) for code, split in cases]
            assert ev.cluster_status()["tasks"] > len(cases)  # per symbol
    for want, have in zip(expected, got, strict=True):
        assert want.status == "lookahead", (want.status, want.error)
        # the perturbed-future cut is secret: drawn at random by each evaluator's template (every node's, like
        # every local pool's), so only its bar numbers may differ
        assert (have.status, have.stage, re.sub(r"\d+", "N", have.error or "")) == (
            want.status, want.stage, re.sub(r"\d+", "N", want.error or ""))
    assert "differs between a run on the first" in (got[0].error or "")
    assert "changed when only bars" in (got[1].error or "")
