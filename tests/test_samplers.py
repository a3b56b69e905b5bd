"""Samplers: reproducibility (also across a resume), exploration frequency, forced change, snapping, optuna study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import RunConfig
from alpha_evolve.samplers import OptunaSampler, Proposal, RandomSampler, make_sampler
from alpha_evolve.search_space import SearchSpace, SearchSpaceError, load_search_space, parse_search_space

ROOT = Path(__file__).resolve().parent.parent
BASE = RunConfig()

SPACE = parse_search_space({"parameters": [
    {"key": "generations", "type": "int_range", "min": 4, "max": 16, "step": 4},
    {"key": "bt_top", "type": "choice", "values": [1, 3, 5]},
    {"key": "novelty_boost_w", "type": "float_range", "min": 0.0, "max": 1.0, "step": 0.1, "perturbation": 0.2},
    {"key": "trade_fraction", "type": "float_range", "min": 0.1, "max": 1.0, "round_to": 2},
    {"key": "use_adjusted", "type": "bool_toggle"},
]}, source="test-space")


def best_of(updates: dict[str, Any]) -> tuple[RunConfig, dict[str, Any]]:
    return BASE.with_updates(updates), updates


def run_random(sampler: RandomSampler, iterations: range, best: tuple[RunConfig, dict[str, Any]] | None
               ) -> list[Proposal]:
    return [sampler.propose(i, base_config=BASE, best=best, history=[]) for i in iterations]


def test_random_same_seed_same_proposals_and_other_seed_differs() -> None:
    best = best_of({"generations": 8, "bt_top": 3})
    a = run_random(RandomSampler(SPACE, seed=11, exploration_prob=0.3), range(30), best)
    b = run_random(RandomSampler(SPACE, seed=11, exploration_prob=0.3), range(30), best)
    c = run_random(RandomSampler(SPACE, seed=12, exploration_prob=0.3), range(30), best)
    assert a == b
    assert a != c


def test_random_resumed_at_iteration_k_proposes_what_the_uninterrupted_session_would() -> None:
    best = best_of({"novelty_boost_w": 0.5})
    uninterrupted = run_random(RandomSampler(SPACE, seed=5, exploration_prob=0.4), range(20), best)
    resumed = run_random(RandomSampler(SPACE, seed=5, exploration_prob=0.4), range(12, 20), best)
    assert resumed == uninterrupted[12:]


@pytest.mark.parametrize("prob", [0.0, 0.25, 0.7, 1.0])
def test_exploration_frequency_follows_exploration_prob(prob: float) -> None:
    best = best_of({"generations": 12})
    props = run_random(RandomSampler(SPACE, seed=3, exploration_prob=prob), range(600), best)
    share = sum(p.base == "base" for p in props) / len(props)
    assert abs(share - prob) < 0.05
    for p in props:
        assert p.base_updates == ({} if p.base == "base" else {"generations": 12})
        assert p.base_values["evolution.generations"] == (BASE.evolution.generations if p.base == "base" else 12)


def test_without_a_best_every_proposal_starts_from_the_base() -> None:
    props = run_random(RandomSampler(SPACE, seed=3, exploration_prob=0.0), range(50), None)
    assert {p.base for p in props} == {"base"}


def test_at_least_one_parameter_changes_even_when_none_would_mutate() -> None:
    space = parse_search_space({"parameters": [
        {"key": "generations", "type": "int_range", "min": 4, "max": 16, "mutate_probability": 0.0},
        {"key": "bt_top", "type": "choice", "values": [1, 5], "mutate_probability": 0.0},
        {"key": "use_adjusted", "type": "bool_toggle", "mutate_probability": 0.0},
    ]})
    props = run_random(RandomSampler(space, seed=1, exploration_prob=1.0), range(200), None)
    for p in props:
        assert len(p.updates) == 1
        (key, value), = p.updates.items()
        assert value != p.base_values[key]
    assert {next(iter(p.updates)) for p in props} == {"evolution.generations", "backtest.bt_top",
                                                      "backtest.use_adjusted"}


def test_proposals_are_consistent_valid_and_snapped() -> None:
    props = run_random(RandomSampler(SPACE, seed=9, exploration_prob=0.5), range(300),
                       best_of({"generations": 8, "novelty_boost_w": 0.5, "trade_fraction": 0.33}))
    for p in props:
        assert p.updates
        assert p.candidate == {**p.base_values, **p.updates}
        for k, v in p.updates.items():
            assert v != p.base_values[k]  # allow_same defaults to false
        assert SPACE.validate_values(p.updates) == []
        BASE.with_updates(p.all_updates)
        c = p.candidate
        if "evolution.generations" in p.updates:
            assert c["evolution.generations"] in (4, 8, 12, 16)
        if "evolution.novelty_boost_w" in p.updates:
            assert c["evolution.novelty_boost_w"] in [round(0.1 * k, 1) for k in range(11)]
        if "backtest.trade_fraction" in p.updates:
            assert round(c["backtest.trade_fraction"], 2) == c["backtest.trade_fraction"]


def test_perturbation_samples_around_the_current_value() -> None:
    space = parse_search_space({"parameters": [
        {"key": "generations", "type": "int_range", "min": 0 + 1, "max": 101, "perturbation": 0.1},
        {"key": "novelty_boost_w", "type": "float_range", "min": 0.0, "max": 10.0, "perturbation": 0.05},
    ]})
    best = best_of({"generations": 50, "novelty_boost_w": 5.0})
    props = run_random(RandomSampler(space, seed=2, exploration_prob=0.0), range(300), best)
    gens = [p.updates["evolution.generations"] for p in props if "evolution.generations" in p.updates]
    novs = [p.updates["evolution.novelty_boost_w"] for p in props if "evolution.novelty_boost_w" in p.updates]
    assert gens and novs
    assert all(40 <= g <= 60 and g != 50 for g in gens)
    assert all(4.5 <= n <= 5.5 for n in novs)
    assert len(set(gens)) > 10  # the whole window is used, not a few points


def test_composite_ratio_choice_always_yields_a_valid_config() -> None:
    space = load_search_space(ROOT / "configs" / "self_evolution" / "selection.toml")
    props = run_random(RandomSampler(space, seed=4, exploration_prob=0.5), range(100),
                       best_of({"population_size": 100, "archive_size": 10}))
    ratio_keys = {"evolution.elite_ratio", "evolution.exploit_ratio", "evolution.explore_ratio"}
    seen_ratio_change = False
    for p in props:
        cfg = BASE.with_updates(p.all_updates)
        ev = cfg.evolution
        assert abs(ev.elite_ratio + ev.exploit_ratio + ev.explore_ratio - 1) < 1e-9
        touched = ratio_keys & set(p.updates)
        assert touched in (set(), ratio_keys)  # the three travel together
        seen_ratio_change |= bool(touched)
    assert seen_ratio_change


def test_a_space_that_cannot_change_anything_is_one_clear_error() -> None:
    space = parse_search_space({"parameters": [{"key": "bt_top", "type": "choice", "values": [5]}]}, source="s.json")
    with pytest.raises(SearchSpaceError, match=r"^s\.json: no parameter can take a value different"):
        RandomSampler(space, seed=0, exploration_prob=1.0).propose(0, base_config=BASE, best=None, history=[])


def test_make_sampler_refuses_unknown_kind_and_optuna_without_a_directory() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'grid'"):
        make_sampler("grid", SPACE, seed=0, exploration_prob=0.1, maximize=True, state_dir=None)
    with pytest.raises(ValueError, match="needs a state directory"):
        make_sampler("optuna", SPACE, seed=0, maximize=True, state_dir=None)
    with pytest.raises(ValueError, match="random sampler only"):  # refused, not silently ignored
        make_sampler("optuna", SPACE, seed=0, exploration_prob=0.1, maximize=True, state_dir=Path("."))


# ---------------------------------------------------------------------------------------------------- optuna

PEAK = parse_search_space({"parameters": [
    {"key": "novelty_boost_w", "type": "float_range", "min": 0.0, "max": 10.0},
    {"key": "generations", "type": "int_range", "min": 4, "max": 64, "step": 4},
]})


def peak_objective(p: Proposal) -> float:
    """Known optimum at novelty_boost_w = 8, generations = 48."""
    c = p.candidate
    return -((c["evolution.novelty_boost_w"] - 8.0) ** 2) - ((c["evolution.generations"] - 48) / 8) ** 2


def drive(sampler: Any, iterations: range) -> list[Proposal]:
    out = []
    for i in iterations:
        p = sampler.propose(i, base_config=BASE, best=None, history=[])
        sampler.tell(p, peak_objective(p), success=True)
        out.append(p)
    return out


def optuna_sampler(tmp: Path, seed: int = 7, space: SearchSpace = PEAK) -> OptunaSampler:
    s = make_sampler("optuna", space, seed=seed, maximize=True, state_dir=tmp)
    assert isinstance(s, OptunaSampler)
    return s


def test_optuna_study_is_persisted_and_a_resumed_session_continues_it(tmp_path: Path) -> None:
    first = optuna_sampler(tmp_path / "a")
    straight = drive(first, range(10))
    assert (tmp_path / "a" / "optuna_journal.log").is_file()

    part = optuna_sampler(tmp_path / "b")
    early = drive(part, range(6))
    del part
    resumed = optuna_sampler(tmp_path / "b")
    assert len(resumed.study.trials) == 6  # a new sampler object sees the previous trials
    late = drive(resumed, range(6, 10))
    assert early + late == straight
    assert [p.trial_number for p in late] == [6, 7, 8, 9]


def test_optuna_uses_tpe_and_learns_towards_the_optimum(tmp_path: Path) -> None:
    from optuna.samplers import TPESampler

    s = optuna_sampler(tmp_path)
    props = drive(s, range(40))
    assert isinstance(s.study.sampler, TPESampler)
    assert s.study.best_trial.number == max(range(40), key=lambda i: peak_objective(props[i]))
    startup = [peak_objective(p) for p in props[:4]]
    late = sorted(peak_objective(p) for p in props[-15:])
    # the median of the late TPE proposals beats the random start-up trials' median by far
    assert late[len(late) // 2] > sorted(startup)[2]
    # uniform draws over this space score about -25 on average; TPE's late proposals sit near the peak
    assert late[len(late) // 2] > -5.0


def test_optuna_failures_and_rejections_are_told_fail(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    s = optuna_sampler(tmp_path)
    a = s.propose(0, base_config=BASE, best=None, history=[])
    s.tell(a, None, success=False)
    b = s.propose(1, base_config=BASE, best=None, history=[])
    s.discard(b)
    c = s.propose(2, base_config=BASE, best=None, history=[])
    s.tell(c, float("nan"), success=True)
    d = s.propose(3, base_config=BASE, best=None, history=[])
    s.tell(d, 1.5, success=True)
    states = {t.number: t.state for t in s.study.trials}
    assert states == {0: TrialState.FAIL, 1: TrialState.FAIL, 2: TrialState.FAIL, 3: TrialState.COMPLETE}
    assert s.study.trials[1].user_attrs["rejected"] is True
    assert s.study.trials[3].value == 1.5


def test_optuna_interrupted_trial_is_failed_on_reopen_and_direction_is_checked(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    s = optuna_sampler(tmp_path)
    s.propose(0, base_config=BASE, best=None, history=[])  # never told: the session died here
    reopened = optuna_sampler(tmp_path)
    assert [t.state for t in reopened.study.trials] == [TrialState.FAIL]
    with pytest.raises(SearchSpaceError, match="created to maximize"):
        make_sampler("optuna", PEAK, seed=7, maximize=False, state_dir=tmp_path)


def test_optuna_proposals_are_valid_with_composite_choices(tmp_path: Path) -> None:
    space = load_search_space(ROOT / "configs" / "self_evolution" / "selection.toml")
    s = optuna_sampler(tmp_path, space=space)
    for i in range(8):
        p = s.propose(i, base_config=BASE, best=None, history=[])
        assert p.base == "base" and p.base_updates == {} and p.updates
        assert space.validate_values(p.updates) == []
        BASE.with_updates(p.updates)
        s.tell(p, float(i), success=True)


@pytest.mark.parametrize("kind", ["random", "optuna"])
def test_a_rejected_candidate_is_not_proposed_again(kind: str, tmp_path: Path) -> None:
    # the loop re-proposes the same iteration after a rejection; the same (seed, iteration) must not hand out
    # the rejected candidate again, nor any candidate rejected before
    space = parse_search_space({"parameters": [
        {"key": "generations", "type": "int_range", "min": 4, "max": 16, "step": 4},
        {"key": "bt_top", "type": "choice", "values": [1, 3, 5]},
    ]}, source="small")  # 12 candidates: three rejections leave plenty
    s: Any = (RandomSampler(space, seed=5, exploration_prob=0.2) if kind == "random"
              else OptunaSampler(space, seed=5, maximize=True, state_dir=tmp_path))
    seen = []
    for _ in range(3):
        p = s.propose(1, base_config=BASE, best=None, history=[])
        assert p.candidate not in seen
        seen.append(p.candidate)
        s.discard(p)
    if kind == "optuna":  # the study remembers rejections across a resume
        again = OptunaSampler(space, seed=5, maximize=True, state_dir=tmp_path)
        assert again.propose(1, base_config=BASE, best=None, history=[]).candidate not in seen


def test_random_does_not_repeat_an_iteration_that_already_ran() -> None:
    sampler = make_sampler("random", SPACE, seed=4, exploration_prob=0.2, maximize=True, state_dir=None)
    first = sampler.propose(3, base_config=BASE, best=None, history=[])
    ran = [{"iteration": 1, "config_values": dict(first.candidate), "success": True}]
    again = sampler.propose(3, base_config=BASE, best=None, history=ran)
    assert again.candidate != first.candidate
    # Deterministic given the history: a resumed session proposes the same.
    assert sampler.propose(3, base_config=BASE, best=None, history=ran).candidate == again.candidate
