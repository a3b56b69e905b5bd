"""Search-space loading: schema refusals, key resolution, checks against the config's field bounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alpha_evolve.config import RunConfig
from alpha_evolve.search_space import SearchSpaceError, load_search_space, parse_search_space

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "configs" / "self_evolution").glob("*.*"))


def write(tmp_path: Path, params: list[dict[str, Any]] | Any, name: str = "space.json") -> Path:
    p = tmp_path / name
    data = {"parameters": params} if isinstance(params, list) else params
    p.write_text(json.dumps(data))
    return p


def error_of(tmp_path: Path, params: Any) -> str:
    path = write(tmp_path, params)
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path) + ": ")
    return msg


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spaces_load_and_their_values_are_accepted_by_the_config(path: Path) -> None:
    space = load_search_space(path)
    assert space.parameters
    for p in space.parameters:
        assert p.description
        assert all("." in k for k in p.keys)
        if p.values is not None:
            for v in p.values:
                RunConfig().with_updates(p.to_config_values(v))
        if p.is_range:
            for end in (p.min, p.max):
                RunConfig().with_updates({p.key: p.snap(end)})  # type: ignore[arg-type]


def test_toml_and_json_are_equivalent(tmp_path: Path) -> None:
    t = tmp_path / "s.toml"
    t.write_text('[[parameters]]\nkey = "generations"\ntype = "int_range"\nmin = 4\nmax = 16\nstep = 4\n')
    j = write(tmp_path, [{"key": "generations", "type": "int_range", "min": 4, "max": 16, "step": 4}])
    a, b = load_search_space(t), load_search_space(j)
    assert a.parameters[0].key == b.parameters[0].key == "evolution.generations"
    assert (a.parameters[0].min, a.parameters[0].max, a.parameters[0].step) == (4, 16, 4)


def test_keys_resolve_to_canonical_and_defaults_are_documented_values(tmp_path: Path) -> None:
    space = load_search_space(write(tmp_path, [
        {"key": "generations", "type": "int_range", "min": 4, "max": 16},
        {"key": "backtest.bt_top", "type": "choice", "values": [1, 3]},
        {"key": "use_adjusted", "type": "bool_toggle", "mutate_probability": 0.9, "allow_same": True},
        {"key": "novelty_boost_w", "type": "float_range", "min": 0, "max": 1},
    ]))
    assert [p.key for p in space.parameters] == ["evolution.generations", "backtest.bt_top",
                                                 "backtest.use_adjusted", "evolution.novelty_boost_w"]
    assert [p.mutate_probability for p in space.parameters] == [0.25, 0.25, 0.9, 0.25]
    assert [p.allow_same for p in space.parameters] == [False, False, True, False]
    assert isinstance(space.parameters[3].min, float)


@pytest.mark.parametrize(("params", "expected"), [
    ([{"key": "generations", "type": "int_range", "min": 1, "max": 5, "colour": "red"}],
     "parameters[0] (generations): Additional properties are not allowed ('colour' was unexpected)"),
    ([{"key": "generations", "type": "range", "min": 1, "max": 5}], "parameters[0] (generations) type: 'range'"),
    ([{"key": "bt_top", "type": "choice"}], "parameters[0] (bt_top): 'values' is a required property"),
    ([{"key": "generations", "type": "int_range", "min": 1}], "parameters[0] (generations): 'max' is a required"),
    ([{"key": "generations", "type": "int_range", "min": 1, "max": 5, "mutate_probability": 1.5}],
     "parameters[0] (generations) mutate_probability: 1.5 is greater than the maximum of 1"),
    ([{"type": "bool_toggle"}], "parameters[0]: has neither 'key' nor 'keys'"),
    ([], "parameters: [] should be non-empty"),
    ({"params": []}, "top level: Additional properties are not allowed ('params' was unexpected) (and 1 more)"),
])
def test_schema_refusals_are_one_line_naming_file_and_parameter(tmp_path: Path, params: Any, expected: str) -> None:
    assert expected in error_of(tmp_path, params)


def test_unknown_key_gets_the_configs_did_you_mean(tmp_path: Path) -> None:
    msg = error_of(tmp_path, [{"key": "bt_top", "type": "choice", "values": [1]},
                              {"key": "generatons", "type": "int_range", "min": 1, "max": 5}])
    assert "parameters[1] (generatons)" in msg
    assert "unknown config key 'generatons' (did you mean 'generations'?)" in msg


def test_ambiguous_bare_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Today no field name is shared by two sections, so add one the way a future field would appear."""
    import dataclasses

    from alpha_evolve import config

    twin = dataclasses.replace(config.FIELD_SPECS["backtest.use_adjusted"], section="pipeline")
    monkeypatch.setitem(config.FIELD_SPECS, "pipeline.use_adjusted", twin)
    msg = error_of(tmp_path, [{"key": "use_adjusted", "type": "bool_toggle"}])
    assert "parameters[0] (use_adjusted): config key 'use_adjusted' is ambiguous; write one of " \
           "backtest.use_adjusted, pipeline.use_adjusted" in msg


@pytest.mark.parametrize(("param", "expected"), [
    ({"key": "generations", "type": "int_range", "min": 0, "max": 5},
     "min = 0 is refused by the config: evolution.generations expects an integer >= 1"),
    ({"key": "bt_top", "type": "int_range", "min": 1, "max": 5000}, "max = 5000 is refused by the config"),
    ({"key": "bt_top", "type": "choice", "values": [1, "three"]}, "choice value 'three' is refused by the config"),
    ({"key": "bt_top", "type": "choice", "values": [1, 2.5]}, "choice value 2.5 is refused"),
    ({"key": "fitness_metric", "type": "choice", "values": ["Sharpe", "Sharp"]}, "choice value 'Sharp' is refused"),
    ({"key": "generations", "type": "bool_toggle"}, "bool_toggle needs a true/false field"),
    ({"key": "novelty_boost_w", "type": "int_range", "min": 0, "max": 5},
     "int_range does not fit evolution.novelty_boost_w, which is a number >= 0 and <= 10 (use float_range)"),
    ({"key": "generations", "type": "float_range", "min": 1, "max": 5}, "(use int_range)"),
    ({"key": "generations", "type": "int_range", "min": 1.5, "max": 5},
     "(generations) min: 1.5 is not of type 'integer'"),
    ({"key": "generations", "type": "int_range", "min": 5, "max": 5}, "min = 5 must be below max = 5"),
    ({"key": "generations", "type": "int_range", "min": 1, "max": 5, "step": 10}, "step = 10 is wider"),
    ({"key": "bt_top", "type": "choice", "values": [1, 2], "step": 1}, "'step' does not apply to a choice"),
    ({"key": "generations", "type": "int_range", "min": 1, "max": 5, "round_to": 1}, "'round_to' applies to "
     "float_range only"),
    ({"key": "train_fraction", "type": "float_range", "min": 0.0, "max": 0.5}, "min = 0.0 is refused by the config: "
     "backtest.train_fraction expects a number > 0 and < 1"),
    ({"keys": ["elite_ratio", "exploit_ratio", "explore_ratio"], "type": "choice", "values": [[0.1, 0.7, 0.3]]},
     "choice value [0.1, 0.7, 0.3] is refused by the config: [evolution] elite_ratio + exploit_ratio"),
    ({"keys": ["elite_ratio", "exploit_ratio"], "type": "choice", "values": [[0.1, 0.7, 0.2]]},
     "expected a list of 2 items"),
    ({"keys": ["elite_ratio", "exploit_ratio"], "type": "float_range", "min": 0, "max": 1}, "needs type 'choice'"),
])
def test_values_the_config_would_refuse_are_reported_before_running(tmp_path: Path, param: dict[str, Any],
                                                                     expected: str) -> None:
    msg = error_of(tmp_path, [{"key": "patience", "type": "int_range", "min": 0, "max": 3}, param])
    assert "parameters[1] (" in msg
    assert expected in msg


def test_a_field_tuned_twice_is_refused(tmp_path: Path) -> None:
    msg = error_of(tmp_path, [{"key": "generations", "type": "int_range", "min": 1, "max": 5},
                              {"key": "evolution.generations", "type": "choice", "values": [3]}])
    assert "parameters[1] (evolution.generations): evolution.generations is already tuned by parameters[0]" in msg


@pytest.mark.parametrize(("content", "name", "expected"), [
    ("{not json", "s.json", "invalid JSON"),
    ("[[parameters]\n", "s.toml", "invalid TOML"),
    (None, "missing.json", "search-space file not found"),
])
def test_unreadable_files(tmp_path: Path, content: str | None, name: str, expected: str) -> None:
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(SearchSpaceError, match=expected) as info:
        load_search_space(p)
    assert str(info.value).startswith(str(p))


def test_validate_values_reports_each_problem_of_a_hand_edited_candidate() -> None:
    space = parse_search_space({"parameters": [
        {"key": "generations", "type": "int_range", "min": 4, "max": 16, "step": 4},
        {"key": "bt_top", "type": "choice", "values": [1, 3, 5]},
        {"key": "novelty_boost_w", "type": "float_range", "min": 0.0, "max": 1.0},
        {"key": "use_adjusted", "type": "bool_toggle"},
        {"keys": ["elite_ratio", "exploit_ratio", "explore_ratio"], "type": "choice",
         "values": [[0.1, 0.7, 0.2], [0.2, 0.6, 0.2]]},
    ]}, source="s.json")
    ok = {"generations": 7, "backtest.bt_top": 3, "novelty_boost_w": 1, "use_adjusted": True,
          "elite_ratio": 0.2, "exploit_ratio": 0.6, "explore_ratio": 0.2}
    assert space.validate_values(ok) == []
    assert space.contains(ok)
    problems = space.validate_values({"generations": 20, "bt_top": 2, "novelty_boost_w": "high",
                                      "use_adjusted": 1, "patience": 3, "generatons": 4, "elite_ratio": 0.2})
    text = "\n".join(problems)
    assert len(problems) == 7
    assert "evolution.generations: 20 is outside [4, 16]" in text
    assert "backtest.bt_top: 2 is not one of the choices 1, 3, 5" in text
    assert "evolution.novelty_boost_w: 'high': expected a number" in text
    assert "backtest.use_adjusted: 1: expected true or false" in text
    assert "evolution.patience: not in the search space s.json" in text
    assert "unknown config key 'generatons' (did you mean 'generations'?)" in text
    assert "also give evolution.exploit_ratio, evolution.explore_ratio" in text
    assert not space.contains({"generations": 2})
    assert space.validate_values({"elite_ratio": 0.3, "exploit_ratio": 0.5, "explore_ratio": 0.2}) == [
        "evolution.elite_ratio+evolution.exploit_ratio+evolution.explore_ratio: [0.3, 0.5, 0.2] is not one of the "
        "choices [0.1, 0.7, 0.2], [0.2, 0.6, 0.2]"]


def test_snap_to_step_and_round_to() -> None:
    space = parse_search_space({"parameters": [
        {"key": "generations", "type": "int_range", "min": 4, "max": 17, "step": 4},
        {"key": "novelty_boost_w", "type": "float_range", "min": 0.1, "max": 1.0, "step": 0.2},
        {"key": "trade_fraction", "type": "float_range", "min": 0.1, "max": 1.0, "round_to": 2},
    ]})
    gen, nov, temp = space.parameters
    assert [gen.snap(v) for v in (0, 5, 6.1, 14, 17, 99)] == [4, 4, 8, 16, 16, 16]
    assert gen.grid_size() == 4
    assert [nov.snap(v) for v in (0.0, 0.25, 0.45, 0.95, 1.0)] == [0.1, 0.3, 0.5, 0.9, 0.9]
    assert [temp.snap(v) for v in (0.123456, 0.987, -1, 2)] == [0.12, 0.99, 0.1, 1.0]
