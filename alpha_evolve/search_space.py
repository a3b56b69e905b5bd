"""Search spaces of the self-evolution loop: which config fields may change, within what, and how.

A search space is a JSON or TOML file ``{"parameters": [...]}`` checked first against
``schemas/search_space.schema.json`` and then against the config's own field declarations
(``alpha_evolve.config.FIELD_SPECS``), so that every value a sampler can draw is one the config accepts. Every
problem is found at load time, before any pipeline runs, and is one ``SearchSpaceError`` line naming the file,
the parameter (index and key) and what is wrong.

Semantics (also in docs/self-evolution):

- ``key``: a config field, ``section.name`` or an unambiguous bare ``name``; stored canonical (``section.name``).
- ``keys`` (``choice`` only): several fields set together, each value a list with one item per key. This is how
  a space varies fields bound by a cross-field rule, e.g. the selection ratios that must sum to 1.
- ``mutate_probability`` defaults to ``1 / number of parameters`` (one change expected per proposal; the sampler
  forces one change when none happened).
- ``allow_same`` defaults to false: a mutated parameter takes a value different from its current one whenever
  the space has another value to offer.
- ``perturbation`` (ranges only) is a fraction of the range width: a mutation samples within
  ``current ± perturbation × (max − min)`` (at least one ``step``) instead of the whole range, then clips.
  A current value outside ``[min, max]`` is first clipped into it.
- ``step`` snaps values to the grid ``min + k × step`` (the top of the grid is the largest such value <= max);
  ``round_to`` (float_range only) rounds to that many decimals after snapping.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import tomlkit
import tomlkit.exceptions

from alpha_evolve.config import ConfigError, FieldSpec, RunConfig, coerce_value, field_spec
from alpha_evolve.files import read_text_file, schema_validator

logger = logging.getLogger("alpha_evolve.search_space")

PARAM_TYPES = ("choice", "bool_toggle", "float_range", "int_range")
_RANGE_ONLY = ("min", "max", "step", "perturbation")


class SearchSpaceError(ValueError):
    """A search-space problem, one line naming the file, the parameter and what is wrong."""


def _clean_number(x: float) -> float:
    """Drop floating-point dust (0.30000000000000004) so snapped values compare and print as people expect."""
    return float(round(x, 12))


@dataclass(frozen=True)
class Parameter:
    """One tunable entry of a space. ``key`` is the canonical field (``a+b+c`` for a composite choice)."""

    index: int
    key: str
    keys: tuple[str, ...]
    type: str
    values: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round_to: int | None = None
    perturbation: float | None = None
    mutate_probability: float = 1.0
    allow_same: bool = False
    description: str = ""

    @property
    def composite(self) -> bool:
        return len(self.keys) > 1

    @property
    def is_range(self) -> bool:
        return self.type in ("int_range", "float_range")

    @property
    def has_grid(self) -> bool:
        """Ranges whose values are a finite grid (ints, or floats with a step)."""
        return self.type == "int_range" or (self.type == "float_range" and self.step is not None)

    # ------------------------------------------------------------------------------------------ value helpers

    def grid_step(self) -> float:
        return float(self.step) if self.step is not None else 1.0

    def grid_size(self) -> int:
        """Number of grid points from ``min`` up to ``max``."""
        assert self.min is not None and self.max is not None
        return math.floor((self.max - self.min) / self.grid_step() + 1e-9) + 1

    def grid_value(self, k: int) -> Any:
        assert self.min is not None
        v = self.min + k * self.grid_step()
        return self._finish(v)

    def _finish(self, v: float) -> Any:
        if self.type == "int_range":
            return round(v)
        if self.round_to is not None:
            v = round(v, self.round_to)
        return _clean_number(v)

    def snap(self, value: float) -> Any:
        """Clip into ``[min, max]`` and snap to ``step`` / ``round_to``: what a sampler hands out."""
        assert self.min is not None and self.max is not None
        v = min(max(float(value), self.min), self.max)
        if self.has_grid:
            k = math.floor((v - self.min) / self.grid_step() + 0.5)  # half-up: 2.5 steps -> 3, as people round
            k = min(max(k, 0), self.grid_size() - 1)
            return self.grid_value(k)
        return self._finish(v)

    def to_config_values(self, value: Any) -> dict[str, Any]:
        """The config updates this parameter's value stands for (one per key of a composite)."""
        if self.composite:
            return dict(zip(self.keys, value, strict=True))
        return {self.key: value}

    def from_config(self, config: RunConfig) -> Any:
        """The parameter's current value in ``config`` (a tuple for a composite)."""
        if self.composite:
            return tuple(config.get(k) for k in self.keys)
        return config.get(self.key)

    def value_problem(self, value: Any) -> str | None:
        """Why ``value`` is not in this parameter's space, or None."""
        if self.type == "choice":
            assert self.values is not None
            probe = tuple(value) if self.composite and isinstance(value, list | tuple) else value
            if not any(same_value(probe, v) for v in self.values):
                return f"{_show(value)} is not one of the choices {', '.join(_show(v) for v in self.values)}"
            return None
        if self.type == "bool_toggle":
            return None if isinstance(value, bool) else f"{_show(value)} is not true or false"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{_show(value)} is not a number"
        if self.type == "int_range" and not isinstance(value, int):
            return f"{_show(value)} is not an integer"
        assert self.min is not None and self.max is not None
        if not (self.min <= value <= self.max) or (isinstance(value, float) and not math.isfinite(value)):
            return f"{_show(value)} is outside [{self.min:g}, {self.max:g}]"
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description, for briefings and the dashboard."""
        out: dict[str, Any] = {"key": self.key, "type": self.type, "description": self.description,
                               "mutate_probability": self.mutate_probability, "allow_same": self.allow_same}
        if self.composite:
            out["keys"] = list(self.keys)
        if self.values is not None:
            out["values"] = [list(v) if isinstance(v, tuple) else v for v in self.values]
        for name in ("min", "max", "step", "round_to", "perturbation"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def same_value(a: Any, b: Any) -> bool:
    """Equal as settings: booleans only equal booleans (``True`` is not ``1``), numbers within rounding noise,
    sequences element by element; the samplers and the briefing's diffs use it so they agree on "changed"."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)
    return bool(a == b)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


@dataclass(frozen=True)
class SearchSpace:
    """A validated space; ``parameters`` keep file order, which samplers rely on for reproducibility."""

    parameters: tuple[Parameter, ...]
    source: str = "<search space>"
    description: str = ""

    @property
    def config_keys(self) -> tuple[str, ...]:
        """Every config field the space can change, canonical, in parameter order."""
        return tuple(k for p in self.parameters for k in p.keys)

    def parameter_for(self, key: str) -> Parameter:
        """The parameter that owns config field ``key`` (bare or canonical); KeyError when none does."""
        section, name = _resolve(key)
        canonical = f"{section}.{name}"
        for p in self.parameters:
            if canonical in p.keys:
                return p
        raise KeyError(canonical)

    def values_of(self, config: RunConfig) -> dict[str, Any]:
        """The current value in ``config`` of every field of the space, canonical key → value."""
        return {k: config.get(k) for k in self.config_keys}

    def validate_values(self, updates: Mapping[str, Any]) -> list[str]:
        """Problems of hand-edited updates (unknown key, not in the space, wrong type, out of range/choices).

        Values off a ``step`` grid are accepted: an approver may choose a value the sampler would not draw.
        Fields of a composite choice must be given together and form one of its value lists.
        """
        problems: list[str] = []
        canonical: dict[str, Any] = {}
        for key, value in updates.items():
            try:
                section, name = _resolve(str(key))
            except ConfigError as exc:
                problems.append(_strip_source(str(exc)))
                continue
            ck = f"{section}.{name}"
            if ck not in self.config_keys:
                problems.append(f"{ck}: not in the search space {self.source} (it can change "
                                f"{', '.join(self.config_keys)})")
                continue
            try:
                value = coerce_value(field_spec(ck), value, source=self.source)
            except ConfigError as exc:
                problems.append(f"{ck}: {_after_expected(str(exc), value)}")
                continue
            canonical[ck] = value
        for p in self.parameters:
            present = [k for k in p.keys if k in canonical]
            if not present:
                continue
            if p.composite:
                if len(present) != len(p.keys):
                    missing = [k for k in p.keys if k not in canonical]
                    problems.append(f"{p.key}: these fields change together; also give {', '.join(missing)}")
                    continue
                value = tuple(canonical[k] for k in p.keys)
            else:
                value = canonical[p.key]
            problem = p.value_problem(value)
            if problem:
                problems.append(f"{p.key}: {problem}")
        return problems

    def contains(self, updates: Mapping[str, Any]) -> bool:
        """True when ``validate_values`` finds nothing wrong."""
        return not self.validate_values(updates)

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.parameters]


def _strip_source(message: str) -> str:
    """Config messages start with '<source>: '; inside a list of problems about one candidate that is noise."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith("<") else message


def _after_expected(message: str, value: Any) -> str:
    _, sep, tail = message.rpartition(": expected ")
    return f"{_show(value)}: expected {tail}" if sep else message


def _resolve(key: str) -> tuple[str, str]:
    from alpha_evolve.config import resolve_key

    return resolve_key(key, source="<search space>")


# ------------------------------------------------------------------------------------------------- loading


def load_search_space(path: str | Path) -> SearchSpace:
    """Read a ``.json`` or ``.toml`` search space and validate it completely; ``SearchSpaceError`` otherwise."""
    p = Path(path)
    text = read_text_file(p, what="search-space file", expected="a JSON or TOML search-space file",
                          error=SearchSpaceError)
    data: Any
    if p.suffix.lower() == ".toml":
        try:
            data = tomlkit.parse(text).unwrap()
        except tomlkit.exceptions.ParseError as exc:
            raise SearchSpaceError(f"{p}: invalid TOML: {exc}") from None
    else:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            hint = "" if p.suffix.lower() == ".json" else " (search spaces are .json or .toml files)"
            raise SearchSpaceError(f"{p}: invalid JSON: {exc}{hint}") from None
    return parse_search_space(data, source=str(p))


def parse_search_space(data: Any, *, source: str = "<search space>") -> SearchSpace:
    """Validate already-parsed data (a dict as read from JSON/TOML) into a ``SearchSpace``."""
    if not isinstance(data, Mapping):
        raise SearchSpaceError(f"{source}: expected a table/object with a 'parameters' list")
    raw_params = data.get("parameters")
    if isinstance(raw_params, list):
        for i, raw in enumerate(raw_params):
            if isinstance(raw, Mapping):
                has_key, has_keys = "key" in raw, "keys" in raw
                if has_key == has_keys:
                    what = "both 'key' and 'keys'" if has_key else "neither 'key' nor 'keys'"
                    raise SearchSpaceError(f"{source}: parameters[{i}]: has {what}; give exactly one")
    errors = sorted(schema_validator("search_space").iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = list(err.absolute_path)
        where = "top level"
        if len(path) >= 2 and path[0] == "parameters" and isinstance(path[1], int):
            raw = raw_params[path[1]] if isinstance(raw_params, list) else None
            where = _where(path[1], raw)
            rest = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in path[2:]).lstrip(".")
            if rest:
                where += f" {rest}"
        elif path:
            where = ".".join(str(x) for x in path)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SearchSpaceError(f"{source}: {where}: {err.message}{more}")
    assert isinstance(raw_params, list)
    default_prob = 1.0 / len(raw_params)
    params: list[Parameter] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_params):
        param = _build_parameter(i, raw, default_prob, source)
        for k in param.keys:
            if k in seen:
                raise SearchSpaceError(f"{source}: {_where(i, raw)}: {k} is already tuned by parameters[{seen[k]}]")
            seen[k] = i
        params.append(param)
    return SearchSpace(parameters=tuple(params), source=source, description=str(data.get("description", "")))


def _where(i: int, raw: Any) -> str:
    key = None
    if isinstance(raw, Mapping):
        key = raw.get("key") if "key" in raw else ("+".join(map(str, raw["keys"])) if isinstance(
            raw.get("keys"), list) else raw.get("keys"))
    return f"parameters[{i}] ({key})" if key is not None else f"parameters[{i}]"


def _build_parameter(i: int, raw: Mapping[str, Any], default_prob: float, source: str) -> Parameter:
    where = f"{source}: {_where(i, raw)}"

    def fail(problem: str) -> SearchSpaceError:
        return SearchSpaceError(f"{where}: {problem}")

    raw_keys: list[str] = [raw["key"]] if "key" in raw else list(raw["keys"])
    specs: list[FieldSpec] = []
    for k in raw_keys:
        try:
            specs.append(field_spec(k, source=source))
        except ConfigError as exc:
            raise fail(_strip_file(str(exc), source)) from None
    keys = tuple(s.key for s in specs)
    if len(set(keys)) != len(keys):
        raise fail("'keys' name the same config field twice")
    ptype = raw["type"]
    if len(keys) > 1 and ptype != "choice":
        raise fail(f"'keys' (several fields set together) needs type 'choice', not {ptype!r}")
    for name in _RANGE_ONLY:
        if name in raw and ptype in ("choice", "bool_toggle"):
            raise fail(f"'{name}' does not apply to a {ptype} parameter (only to float_range/int_range)")
    if "values" in raw and ptype != "choice":
        raise fail(f"'values' does not apply to a {ptype} parameter (only to choice)")
    if "round_to" in raw and ptype != "float_range":
        raise fail(f"'round_to' applies to float_range only, not {ptype}")
    spec = specs[0]
    common: dict[str, Any] = {
        "index": i, "key": "+".join(keys), "keys": keys, "type": ptype,
        "mutate_probability": float(raw.get("mutate_probability", default_prob)),
        "allow_same": bool(raw.get("allow_same", False)), "description": str(raw.get("description", "")),
    }
    if ptype == "choice":
        values: list[Any] = []
        for v in raw["values"]:
            if len(keys) > 1:
                if not isinstance(v, list) or len(v) != len(keys):
                    raise fail(f"choice value {_show(v)}: expected a list of {len(keys)} items, one per key "
                               f"({', '.join(keys)})")
                items = []
                for s, item in zip(specs, v, strict=True):
                    items.append(_coerce(s, item, fail, f"choice value {_show(v)}: {s.key} = "))
                values.append(tuple(items))
            else:
                values.append(_coerce(spec, v, fail, "choice value "))
        if len(keys) > 1:
            _check_composite(keys, values, fail)
        return Parameter(values=tuple(values), **common)
    if ptype == "bool_toggle":
        if spec.type is not bool:
            raise fail(f"bool_toggle needs a true/false field; {spec.key} is {spec.expected()}")
        return Parameter(**common)
    want = int if ptype == "int_range" else float
    if spec.type is not want:
        other = "int_range" if spec.type is int else "float_range" if spec.type is float else None
        advice = f" (use {other})" if other else ""
        raise fail(f"{ptype} does not fit {spec.key}, which is {spec.expected()}{advice}")
    lo, hi = raw["min"], raw["max"]
    for name, v in (("min", lo), ("max", hi), ("step", raw.get("step"))):
        if ptype == "int_range" and v is not None and not (isinstance(v, int) and not isinstance(v, bool)):
            raise fail(f"{name} = {_show(v)}: an int_range needs integers")
    if not lo < hi:
        raise fail(f"min = {lo:g} must be below max = {hi:g}")
    for name, v in (("min", lo), ("max", hi)):
        _coerce(spec, v if ptype == "int_range" else float(v), fail, f"{name} = ")
    step = raw.get("step")
    if step is not None and step > hi - lo:
        raise fail(f"step = {step:g} is wider than the range [{lo:g}, {hi:g}]")
    return Parameter(min=lo if ptype == "int_range" else float(lo), max=hi if ptype == "int_range" else float(hi),
                     step=step, round_to=raw.get("round_to"), perturbation=raw.get("perturbation"), **common)


def _coerce(spec: FieldSpec, value: Any, fail: Any, prefix: str) -> Any:
    try:
        return coerce_value(spec, value, source="")
    except ConfigError:
        raise fail(f"{prefix}{_show(value)} is refused by the config: {spec.key} expects {spec.expected()}") from None


def _check_composite(keys: Sequence[str], values: Sequence[tuple[Any, ...]], fail: Any) -> None:
    """Run each composite value through the config's cross-field rules, so a refused combination fails now."""
    for v in values:
        try:
            RunConfig().with_updates(dict(zip(keys, v, strict=True)), source="")
        except ConfigError as exc:
            raise fail(f"choice value {_show(v)} is refused by the config: {_strip_source(str(exc))}") from None


def _strip_file(message: str, source: str) -> str:
    prefix = f"{source}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def rng_for(seed: int, *parts: int) -> np.random.Generator:
    """An independent generator per (seed, iteration, attempt): a resumed session redraws the same values."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(x) for x in parts]]))
