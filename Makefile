# Two set-up commands (README): `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/vaekit train seed --run-dir runs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# one worker per core, each in one thread (tests/conftest.py), a test file per worker at a time (module fixtures
# are built once)
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=20

clean:
	rm -rf runs site .pytest_cache .mypy_cache .ruff_cache
