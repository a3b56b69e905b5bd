"""Briefings on hand-made histories whose trend, plateau and attribution are worked out by hand."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from alpha_evolve.briefing import attribution, build_briefing, plateau, trend
from alpha_evolve.samplers import Proposal
from alpha_evolve.search_space import parse_search_space

SPACE = parse_search_space({"parameters": [
    {"key": "generations", "type": "int_range", "min": 4, "max": 16, "step": 4, "description": "more iterations"},
    {"key": "bt_top", "type": "choice", "values": [1, 3, 5], "description": "validation breadth"},
    {"key": "use_adjusted", "type": "bool_toggle"},
]})


def rec(i: int, obj: float | None, gen: int = 8, top: int = 3, adj: bool = False, *,
        reason: str | None = None) -> dict[str, Any]:
    ok = obj is not None and reason is None
    return {"iteration": i, "updates": {"generations": gen}, "run_dir": None,
            "config_values": {"evolution.generations": gen, "backtest.bt_top": top, "backtest.use_adjusted": adj},
            "metrics": {"Sharpe": obj if obj is not None else math.nan, "MaxDD": 0.2},
            "objective": obj, "success": ok, "failure_reason": reason, "timings": {}}


def test_trend_is_the_least_squares_slope_of_the_last_k_successes() -> None:
    # successes at iterations 0..5 with objective 10, 0, 1, 2, 3, 4 -> last 4 successes slope exactly 1
    hist = [rec(0, 10.0), rec(1, 0.0), rec(2, 1.0), rec(3, None, reason="timeout"), rec(4, 2.0), rec(5, 3.0)]
    t = trend(hist, window=4)
    # points (1,0), (2,1), (4,2), (5,3): slope = cov/var = 7/10
    assert t["points"] == 4
    assert t["slope"] == pytest.approx(0.7)
    assert t["direction"] == "improving"
    assert trend(hist, window=4, maximize=False)["direction"] == "worsening"
    assert trend([rec(0, 1.0), rec(1, 1.0)], window=4)["direction"] == "flat"
    assert trend([rec(0, 1.0)], window=4) == {"window": 4, "points": 1, "slope": None,
                                              "direction": "insufficient data"}


def test_plateau_counts_iterations_without_improvement_beyond_tolerance() -> None:
    hist = [rec(0, 1.0), rec(1, 2.0), rec(2, 2.0005), rec(3, None, reason="crash"), rec(4, 1.5)]
    p = plateau(hist, patience=3, tolerance=1e-3)
    assert p["best_iteration"] == 1 and p["iterations_since_improvement"] == 3 and p["detected"]
    assert not plateau(hist, patience=4, tolerance=1e-3)["detected"]
    assert plateau(hist, patience=3, tolerance=1e-4)["iterations_since_improvement"] == 2  # 2.0005 counts now
    # minimising: 1.0 stays best, four iterations since
    assert plateau(hist, maximize=False, patience=3)["iterations_since_improvement"] == 4
    assert not plateau([rec(0, None, reason="x")] * 5, patience=3)["detected"]  # nothing to plateau on


def test_attribution_credits_deltas_between_consecutive_successes() -> None:
    hist = [
        rec(0, 1.0, gen=8, top=3),
        rec(1, 1.5, gen=12, top=3),            # gen up: +0.5
        rec(2, None, gen=16, reason="timeout"),  # skipped
        rec(3, 1.2, gen=12, top=5),            # top up: -0.3
        rec(4, 2.2, gen=16, top=5, adj=True),  # gen up and adj up: +1.0
        rec(5, 1.6, gen=8, top=5, adj=True),   # gen down: -0.6
    ]
    a = attribution(hist, SPACE.config_keys)
    gen, top, adj = a["evolution.generations"], a["backtest.bt_top"], a["backtest.use_adjusted"]
    assert gen["increased"]["count"] == 2 and gen["increased"]["mean_delta"] == pytest.approx(0.75)
    assert gen["decreased"]["count"] == 1 and gen["decreased"]["mean_delta"] == pytest.approx(-0.6)
    assert gen["changed"]["count"] == 3 and gen["changed"]["mean_delta"] == pytest.approx((0.5 + 1.0 - 0.6) / 3)
    assert top["increased"] == {"count": 1, "mean_delta": pytest.approx(-0.3), "mean_improvement": pytest.approx(-0.3)}
    assert top["decreased"] == {"count": 0, "mean_delta": None, "mean_improvement": None}
    assert adj["increased"]["count"] == 1 and adj["increased"]["mean_delta"] == pytest.approx(1.0)
    mini = attribution(hist, SPACE.config_keys, maximize=False)
    assert mini["evolution.generations"]["increased"]["mean_improvement"] == pytest.approx(-0.75)


def test_build_briefing_end_to_end_is_json_ready() -> None:
    hist = [rec(0, 1.0), rec(1, 1.5, gen=12), rec(2, None, gen=16, reason="timeout: 60 s"), rec(3, 1.8, gen=16),
            rec(4, 1.6, gen=16, top=5)]
    proposal = Proposal(updates={"evolution.generations": 4}, base="best", base_updates={"generations": 16},
                        candidate={"evolution.generations": 4, "backtest.bt_top": 3, "backtest.use_adjusted": False},
                        trial_number=None,
                        base_values={"evolution.generations": 16, "backtest.bt_top": 3,
                                     "backtest.use_adjusted": False})
    b = build_briefing(hist, objective="Sharpe", maximize=True, space=SPACE, proposal=proposal, iteration=5,
                       window=3, patience=3)
    text = json.dumps(b, allow_nan=False)  # no NaN anywhere
    assert "NaN" not in text
    assert b["latest"]["iteration"] == 4 and b["latest"]["objective"] == 1.6
    assert b["objective_change"]["vs_previous"] == pytest.approx(-0.2)
    assert b["objective_change"]["vs_best"] == pytest.approx(-0.2)
    assert b["objective_change"]["new_best"] is False
    assert b["best"]["iteration"] == 3
    # last 3 successes: (1,1.5), (3,1.8), (4,1.6): slope = sum(dx*dy)/sum(dx^2) with mean x 8/3, y 4.9/3
    xs, ys = [1, 3, 4], [1.5, 1.8, 1.6]
    mx, my = sum(xs) / 3, sum(ys) / 3
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    assert b["trend"]["slope"] == pytest.approx(slope)
    assert b["plateau"]["iterations_since_improvement"] == 1 and not b["plateau"]["detected"]
    assert b["failures"] == {"count": 1, "recent": [{"iteration": 2, "reason": "timeout: 60 s"}]}
    assert b["latest"]["metrics"] == {"Sharpe": 1.6, "MaxDD": 0.2}
    assert b["proposal"]["changes"] == [{"key": "evolution.generations", "from": 16, "to": 4,
                                         "description": "more iterations"}]
    assert "Iteration 5." in b["summary"] and "Sharpe 1.6" in b["summary"] and "-0.2 vs previous" in b["summary"]
    assert "generations 16 -> 4" in b["summary"] and "from best" in b["summary"]
    assert "1 failed iteration(s)" in b["analysis"] and "timeout: 60 s" in b["analysis"]
    assert "generations increased went with the largest mean improvement" in b["analysis"]


def test_briefing_with_no_history_and_with_a_failed_last_run() -> None:
    empty = build_briefing([], objective="MaxDD", maximize=False, space=SPACE, proposal=None, iteration=0)
    assert empty["latest"] is None and empty["best"] is None and "No iterations yet." in empty["summary"]
    json.dumps(empty, allow_nan=False)
    failed = build_briefing([rec(0, 0.3), rec(1, None, reason="crash")], objective="MaxDD", maximize=False,
                            space=SPACE, proposal=None, iteration=2)
    assert "failed: crash" in failed["summary"]
    assert failed["objective_change"]["vs_previous"] is None
    assert failed["objective"] == {"name": "MaxDD", "direction": "minimize"}


def test_plateau_is_flagged_in_the_analysis() -> None:
    hist = [rec(0, 2.0)] + [rec(i, 1.0 + 0.1 * i) for i in range(1, 6)]
    b = build_briefing(hist, objective="Sharpe", maximize=True, space=SPACE, proposal=None, iteration=6,
                       patience=5)
    assert b["plateau"]["detected"] and "Plateau:" in b["analysis"]
