# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make run    install into .venv and start everything (`relay dev`)
#   make test   install the test tools into .venv and run lint, types, the whole suite and the docs build
#               (the fast tests in parallel, then the slow ones alone; SLOW=0 skips those)
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

# The suite in two runs. The fast tests run in PYTEST_WORKERS pytest-xdist workers: most of their
# time is spent waiting on the redis-server, relay and HTTP processes they start, so 4 workers on
# 2 cores take them from about 7 minutes to about 2.5. The slow ones (chaos, Sentinel failover in
# network namespaces, the browser, the soak runs) then run one at a time, as their timings assume.
# SLOW=0 skips the slow run. PYTEST_ARGS go to both runs (a file, -k, -x); a run they leave
# without a test (pytest's exit 5) fails only if the other one ran none either. A -m of its own
# would undo the split: run .venv/bin/pytest directly for that.
PYTEST_WORKERS ?= 4
SLOW ?= 1
pytest: $(BIN)/relay
	$(if $(filter -m%,$(PYTEST_ARGS)),$(error PYTEST_ARGS may not choose markers (-m): \
	  use SLOW=0 for the fast tests only, or .venv/bin/pytest -m ... directly))
	fast=0; slow=5; \
	$(BIN)/pytest -m "not slow" -n $(PYTEST_WORKERS) $(PYTEST_ARGS) || fast=$$?; \
	if [ "$(SLOW)" != 0 ]; then slow=0; $(BIN)/pytest -m slow $(PYTEST_ARGS) || slow=$$?; fi; \
	for code in $$fast $$slow; do [ $$code -eq 0 ] || [ $$code -eq 5 ] || exit $$code; done; \
	[ $$fast -eq 0 ] || [ $$slow -eq 0 ] || exit 5

docs: $(BIN)/mkdocs
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8080

docs-build: $(BIN)/mkdocs
	$(BIN)/mkdocs build --strict --site-dir $(SITE_DIR)

bench: $(BIN)/relay
	$(BIN)/python bench/receiver.py
	$(BIN)/python bench/delivery.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis $(SITE_DIR)
