# Lockstep's two everyday commands:
#   make demo   set up from nothing and run the embedded pipeline on the built-in stream
#   make test   set up from nothing, lint, and run every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The browser tests drive Debian's Chromium (tests/test_console_browser.py); `make test`
# installs it when it is missing (as root, as CI runs). Playwright's own browsers are never
# downloaded. Without it those tests fail saying so; the rest still run.
CHROMIUM := /usr/bin/chromium
# The console's charting library (Chart.js, MIT) is installed from the npm registry at
# set-up, never committed: vendor.json pins its version, the tarball's npm integrity
# (sha512) and each file's sha256; `make vendor` (deploy/vendor.py, standard library only)
# downloads and checks it unless it is already installed with those checksums, and fails
# with one line if it cannot. Every target that sets up (.venv/.installed) depends on it.

.PHONY: demo test lint bench clean chromium vendor

$(STAMP): pyproject.toml | vendor
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lockstep run --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint chromium
	$(BIN)/python -m pytest

chromium:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "could not install chromium (apt-get, as root): the browser tests will fail"; }

vendor:
	@$(PYTHON) deploy/vendor.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.throughput
	$(BIN)/python -m benchmarks.memory

clean:
	rm -rf $(VENV) lockstep-out benchmarks/.data
