"""Config loading: the one-line errors users see, cross-field rules, and comment-preserving snapshots."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import tomlkit

from alpha_evolve.config import (
    FIELD_SPECS,
    ConfigError,
    RunConfig,
    load_config,
    render_toml,
    resolve_key,
    write_toml_snapshot,
)

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_default_toml_documents_every_field_and_loads() -> None:
    path = ROOT / "configs" / "default.toml"
    cfg = load_config(path)
    assert cfg.evolution == RunConfig().evolution
    assert cfg.backtest == RunConfig().backtest
    text = path.read_text()
    for spec in FIELD_SPECS.values():
        assert spec.name in text, f"{spec.key} is not documented in default.toml"
        assert spec.doc in text


def test_shipped_configs_load() -> None:
    for path in sorted((ROOT / "configs").glob("*.toml")):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[evolution]\ngeneratons = 5\n", ["run.toml", "generatons", "did you mean 'generations'"]),
        ("[evolution]\ngenerations = 'many'\n", ["[evolution] generations", "expected an integer"]),
        ("[evolution]\ngenerations = 0\n", ["generations = 0", ">= 1"]),
        ("[evolution]\nnovelty_boost_w = -1\n", ["novelty_boost_w", ">= 0"]),
        ("[evolution]\nmutator = 'ofline'\n", ["mutator", "did you mean 'offline'"]),
        ("[evolution]\nbt_top = 3\n", ["unknown key 'bt_top'", "[backtest]"]),
        ("[backtst]\nbt_top = 3\n", ["unknown section [backtst]", "did you mean 'backtest'"]),
        ("[backtest]\ntrain_fraction = 0.7\nvalidation_fraction = 0.3\n", ["holdout"]),
        ("[backtest]\nallow_short = true\n", ["allow_short", "margin"]),
        ("[evolution]\nelite_ratio = 0.5\n", ["sum to 1"]),
        ("[backtest]\ntrain_end = 'yesterday'\n", ["train_end", "ISO date"]),
        ("[backtest]\nuse_adjusted = 1\n", ["use_adjusted", "true or false"]),
        ("[evolution\n", ["invalid TOML"]),
    ],
)
def test_bad_config_is_one_line_naming_file_key_and_expectation(tmp_path: Path, text: str,
                                                                 fragments: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_ints_accepted_for_floats_and_optional_fields(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "[evolution]\ntarget_fitness = 2\n[backtest]\nstarting_capital = 5000\n"))
    assert cfg.evolution.target_fitness == 2.0
    assert isinstance(cfg.backtest.starting_capital, float)
    assert math.isnan(RunConfig().evolution.target_fitness)


def test_key_resolution() -> None:
    assert resolve_key("generations") == ("evolution", "generations")
    assert resolve_key("bt_top") == ("backtest", "bt_top")
    assert resolve_key("evolution.novelty_boost_w") == ("evolution", "novelty_boost_w")
    with pytest.raises(ConfigError, match="did you mean"):
        resolve_key("generation")
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve_key("evolution.bt_top")


def test_with_updates_revalidates() -> None:
    cfg = RunConfig().with_updates({"generations": 7, "backtest.bt_top": 9})
    assert cfg.evolution.generations == 7 and cfg.backtest.bt_top == 9
    with pytest.raises(ConfigError, match="bt_top"):
        RunConfig().with_updates({"bt_top": 0})


def test_snapshot_preserves_comments_and_round_trips(tmp_path: Path) -> None:
    src = _write(tmp_path, "# my notes about this run\n[evolution]\ngenerations = 9  # keep it short\n")
    cfg = load_config(src).with_updates({"generations": 11, "novelty_boost_w": 0.5})
    out = write_toml_snapshot(cfg, tmp_path / "snap.toml")
    text = out.read_text()
    assert "# my notes about this run" in text
    assert "# keep it short" in text
    assert "generations = 11" in text
    again = load_config(out)
    assert again.evolution == cfg.evolution and again.backtest == cfg.backtest
    assert tomlkit.parse(text)["evolution"]["novelty_boost_w"] == 0.5


def test_render_without_template_is_loadable(tmp_path: Path) -> None:
    cfg = RunConfig().with_updates({"target_fitness": 1.5})
    path = tmp_path / "x.toml"
    path.write_text(render_toml(cfg))
    assert load_config(path).evolution.target_fitness == 1.5


def test_unknown_seed_strategy_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"seed_strategy = 'momentun'.*did you mean 'momentum'"):
        load_config(_write(tmp_path, '[evolution]\nseed_strategy = "momentun"\n'))
    assert load_config(_write(tmp_path, '[evolution]\nseed_strategy = "my_seed.py"\n')).evolution.seed_strategy
