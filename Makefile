# alpha-evolve. Every target sets itself up (uv via pip if missing, then `uv sync` into .venv), so a fresh
# machine needs only python3, pip and make.
SHELL := /bin/bash
UV = $(shell ./scripts/ensure_uv.sh)
RUN = $(UV) run --no-sync
PYTEST_ARGS ?=
AUTO_APPROVE ?=
ITERATIONS ?= 3
SESSION_ARGS ?=

.PHONY: help setup test lint session pipeline backtest bench clean

help:
	@echo "make session   start a self-evolution session under sessions/ (legacy mode; decide each step by editing"
	@echo "               pending_action.json, with 'uv run alpha-evolve approve|reject|stop DIR', or /approve in Claude Code)"
	@echo "               ITERATIONS=N      proposals after the baseline (default $(ITERATIONS))"
	@echo "               AUTO_APPROVE=1    run every proposal without waiting for a decision"
	@echo "               SESSION_ARGS='..' more self-evolve options, e.g. SESSION_ARGS='--objective Sortino --seed 3'"
	@echo "make test      run the test suite"
	@echo "make lint      ruff + mypy"
	@echo "make pipeline  one pipeline run on configs/default.toml"
	@echo "make bench     run the benchmarks (figures go in BENCHMARKS.md)"

.venv/.synced: pyproject.toml
	@$(UV) sync --quiet
	@touch $@

setup: .venv/.synced

# The Ray cluster tests run after the rest, alone: a two-node cluster starting beside another xdist worker's
# backtests on 2 cores can miss Ray's start-up deadlines (they pass alone every time).
RAY_TESTS = tests/test_ray_backend.py tests/test_ray_hostile.py
test: setup
	$(RUN) pytest -n 2 $(foreach t,$(RAY_TESTS),--ignore=$(t)) $(PYTEST_ARGS)
	$(RUN) pytest -n 0 $(RAY_TESTS) $(PYTEST_ARGS)

lint: setup
	$(RUN) ruff check alpha_evolve tests bench scripts
	$(RUN) mypy alpha_evolve

session: setup
	$(RUN) alpha-evolve self-evolve --mode legacy \
		--config configs/default.toml --search-space configs/self_evolution/default.json \
		--session-root sessions --iterations $(ITERATIONS) $(if $(AUTO_APPROVE),--auto-approve,) $(SESSION_ARGS)

pipeline: setup
	$(RUN) alpha-evolve pipeline --config configs/default.toml

backtest: setup
	$(RUN) alpha-evolve backtest --strategy momentum

bench: setup
	$(RUN) python -m bench.run_all

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
