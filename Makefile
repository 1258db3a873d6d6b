# Every target creates .venv and installs the pinned set (requirements.lock) when it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench docs lint format clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m nlls demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2

# In the environment as it comes, as users run it: nlls holds OpenBLAS at one thread during its own
# solves (nlls/threads.py); the threads suite compares that with OPENBLAS_NUM_THREADS=1.
bench: $(STAMP)
	$(PY) -m benchmarks

# The documentation site (mkdocs, mkdocs-material, mkdocstrings) into site/; warnings are errors.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c requirements.lock -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build site *.egg-info
