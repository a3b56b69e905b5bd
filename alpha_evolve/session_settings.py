"""The settings of a self-evolution session, declared once: type, default, range, command-line flag and doc.

``config.py`` declares run settings the same way. The CLI's options and help, the checks of a new or resumed
session, the dashboard's form and the samplers all read ``SETTING_SPECS``, so a default or a range cannot be
written twice and drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from alpha_evolve.config import EVALUATION_BACKENDS, LOG_LEVELS, METRIC_NAMES

MODES = ("tracked", "legacy")
SAMPLERS = ("random", "optuna")

__all__ = [
    "DEFAULT_EXPLORATION_PROB",
    "MODES",
    "SAMPLERS",
    "SETTING_SPECS",
    "SessionSettings",
    "SettingSpec",
    "sampler_problem",
    "setting_problems",
]


def _s(default: Any, doc: str, *, flag: str | None = None, ge: float | None = None, le: float | None = None,
       gt: float | None = None, choices: tuple[Any, ...] | None = None) -> Any:
    """Declare a session setting; ``flag`` is its ``self-evolve`` option (None: not a command-line option)."""
    return field(default=default, metadata={"doc": doc, "flag": flag, "ge": ge, "le": le, "gt": gt,
                                            "choices": choices})


@dataclass(frozen=True)
class SessionSettings:
    """Every CLI setting a session needs; stored in the summary so ``--resume`` continues exactly."""

    mode: str = _s("tracked", "tracked (SQLite registry) or legacy (session directory files)", flag="--mode",
                   choices=MODES)
    config_path: str | None = _s(None, "base TOML config (default: built-in defaults)", flag="--config")
    search_space_path: str | None = _s(None, "JSON/TOML search space (see configs/self_evolution/)",
                                       flag="--search-space")
    iterations: int = _s(5, "proposals to evaluate after the baseline", flag="--iterations", ge=0, le=10_000)
    objective: str = _s("Sharpe", "metric from SUMMARY.json best_metrics to optimise", flag="--objective",
                        choices=METRIC_NAMES)
    maximize: bool = _s(True, "maximise the objective (--minimize turns it off)")
    exploration_prob: float = _s(0.2, "probability of exploring around the base rather than the best (random "
                                      "sampler only; optuna's TPE balances exploration itself)",
                                 flag="--exploration-prob", ge=0.0, le=1.0)
    sampler: str = _s("random", "proposal sampler", flag="--sampler", choices=SAMPLERS)
    seed: int = _s(0, "sampler seed", flag="--seed", ge=0, le=2**32 - 1)
    pipeline_output_dir: str | None = _s(None, "base folder for inner runs (default: SESSION/pipeline_runs)",
                                         flag="--pipeline-output-dir")
    auto_approve: bool = _s(False, "run every proposal without waiting for a decision", flag="--auto-approve")
    approval_poll_interval: float = _s(1.0, "seconds between re-reads of pending_action.json (the only mechanism "
                                            "without inotify)", flag="--approval-poll-interval", gt=0.0)
    approval_timeout: float | None = _s(None, "end the session as timed_out after this many seconds without a "
                                              "decision", flag="--approval-timeout", gt=0.0)
    pipeline_log_level: str | None = _s(None, "log level of inner runs", flag="--pipeline-log-level",
                                        choices=LOG_LEVELS)
    pipeline_log_file: str | None = _s(None, "also log inner runs to this file", flag="--pipeline-log-file")
    disable_align_cache: bool = _s(False, "do not cache prepared data on disk", flag="--disable-align-cache")
    align_cache_dir: str | None = _s(None, "where prepared data is cached", flag="--align-cache-dir")
    persist_configs: bool = _s(True, "write generated_configs/ TOML snapshots (--no-persist-configs turns it off)")
    force_polling: bool = _s(False, "poll for decisions instead of watching files (tests, odd file systems)")
    backend: str | None = _s(None, "where every run evaluates candidates (default: the config's [evaluation] "
                                   "backend)", flag="--backend", choices=EVALUATION_BACKENDS)
    ray_address: str | None = _s(None, "Ray cluster of every run ('auto', host:port; implies --backend ray; "
                                       "default: a local Ray instance)", flag="--ray-address")
    parallel_runs: int = _s(1, "approved candidates whose pipeline runs may be in flight at once; each is still "
                               "approved one at a time", flag="--parallel-runs", ge=1, le=64)

    FIXED_ON_RESUME = ("mode", "config_path", "search_space_path", "objective", "maximize", "sampler", "seed")
    """Settings a resumed session must keep: changing them would make earlier results incomparable."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class SettingSpec:
    """Everything known about one session setting."""

    name: str
    type: type[Any]
    default: Any
    doc: str
    flag: str | None
    ge: float | None
    le: float | None
    gt: float | None
    choices: tuple[Any, ...] | None

    def label(self) -> str:
        """How messages name the setting: its option when it has one."""
        return self.flag or self.name

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, as one line, or None."""
        if value is None:
            return None
        if self.choices is not None:
            if value not in self.choices:
                return f"{self.label()} {value!r}: expected one of {', '.join(map(str, self.choices))}"
            return None
        if self.type in (int, float):
            ok_type = isinstance(value, int | float) and not isinstance(value, bool)
            if self.type is int:
                ok_type = ok_type and float(value).is_integer()
            if not ok_type:
                kind = "an integer" if self.type is int else "a number"
                return f"{self.label()} {value!r}: expected {kind}"
            if not self.allows(float(value)):
                return f"{self.label()} {_num(value)}: expected {self.expected()}"
        return None

    def allows(self, x: float) -> bool:
        return ((self.ge is None or x >= self.ge) and (self.le is None or x <= self.le)
                and (self.gt is None or x > self.gt))

    def expected(self) -> str:
        """Human phrase for what the setting accepts, used in its error and its help."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        kind = {int: "an integer", float: "a number"}.get(self.type, "a value")
        if self.type is float and self.ge == 0.0 and self.le == 1.0:
            return "a probability in [0, 1]"
        if self.ge is not None and self.le is not None:
            return f"{kind} from {_num(self.ge)} to {_num(self.le)}"
        bounds = [f">= {_num(self.ge)}" if self.ge is not None else "",
                  f"> {_num(self.gt)}" if self.gt is not None else "",
                  f"<= {_num(self.le)}" if self.le is not None else ""]
        return " ".join([kind, " and ".join(b for b in bounds if b)]).strip()

    def help(self) -> str:
        """Argparse help: the doc, and the default when there is one."""
        if self.default is None or isinstance(self.default, bool):  # on/off flags and "not set" say it in the doc
            return self.doc
        return self.doc + (f" ({self.default:g})" if isinstance(self.default, float) else f" ({self.default})")


def _num(x: float) -> str:
    """A bound or value as a person writes it: 4294967295, not 4.29497e+09; 0.5, not 0.500000."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _base_type(hint: Any) -> type[Any]:
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    return args[0] if args else hint


def _build_specs() -> dict[str, SettingSpec]:
    hints = get_type_hints(SessionSettings)
    return {
        f.name: SettingSpec(f.name, _base_type(hints[f.name]), f.default, f.metadata["doc"], f.metadata["flag"],
                            f.metadata["ge"], f.metadata["le"], f.metadata["gt"], f.metadata["choices"])
        for f in fields(SessionSettings)
    }


SETTING_SPECS: dict[str, SettingSpec] = _build_specs()
DEFAULT_EXPLORATION_PROB: float = SETTING_SPECS["exploration_prob"].default


def setting_problems(settings: SessionSettings) -> list[str]:
    """Every value of ``settings`` outside its declared type or range, one line each."""
    return [p for spec in SETTING_SPECS.values() if (p := spec.problem(getattr(settings, spec.name))) is not None]


def sampler_problem(given: Mapping[str, Any], sampler: str) -> str | None:
    """``--sampler optuna`` with an explicit ``--exploration-prob``: refused, because TPE does not use it and a
    silently ignored setting would make the user believe they tuned something."""
    if sampler == "optuna" and given.get("exploration_prob") is not None:
        return ("--exploration-prob applies to the random sampler only (the optuna sampler's TPE balances "
                "exploration itself); drop it or use --sampler random")
    return None
