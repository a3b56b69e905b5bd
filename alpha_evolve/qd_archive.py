"""Quality-diversity parent selection: MAP-Elites cells over what a strategy *does*, not over its code.

Why: with 10/70/20 over the whole population, a lineage that found a good idea fills the population with near
copies of itself; rank weighting then hands it most of the draws and every other way of trading starves.
MAP-Elites (Mouret & Clune 2015) keeps one champion per behaviour cell and draws parents among champions, so a
niche survives as long as it is the best at what it does.

Cells: trade frequency (round trips, in doubling bins: 0-1, 2-3, 4-7, ... up to ``TRADE_BINS``) x exposure
(fraction of bars in the market, ``EXPOSURE_BINS`` equal bins). Both come from the behaviour descriptor every
evaluated program already carries, so the archive needs no extra backtest and is recomputed from the store at
each draw (it survives resume and needs no state of its own).

How it differs from OpenEvolve and ShinkaEvolve: their feature dimensions are properties of the *code* (length,
an LLM-judged "diversity" or complexity score) and their islands migrate on a timer; here the dimensions are the
backtest's own trade count and exposure (two programs that trade alike share a cell however differently they are
written, and behaviour duplicates never count at all), and the draw keeps the seed contract's elite / exploit /
explore split, applied to champions instead of individuals: elite = best champions, exploit = rank-weighted
champions, explore = a uniformly random *cell*. Pruning keeps every champion, so no niche is lost to the
population bound.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alpha_evolve.selection import CANDIDATE_LIMIT, ELITE_FRACTION, choose_mode, linear_rank

if TYPE_CHECKING:
    from alpha_evolve.store import Program, ProgramStore

SELECTION_KINDS: tuple[str, ...] = ("ratios", "map_elites")
TRADE_BINS = 8
EXPOSURE_BINS = 5


@dataclass(frozen=True)
class Champion:
    program_id: int
    fitness: float
    cell: tuple[int, int]


def cell_of(behavior: Mapping[str, Any] | None) -> tuple[int, int]:
    """(trade bin, exposure bin) of a behaviour descriptor; (-1, -1) when it has none."""
    if not behavior:
        return (-1, -1)
    try:
        trades, exposure = float(behavior.get("trades", 0.0)), float(behavior.get("exposure", 0.0))
    except (TypeError, ValueError):
        return (-1, -1)
    if not (math.isfinite(trades) and math.isfinite(exposure)):
        return (-1, -1)
    t = min(TRADE_BINS - 1, int(math.log2(max(trades, 0.0) + 1.0)))
    e = min(EXPOSURE_BINS - 1, max(0, int(exposure * EXPOSURE_BINS)))
    return (t, e)


def champions(store: ProgramStore, experiment: str, limit: int = CANDIDATE_LIMIT) -> list[Champion]:
    """The best eligible program of every occupied cell, best first (duplicates are never eligible)."""
    best: dict[tuple[int, int], Champion] = {}
    for pid, fitness, behavior in store.parent_candidates(experiment, limit, with_behavior=True):
        cell = cell_of(behavior)
        if cell not in best:  # candidates come best first: the first one seen in a cell is its champion
            best[cell] = Champion(pid, fitness, cell)
    return sorted(best.values(), key=lambda c: (-c.fitness, c.program_id))


def select_parent(store: ProgramStore, experiment: str, rng: random.Random,
                  ratios: Sequence[float]) -> tuple[Program, str]:
    """A parent drawn among the cell champions by elite / exploit / explore; reproducible for a given rng."""
    mode = choose_mode(rng, ratios)
    with store.snapshot():
        champs = champions(store, experiment)
        if not champs:
            raise RuntimeError(f"no eligible parent in experiment {experiment!r}: no successful, active program")
        if mode == "elite":
            pick = champs[rng.randrange(max(1, math.ceil(ELITE_FRACTION * len(champs))))]
        elif mode == "exploit":
            pick = champs[linear_rank(rng, len(champs))]
        else:
            pick = champs[rng.randrange(len(champs))]
        program = store.get(pick.program_id)
    assert program is not None
    return program, mode


def keep_ids(store: ProgramStore, experiment: str) -> list[int]:
    """Programs pruning must keep so that no occupied cell is emptied."""
    return [c.program_id for c in champions(store, experiment)]
