"""Shared fixtures: real market data shipped inside a dependency. (Helpers tests import live in tests/_*.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


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
