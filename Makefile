# alpha-evolve: every target bootstraps uv and the project's virtualenv itself,
# so a fresh machine needs only python3, pip and make.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
PYTEST_ARGS ?=
AUTO_APPROVE ?=
ITERATIONS ?= 3
SESSION_ARGS ?=

.PHONY: setup test lint session backtest bench clean help

help:
	@echo "make session   start a self-evolution session (AUTO_APPROVE=1 for unattended)"
	@echo "make test      run the test suite"
	@echo "make lint      ruff + mypy"
	@echo "make bench     run the benchmarks (see BENCHMARKS.md)"

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --user --quiet uv || python3 -m pip install --quiet uv

.venv/.synced: pyproject.toml | $(UV)
	@UV_BIN=$$(command -v uv || echo "$(HOME)/.local/bin/uv"); $$UV_BIN sync --quiet && touch $@

setup: .venv/.synced

test: setup
	@UV_BIN=$$(command -v uv || echo "$(HOME)/.local/bin/uv"); $$UV_BIN run --no-sync pytest -n 2 $(PYTEST_ARGS)

lint: setup
	@UV_BIN=$$(command -v uv || echo "$(HOME)/.local/bin/uv"); $$UV_BIN run --no-sync ruff check alpha_evolve tests bench scripts && $$UV_BIN run --no-sync mypy alpha_evolve

session: setup
	@UV_BIN=$$(command -v uv || echo "$(HOME)/.local/bin/uv"); $$UV_BIN run --no-sync alpha-evolve self-evolve --mode legacy \
		--config configs/default.toml --search-space configs/self_evolution/default.json \
		--session-root sessions --iterations $(ITERATIONS) $(if $(AUTO_APPROVE),--auto-approve,) $(SESSION_ARGS)

backtest: setup
	@UV_BIN=$$(command -v uv || echo "$(HOME)/.local/bin/uv"); $$UV_BIN run --no-sync alpha-evolve backtest --strategy momentum

bench: setup
	@UV_BIN=$$(command -v uv || echo "$(HOME)/.local/bin/uv"); $$UV_BIN run --no-sync python -m bench.run_all

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
