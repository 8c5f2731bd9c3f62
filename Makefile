# The two commands of the README's quick start: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install up test test-unit browser bench clean

# Create the virtual environment and install the package with its test tools. Re-runs when
# pyproject.toml changes.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $(INSTALLED)

install: $(INSTALLED)

# Start the server on 127.0.0.1:8400 with a demo engine (a tiny model and two adapters).
up: install
	$(VENV)/bin/enginehouse up --demo

# The whole suite: unit tests, then integration tests with real servers and replicas.
test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The dashboard's browser tests drive Debian's chromium through Playwright. Installed here where
# apt-get can (as root); elsewhere those tests are skipped and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the dashboard's browser tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "could not install chromium: the dashboard's browser tests will be skipped"; \
	  else echo "chromium is not installed: the dashboard's browser tests will be skipped"; fi; }

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The serving benchmark (bench/README.md): enginehouse against its baselines, about 35 minutes on a
# quiet 2-core machine (the first run installs vLLM into .venv-vllm too, a few minutes more);
# writes bench/results/latest.json, latest.md and the sweep's charts. BENCH_ARGS="--quick" for a
# smoke run, BENCH_ARGS="--only sweep" (or textgen, tasks, control, lifecycle, finetune) for one part.
BENCH_INSTALLED := $(VENV)/.installed-bench
BENCH_ARGS ?=

$(BENCH_INSTALLED): $(INSTALLED) pyproject.toml
	$(PY) -m pip install --quiet -e ".[test,ray,bench]"
	touch $(BENCH_INSTALLED)

bench: $(BENCH_INSTALLED)
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
