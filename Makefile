# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo needs only the SDK and the collector (aiohttp), not the development tools.
DEMO_STAMP := $(VENV)/.installed-demo
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint typecheck unit bench soak clean browser-deps proxy-deps clean-install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[collector,dev]'
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[collector]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/journy demo

# The browser tests drive Debian's chromium (never a browser downloaded by Playwright).
# Quick when it is there; as root, installs it with apt-get; otherwise says how.
browser-deps:
	@if [ -x $(CHROMIUM) ]; then \
		echo "browser-deps: $(CHROMIUM) is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && \
		echo "browser-deps: installed $$($(CHROMIUM) --version 2>/dev/null)"; \
	else \
		echo "browser-deps: no $(CHROMIUM); install it with: sudo apt-get install chromium" >&2; \
		exit 1; \
	fi

# The proxy tests run Debian's tinyproxy on a loopback port (tests/core/test_proxy.py).
# Quick when it is there; as root, installs it with apt-get; otherwise says how.
TINYPROXY := /usr/bin/tinyproxy
proxy-deps:
	@if [ -x $(TINYPROXY) ]; then \
		echo "proxy-deps: $(TINYPROXY) is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy >/dev/null && \
		echo "proxy-deps: installed $$($(TINYPROXY) -v 2>/dev/null)"; \
	else \
		echo "proxy-deps: no $(TINYPROXY); install it with: sudo apt-get install tinyproxy" >&2; \
		exit 1; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck unit

# Build the sdist and wheel, install them in fresh venvs (no extra, then each extra alone)
# and use them as a user would: tools/clean_install.py says what it checks.
clean-install: $(STAMP)
	$(BIN)/python tools/clean_install.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[collector,dev,bench]'
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/python -m pip install --quiet "pyspark>=3.5"
	JOURNY_SOAK=1 $(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
