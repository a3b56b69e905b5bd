"""Samplers that propose the next candidate config of a self-evolution session.

Two kinds share one protocol (``Sampler``): ``random`` mutates the base config or the best so far, parameter
by parameter, as the search space says; ``optuna`` runs the space as an Optuna TPE study persisted in the
session directory (``optuna_journal.log``), so proposals learn from every past iteration and a resumed
session continues the same study.

Both are reproducible, including across a resume: each draw uses a generator derived from
(seed, iteration, attempt) — never a long-lived stream — so iteration k proposes the same thing whether the
session ran straight through or was restarted before k (for optuna: given the same completed trials).
A rejected candidate is never handed out again (the next attempt's draw is used instead); the random sampler
remembers rejections for the life of its process, optuna in its study.

Every proposal is checked against the config (``RunConfig.with_updates``) before it is handed out; a candidate
the config refuses (a cross-field rule such as archive_size <= population_size) is redrawn, up to
``MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from alpha_evolve.config import ConfigError, RunConfig
from alpha_evolve.search_space import Parameter, SearchSpace, SearchSpaceError, rng_for, same_value
from alpha_evolve.session_settings import DEFAULT_EXPLORATION_PROB, SAMPLERS, SETTING_SPECS, sampler_problem
from alpha_evolve.values import finite_or_none

logger = logging.getLogger("alpha_evolve.samplers")

MAX_ATTEMPTS = 50
OPTUNA_JOURNAL = "optuna_journal.log"
"""The study's journal in the session directory (an append-only file log: creating an SQLite RDB storage took
8 s per open here, the journal milliseconds)."""
STUDY_NAME = "self_evolution"


@dataclass(frozen=True)
class Proposal:
    """One candidate: its changes, what they are relative to, and the full values of the space."""

    updates: dict[str, Any]
    """canonical ``section.name`` -> value: the candidate's changes vs its base."""
    base: str
    """``"base"`` (the session's original config) or ``"best"`` (the best candidate so far)."""
    base_updates: dict[str, Any]
    """the base's own updates vs the original config ({} for ``"base"``)."""
    candidate: dict[str, Any]
    """every field of the space -> its effective value in this candidate."""
    trial_number: int | None
    """the Optuna trial behind this proposal, else None."""
    base_values: dict[str, Any] = field(default_factory=dict)
    """every field of the space -> its value in the base (what ``updates`` change from)."""

    @property
    def all_updates(self) -> dict[str, Any]:
        """Updates vs the original config: what ``RunConfig.with_updates`` needs on the session's base config."""
        return {**self.base_updates, **self.updates}


class Sampler(Protocol):
    def propose(self, iteration: int, *, base_config: RunConfig, best: tuple[RunConfig, dict[str, Any]] | None,
                history: Sequence[Mapping[str, Any]]) -> Proposal: ...

    def tell(self, proposal: Proposal, objective: float | None, *, success: bool) -> None: ...

    def discard(self, proposal: Proposal) -> None: ...


def _values_of(space: SearchSpace, config: RunConfig) -> dict[str, Any]:
    return space.values_of(config)


def _check(config: RunConfig, updates: Mapping[str, Any]) -> str | None:
    try:
        config.with_updates(updates)
    except ConfigError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------------- random


def mutate_value(param: Parameter, current: Any, rng: np.random.Generator, *, force_change: bool = False) -> Any:
    """A new value for ``param`` given its ``current`` one; differs from it when ``allow_same`` is false
    (or ``force_change``) and the space has another value to offer."""
    must_differ = force_change or not param.allow_same
    if param.type == "bool_toggle":
        if must_differ:
            return not bool(current)
        return bool(rng.random() < 0.5)
    if param.type == "choice":
        assert param.values is not None
        options = list(param.values)
        if must_differ:
            others = [v for v in options if not same_value(v, current)]
            options = others or options
        return options[int(rng.integers(len(options)))]
    assert param.min is not None and param.max is not None
    width = param.max - param.min
    cur_num = finite_or_none(current)
    lo, hi = param.min, param.max
    if param.perturbation is not None and cur_num is not None:
        centre = min(max(cur_num, param.min), param.max)
        half = max(param.perturbation * width, param.grid_step() if param.has_grid else 0.0)
        lo, hi = max(param.min, centre - half), min(param.max, centre + half)
    if param.has_grid:
        step = param.grid_step()
        k_lo = math.ceil((lo - param.min) / step - 1e-9)
        k_hi = min(math.floor((hi - param.min) / step + 1e-9), param.grid_size() - 1)
        for window in ((k_lo, k_hi), (0, param.grid_size() - 1)):
            ks = np.arange(window[0], window[1] + 1)
            if must_differ and cur_num is not None:
                ks = np.array([k for k in ks if not same_value(param.grid_value(int(k)), current)], dtype=int)
            if len(ks):
                return param.grid_value(int(ks[int(rng.integers(len(ks)))]))
        return param.grid_value(0)
    for _ in range(20):
        value = param.snap(rng.uniform(lo, hi))
        if not (must_differ and cur_num is not None and same_value(value, current)):
            return value
    return value


def _can_change(param: Parameter, current: Any) -> bool:
    if param.type == "bool_toggle":
        return True
    if param.type == "choice":
        assert param.values is not None
        return any(not same_value(v, current) for v in param.values)
    return True


class RandomSampler:
    """Mutation sampler: explore from the base config with ``exploration_prob``, else exploit the best so far."""

    kind = "random"

    def __init__(self, space: SearchSpace, *, seed: int, exploration_prob: float = DEFAULT_EXPLORATION_PROB) -> None:
        spec = SETTING_SPECS["exploration_prob"]  # the one declaration of its default and range
        if not spec.allows(exploration_prob):
            raise ValueError(f"exploration_prob = {exploration_prob}: expected {spec.expected()}")
        self.space = space
        self.seed = seed
        self.exploration_prob = exploration_prob
        self.rejected: list[dict[str, Any]] = []  # candidates an approver rejected (this process): never re-proposed

    def propose(self, iteration: int, *, base_config: RunConfig, best: tuple[RunConfig, dict[str, Any]] | None,
                history: Sequence[Mapping[str, Any]] = ()) -> Proposal:
        last_problem = ""
        # Candidates that already ran are redrawn while other draws remain: an outer-loop step costs a whole
        # pipeline run, so repeating one teaches nothing (a tiny space may still have to repeat, at the end).
        already_run = [dict(r["config_values"]) for r in history if isinstance(r.get("config_values"), Mapping)]
        for attempt in range(MAX_ATTEMPTS):
            rng = rng_for(self.seed, iteration, attempt)
            explore_draw = rng.random()
            if best is None or explore_draw < self.exploration_prob:
                start, base, base_updates = base_config, "base", {}
            else:
                start, base, base_updates = best[0], "best", dict(best[1])
            values = {p.key: p.from_config(start) for p in self.space.parameters}
            new = dict(values)
            for p in self.space.parameters:
                draw = rng.random()  # always drawn, so one parameter's outcome never shifts another's stream
                if draw < p.mutate_probability:
                    new[p.key] = mutate_value(p, values[p.key], rng)
            changed = [p for p in self.space.parameters if not same_value(new[p.key], values[p.key])]
            if not changed:
                movable = [p for p in self.space.parameters if _can_change(p, values[p.key])]
                if not movable:
                    raise SearchSpaceError(f"{self.space.source}: no parameter can take a value different from the "
                                           "current config")
                p = movable[int(rng.integers(len(movable)))]
                new[p.key] = mutate_value(p, values[p.key], rng, force_change=True)
                changed = [q for q in self.space.parameters if not same_value(new[q.key], values[q.key])]
                if not changed:
                    continue
            updates: dict[str, Any] = {}
            for p in changed:
                updates.update(p.to_config_values(new[p.key]))
            problem = _check(start, updates)
            base_values = _values_of(self.space, start)
            candidate = {**base_values, **updates}
            if not problem and candidate in self.rejected:
                problem = "same as a rejected proposal"  # a rejection asks for something else: redraw
            if not problem and attempt < MAX_ATTEMPTS // 2 and any(
                all(same_value(seen.get(k), v) for k, v in candidate.items()) for seen in already_run
            ):
                problem = "same as an iteration that already ran"
            if problem:
                last_problem = problem
                logger.debug("iteration %d attempt %d refused: %s", iteration, attempt, problem)
                continue
            return Proposal(updates=updates, base=base, base_updates=base_updates,
                            candidate=candidate, trial_number=None, base_values=base_values)
        raise SearchSpaceError(f"{self.space.source}: no valid candidate in {MAX_ATTEMPTS} attempts; the config "
                               f"refused the last one: {last_problem}")

    def tell(self, proposal: Proposal, objective: float | None, *, success: bool) -> None:
        """Nothing to learn: the random sampler only looks at the best config the loop passes to ``propose``."""

    def discard(self, proposal: Proposal) -> None:
        """Remember a rejected candidate so no later draw hands it out again (each draw's generator depends only
        on (seed, iteration, attempt), so without this the same iteration would re-propose exactly it)."""
        self.rejected.append(dict(proposal.candidate))


# ---------------------------------------------------------------------------------------------------- optuna


class OptunaSampler:
    """TPE over the space, one study in ``<state_dir>/optuna_journal.log``; ask/tell across iterations and resumes.

    Candidates are absolute (Optuna draws every parameter), so ``base`` is always ``"base"`` and ``updates`` are
    the fields that differ from the base config. ``exploration_prob``, ``mutate_probability``, ``perturbation``
    and ``allow_same`` do not apply: TPE balances exploration itself. A draw equal to the base config, or one
    the config refuses, is told FAIL (TPE ignores failed trials) and redrawn. Rejected proposals are told FAIL
    with the user attribute ``rejected``.
    """

    kind = "optuna"

    def __init__(self, space: SearchSpace, *, seed: int, maximize: bool, state_dir: Path,
                 n_startup_trials: int = 4) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.seed = seed
        self.maximize = maximize
        self.n_startup_trials = n_startup_trials
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        self.storage_path = state_dir / OPTUNA_JOURNAL
        self._storage = JournalStorage(JournalFileBackend(str(self.storage_path)))
        direction: Literal["maximize", "minimize"] = "maximize" if maximize else "minimize"
        self.study = optuna.create_study(study_name=STUDY_NAME, storage=self._storage, direction=direction,
                                         load_if_exists=True, sampler=self._tpe(0, 0))
        if self.study.direction.name.lower() != direction:
            raise SearchSpaceError(f"{self.storage_path}: the study was created to {self.study.direction.name.lower()}"
                                   f" the objective; this session asks to {direction}")
        self.distributions = {p.key: _distribution(p) for p in space.parameters}
        self._fail_stale_trials()

    def _tpe(self, iteration: int, attempt: int) -> Any:
        import optuna

        seed = int(rng_for(self.seed, iteration, attempt).integers(2**31 - 1))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials)

    def _fail_stale_trials(self) -> None:
        """Trials left RUNNING by an interrupted session were never evaluated; they must not linger as pending."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            self.study._storage.set_trial_user_attr(t._trial_id, "reason", "interrupted")
            self.study.tell(t.number, state=TrialState.FAIL)

    def propose(self, iteration: int, *, base_config: RunConfig, best: tuple[RunConfig, dict[str, Any]] | None,
                history: Sequence[Mapping[str, Any]] = ()) -> Proposal:
        from optuna.trial import TrialState

        base_values = _values_of(self.space, base_config)
        # the study keeps rejected trials (``discard``), so a rejected candidate is never re-proposed, also after a
        # resume; the same seed would otherwise draw exactly it again (TPE ignores failed trials)
        rejected = [t.params for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                    if t.user_attrs.get("rejected")]
        last_problem = ""
        for attempt in range(MAX_ATTEMPTS):
            self.study.sampler = self._tpe(iteration, attempt)
            trial = self.study.ask(self.distributions)
            trial.set_user_attr("iteration", iteration)
            candidate: dict[str, Any] = {}
            updates: dict[str, Any] = {}
            for p in self.space.parameters:
                values = p.to_config_values(_decode(p, trial.params[p.key]))
                candidate.update(values)
                if any(not same_value(v, base_values[k]) for k, v in values.items()):
                    updates.update(values)  # a composite's fields always travel together
            problem = "same as the base config" if not updates else _check(base_config, updates)
            if not problem and trial.params in rejected:
                problem = "same as a rejected proposal"
            if problem:
                last_problem = problem
                trial.set_user_attr("reason", problem[:500])
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            return Proposal(updates=updates, base="base", base_updates={}, candidate=candidate,
                            trial_number=trial.number, base_values=base_values)
        raise SearchSpaceError(f"{self.space.source}: no valid candidate in {MAX_ATTEMPTS} attempts; last one: "
                               f"{last_problem}")

    def tell(self, proposal: Proposal, objective: float | None, *, success: bool) -> None:
        """Report the result; a failure, or a missing/non-finite objective, is told FAIL."""
        from optuna.trial import TrialState

        if proposal.trial_number is None:
            raise ValueError("this proposal did not come from the optuna sampler (no trial number)")
        ok = success and objective is not None and math.isfinite(float(objective))
        if ok:
            assert objective is not None
            self.study.tell(proposal.trial_number, float(objective), skip_if_finished=True)
        else:
            self.study.tell(proposal.trial_number, state=TrialState.FAIL, skip_if_finished=True)

    def discard(self, proposal: Proposal) -> None:
        from optuna.trial import TrialState

        if proposal.trial_number is None:
            return
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id,
                                                                              proposal.trial_number)
        self.study._storage.set_trial_user_attr(trial_id, "rejected", True)
        self.study.tell(proposal.trial_number, state=TrialState.FAIL, skip_if_finished=True)


def _distribution(p: Parameter) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.type == "bool_toggle":
        return CategoricalDistribution([False, True])
    if p.type == "choice":
        assert p.values is not None
        if _primitive_choices(p):
            return CategoricalDistribution(list(p.values))
        return CategoricalDistribution(list(range(len(p.values))))
    assert p.min is not None and p.max is not None
    top = p.grid_value(p.grid_size() - 1) if p.has_grid else p.max
    if p.type == "int_range":
        return IntDistribution(int(p.min), int(top), step=int(p.step or 1))
    return FloatDistribution(float(p.min), float(top), step=p.step)


def _primitive_choices(p: Parameter) -> bool:
    assert p.values is not None
    return not p.composite and all(isinstance(v, bool | int | float | str) for v in p.values)


def _decode(p: Parameter, raw: Any) -> Any:
    if p.type == "choice" and not _primitive_choices(p):
        assert p.values is not None
        return p.values[int(raw)]
    if p.is_range:
        return p.snap(raw)
    return raw


# ----------------------------------------------------------------------------------------------------- factory


def make_sampler(kind: Literal["random", "optuna"] | str, space: SearchSpace, *, seed: int,
                 exploration_prob: float | None = None, maximize: bool, state_dir: Path | None) -> Sampler:
    """The sampler the session asked for; ``optuna`` needs ``state_dir`` (the session directory).

    ``exploration_prob`` (None: its declared default) is the random sampler's; given to ``optuna``, whose TPE
    balances exploration itself, it is refused rather than ignored (``session_settings.sampler_problem`` says
    the same to a person before anything starts)."""
    if kind == "random":
        prob = DEFAULT_EXPLORATION_PROB if exploration_prob is None else exploration_prob
        return RandomSampler(space, seed=seed, exploration_prob=prob)
    if kind == "optuna":
        problem = sampler_problem({"exploration_prob": exploration_prob}, kind)
        if problem:
            raise ValueError(problem)
        if state_dir is None:
            raise ValueError("the optuna sampler needs a state directory (the session directory) for its study")
        return OptunaSampler(space, seed=seed, maximize=maximize, state_dir=Path(state_dir))
    raise ValueError(f"unknown sampler {kind!r}: expected one of {', '.join(SAMPLERS)}")
