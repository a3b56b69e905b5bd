"""The CLI's areas: each ``alpha_evolve.commands.<area>`` exposes ``register(subparsers)`` and nothing else public.

``alpha_evolve.cli`` imports them by name; the package (``alpha_evolve.*``) never imports a command module, so
the import direction stays CLI → package.
"""

__all__ = ["backtest", "config", "dashboard", "evolve", "pipeline", "registry", "session"]
