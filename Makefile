# Two commands for a fresh Debian machine with Python 3.11:
#   make run   - set up .venv, install, run the daemon on monitor.example.yaml
#   make test  - install what the tests need (Debian packages too, as root) and run the suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= monitor.example.yaml

.PHONY: run test lint typecheck check-deps schema bench bench-cpu clean

# Two stamps: `make run` installs the runtime only; `make test` adds the test tools.
RUNTIME := $(VENV)/.runtime-installed
TESTING := $(VENV)/.test-installed

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(TESTING): $(RUNTIME)
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: $(RUNTIME)
	@echo "first checks within ~10 s; then: curl -s 127.0.0.1:9834/metrics | grep ^monitor_up"
	$(BIN)/uptime-monitor run --config $(CONFIG)

# Real Prometheus, promtool, Alertmanager and amtool (Debian packages), systemd-analyze, a
# PostgreSQL server and tinyproxy (a forward proxy, for HTTP targets' proxy) run in the
# tests. As root (CI) they are installed; otherwise say what to install. PostgreSQL's
# programs are not on PATH: tests/postgres.py finds them in /usr/lib/postgresql/<version>/bin.
# ip and nft (iproute2, nftables) make the network namespaces whose hosts drop pings
# (tests/netns.py). chromium: the status page's browser tests (Playwright drives Debian's
# /usr/bin/chromium; Playwright's own browser download is never used).
DEBIAN_PACKAGES := prometheus prometheus-alertmanager systemd postgresql tinyproxy iproute2 nftables chromium
check-deps:
	@missing=""; \
	for tool in promtool prometheus prometheus-alertmanager amtool systemd-analyze tinyproxy ip nft chromium; do \
	  command -v $$tool >/dev/null || missing="$$missing $$tool"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing (apt-get: $(DEBIAN_PACKAGES))"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $(DEBIAN_PACKAGES) >/dev/null; \
	  else \
	    echo "missing:$$missing; run: sudo apt-get install $(DEBIAN_PACKAGES)" >&2; exit 1; \
	  fi; \
	fi

test: $(TESTING) check-deps
	$(BIN)/ruff check monitor tests
	$(BIN)/mypy monitor
	$(BIN)/pytest -q

lint: $(TESTING)
	$(BIN)/ruff check monitor tests
	$(BIN)/ruff format --check monitor tests

typecheck: $(TESTING)
	$(BIN)/mypy monitor

schema: $(RUNTIME)
	$(BIN)/uptime-monitor schema > config/monitor.schema.json

bench: $(TESTING)
	$(BIN)/python tests/bench/bench_daemon.py

# Needs nginx, prometheus and prometheus-blackbox-exporter (apt); see tests/bench/README.md.
bench-cpu: $(TESTING)
	$(BIN)/python tests/bench/bench_cpu.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
