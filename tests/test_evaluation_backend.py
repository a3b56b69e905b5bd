"""Choosing the evaluation backend: config, CLI flags, the secret scrub, and an unreachable cluster as one line."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from alpha_evolve.config import ConfigError, RunConfig, from_mapping
from alpha_evolve.evaluation_backend import (
    add_backend_arguments,
    apply_backend_arguments,
    is_secret_name,
    scrub_environ,
    scrubbed_environ,
)
from alpha_evolve.evaluation_setup import build_evaluator
from alpha_evolve.evaluator import StrategyEvaluator
from tests._cli import run_cli


def test_evaluation_section_defaults_and_validation() -> None:
    cfg = from_mapping({"evaluation": {"backend": "ray", "ray_address": "auto", "max_task_retries": 1}})
    assert cfg.evaluation.backend == "ray" and cfg.evaluation.ray_address == "auto"
    assert RunConfig().evaluation.backend == "local"
    with pytest.raises(ConfigError, match=r"\[evaluation\] backend = 'dask': expected one of 'local', 'ray'"):
        from_mapping({"evaluation": {"backend": "dask"}})
    with pytest.raises(ConfigError, match="max_task_retries"):
        from_mapping({"evaluation": {"max_task_retries": 99}})


def test_cli_flags_override_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    base = RunConfig()
    assert apply_backend_arguments(parser.parse_args([]), base) is base
    joined = apply_backend_arguments(parser.parse_args(["--ray-address", "auto"]), base)
    assert (joined.evaluation.backend, joined.evaluation.ray_address) == ("ray", "auto")
    local = apply_backend_arguments(parser.parse_args(["--backend", "ray"]), base)
    assert (local.evaluation.backend, local.evaluation.ray_address) == ("ray", "")


def test_local_backend_is_the_forked_pool() -> None:
    cfg = RunConfig().with_updates({"backtest.synthetic_bars": 300})
    with build_evaluator(cfg, include=("train",), max_concurrent=1) as ev:
        assert isinstance(ev, StrategyEvaluator)


def test_secret_names_and_scrub(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "MY_SERVICE_AUTH"):
        assert is_secret_name(name), name
    for name in ("PATH", "HOME", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "PYTHONPATH", "LANG", "AWS_CA_BUNDLE"):
        assert not is_secret_name(name), name
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    with scrubbed_environ() as removed:
        assert "ANTHROPIC_API_KEY" in removed and "ANTHROPIC_API_KEY" not in os.environ
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-test"  # the trusted side gets it back
    env = {"ANTHROPIC_API_KEY": "x", "PATH": "/bin"}
    assert scrub_environ(env) == ["ANTHROPIC_API_KEY"] and env == {"PATH": "/bin"}


def test_wipe_removes_the_bytes_from_the_process_environment_block() -> None:
    """``/proc/self/environ`` still shows an unset variable's bytes unless they are overwritten."""
    code = ("import os\nfrom alpha_evolve.evaluation_backend import scrub_environ\n"
            "raw = lambda: open('/proc/self/environ', 'rb').read()\n"
            "assert b'sk-wipe-me' in raw()\n"
            "print(scrub_environ(wipe=True), b'sk-wipe-me' in raw(), 'ANTHROPIC_API_KEY' in os.environ)\n")
    env = {"PATH": os.environ.get("PATH", ""), "ANTHROPIC_API_KEY": "sk-wipe-me"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "['ANTHROPIC_API_KEY'] False False"


def test_unreachable_cluster_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "run.toml"
    config.write_text("[backtest]\nsynthetic_bars = 300\n[evolution]\ngenerations = 1\nmutator = 'offline'\n")
    result = run_cli("pipeline", "--config", str(config), "--output-dir", str(tmp_path / "runs"),
                     "--ray-address", f"127.0.0.1:{port}", timeout=120)
    assert result.returncode == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert f"Ray cluster at 127.0.0.1:{port} cannot be reached" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
