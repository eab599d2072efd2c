# Two commands do all set-up on a fresh machine with Python 3.11:
#   make run    -- create .venv, install, migrate the embedded SQLite database, start the gateway
#   make test   -- create .venv, install, run format check, lint, types and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: run test check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/seedgate serve $(ARGS)

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/check

check: test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
