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
# The console's charting library, committed (MIT) with its version and checksum in
# vendor.json; `make vendor` fetches that version again from npm and checks it.
VENDOR := pipeline/console/static/vendor

.PHONY: demo test lint bench clean chromium vendor

$(STAMP): pyproject.toml
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
	@version=$$($(PYTHON) -c "import json; print(json.load(open('$(VENDOR)/vendor.json'))['chart.js']['version'])"); \
	  work=$$(mktemp -d) && cd $$work && npm pack --silent chart.js@$$version >/dev/null && \
	  tar xzf chart.js-$$version.tgz && cd - >/dev/null && \
	  cp $$work/package/dist/chart.umd.min.js $(VENDOR)/chart.umd.min.js && \
	  cp $$work/package/LICENSE.md $(VENDOR)/chart.js.LICENSE.md && rm -rf $$work && \
	  echo "chart.js $$version: sha256 $$(sha256sum $(VENDOR)/chart.umd.min.js | cut -d' ' -f1)" \
	  "(vendor.json records $$($(PYTHON) -c "import json; print(json.load(open('$(VENDOR)/vendor.json'))['chart.js']['sha256'])"))"

bench: $(STAMP)
	$(BIN)/python -m benchmarks.throughput
	$(BIN)/python -m benchmarks.memory

clean:
	rm -rf $(VENV) lockstep-out benchmarks/.data
