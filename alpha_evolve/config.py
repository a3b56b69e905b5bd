"""Typed, validated run configuration read from TOML.

A config file has four sections, ``[evolution]``, ``[backtest]``, ``[pipeline]`` and ``[evaluation]``. Every
field is declared once, in the dataclasses below, with its type, range and a one-line documentation string kept
in the field's metadata; validation, error messages, the self-evolution search-space key resolver and the
commented TOML snapshots all read that single declaration, so a new field is one line here and nowhere else.

Errors are ``ConfigError`` with one line naming the file, the key, what was expected and, for a misspelt key,
the closest valid key: users read them on a terminal, never a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import tomlkit
import tomlkit.exceptions
from tomlkit.items import Table

from alpha_evolve.metric_names import METRIC_NAMES as METRIC_NAMES  # the choices of objective-like settings
from alpha_evolve.metric_names import RANKING_METRICS
from alpha_evolve.mutators import MUTATOR_KINDS  # light: implementations are imported only when one is made

logger = logging.getLogger("alpha_evolve.config")



LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EFFORT_LEVELS = ("", "low", "medium", "high", "xhigh", "max")
DATA_FORMATS = ("auto", "csv", "parquet", "catalog")
ACCOUNT_TYPES = ("cash", "margin")
SYNTHETIC_GENERATORS = ("planted", "regimes")  # alpha_evolve.synthetic.GENERATORS (not imported: numpy-free)
ASSET_CLASSES = ("auto", "equity", "fx", "crypto", "future")  # = market.ASSET_CLASSES (kept import-free here)
FILL_MODELS = ("close", "volume")  # = market.FILL_MODELS
EVALUATION_BACKENDS = ("local", "ray")
FOLD_AGGREGATES = ("mean", "worst")


class ConfigError(ValueError):
    """A configuration problem, phrased as one line for a person at a terminal."""


def _f(default: Any, doc: str, *, ge: float | None = None, le: float | None = None,
       gt: float | None = None, lt: float | None = None, choices: tuple[Any, ...] | None = None,
       optional: bool = False) -> Any:
    """Declare a config field: its default, documentation and allowed range in one place."""
    meta = {"doc": doc, "ge": ge, "le": le, "gt": gt, "lt": lt, "choices": choices, "optional": optional}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def _default_model() -> str:
    from alpha_evolve.mutators.llm import DEFAULT_MODEL  # it knows the SDK's list of current models

    return DEFAULT_MODEL


@dataclass(frozen=True)
class EvolutionConfig:
    """Settings of the inner evolution loop (one pipeline run)."""

    generations: int = _f(40, "mutation iterations per pipeline run", ge=1, le=100_000)
    seed_strategy: str = _f("trend_filter", "seed strategy to evolve (trend_filter, momentum, mean_reversion, ...)")
    population_size: int = _f(200, "active programs kept in the store; the rest are archived", ge=2,
                              le=1_000_000)
    archive_size: int = _f(20, "best programs always kept, whatever the population bound", ge=1, le=100_000)
    elite_ratio: float = _f(0.1, "share of parents drawn uniformly from the top 10 % by fitness", ge=0.0, le=1.0)
    exploit_ratio: float = _f(0.7, "share of parents drawn with fitness-weighted probability", ge=0.0, le=1.0)
    explore_ratio: float = _f(0.2, "share of parents drawn uniformly from all successful programs", ge=0.0,
                              le=1.0)
    novelty_boost_w: float = _f(0.0, "extra selection weight for parents that behave unlike the elite", ge=0.0,
                                le=10.0)
    selection: str = _f("ratios", "parent selection: ratios (elite/exploit/explore over the population) or "
                        "map_elites (the same ratios over the best program of each trade-frequency x exposure "
                        "cell; cell champions survive pruning)", choices=("ratios", "map_elites"))
    fitness_metric: str = _f("Sharpe", "train metric used as fitness (InfoRatio = excess over buy-and-hold)",
                             choices=RANKING_METRICS)
    fitness_folds: int = _f(1, "robust fitness: contiguous train folds the fitness is measured on (1 = whole "
                            "train period)", ge=1, le=20)
    fitness_fold_aggregate: str = _f("mean", "robust fitness over the folds: mean or worst", choices=FOLD_AGGREGATES)
    fitness_fold_purge: float = _f(0.02, "robust fitness: share of the train curve dropped after each fold "
                                   "boundary (purge gap)", ge=0.0, lt=0.5)
    mutator: str = _f("auto", "auto (llm if ANTHROPIC_API_KEY is set, else offline), offline, llm or agent",
                      choices=MUTATOR_KINDS)
    model: str = _f("", "Anthropic model id for the llm mutator; empty = the toolkit's current default")
    max_tokens: int = _f(4096, "maximum output tokens per LLM reply", ge=256, le=64_000)
    effort: str = _f("", "LLM effort (low, medium, high, xhigh, max); empty = the model's default",
                     choices=EFFORT_LEVELS)
    max_retries: int = _f(3, "attempts per mutation when a reply fails validation", ge=1, le=3)
    trace_precheck: bool = _f(True, "work out a candidate's orders on the train bars before backtesting it and send "
                              "it back to the mutator when they repeat a program's (no backtest spent)")
    guidance: str = _f("", "free-text guidance added to every mutation prompt")
    inspirations: int = _f(3, "strong programs shown to the mutator as inspiration", ge=0, le=10)
    agent_timeout_seconds: float = _f(900.0, "how long the agent mutator waits for a response file", gt=0.0,
                                      le=86_400.0)
    max_concurrent: int = _f(2, "candidates evaluated at once (worker processes)", ge=1, le=64)
    random_seed: int = _f(42, "seed for parent selection and the offline mutator", ge=0)
    target_fitness: float = _f(math.nan, "stop when the best fitness reaches this (omit to disable)",
                               optional=True)
    max_wall_seconds: float = _f(math.nan, "stop after this many seconds of wall clock (omit to disable)",
                                 gt=0.0, optional=True)
    patience: int = _f(0, "stop after this many iterations without improvement (0 = never)", ge=0)
    budget_tokens: int = _f(0, "stop when LLM tokens used reach this (0 = unlimited)", ge=0)
    budget_usd: float = _f(0.0, "stop when the estimated LLM cost reaches this many USD (0 = unlimited)", ge=0.0)


@dataclass(frozen=True)
class BacktestConfig:
    """What data a candidate is scored on and how the simulated venue behaves."""

    data: str = _f("", "CSV/Parquet file, folder of per-symbol files, or catalog; empty = embedded synthetic data")
    data_format: str = _f("auto", "auto, csv, parquet or catalog", choices=DATA_FORMATS)
    symbols: list[str] = _f([], "symbols to use from a folder or catalog (empty = all)")
    use_adjusted: bool = _f(False, "scale OHLC by Adj Close / Close when the file has it")
    synthetic_bars: int = _f(2500, "bars of the embedded synthetic series", ge=200, le=5_000_000)
    synthetic_seed: int = _f(7, "seed of the embedded synthetic series", ge=0)
    synthetic_freq: str = _f("1D", "bar interval of the synthetic series (pandas offset, e.g. 1D, 1h, 1min)")
    synthetic_generator: str = _f("planted", "synthetic market: planted (trend/chop regimes with a known rule and "
                                  "an oracle) or regimes (the original up/down/chop series)",
                                  choices=SYNTHETIC_GENERATORS)
    synthetic_signal: float = _f(1.0, "planted market: strength of the exploitable rule (0 = nothing to find)",
                                 ge=0.0, le=5.0)
    synthetic_regime_bars: float = _f(40.0, "planted market: mean length of a trend or chop regime, in bars",
                                      ge=2.0, le=100_000.0)
    train_fraction: float = _f(0.6, "share of bars in the train period (evolution sees only this)", gt=0.0,
                               lt=1.0)
    validation_fraction: float = _f(0.2, "share of bars in the validation period (picks winners)", gt=0.0,
                                    lt=1.0)
    train_end: str = _f("", "ISO date ending the train period (overrides train_fraction)")
    validation_end: str = _f("", "ISO date ending the validation period (overrides validation_fraction)")
    starting_capital: float = _f(100_000.0, "starting account balance, in the quote currency (USD for US "
                                 "stocks and XXX/USD pairs)", gt=0.0)
    account_type: str = _f("cash", "cash (long only) or margin (allows shorts)", choices=ACCOUNT_TYPES)
    allow_short: bool = _f(False, "let strategies go short (requires account_type = margin)")
    trade_fraction: float = _f(0.95, "fraction of equity committed per position", gt=0.0, le=1.0)
    taker_fee: float = _f(0.001, "taker fee as a fraction of notional (0.001 = 10 bps)", ge=0.0, lt=0.1)
    maker_fee: float = _f(0.001, "maker fee as a fraction of notional", ge=0.0, lt=0.1)
    asset_class: str = _f("auto", "asset class of every symbol: auto (fx/crypto pairs recognised from the "
                          "symbol, else equity), equity, fx, crypto or future", choices=ASSET_CLASSES)
    instruments: dict[str, Any] = _f({}, "per-symbol overrides, as [backtest.instruments.SYMBOL] tables with "
                                     "asset_class, price_precision, tick, size_increment, lot_size, multiplier, "
                                     "base_currency, quote_currency (see docs/market-model.md)")
    fill_model: str = _f("close", "close: whole order at the bar close, fees only; volume: at most volume_share "
                         "of the bar's volume at the close, the rest slippage_bps worse", choices=FILL_MODELS)
    volume_share: float = _f(0.25, "fill_model volume: share of a bar's volume that fills at the close", gt=0.0,
                             le=1.0)
    slippage_bps: float = _f(0.0, "fill_model volume: price concession on the rest of an order, in basis points",
                             ge=0.0, le=1000.0)
    warmup_bars: int = _f(250, "bars just before the validation/holdout period that warm indicators up "
                          "(not scored; 0 = start cold)", ge=0, le=1_000_000)
    bt_top: int = _f(5, "distinct top programs re-evaluated on the validation period", ge=1, le=1000)
    objective: str = _f("Sharpe", "validation metric that ranks the top programs (InfoRatio = excess over "
                        "buy-and-hold)", choices=RANKING_METRICS)
    min_round_trips: int = _f(3, "a program with fewer round trips on train or validation is flagged and cannot "
                              "be crowned", ge=0, le=100_000)
    crown_confidence: float = _f(0.95, "an evolved finalist displaces the seed only if a paired Sharpe test on "
                                 "validation (its returns vs the seed's, same bars) says it is better at this "
                                 "confidence (0 = plain best on validation)", ge=0.0, lt=1.0)
    screen_fraction: float = _f(0.3, "share of the train period used by the quick screen (0 = no screen)",
                                ge=0.0, lt=1.0)
    screen_min_trades: int = _f(1, "screen: minimum round trips to pass", ge=0)
    screen_min_sharpe: float = _f(-2.0, "screen: minimum Sharpe to pass")
    screen_max_drawdown: float = _f(0.9, "screen: maximum drawdown (fraction) to pass", gt=0.0, le=1.0)
    soft_timeout_seconds: float = _f(30.0, "per-candidate timeout raised inside the worker", gt=0.0,
                                     le=86_400.0)
    hard_timeout_seconds: float = _f(60.0, "per-candidate timeout after which the worker is killed", gt=0.0,
                                     le=86_400.0)
    memory_limit_mb: int = _f(2048, "address-space limit of each worker process", ge=256, le=1_000_000)
    recycle_after: int = _f(50, "tasks a worker runs before it is replaced (engines leak)", ge=1, le=100_000)
    max_bars: int = _f(2_000_000, "bars per instrument a run may load (~1 KB of memory a bar)", ge=2,
                       le=1_000_000_000)
    allow_unconfined: bool = _f(False, "run candidates WITHOUT kernel confinement (Landlock/seccomp) on kernels "
                                "that lack it; off by default, recorded in SUMMARY.json when on")


@dataclass(frozen=True)
class PipelineOptions:
    """How a pipeline run is executed and where it writes; not part of what is being evolved."""

    output_dir: str = _f("", "base folder for run directories; empty = $AE_PIPELINE_DIR or pipeline_runs_cs/")
    log_level: str = _f("INFO", "log level of the run", choices=LOG_LEVELS)
    log_file: str = _f("", "also log to this file (empty = console only)")
    disable_align_cache: bool = _f(False, "do not cache prepared data on disk")
    align_cache_dir: str = _f(".cache/align", "where prepared data is cached")


DEFAULT_BASE = "pipeline_runs_cs"


def resolve_base_dir(options: PipelineOptions | None, output_dir: str | Path | None = None) -> Path:
    """``--output-dir``, else ``options.output_dir``, else ``$AE_PIPELINE_DIR``, else ``pipeline_runs_cs/``."""
    for candidate in (output_dir, options.output_dir if options else None, os.environ.get("AE_PIPELINE_DIR")):
        if candidate:
            return Path(candidate)
    return Path(DEFAULT_BASE)


@dataclass(frozen=True)
class EvaluationConfig:
    """Where candidates are evaluated; the figures do not depend on it (docs/ray.md)."""

    backend: str = _f("local", "local (confined worker pool on this machine) or ray (one such pool on every Ray "
                      "node)", choices=EVALUATION_BACKENDS)
    ray_address: str = _f("", "Ray cluster for backend = ray: empty = start a local Ray instance, 'auto' = join "
                          "the running cluster, or host:port")
    workers_per_node: int = _f(0, "confined workers per Ray node (0 = the node's CPU count)", ge=0, le=4096)
    max_task_retries: int = _f(2, "times a candidate lost with its Ray node or actor is retried on another node "
                               "before it is recorded as crash", ge=0, le=10)


SECTIONS: dict[str, type[Any]] = {
    "evolution": EvolutionConfig,
    "backtest": BacktestConfig,
    "pipeline": PipelineOptions,
    "evaluation": EvaluationConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """The sections of one config file, plus where it came from (for messages and snapshots)."""

    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    source: str = "<defaults>"

    @property
    def model(self) -> str:
        """The model id to use, resolving the empty default."""
        return self.evolution.model or _default_model()

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain values per section; NaN (disabled optional) fields are left out, as TOML cannot hold them."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            sec = dataclasses.asdict(self.section(name))
            out[name] = {k: v for k, v in sec.items() if not (isinstance(v, float) and math.isnan(v))}
        return out

    def with_updates(self, updates: Mapping[str, Any], *, source: str | None = None) -> RunConfig:
        """A new config with ``section.key`` (or unambiguous bare ``key``) values replaced and re-validated."""
        data = self.to_dict()
        for key, value in updates.items():
            section, name = resolve_key(key, source=source or self.source)
            data[section][name] = value
        return from_mapping(data, source=source or self.source)

    def get(self, key: str) -> Any:
        section, name = resolve_key(key, source=self.source)
        return getattr(self.section(section), name)


# --------------------------------------------------------------------------------------------- field metadata


@dataclass(frozen=True)
class FieldSpec:
    """Everything known about one config field, for validators, search spaces and docs."""

    section: str
    name: str
    type: type[Any]
    default: Any
    doc: str
    ge: float | None
    le: float | None
    gt: float | None
    lt: float | None
    choices: tuple[Any, ...] | None
    optional: bool

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def expected(self) -> str:
        """Human phrase for what the field accepts, used in every error about it."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                list: "a list of strings", dict: "a table"}[self.type]
        bounds = []
        if self.ge is not None:
            bounds.append(f">= {self.ge:g}")
        if self.gt is not None:
            bounds.append(f"> {self.gt:g}")
        if self.le is not None:
            bounds.append(f"<= {self.le:g}")
        if self.lt is not None:
            bounds.append(f"< {self.lt:g}")
        return kind + (" " + " and ".join(bounds) if bounds else "")


def _field_type(cls: type[Any], name: str) -> type[Any]:
    hint = get_type_hints(cls)[name]
    origin = get_origin(hint)
    if origin is list:
        return list
    if origin is dict:
        return dict
    if origin is Literal:
        return type(get_args(hint)[0])
    return hint


def _build_specs() -> dict[str, FieldSpec]:
    specs: dict[str, FieldSpec] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            factory: Any = f.default_factory
            default = f.default if f.default is not dataclasses.MISSING else factory()
            m = f.metadata
            specs[f"{section}.{f.name}"] = FieldSpec(
                section, f.name, _field_type(cls, f.name), default, m["doc"], m["ge"], m["le"], m["gt"], m["lt"],
                m["choices"], m["optional"],
            )
    return specs


FIELD_SPECS: dict[str, FieldSpec] = _build_specs()
"""Every config field keyed by ``section.name``."""


def resolve_key(key: str, *, source: str = "<config>") -> tuple[str, str]:
    """Map ``section.name`` or an unambiguous bare ``name`` to (section, name); refuse anything else."""
    if key in FIELD_SPECS:
        spec = FIELD_SPECS[key]
        return spec.section, spec.name
    if "." in key:
        hint = _closest(key, list(FIELD_SPECS))
        raise ConfigError(f"{source}: unknown config key {key!r}{hint}")
    matches = [s for s in FIELD_SPECS.values() if s.name == key]
    if len(matches) == 1:
        return matches[0].section, matches[0].name
    if len(matches) > 1:
        options = ", ".join(s.key for s in matches)
        raise ConfigError(f"{source}: config key {key!r} is ambiguous; write one of {options}")
    hint = _closest(key, [s.name for s in FIELD_SPECS.values()] + list(FIELD_SPECS))
    raise ConfigError(f"{source}: unknown config key {key!r}{hint}")


def field_spec(key: str, *, source: str = "<config>") -> FieldSpec:
    section, name = resolve_key(key, source=source)
    return FIELD_SPECS[f"{section}.{name}"]


def _closest(word: str, candidates: list[str]) -> str:
    best = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {best[0]!r}?)" if best else ""


# ------------------------------------------------------------------------------------------------ validation


def coerce_value(spec: FieldSpec, value: Any, *, source: str) -> Any:
    """Check one value against its field; ints are accepted where numbers are expected, nothing else is bent."""
    where = f"{source}: [{spec.section}] {spec.name}"
    if isinstance(value, tomlkit.items.Item):
        value = value.unwrap()
    t = spec.type
    ok: bool
    if t is bool:
        ok = isinstance(value, bool)
    elif t is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif t is str:
        ok = isinstance(value, str)
    elif t is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if ok:
            value = list(value)
    elif t is dict:
        from alpha_evolve.market import MarketError, validate_overrides

        try:
            return validate_overrides(value, f"{source}: [{spec.section}] {spec.name}")
        except MarketError as exc:
            raise ConfigError(str(exc)) from None
    else:  # pragma: no cover - a field type this module forgot to handle
        ok = False
    if not ok:
        raise ConfigError(f"{where} = {value!r}: expected {spec.expected()}")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        if spec.optional and math.isnan(value):
            return value
        raise ConfigError(f"{where} = {value!r}: expected {spec.expected()}")
    if spec.choices is not None and value not in spec.choices:
        hint = _closest(str(value), [str(c) for c in spec.choices])
        raise ConfigError(f"{where} = {value!r}: expected {spec.expected()}{hint}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        bad = ((spec.ge is not None and value < spec.ge) or (spec.le is not None and value > spec.le)
               or (spec.gt is not None and value <= spec.gt) or (spec.lt is not None and value >= spec.lt))
        if bad:
            raise ConfigError(f"{where} = {value!r}: expected {spec.expected()}")
    return value


def _check_cross_fields(cfg: RunConfig) -> None:
    """Rules that involve more than one field; each message still names the file and the keys."""
    src = cfg.source
    ev, bt = cfg.evolution, cfg.backtest
    total = ev.elite_ratio + ev.exploit_ratio + ev.explore_ratio
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(
            f"{src}: [evolution] elite_ratio + exploit_ratio + explore_ratio = {total:g}: expected them to sum to 1"
        )
    from alpha_evolve.strategies import SEEDS  # seed names only: no strategy code is imported

    if ev.seed_strategy not in SEEDS and not ev.seed_strategy.endswith(".py"):
        raise ConfigError(
            f"{src}: [evolution] seed_strategy = {ev.seed_strategy!r}: expected one of "
            f"{', '.join(sorted(SEEDS))} or a path to a .py strategy file{_closest(ev.seed_strategy, list(SEEDS))}"
        )
    if ev.archive_size > ev.population_size:
        raise ConfigError(
            f"{src}: [evolution] archive_size = {ev.archive_size}: expected <= population_size "
            f"({ev.population_size})"
        )
    if not bt.train_end and not bt.validation_end and bt.train_fraction + bt.validation_fraction >= 1.0:
        raise ConfigError(
            f"{src}: [backtest] train_fraction + validation_fraction = "
            f"{bt.train_fraction + bt.validation_fraction:g}: expected < 1 so that a holdout period remains"
        )
    if bt.allow_short and bt.account_type != "margin":
        raise ConfigError(f"{src}: [backtest] allow_short = true: expected account_type = 'margin' (a cash "
                          "account cannot hold a short position)")
    if bt.hard_timeout_seconds < bt.soft_timeout_seconds:
        raise ConfigError(
            f"{src}: [backtest] hard_timeout_seconds = {bt.hard_timeout_seconds:g}: expected >= "
            f"soft_timeout_seconds ({bt.soft_timeout_seconds:g})"
        )
    for key in ("train_end", "validation_end"):
        value = getattr(bt, key)
        if value:
            try:
                from datetime import date

                date.fromisoformat(value[:10])
            except ValueError:
                raise ConfigError(f"{src}: [backtest] {key} = {value!r}: expected an ISO date like "
                                  "'2020-12-31'") from None
    if bt.train_end and bt.validation_end and bt.validation_end[:10] <= bt.train_end[:10]:
        raise ConfigError(f"{src}: [backtest] validation_end = {bt.validation_end!r}: expected a date after "
                          f"train_end ({bt.train_end!r})")


def from_mapping(data: Mapping[str, Any], *, source: str = "<config>") -> RunConfig:
    """Build a validated config from nested plain data (a parsed TOML document or a dict)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a table with sections [evolution], [backtest], [pipeline], "
                          "[evaluation]")
    sections: dict[str, Any] = {}
    for sec_name, sec_data in data.items():
        if sec_name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{sec_name}]{_closest(sec_name, list(SECTIONS))}; "
                              "expected [evolution], [backtest], [pipeline] or [evaluation]")
        if not isinstance(sec_data, Mapping):
            raise ConfigError(f"{source}: [{sec_name}] must be a table of settings, got {sec_data!r}")
        kwargs: dict[str, Any] = {}
        for key, value in sec_data.items():
            spec = FIELD_SPECS.get(f"{sec_name}.{key}")
            if spec is None:
                names = [f.name for f in fields(SECTIONS[sec_name])]
                hint = _closest(key, names)
                if not hint:
                    other = [s.key for s in FIELD_SPECS.values() if s.name == key]
                    hint = f" (it belongs in [{other[0].split('.')[0]}])" if other else ""
                raise ConfigError(f"{source}: [{sec_name}] unknown key {key!r}{hint}")
            kwargs[key] = coerce_value(spec, value, source=source)
        sections[sec_name] = SECTIONS[sec_name](**kwargs)
    cfg = RunConfig(source=source, **sections)
    _check_cross_fields(cfg)
    return cfg


def load_config(path: str | Path | None) -> RunConfig:
    """Read and validate a TOML config; ``None`` gives the defaults."""
    if path is None:
        return RunConfig()
    from alpha_evolve.files import read_text_file

    p = Path(path)
    text = read_text_file(p, what="config file", expected="a TOML config file", error=ConfigError)
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return from_mapping(doc.unwrap(), source=str(p))


# ---------------------------------------------------------------------------------------------- snapshots


def _wrap_comment(text: str) -> str:
    return text.replace("\n", " ")


def render_toml(cfg: RunConfig, *, template: str | Path | None = None, header: str | None = None) -> str:
    """Write a config as TOML, keeping the comments and layout of ``template`` when given.

    Without a template every field is written with its documentation as a comment, so a snapshot is as readable
    as ``configs/default.toml``. Disabled optional fields are written as comments (TOML has no null).
    """
    values = cfg.to_dict()
    doc = tomlkit.parse(Path(template).read_text(encoding="utf-8")) if template is not None else tomlkit.document()
    if header:
        for line in header.splitlines():
            doc.add(tomlkit.comment(line))
    for section, cls in SECTIONS.items():
        table = doc.get(section)
        if table is None:
            table = tomlkit.table()
            doc[section] = table
        assert isinstance(table, Table)
        for f in fields(cls):
            spec = FIELD_SPECS[f"{section}.{f.name}"]
            if f.name in values[section]:
                value = values[section][f.name]
                if f.name in table:
                    table[f.name] = value
                else:
                    item = tomlkit.item(value)
                    item.comment(_wrap_comment(spec.doc))
                    table.add(f.name, item)
            elif f.name in table:
                del table[f.name]
                table.add(tomlkit.comment(f"{f.name} = ...  # {spec.doc}"))
            elif template is None:
                table.add(tomlkit.comment(f"{f.name} = ...  # {spec.doc}"))
    return tomlkit.dumps(doc)


def write_toml_snapshot(cfg: RunConfig, path: str | Path, *, template: str | Path | None = None,
                        header: str | None = None) -> Path:
    """Atomically write ``render_toml`` output, so an interrupted snapshot never leaves half a file."""
    from alpha_evolve.files import atomic_write_text

    p = Path(path)
    if template is None and cfg.source not in ("<defaults>", "<config>") and Path(cfg.source).is_file():
        template = cfg.source
    atomic_write_text(p, render_toml(cfg, template=template, header=header))
    return p
