"""MAP-Elites selection: a niche survives a crowd of near copies, in selection and in pruning (real SQLite)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpha_evolve import qd_archive
from alpha_evolve.config import ConfigError, RunConfig
from alpha_evolve.selection import select_parent
from alpha_evolve.store import Program, ProgramStore

RATIOS = (0.1, 0.7, 0.2)


@pytest.fixture
def crowded(tmp_path: Path) -> Iterator[tuple[ProgramStore, int]]:
    """60 near copies of one good lineage (many trades, always in the market) and one different, weaker program
    (few trades, rarely in the market); returns the store and the loner's id."""
    store = ProgramStore(tmp_path / "p.sqlite")
    store.create_experiment("e")
    store.insert(Program("e", "seed", fitness=1.0, iteration=0, is_seed=True,
                         behavior={"trades": 40, "exposure": 0.95, "returns": []}))
    loner = Program("e", "y = 1", fitness=0.5, iteration=1, behavior={"trades": 3, "exposure": 0.1, "returns": []})
    store.insert(loner)  # early: pruning by recency alone would drop it
    crowd = [Program("e", f"x = {i}", fitness=2.0 + i / 100, iteration=i,
                     behavior={"trades": 40 + i % 3, "exposure": 0.95, "returns": []}) for i in range(2, 62)]
    store.insert_many(crowd)
    assert loner.id is not None
    yield store, loner.id
    store.close()


def test_cells_follow_trade_frequency_and_exposure() -> None:
    assert qd_archive.cell_of({"trades": 0, "exposure": 0.0}) == (0, 0)
    assert qd_archive.cell_of({"trades": 3, "exposure": 0.5}) == (2, 2)
    assert qd_archive.cell_of({"trades": 10_000, "exposure": 1.0}) == (qd_archive.TRADE_BINS - 1,
                                                                       qd_archive.EXPOSURE_BINS - 1)
    assert qd_archive.cell_of(None) == qd_archive.cell_of({"trades": "x"}) == (-1, -1)


def test_a_niche_gets_draws_that_rank_weighting_denies_it(crowded: tuple[ProgramStore, int]) -> None:
    store, loner = crowded
    champs = qd_archive.champions(store, "e")
    assert loner in {c.program_id for c in champs} and len(champs) <= 4  # the crowd is a handful of cells
    qd = Counter(qd_archive.select_parent(store, "e", random.Random(i), RATIOS)[0].id == loner for i in range(400))
    plain = Counter(select_parent(store, "e", random.Random(i), RATIOS)[0].id == loner for i in range(400))
    assert plain[True] < 12  # ~1 in 61 for explore, almost never by rank
    assert qd[True] > 4 * max(plain[True], 1) and qd[True] >= 40


def test_pruning_keeps_every_cell_champion(crowded: tuple[ProgramStore, int]) -> None:
    store, loner = crowded
    protect = qd_archive.keep_ids(store, "e")
    store.prune("e", population_size=10, archive_size=5, protect=protect)
    alive = {p.id for p in store.top_k("e", 100, active_only=True)}
    assert set(protect) <= alive and loner in alive
    assert len(alive) <= 10 + len(protect)


def test_without_protection_the_old_weak_niche_is_pruned(crowded: tuple[ProgramStore, int]) -> None:
    store, loner = crowded
    store.prune("e", population_size=10, archive_size=5)  # archive by fitness, the rest by recency
    assert loner not in {p.id for p in store.top_k("e", 100, active_only=True)}


def test_selection_kind_is_validated() -> None:
    assert RunConfig().evolution.selection == "ratios"  # the seed contract's 10/70/20 stays the default
    assert RunConfig().with_updates({"evolution.selection": "map_elites"}).evolution.selection == "map_elites"
    with pytest.raises(ConfigError, match="selection"):
        RunConfig().with_updates({"evolution.selection": "islands"})
