# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make run    install into .venv and start everything (`relay dev`)
#   make test   install the test tools into .venv and run lint, types and the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench clean

$(BIN)/relay: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/relay

run: $(BIN)/relay
	$(BIN)/relay dev --echo-target

test: $(BIN)/relay lint typecheck pytest

lint: $(BIN)/relay
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/relay
	$(BIN)/mypy

pytest: $(BIN)/relay
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(BIN)/relay
	$(BIN)/python bench/receiver.py
	$(BIN)/python bench/delivery.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
