# The two commands of the README's quick start: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install up test test-unit bench clean

# Create the virtual environment and install the package with its test tools. Re-runs when
# pyproject.toml changes.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(INSTALLED)

install: $(INSTALLED)

# Start the server on 127.0.0.1:8400 with a demo engine (a tiny model and two adapters).
up: install
	$(VENV)/bin/enginehouse up --demo

# The whole suite: unit tests, then integration tests with real servers and replicas.
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The serving benchmark (bench/README.md): enginehouse against its baselines, 6 to 30 minutes on
# 2 cores; writes bench/results/latest.json and latest.md. BENCH_ARGS="--quick" for a smoke run,
# BENCH_ARGS="--only tasks" (or textgen, or control) for one part.
BENCH_INSTALLED := $(VENV)/.installed-bench
BENCH_ARGS ?=

$(BENCH_INSTALLED): $(INSTALLED) pyproject.toml
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_INSTALLED)

bench: $(BENCH_INSTALLED)
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
