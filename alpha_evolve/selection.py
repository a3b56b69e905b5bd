"""Parent selection: elite / exploit / explore, sampled in SQL so it stays cheap at 100,000 programs.

Exploit uses *linear rank weighting* (weight of rank r among M candidates ∝ M − r), not fitness-proportional
or softmax weights: fitness can be negative and its scale differs between fitness definitions (Sharpe,
Calmar, composites), so any weight computed from the raw value needs a shift or a temperature in fitness
units that would silently change meaning with the fitness function. Ranks are invariant to shift and scale,
one outlier cannot take all the probability, and the best program is drawn about twice as often as the
median one (selection pressure 2). Candidates are the best `candidate_limit` eligible programs, read from
an index; below that population size the weighting covers everyone.

Novelty (optional, exploit mode only, so elite and explore keep their plain meaning): each program may carry
a behaviour descriptor {"trades", "exposure", "returns": [periodic returns]}. A candidate's weight is
multiplied by (1 + w × novelty), novelty = 1 − max correlation of its returns with the elite's returns,
clipped to [0, 1] (anti-correlated counts as fully novel, not more). Without usable returns, novelty is the
smallest normalised distance in (trade count, exposure) to any elite; without a descriptor it is 0.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from alpha_evolve.store import Program, ProgramStore

log = logging.getLogger("alpha_evolve.selection")

MODES: tuple[str, str, str] = ("elite", "exploit", "explore")
DEFAULT_RATIOS: tuple[float, float, float] = (0.1, 0.7, 0.2)
ELITE_FRACTION = 0.1
CANDIDATE_LIMIT = 1024
# Cap on elite descriptors compared against, so a huge elite cannot make exploit expensive.
ELITE_REFERENCE_LIMIT = 128


def validate_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Ratios (elite, exploit, explore): three finite non-negative numbers summing to 1."""
    vals = tuple(float(r) for r in ratios)
    if len(vals) != 3:
        raise ValueError(f"selection ratios need 3 values (elite, exploit, explore), got {len(vals)}")
    if any(not math.isfinite(v) or v < 0 for v in vals):
        raise ValueError(f"selection ratios must be finite and >= 0, got {list(vals)}")
    if abs(sum(vals) - 1.0) > 1e-6:
        raise ValueError(
            f"selection ratios must sum to 1, got {sum(vals):g} "
            f"(elite {vals[0]:g}, exploit {vals[1]:g}, explore {vals[2]:g})"
        )
    return vals[0], vals[1], vals[2]


def choose_mode(rng: random.Random, ratios: Sequence[float]) -> str:
    r = validate_ratios(ratios)
    u = rng.random()
    cum = 0.0
    for mode, p in zip(MODES, r, strict=True):
        cum += p
        if u < cum:
            return mode
    # Rounding left u above the total: take the last mode that can happen at all.
    return next(m for m, p in zip(reversed(MODES), reversed(r), strict=True) if p > 0)


def select_parent(
    store: ProgramStore,
    experiment: str,
    rng: random.Random,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    novelty_boost_w: float = 0.0,
    *,
    candidate_limit: int = CANDIDATE_LIMIT,
) -> tuple[Program, str]:
    """Pick a parent and say how ("elite" | "exploit" | "explore"); reproducible for a given rng and store.

    Only `ok`, non-pruned programs are ever returned; RuntimeError if there are none.
    """
    mode = choose_mode(rng, ratios)
    parent = sample_parent(
        store, experiment, mode, rng, novelty_boost_w=novelty_boost_w, candidate_limit=candidate_limit
    )
    log.debug("selected parent %s of %s by %s", parent.id, experiment, mode)
    return parent, mode


def sample_parent(
    store: ProgramStore,
    experiment: str,
    mode: str,
    rng: random.Random,
    *,
    novelty_boost_w: float = 0.0,
    candidate_limit: int = CANDIDATE_LIMIT,
) -> Program:
    if mode not in MODES:
        raise ValueError(f"selection mode {mode!r} is invalid: expected elite, exploit or explore")
    if not math.isfinite(novelty_boost_w) or novelty_boost_w < 0:
        raise ValueError(f"novelty_boost_w must be finite and >= 0, got {novelty_boost_w}")
    with store.snapshot():
        pid = _sample_id(store, experiment, mode, rng, novelty_boost_w, candidate_limit)
        if pid is None:
            raise RuntimeError(
                f"no eligible parent in experiment {experiment!r}: no successful, active program "
                f"(failed, screened and pruned programs are never parents)"
            )
        program = store.get(pid)
    assert program is not None
    return program


def _elite_size(n: int) -> int:
    return max(1, math.ceil(ELITE_FRACTION * n))


def _sample_id(
    store: ProgramStore, experiment: str, mode: str, rng: random.Random, w: float, candidate_limit: int
) -> int | None:
    if mode == "explore":
        return store.random_eligible_id(experiment, rng)
    n = store.eligible_count(experiment)
    if n == 0:
        return None
    if mode == "elite":
        return store.eligible_id_at_rank(experiment, rng.randrange(_elite_size(n)))
    if w == 0:
        # Same distribution as the weighted path below, but the rank is drawn analytically and fetched with
        # one indexed OFFSET: no candidate rows are read.
        return store.eligible_id_at_rank(experiment, linear_rank(rng, min(n, candidate_limit)))
    cands = store.parent_candidates(experiment, candidate_limit, with_behavior=True)
    m = len(cands)
    n_ref = min(_elite_size(n), m, ELITE_REFERENCE_LIMIT)
    novelty = novelty_scores([c[2] for c in cands], [c[2] for c in cands[:n_ref]])
    weights = [(m - r) * (1.0 + w * nv) for r, nv in enumerate(novelty)]
    cum = list(itertools.accumulate(weights))
    idx = bisect.bisect_right(cum, rng.random() * cum[-1])
    return cands[min(idx, m - 1)][0]


def linear_rank(rng: random.Random, m: int) -> int:
    """Rank r in [0, m) with P(r) ∝ m − r, by inverting the cumulative weight C(r) = (r+1)m − r(r+1)/2."""
    u = rng.random() * m * (m + 1) / 2

    def cum(r: int) -> float:
        return (r + 1) * m - r * (r + 1) / 2

    # Smallest r with C(r) > u: from the quadratic, then nudged to absorb rounding.
    r = max(0, min(m - 1, math.ceil((2 * m + 1 - math.sqrt((2 * m + 1) ** 2 - 8 * u)) / 2) - 1))
    while r > 0 and cum(r - 1) > u:
        r -= 1
    while r < m - 1 and cum(r) <= u:
        r += 1
    return r


def _raw_returns(b: dict[str, Any] | None) -> list[Any] | None:
    r = b.get("returns") if b else None
    return r if isinstance(r, list) and len(r) >= 3 else None


def _zscored(rows: list[list[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Row-standardised returns and a mask of the rows usable for correlation (numeric, finite, varying)."""
    try:
        mat = np.asarray(rows, dtype=float)
    except (TypeError, ValueError):  # a malformed row: standardise one by one so the others still count
        parts = [_zscored([r]) for r in rows]
        return np.vstack([z for z, _ in parts]), np.concatenate([m for _, m in parts])
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = mat.std(axis=1, keepdims=True)
        z = (mat - mat.mean(axis=1, keepdims=True)) / sd
    ok = np.isfinite(z).all(axis=1) & (sd[:, 0] > 0)
    return np.where(ok[:, None], z, 0.0), ok


def _trade_exposure(b: dict[str, Any] | None) -> tuple[float, float] | None:
    if not b:
        return None
    try:
        t, e = float(b["trades"]), float(b["exposure"])
    except (KeyError, TypeError, ValueError):
        return None
    return (t, e) if math.isfinite(t) and math.isfinite(e) else None


def novelty_scores(behaviors: Sequence[dict[str, Any] | None], elite: Sequence[dict[str, Any] | None]) -> list[float]:
    """Novelty in [0, 1] of each behaviour relative to the elite's (see module docstring).

    Vectorised per return-vector length (correlation needs aligned periods): one matrix product per length,
    so 1,000 candidates against 100 elites cost well under a millisecond.
    """
    out = [0.0] * len(behaviors)
    done = [False] * len(behaviors)
    elite_groups: dict[int, list[list[Any]]] = {}
    for b in elite:
        r = _raw_returns(b)
        if r is not None:
            elite_groups.setdefault(len(r), []).append(r)
    cand_groups: dict[int, list[int]] = {}
    for i, b in enumerate(behaviors):
        r = _raw_returns(b)
        if r is not None and len(r) in elite_groups:
            cand_groups.setdefault(len(r), []).append(i)
    for length, idx in cand_groups.items():
        ez, eok = _zscored(elite_groups[length])
        if not eok.any():
            continue
        cz, cok = _zscored([behaviors[i]["returns"] for i in idx])  # type: ignore[index]
        corr = (cz @ ez[eok].T / length).max(axis=1)
        nov = np.clip(1.0 - corr, 0.0, 1.0)
        for j, i in enumerate(idx):
            if cok[j]:
                out[i], done[i] = float(nov[j]), True
    elite_te = [te for te in (_trade_exposure(b) for b in elite) if te is not None]
    if elite_te:
        max_trades = max([te[0] for te in elite_te] + [1.0])
        for i, b in enumerate(behaviors):
            te = None if done[i] else _trade_exposure(b)
            if te is not None:
                scale = max(max_trades, te[0], 1.0)
                out[i] = float(min(min(max(abs(te[0] - t) / scale, abs(te[1] - e)), 1.0) for t, e in elite_te))
    return out
