"""Per-iteration briefing: what an approver (person or agent) needs to accept or reject the next proposal.

It condenses the session history into figures with fixed definitions, so the numbers an agent reasons about
are the same ones a person sees:

- *objective change*: latest successful objective minus the previous successful one (``vs_previous``) and minus
  the best of all earlier successful iterations (``vs_best``; positive for a maximised objective = new best).
- *improvement*: a change in the good direction (``delta`` for maximise, ``-delta`` for minimise), so positive
  always means better.
- *trend*: least-squares slope of the objective per iteration over the last ``window`` successful iterations.
- *plateau*: the best objective has not improved by more than ``tolerance`` (absolute, objective units) for
  ``patience`` iterations (failed iterations count: they did not improve either).
- *attribution*: for each pair of consecutive successful iterations, the objective delta is credited to every
  parameter whose value differs between them (increased / decreased for numbers and booleans, changed for all).
  It is confounded when several parameters changed together; counts are reported so a reader can judge.

The result is JSON-ready (NaN and infinities become null).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alpha_evolve.samplers import Proposal
from alpha_evolve.search_space import SearchSpace, same_value
from alpha_evolve.values import finite_or_none, json_safe, one_line


def _ok(rec: Mapping[str, Any]) -> bool:
    return bool(rec.get("success")) and finite_or_none(rec.get("objective")) is not None


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def _values(rec: Mapping[str, Any]) -> Mapping[str, Any]:
    vals = rec.get("config_values")
    if isinstance(vals, Mapping) and vals:
        return vals
    ups = rec.get("updates")
    return ups if isinstance(ups, Mapping) else {}


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    return finite_or_none(v)


def _lookup(values: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """Find ``section.name`` in a record's values, which may use canonical or bare keys."""
    if key in values:
        return True, values[key]
    bare = key.split(".", 1)[-1]
    if bare in values:
        return True, values[bare]
    return False, None


def trend(history: Sequence[Mapping[str, Any]], *, window: int = 5, maximize: bool = True,
          tolerance: float = 1e-3) -> dict[str, Any]:
    """Slope (objective per iteration) over the last ``window`` successful iterations."""
    pts = [(float(r["iteration"]), float(r["objective"])) for r in history if _ok(r)][-window:]
    if len(pts) < 2:
        return {"window": window, "points": len(pts), "slope": None, "direction": "insufficient data"}
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    if np.ptp(x) == 0:
        return {"window": window, "points": len(pts), "slope": None, "direction": "insufficient data"}
    slope = float(np.polyfit(x, y, 1)[0])
    good = slope if maximize else -slope
    direction = "improving" if good > tolerance else "worsening" if good < -tolerance else "flat"
    return {"window": window, "points": len(pts), "slope": slope, "direction": direction}


def plateau(history: Sequence[Mapping[str, Any]], *, maximize: bool = True, patience: int = 3,
            tolerance: float = 1e-3) -> dict[str, Any]:
    """Iterations since the best objective last improved by more than ``tolerance``."""
    best: float | None = None
    best_iteration: int | None = None
    since = 0
    for rec in history:
        obj = finite_or_none(rec.get("objective")) if _ok(rec) else None
        if obj is not None and (best is None or (obj - best if maximize else best - obj) > tolerance):
            best, best_iteration, since = obj, int(rec["iteration"]), 0
        else:
            since += 1
    return {"detected": best is not None and since >= patience, "iterations_since_improvement": since,
            "best_iteration": best_iteration, "patience": patience, "tolerance": tolerance}


def attribution(history: Sequence[Mapping[str, Any]], keys: Sequence[str], *,
                maximize: bool = True) -> dict[str, dict[str, Any]]:
    """Mean objective delta per parameter when it increased / decreased / changed between consecutive successes."""
    sums: dict[str, dict[str, list[float]]] = {k: {"increased": [], "decreased": [], "changed": []} for k in keys}
    prev: Mapping[str, Any] | None = None
    for rec in history:
        if not _ok(rec):
            continue
        if prev is not None:
            delta = float(rec["objective"]) - float(prev["objective"])
            for k in keys:
                had_a, a = _lookup(_values(prev), k)
                had_b, b = _lookup(_values(rec), k)
                if not (had_a and had_b) or same_value(a, b):
                    continue
                sums[k]["changed"].append(delta)
                na, nb = _as_number(a), _as_number(b)
                if na is not None and nb is not None and not isinstance(a, list | tuple):
                    sums[k]["increased" if nb > na else "decreased"].append(delta)
        prev = rec
    out: dict[str, dict[str, Any]] = {}
    for k, groups in sums.items():
        out[k] = {}
        for name, deltas in groups.items():
            mean = float(np.mean(deltas)) if deltas else None
            out[k][name] = {"count": len(deltas), "mean_delta": mean,
                            "mean_improvement": None if mean is None else (mean if maximize else -mean)}
    return out


def build_briefing(history: Sequence[Mapping[str, Any]], *, objective: str, maximize: bool, space: SearchSpace,
                   proposal: Proposal | None, iteration: int, window: int = 5, patience: int = 3,
                   tolerance: float = 1e-3, recent_failures: int = 3) -> dict[str, Any]:
    """Everything needed to decide on iteration ``iteration``'s proposal, JSON-ready, with ``summary``/``analysis``."""
    hist = sorted(history, key=lambda r: int(r.get("iteration", 0)))
    successes = [r for r in hist if _ok(r)]
    better = (lambda a, b: a > b) if maximize else (lambda a, b: a < b)

    latest = hist[-1] if hist else None
    latest_block: dict[str, Any] | None = None
    vs_previous = vs_best = None
    new_best = False
    if latest is not None:
        latest_block = {k: latest.get(k) for k in ("iteration", "objective", "success", "failure_reason")}
        latest_block["metrics"] = dict(latest.get("metrics") or {})
        latest_block["updates"] = dict(latest.get("updates") or {})
        if _ok(latest):
            obj = float(latest["objective"])
            earlier = [float(r["objective"]) for r in successes if r is not latest]
            if earlier:
                vs_previous = obj - earlier[-1]
                best_earlier = max(earlier) if maximize else min(earlier)
                vs_best = obj - best_earlier
                new_best = better(obj, best_earlier)
            else:
                new_best = True

    best_rec = None
    for r in successes:
        if best_rec is None or better(float(r["objective"]), float(best_rec["objective"])):
            best_rec = r
    best_block = None if best_rec is None else {
        "iteration": best_rec.get("iteration"), "objective": best_rec.get("objective"),
        "metrics": dict(best_rec.get("metrics") or {}), "updates": dict(best_rec.get("updates") or {}),
        "config_values": dict(best_rec.get("config_values") or {}),
    }

    tr = trend(hist, window=window, maximize=maximize, tolerance=tolerance)
    pl = plateau(hist, maximize=maximize, patience=patience, tolerance=tolerance)
    keys = list(space.config_keys)
    attr = attribution(hist, keys, maximize=maximize)
    failed = [r for r in hist if not r.get("success")]
    failures = {"count": len(failed), "recent": [{"iteration": r.get("iteration"),
                                                  "reason": r.get("failure_reason") or "unknown"}
                                                 for r in failed[-recent_failures:]]}

    proposal_block = None
    if proposal is not None:
        changes = []
        for k, v in proposal.updates.items():
            try:
                p = space.parameter_for(k)
                desc = p.description
            except (KeyError, ValueError):
                desc = ""
            changes.append({"key": k, "from": proposal.base_values.get(k), "to": v, "description": desc})
        proposal_block = {"base": proposal.base, "base_updates": dict(proposal.base_updates),
                          "trial_number": proposal.trial_number, "changes": changes,
                          "candidate": dict(proposal.candidate)}

    direction = "maximize" if maximize else "minimize"
    summary = _summary(iteration, objective, latest, vs_previous, new_best, best_rec, proposal_block)
    analysis = _analysis(objective, direction, tr, pl, attr, failures, len(hist), len(successes))
    return json_safe({
        "iteration": iteration,
        "objective": {"name": objective, "direction": direction},
        "iterations_completed": len(hist),
        "successful_iterations": len(successes),
        "latest": latest_block,
        "objective_change": {"vs_previous": vs_previous, "vs_best": vs_best, "new_best": new_best},
        "best": best_block,
        "trend": tr,
        "plateau": pl,
        "attribution": attr,
        "failures": failures,
        "proposal": proposal_block,
        "parameters": space.describe(),
        "summary": summary,
        "analysis": analysis,
    })


def _summary(iteration: int, objective: str, latest: Mapping[str, Any] | None, vs_previous: float | None,
             new_best: bool, best: Mapping[str, Any] | None, proposal: Mapping[str, Any] | None) -> str:
    parts = [f"Iteration {iteration}."]
    if latest is None:
        parts.append("No iterations yet.")
    elif _ok(latest):
        tail = " (new best)" if new_best else ""
        change = f", {_fmt(vs_previous, signed=True)} vs previous" if vs_previous is not None else ""
        parts.append(f"Last run (iteration {latest.get('iteration')}): {objective} "
                     f"{_fmt(finite_or_none(latest.get('objective')))}{change}{tail}.")
    else:
        parts.append(f"Last run (iteration {latest.get('iteration')}) failed: "
                     f"{latest.get('failure_reason') or 'unknown reason'}.")
    if best is not None:
        best_value = _fmt(finite_or_none(best.get("objective")))
        parts.append(f"Best {objective} {best_value} at iteration {best.get('iteration')}.")
    if proposal is not None:
        changes = ", ".join(f"{c['key'].split('.', 1)[-1]} {_short(c['from'])} -> {_short(c['to'])}"
                            for c in proposal["changes"]) or "no changes"
        parts.append(f"Proposal (from {proposal['base']}): {changes}.")
    return " ".join(parts)


def _short(v: Any) -> str:
    if v is None:
        return "?"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _analysis(objective: str, direction: str, tr: Mapping[str, Any], pl: Mapping[str, Any],
              attr: Mapping[str, Mapping[str, Any]], failures: Mapping[str, Any], n: int, n_ok: int) -> str:
    lines = [f"{n_ok} of {n} iterations succeeded; objective {objective} ({direction})."]
    if tr["slope"] is None:
        lines.append("Trend: not enough successful iterations yet.")
    else:
        lines.append(f"Trend over the last {tr['points']} successful iterations: {tr['direction']} "
                     f"(slope {_fmt(tr['slope'], signed=True)} per iteration).")
    if pl["detected"]:
        lines.append(f"Plateau: no improvement beyond {pl['tolerance']:g} for {pl['iterations_since_improvement']} "
                     "iterations; consider larger changes or exploring from the base config.")
    helpful = []
    for key, groups in attr.items():
        for kind in ("increased", "decreased"):
            g = groups[kind]
            if g["count"] and g["mean_improvement"] is not None:
                helpful.append((g["mean_improvement"], key.split(".", 1)[-1], kind, g["count"]))
    if helpful:
        helpful.sort(reverse=True)
        best = helpful[0]
        worst = helpful[-1]
        lines.append(f"So far {best[1]} {best[2]} went with the largest mean improvement "
                     f"({_fmt(best[0], signed=True)}, n={best[3]}).")
        if worst is not best and worst[0] < 0:
            lines.append(f"{worst[1]} {worst[2]} went with the largest mean loss "
                         f"({_fmt(worst[0], signed=True)}, n={worst[3]}).")
    if failures["count"]:
        reasons = "; ".join(f"#{f['iteration']}: {f['reason']}" for f in failures["recent"])
        lines.append(f"{failures['count']} failed iteration(s); recent: {reasons}.")
    return " ".join(lines)


def describe_proposal(action: Mapping[str, Any], proposal: Mapping[str, Any] | None = None) -> list[str]:
    """Console lines for a person deciding an action: each changed key as old → new, and the briefing summary.

    ``proposal`` is the sampler's full proposal (with ``base_values``, what the changes start from); without it the
    old values come from the action's ``proposal.base_updates`` where they can.
    """
    proposal = proposal or {}
    posted: Mapping[str, Any] = action["proposal"] if isinstance(action.get("proposal"), Mapping) else {}
    updates = proposal.get("updates") or action.get("proposed_updates") or {}
    base_values = {**(proposal.get("base_values") or {})}
    base = proposal.get("base") or posted.get("base") or "base"
    origin = "the session's base config" if base == "base" else "the best config so far"
    if not updates:
        lines = [f"proposal: no change from {origin}"]
    else:
        lines = [f"proposal ({len(updates)} change{'s' if len(updates) != 1 else ''} from {origin}):"]
        for key, new in updates.items():
            old = repr(base_values.get(key, "?")) if key in base_values else "?"
            lines.append(f"  {key}: {old} → {new!r}")
    summary = one_line(str(action.get("summary") or ""))
    if summary:
        lines.append(f"briefing: {summary if len(summary) <= 400 else summary[:397] + '...'}")
    return lines
