# creditgate — build, run and test. GNU make; recipes run under bash.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# python3.11 when it exists, otherwise python3 (the venv target checks it is 3.11 or newer).
PY ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
PORT ?= 50051
REDIS_PORT ?= 6399
METRICS_PORT ?= 9464
LEDGER_METRICS_PORT ?= 9465

VENV_STAMP := $(VENV)/.installed
BUILD_STAMP := build/.hotpath-ext.stamp

.PHONY: promtool help venv build redis-server postgres-check run test lint proto bench bench-tools clean distclean

help:
	@echo "creditgate make targets:"
	@echo "  make run        venv + build, private redis under ./var (unless REDIS_URL is set),"
	@echo "                  a development CA and certificates under ./var/tls, gateway with mutual"
	@echo "                  TLS on 127.0.0.1:$(PORT), demo client as its callers; Ctrl-C stops."
	@echo "                  Metrics: http://127.0.0.1:$(METRICS_PORT)/metrics (gateway) and"
	@echo "                  http://127.0.0.1:$(LEDGER_METRICS_PORT)/metrics (ledger worker); logs as text."
	@echo "                  RUN_ONCE=1 exits after the demo with its status."
	@echo "  make test       ruff, the pytest suite, then tests/hotpath again without extensions"
	@echo "  make venv       create $(VENV) and install the project with its dev extra"
	@echo "  make build      compile the Cython extension creditgate.hotpath._plan_c in place"
	@echo "  make redis-server  make sure the redis-server binary is installed"
	@echo "  make lint       ruff check"
	@echo "  make proto      regenerate gateway/pb from proto/"
	@echo "  make bench      hot-path benchmarks (pytest-benchmark) and the ledger posting benchmark"
	@echo "                  then max-rate (h2load) and open-loop latency of Authorize (var/bench/),"
	@echo "                  batch rate, the cost of mutual TLS, overload and the scripts' cost"
	@echo "  make bench-tools  make sure h2load (Debian: nghttp2-client) and valgrind are installed"
	@echo "  make clean      remove build artefacts, hotpath/*.so and var/ (keeps $(VENV))"
	@echo "  make distclean  clean, and remove $(VENV)"
	@echo "Variables: PY=$(PY) PORT=$(PORT) REDIS_PORT=$(REDIS_PORT) REDIS_URL=$(REDIS_URL)"
	@echo "           METRICS_PORT=$(METRICS_PORT) LEDGER_METRICS_PORT=$(LEDGER_METRICS_PORT)"

venv: $(VENV_STAMP)

# The project is installed with CREDITGATE_NO_EXTENSIONS=1: the extension is compiled in place
# by `build`, which tracks the .pyx, so this step never depends on the state of hotpath/.
$(VENV_STAMP): pyproject.toml setup.py
	@if [ ! -x $(VENV)/bin/python ]; then \
	  if ! command -v $(PY) >/dev/null 2>&1; then \
	    echo "error: $(PY) not found. Install Python 3.11 (apt-get install python3.11 python3.11-venv)" \
	         "or run make PY=/path/to/python3.11" >&2; exit 1; \
	  fi; \
	  if ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	    echo "error: $(PY) is Python $$($(PY) -c 'import platform; print(platform.python_version())');" \
	         "creditgate needs 3.11 or newer. Run make PY=/path/to/python3.11" >&2; exit 1; \
	  fi; \
	  echo "creating $(VENV) with $$(command -v $(PY))"; \
	  $(PY) -m venv $(VENV) || { echo "error: venv creation failed; on Debian/Ubuntu install python3-venv" >&2; exit 1; }; \
	fi
	@$(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: $(VENV) has Python older than 3.11; run make distclean" >&2; exit 1; }
	CREDITGATE_NO_EXTENSIONS=1 $(VENV)/bin/python -m pip install -e '.[dev]'
	touch $@

build: $(BUILD_STAMP)

$(BUILD_STAMP): hotpath/_plan_c.pyx $(wildcard hotpath/*.pxd) setup.py $(VENV_STAMP)
	$(VENV)/bin/python setup.py build_ext --inplace
	@mkdir -p $(dir $@)
	touch $@

redis-server:
	@if command -v redis-server >/dev/null 2>&1; then \
	  echo "redis-server: $$(command -v redis-server)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "redis-server not found; installing it: apt-get update && apt-get install -y redis-server"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
	else \
	  echo "error: redis-server is not installed. Install it with:" >&2; \
	  echo "    sudo apt-get install redis-server" >&2; \
	  echo "or point make run at an existing server with REDIS_URL=redis://host:port/0" >&2; \
	  exit 1; \
	fi

# The redis-server binary is needed only for the private server started when REDIS_URL is unset.
run: build $(if $(REDIS_URL),,redis-server)
	VENV=$(VENV) PORT=$(PORT) REDIS_PORT=$(REDIS_PORT) METRICS_PORT=$(METRICS_PORT) \
	  LEDGER_METRICS_PORT=$(LEDGER_METRICS_PORT) scripts/run.sh

# The ledger's PostgreSQL tests use CREDITGATE_TEST_PG_DSN; without a server they are skipped,
# except under CI=true, where they fail.
PG_DSN := $(or $(CREDITGATE_TEST_PG_DSN),postgresql://postgres@127.0.0.1:5432/test)

postgres-check: venv
	@if $(VENV)/bin/python -c "import asyncio, asyncpg; asyncio.run(asyncio.wait_for(asyncpg.connect('$(PG_DSN)'), 5))" >/dev/null 2>&1; then \
	  echo "postgresql: reachable at $(PG_DSN)"; \
	else \
	  echo "postgresql: NOT reachable at $(PG_DSN); the ledger's PostgreSQL tests will be" \
	       "skipped (CI=true fails them). To run them: sudo apt-get install postgresql," \
	       "create a database, and set CREDITGATE_TEST_PG_DSN=postgresql://USER@HOST:PORT/DB"; \
	fi

# h2load is needed by tests/bench/test_maxrate.py: installed when possible, otherwise those
# tests are skipped (under CI=true they fail).
test: build redis-server postgres-check
	@$(MAKE) --no-print-directory bench-tools || \
	  echo "note: h2load is missing; tests/bench/test_maxrate.py will be skipped (CI=true fails them)"
	@$(MAKE) --no-print-directory promtool || \
	  echo "note: promtool is missing; tests/deploy check the alert rules' structure only"
	$(VENV)/bin/ruff check .
	CREDITGATE_EXPECT_EXTENSIONS=1 $(VENV)/bin/python -m pytest
	@if [ -d tests/hotpath ]; then \
	  echo "CREDITGATE_NO_EXTENSIONS=1 $(VENV)/bin/python -m pytest tests/hotpath -q"; \
	  CREDITGATE_NO_EXTENSIONS=1 $(VENV)/bin/python -m pytest tests/hotpath -q; \
	fi

lint: venv
	$(VENV)/bin/ruff check .

proto: venv
	$(VENV)/bin/python proto/generate.py

# Every runner writes its figures as JSON under BENCH_DIR, then bench/report.py rewrites the
# summary of BENCH_DOC from them (between its bench:summary markers). Old JSON is removed
# first, so a runner that fails leaves "not measured" in the doc, never an older figure. Every
# runner runs even after one fails, and so does the report; then make fails, naming the failed
# runners (and the report, if it could not read a file). Ctrl-C stops at once. pytest
# collecting no benchmark (exit 5) is a failure too: the hot path's figures would be missing.
BENCH_DIR := var/bench
BENCH_DOC := docs/benchmarks.md

bench: build redis-server bench-tools
	@mkdir -p $(BENCH_DIR) && rm -f $(BENCH_DIR)/*.json $(BENCH_DIR)/openloop.png $(BENCH_DIR)/overload.png
	@trap 'echo "bench: interrupted" >&2; exit 130' INT TERM; \
	failed=(); \
	for command in \
	  "$(VENV)/bin/python -m pytest bench --benchmark-enable -q --benchmark-json $(BENCH_DIR)/hotpath.json" \
	  "$(VENV)/bin/python bench/ledger_bench.py --workers 1 --json $(BENCH_DIR)/ledger_1.json" \
	  "$(VENV)/bin/python bench/ledger_bench.py --workers 2 --json $(BENCH_DIR)/ledger_2.json" \
	  "$(VENV)/bin/python bench/memory.py --json $(BENCH_DIR)/memory.json" \
	  "$(VENV)/bin/python bench/maxrate.py --json $(BENCH_DIR)/maxrate.json" \
	  "$(VENV)/bin/python bench/openloop.py --maxrate-json $(BENCH_DIR)/maxrate.json --json $(BENCH_DIR)/openloop.json --plot $(BENCH_DIR)/openloop.png" \
	  "$(VENV)/bin/python bench/batch_rate.py --json $(BENCH_DIR)/batch_rate.json" \
	  "$(VENV)/bin/python bench/mtls_cost.py --json $(BENCH_DIR)/mtls_cost.json" \
	  "$(VENV)/bin/python bench/metrics_cost.py --json $(BENCH_DIR)/metrics_cost.json" \
	  "$(VENV)/bin/python bench/metrics_instructions.py --json $(BENCH_DIR)/metrics_instructions.json" \
	  "$(VENV)/bin/python bench/call_profile.py --json $(BENCH_DIR)/call_profile.json" \
	  "$(VENV)/bin/python bench/overload.py --json $(BENCH_DIR)/overload.json --plot $(BENCH_DIR)/overload.png" \
	  "$(VENV)/bin/python bench/script_cost.py --json $(BENCH_DIR)/script_cost.json" \
	  "$(VENV)/bin/python bench/script_cost.py --callgrind --segments --json $(BENCH_DIR)/script_cost_callgrind.json"; \
	do \
	  echo "$$command"; rc=0; $$command || rc=$$?; \
	  if [ $$rc -eq 130 ]; then echo "bench: interrupted" >&2; exit 130; fi; \
	  if [ $$rc -ne 0 ]; then failed+=("$$command (exit $$rc)"); fi; \
	done; \
	echo "$(VENV)/bin/python bench/report.py --bench-dir $(BENCH_DIR) --doc $(BENCH_DOC)"; \
	$(VENV)/bin/python bench/report.py --bench-dir $(BENCH_DIR) --doc $(BENCH_DOC) || \
	  failed+=("bench/report.py (exit $$?)"); \
	echo "bench: figures in $(BENCH_DIR)/*.json, summary written to $(BENCH_DOC)"; \
	if [ $${#failed[@]} -gt 0 ]; then \
	  printf 'bench: FAILED: %s\n' "$${failed[@]}" >&2; exit 1; \
	fi

# h2load, the HTTP/2 load generator of bench/maxrate.py (and of tests/bench/test_maxrate.py),
# and valgrind, whose callgrind counts bench/script_cost.py's instructions inside redis-server.
bench-tools:
	@if ! command -v valgrind >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "valgrind not found; installing it: apt-get install -y valgrind"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind || \
	      { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind; }; \
	  else \
	    echo "warning: valgrind is not installed (bench/script_cost.py --callgrind needs it):" >&2; \
	    echo "    sudo apt-get install valgrind" >&2; \
	  fi; \
	fi
	@if command -v h2load >/dev/null 2>&1; then \
	  echo "h2load: $$(command -v h2load) ($$(h2load --version))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "h2load not found; installing it: apt-get install -y nghttp2-client"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y nghttp2-client || \
	    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nghttp2-client; }; \
	else \
	  echo "error: h2load is not installed, and installing it needs root. Install it with:" >&2; \
	  echo "    sudo apt-get install nghttp2-client" >&2; \
	  exit 1; \
	fi

# promtool (Debian's prometheus package, without its recommends) checks deploy/'s alert rules
# and Prometheus configuration in tests/deploy; without it those tests check the structure.
promtool:
	@if command -v promtool >/dev/null 2>&1; then \
	  echo "promtool: $$(command -v promtool)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "promtool not found; installing it: apt-get install -y --no-install-recommends prometheus"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus || \
	    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }; \
	else \
	  echo "promtool is not installed; to check the alert rules with it:" >&2; \
	  echo "    sudo apt-get install --no-install-recommends prometheus" >&2; \
	  exit 1; \
	fi

clean:
	@# A private redis left running by an interrupted `make run` would keep writing into var/.
	@if [ -f var/redis/redis.pid ] && kill -0 "$$(cat var/redis/redis.pid)" 2>/dev/null; then \
	  echo "stopping the private redis-server (pid $$(cat var/redis/redis.pid))"; \
	  kill "$$(cat var/redis/redis.pid)"; sleep 1; \
	fi
	rm -rf build/ dist/ *.egg-info var/ .pytest_cache/ .ruff_cache/ .hypothesis/ .benchmarks/
	rm -f hotpath/*.so hotpath/_plan_c.c hotpath/*.html
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
