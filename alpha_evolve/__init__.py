"""alpha-evolve: AlphaEvolve-style evolution of NautilusTrader strategies with a self-evolving outer loop.

Each module lists what it offers in ``__all__`` where it has one, and underscored names are private to their
module; the layout and the import direction are in ARCHITECTURE.md.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("alpha-evolve")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+src"
