"""alpha-evolve."""
