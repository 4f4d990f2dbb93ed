# Two entry points, each doing all set-up on a fresh machine:
#   make serve   build the demo cohort if missing, then serve the explorer
#   make test    install everything the tests need (Chromium included), then run them all
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
BUNDLE  ?= data/demo
SUBJECTS ?= 500000
PORT    ?= 5006

.PHONY: install serve test bench chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml: the CPU build these machines hold on disk.
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

serve: install
	$(VENV)/bin/lse serve $(BUNDLE) --build-if-missing --subjects $(SUBJECTS) --port $(PORT)

# The browser tests drive Debian's Chromium (Playwright cannot download browsers here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

test: install chromium
	$(PY) -m pytest

bench: install
	for script in tests/benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done
