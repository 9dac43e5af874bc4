# Hutong — the two commands of the README, plus the benchmark.
#   make demo   create .venv, install, build a small synthetic region, serve it on :8000
#   make test   install (incl. PostgreSQL when missing) and run the whole suite
#   make bench  every benchmark (JSON per benchmark; bench/suite.py), not part of the tests
#   make bench-quick  the same at small sizes
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick lint typecheck clean system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# PostgreSQL is tested for real, and the portals in a real browser: install
# Debian's server and Chromium when they are missing.
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing PostgreSQL (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi
	@if ! command -v chromium >/dev/null 2>&1 || ! ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1; then \
	  echo "installing Chromium and CJK fonts (Debian packages) for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/hutong demo

test: $(STAMP) system-deps
	$(BIN)/ruff check hutong tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check hutong tests bench
	$(BIN)/mypy

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) system-deps
	$(BIN)/python -m bench.suite

bench-quick: $(BENCH_STAMP) system-deps
	$(BIN)/python -m bench.suite --quick

clean:
	rm -rf $(VENV) var build *.egg-info
