# inferbook: two entry points for a fresh machine.
#   make run   the whole book on the embedded `local` profile, then its static site
#   make test  the test suite (what .ci/run calls); make test-fast: the tests not marked slow
#   make bench the benchmarks' full set, which the book's chapter trims to its quick set on `local`
# Everything they need is installed here: a venv from pyproject.toml + constraints.txt,
# MathJax from package-lock.json, and Chromium (Debian package) for the screenshot test.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= local

.PHONY: run test test-fast bench bench-agent book venv assets browser postgres prometheus constraints regen-reference clean distclean

run: venv assets postgres prometheus buildtools
	$(BIN)/inferbook run --profile $(PROFILE)

test: venv assets browser postgres prometheus buildtools
	$(BIN)/pytest

# The developer's lane: every test not marked slow (no book run, no live stack, no browser).
test-fast: venv assets browser prometheus
	$(BIN)/pytest -m "not slow"

# The benchmarks chapter's full set, whatever the profile's benchmarks.book (the book runs the quick set on
# `local`): both sweeps at the profile's levels, their levels in turn, with GuideLLM's beside them and the paired
# comparison at the direct sweep's knee; then the proxy alone in front of a stub upstream (a gateway and ledger of
# its own, on ports of its own). JSON and CSV under _build/bench/<profile>/. About 9 minutes on `local`, 3 more the
# first time (GuideLLM's environment); the stack is brought up first, or reused.
BENCH_DIR = _build/bench/$(notdir $(basename $(PROFILE)))
bench: venv postgres prometheus buildtools
	$(BIN)/inferbook up --profile $(PROFILE)
	mkdir -p $(BENCH_DIR)
	$(BIN)/inferbook bench --profile $(PROFILE) --target both --guidellm --paired-at knee \
	  --json $(BENCH_DIR)/sweep.json --csv $(BENCH_DIR)/sweep.csv
	$(BIN)/inferbook overhead --profile $(PROFILE) --json $(BENCH_DIR)/overhead.json --csv $(BENCH_DIR)/overhead.csv

# A benchmark, not a test: seeded runs of the coding agent through the running gateway (after `make run`).
bench-agent: venv postgres prometheus buildtools
	$(BIN)/inferbook up --profile $(PROFILE)
	$(BIN)/inferbook bench-agent --profile $(PROFILE) --runs $(or $(RUNS),5)

book: venv assets
	$(BIN)/inferbook book --profile $(PROFILE)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "creating $(VENV) (first time: about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

assets: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# ensure_debian_package(present-check, package, what it is for[, apt-get options[, after a fresh install]]):
# installs a missing Debian package with apt-get, as root or through passwordless sudo (a hosted CI runner);
# otherwise stops with the command to run. The last argument runs only when this call installed the package
# ($$as_root is root's prefix there).
define ensure_debian_package
	@{ $(1); } || { \
	  if [ "$$(id -u)" = 0 ]; then as_root=""; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root="sudo -n"; \
	  else echo "error: the Debian package $(2) is missing ($(3)) and this user cannot install it (not root, no passwordless sudo). Fix: sudo apt-get install $(2), then run make again" >&2; exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "error: $(2) is missing ($(3)) and apt-get is not available. Fix: install $(2) with this system's package manager" >&2; exit 1; }; \
	  echo "installing $(2) (Debian package$${as_root:+, with sudo})"; \
	  $$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(4) $(2) >/dev/null && { $(5) true; } && { $(1); } || { \
	    echo "error: installing $(2) failed ($(3)). Fix: sudo apt-get install $(2), then run make again" >&2; exit 1; }; }
endef

# Chromium renders built pages in the screenshot test.
browser:
	$(call ensure_debian_package,command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1,chromium,the screenshot test)

# A C++ compiler and CMake: the serving layer builds llama.cpp's llama-server once per machine from its pinned source
# (ADR-0036); Ninja, when present, builds it a little faster.
buildtools:
	$(call ensure_debian_package,command -v cmake >/dev/null 2>&1,cmake,building llama-server)
	$(call ensure_debian_package,command -v c++ >/dev/null 2>&1 && command -v cc >/dev/null 2>&1,g++,building llama-server)

# PostgreSQL server binaries for the gateway's spend ledger and its tests;
# the tests run them as the unprivileged `postgres` user on loopback.
postgres:
	$(call ensure_debian_package,ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1,postgresql,the gateway's ledger)

# Prometheus, the server and promtool (Debian's package), for the observability chapter's local target and the
# rules tests; inferbook runs its own Prometheus on local.ports.prometheus. Without the package's recommends (the
# node exporter and its collectors, a second service). Where an init system starts the package's own service on
# install, it would hold port 9090, the local profile's: a fresh install stops and disables it.
PROMETHEUS_SERVICE_OFF = if [ -d /run/systemd/system ]; then $$as_root systemctl disable --now prometheus.service >/dev/null 2>&1; \
	elif [ -x /etc/init.d/prometheus ]; then $$as_root /etc/init.d/prometheus stop >/dev/null 2>&1; \
	$$as_root update-rc.d prometheus disable >/dev/null 2>&1; fi;
prometheus:
	$(call ensure_debian_package,command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1,prometheus,the observability chapter and its rules tests,--no-install-recommends,$(PROMETHEUS_SERVICE_OFF))

# Re-pin the whole environment after changing a dependency in pyproject.toml. Keep every pin installable on
# Python 3.11.2 (Debian 12's python3): soupsieve is held at 2.8.3 (3.x needs the `re` of Python >= 3.11.5).
constraints: venv
	{ echo "# The full resolved environment of .[test], generated by 'make constraints' (pip freeze); installs use it as -c."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt

# Re-record the preflight regression reference after an intended change to the preflight notebook.
regen-reference: venv assets
	$(BIN)/python -m tests.regen_reference

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV) node_modules
