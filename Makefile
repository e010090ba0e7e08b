# `make run` and `make test` do all set-up on a fresh Debian/Ubuntu machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Debian packages the test suite drives: a real headless browser and its driver, and a small
# Chinese font so the browser test's screenshots show the dashboard's text.
APT_PACKAGES := chromium chromium-driver fonts-wqy-microhei
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint typecheck bench system-deps clean vendor-echarts

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is required"; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv; }
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,test]'
	touch $@

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

run: $(STAMP)
	$(BIN)/python -m service serve --dev

# Lint first: CI (.ci/run -> make test) fails on a lint error as on a failing test.
# Two pytest-xdist workers, one per core, each with its own embedded database (tests/conftest.py);
# worksteal hands a worker left idle some of the other's queue, so the long tests do not end
# the run on one worker. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
test: lint system-deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check service handlers dashboard tests bench
	$(BIN)/ruff format --check service handlers dashboard tests bench
	$(BIN)/mypy service handlers dashboard
	$(BIN)/mypy tests

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The dashboard's ECharts (static/vendor/build/echarts/README.md): npm's exact versions, one bundle.
vendor-echarts:
	cd static/vendor/build/echarts && npm ci --ignore-scripts --no-audit --no-fund && \
		npm run build && rm -rf node_modules

clean:
	rm -rf $(VENV) build *.egg-info test-artifacts
