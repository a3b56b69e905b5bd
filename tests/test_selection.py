"""Parent selection against a real SQLite store: eligibility, modes, reproducibility, rank weights, novelty."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest

from alpha_evolve.selection import novelty_scores, sample_parent, select_parent, validate_ratios
from alpha_evolve.store import Program, ProgramStore


@pytest.fixture
def store(tmp_path: Path):
    s = ProgramStore(tmp_path / "sel.db")
    s.create_experiment("exp")
    yield s
    s.close()


def _ok(fitness: float, **kw) -> Program:
    return Program(experiment="exp", code="pass\n", fitness=fitness, **kw)


def _population(store: ProgramStore, fits: list[float]) -> list[int]:
    return store.insert_many([_ok(f) for f in fits])


def test_ratios_validated() -> None:
    assert validate_ratios((0.1, 0.7, 0.2)) == (0.1, 0.7, 0.2)
    with pytest.raises(ValueError, match=r"must sum to 1, got 0.9 \(elite 0.1, exploit 0.6, explore 0.2\)"):
        validate_ratios((0.1, 0.6, 0.2))
    with pytest.raises(ValueError, match="need 3 values"):
        validate_ratios((0.5, 0.5))
    with pytest.raises(ValueError, match=">= 0"):
        validate_ratios((-0.1, 0.9, 0.2))


def test_bad_ratios_refused_by_select_parent(store: ProgramStore) -> None:
    _population(store, [1.0])
    with pytest.raises(ValueError, match="sum to 1"):
        select_parent(store, "exp", random.Random(0), ratios=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("mode", ["elite", "exploit", "explore"])
def test_no_eligible_parent(store: ProgramStore, mode: str) -> None:
    store.insert_many(
        [
            Program("exp", "x", status="syntax", fitness=None),
            Program("exp", "x", status="screened", fitness=None),
            _ok(100.0, pruned=True),
        ]
    )
    with pytest.raises(RuntimeError, match="no eligible parent in experiment 'exp'"):
        sample_parent(store, "exp", mode, random.Random(0))


def test_only_active_successful_programs_are_parents(store: ProgramStore) -> None:
    good = set(_population(store, [float(i) for i in range(10)]))
    bad = store.insert_many(
        [_ok(1e6, pruned=True) for _ in range(10)]
        + [Program("exp", "x", status=k, fitness=None) for k in ("runtime", "timeout", "crash", "policy")]
        + [Program("exp", "x", status="screened", fitness=1e6) for _ in range(5)]
    )
    store.create_experiment("other")
    store.insert(Program("other", "x", fitness=1e9))  # another experiment's program is never drawn
    rng = random.Random(7)
    seen = Counter(select_parent(store, "exp", rng)[0].id for _ in range(3000))
    assert set(seen) <= good
    assert set(seen) == good  # every eligible program can be drawn
    assert not set(bad) & set(seen)


def test_reproducible_with_seeded_rng(store: ProgramStore, tmp_path: Path) -> None:
    _population(store, [math.sin(i) for i in range(200)])

    def draws(s: ProgramStore, seed: int) -> list[tuple[int | None, str]]:
        rng = random.Random(seed)
        return [(p.id, m) for p, m in (select_parent(s, "exp", rng, novelty_boost_w=0.5) for _ in range(300))]

    first = draws(store, 123)
    with ProgramStore(tmp_path / "sel.db") as reopened:
        assert draws(reopened, 123) == first
    assert draws(store, 124) != first


def test_mode_frequencies_match_ratios(store: ProgramStore) -> None:
    _population(store, [float(i) for i in range(50)])
    rng = random.Random(2024)
    n = 5000
    for ratios in [(0.1, 0.7, 0.2), (0.5, 0.0, 0.5)]:
        modes = Counter(select_parent(store, "exp", rng, ratios=ratios)[1] for _ in range(n))
        for mode, p in zip(("elite", "exploit", "explore"), ratios, strict=True):
            # 0.025 is > 3.8 binomial standard deviations at n=5000 for any p.
            assert abs(modes[mode] / n - p) < 0.025, (ratios, modes)


def test_elite_draws_uniformly_from_top_ten_percent(store: ProgramStore) -> None:
    gen = random.Random(1)
    fits = [gen.uniform(-3, 3) for _ in range(50)]
    ids = _population(store, fits)
    top5 = {i for _, i in sorted(zip(fits, ids, strict=True), reverse=True)[:5]}
    rng = random.Random(3)
    seen = Counter(sample_parent(store, "exp", "elite", rng).id for _ in range(2000))
    assert set(seen) == top5
    assert all(300 <= c <= 500 for c in seen.values()), seen  # expected 400 each


def test_exploit_is_rank_weighted_and_handles_negative_fitness(store: ProgramStore, tmp_path: Path) -> None:
    fits = [-10.0 + 0.5 * i for i in range(20)]  # all negative
    ids = _population(store, fits)
    n = 4000
    rng = random.Random(5)
    seen = Counter(sample_parent(store, "exp", "exploit", rng).id for _ in range(n))
    best, worst = ids[-1], ids[0]
    # Linear rank weights: best 20/210, worst 1/210 of the draws.
    assert abs(seen[best] / n - 20 / 210) < 0.025
    assert seen[worst] / n < 0.02
    assert seen[best] > seen[ids[10]] > seen[worst]

    # Rank weighting ignores shift and scale: an affine transform of fitness gives the same draws.
    with ProgramStore(tmp_path / "shifted.db") as shifted:
        shifted.create_experiment("exp")
        _population(shifted, [1000 + 3 * f for f in fits])
        ra, rb = random.Random(9), random.Random(9)
        a = [sample_parent(store, "exp", "exploit", ra).id for _ in range(200)]
        b = [sample_parent(shifted, "exp", "exploit", rb).id for _ in range(200)]
        assert len(set(a)) > 10
        assert a == b


def test_explore_is_uniform_despite_id_gaps(store: ProgramStore) -> None:
    eligible = []
    for i in range(30):
        eligible.append(store.insert(_ok(float(i))))
        store.insert_many([Program("exp", "x", status="crash", fitness=None), _ok(99.0, pruned=True)])
    rng = random.Random(11)
    seen = Counter(sample_parent(store, "exp", "explore", rng).id for _ in range(6000))
    assert set(seen) == set(eligible)
    assert all(140 <= c <= 260 for c in seen.values()), seen  # expected 200 each, sd ~14


def test_explore_falls_back_when_ids_are_sparse(store: ProgramStore) -> None:
    a = store.insert(_ok(1.0))
    store.insert_many([Program("exp", "x", status="crash", fitness=None) for _ in range(3000)])
    b = store.insert(_ok(2.0))
    rng = random.Random(13)
    seen = Counter(sample_parent(store, "exp", "explore", rng).id for _ in range(600))
    assert set(seen) == {a, b}
    assert 230 <= seen[a] <= 370  # expected 300, sd ~12


def test_novelty_scores() -> None:
    base = [math.sin(i / 2) for i in range(24)]
    elite = [{"trades": 10, "exposure": 0.5, "returns": base}]
    noise = random.Random(0)
    unrelated = [noise.gauss(0, 1) for _ in range(24)]
    scores = novelty_scores(
        [
            {"returns": base},
            {"returns": [2 * x + 0.01 for x in base]},  # same behaviour, scaled
            {"returns": [-x for x in base]},  # anti-correlated: fully novel, clipped to 1
            {"returns": unrelated},
            None,
            {"trades": 10, "exposure": 0.5},  # no returns: falls back to trades/exposure
            {"trades": 30, "exposure": 0.1},
            {"returns": base[:10], "trades": 10, "exposure": 0.9},  # misaligned periods: fallback too
        ],
        elite,
    )
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert scores[1] == pytest.approx(0.0, abs=1e-9)
    assert scores[2] == 1.0
    assert 0.6 < scores[3] <= 1.0
    assert scores[4] == 0.0 and scores[5] == 0.0
    assert scores[6] == pytest.approx(20 / 30)
    assert scores[7] == pytest.approx(0.4)


def test_novelty_boost_favours_behaviour_unlike_the_elite(store: ProgramStore) -> None:
    base = [math.sin(i / 2) for i in range(24)]
    noise = random.Random(1)
    similar_ids, novel_ids = [], []
    # 4 elite programs (top 10% of 40) share the base behaviour.
    store.insert_many([_ok(100.0 + i, behavior={"returns": base}) for i in range(4)])
    for i in range(18):  # interleaved fitness: similar and novel programs have matching ranks
        similar_ids.append(
            store.insert(_ok(2 * i + 1.0, behavior={"returns": [x + noise.gauss(0, 0.05) for x in base]}))
        )
        novel_ids.append(store.insert(_ok(2 * i, behavior={"returns": [noise.gauss(0, 1) for _ in base]})))

    def share_novel(w: float) -> float:
        rng = random.Random(17)
        seen = Counter(sample_parent(store, "exp", "exploit", rng, novelty_boost_w=w).id for _ in range(2000))
        nov, sim = sum(seen[i] for i in novel_ids), sum(seen[i] for i in similar_ids)
        return nov / (nov + sim)

    plain, boosted = share_novel(0.0), share_novel(4.0)
    assert 0.4 < plain < 0.55  # without novelty only the (interleaved) ranks matter
    assert boosted > 0.75  # novel programs weigh ~5x, similar ones ~1x
    with pytest.raises(ValueError, match="novelty_boost_w"):
        share_novel(-1.0)


def test_sample_parent_rejects_unknown_mode(store: ProgramStore) -> None:
    ids = _population(store, [1.0, 2.0, 3.0])
    assert sample_parent(store, "exp", "elite", random.Random(0)).id == ids[-1]
    with pytest.raises(ValueError, match="mode 'greedy'"):
        sample_parent(store, "exp", "greedy", random.Random(0))
