# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make run    install into .venv and start everything (`relay dev`)
#   make test   install the test tools into .venv and run lint, types, the whole suite and the docs build
#   make docs   serve the documentation site on http://127.0.0.1:8080
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint layers typecheck pytest docs docs-build bench clean

# Where `make docs-build` writes the site (ignored by git); mkdocs' own banner is silenced.
SITE_DIR ?= .site
export NO_MKDOCS_2_WARNING := 1

$(BIN)/relay: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/relay

# The docs tools are a separate extra, installed only for the targets that need them, so that
# `make run` does not wait for them.
$(BIN)/mkdocs: pyproject.toml $(BIN)/relay
	$(BIN)/pip install --quiet -e '.[test,docs]'
	touch $(BIN)/mkdocs

run: $(BIN)/relay
	$(BIN)/relay dev --echo-target

test: $(BIN)/relay lint layers typecheck pytest docs-build

lint: $(BIN)/relay
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The import-linter contracts of pyproject.toml: which package may import which.
layers: $(BIN)/relay
	$(BIN)/lint-imports

typecheck: $(BIN)/relay
	$(BIN)/mypy

pytest: $(BIN)/relay
	$(BIN)/pytest $(PYTEST_ARGS)

docs: $(BIN)/mkdocs
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8080

docs-build: $(BIN)/mkdocs
	$(BIN)/mkdocs build --strict --site-dir $(SITE_DIR)

bench: $(BIN)/relay
	$(BIN)/python bench/receiver.py
	$(BIN)/python bench/delivery.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis $(SITE_DIR)
