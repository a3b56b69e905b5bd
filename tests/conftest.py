"""Shared fixtures: real market data shipped inside a dependency, and a CLI runner in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def real_goog_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GOOG daily bars 2004-2008 as matplotlib ships them (real Yahoo data we did not write), saved as CSV."""
    import matplotlib

    sample = Path(matplotlib.get_data_path()) / "sample_data" / "goog.npz"
    data = np.load(sample, allow_pickle=True)["price_data"]
    frame = pd.DataFrame(data)
    frame.columns = ["Date", "Open", "High", "Low", "Close", "Volume", "Adj Close"]
    path = tmp_path_factory.mktemp("real") / "GOOG.csv"
    frame.to_csv(path, index=False)
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``alpha-evolve`` as a user would: a separate process, its own stdout/stderr and exit code."""
    full_env = dict(os.environ)
    full_env.pop("ANTHROPIC_API_KEY", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "alpha_evolve", *args],
        cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
    )
