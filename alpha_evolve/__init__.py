"""alpha-evolve: AlphaEvolve-style evolution of NautilusTrader strategies with a self-evolving outer loop."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alpha-evolve")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+src"
