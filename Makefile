# sigaudit — the two commands a newcomer needs:
#   make demo   a local registry with signed/unsigned/wrong-key/tampered/revoked images, one scan into
#               SQLite, the table, JSON, HTML report and metrics written to ./demo-out
#   make test   everything CI runs (installs what it needs, starts and stops its own servers)
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
# Debian packages the tests and the demo start as real servers or use as real tools.
APT_NEEDED := docker-registry postgresql prometheus prometheus-pushgateway prometheus-alertmanager chromium etcd-server
# The container image: podman (with runc: crun refuses this machine's cgroups) builds and runs it; mmdebstrap
# makes its Python base from Debian's packages (tests/tools/podman/).
APT_NEEDED += podman runc mmdebstrap
# The evidence tests' RFC 3161 TSA is OpenSSL's own (`openssl ts -reply`, tests/harness/tsa_server.py).
APT_NEEDED += openssl
PYTEST_ARGS ?=

.PHONY: all demo test ci-fresh unit integration lint typecheck tools system-deps venv bench bench-fleet fuzz mutation clean image lock test-optional-peers

all: test

system-deps:
	@missing=""; for p in $(APT_NEEDED); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

tools:
	bash tests/tools/ensure-tools.sh

# localhost/sigaudit:dev in root's podman storage, from the Dockerfile on a base made locally with mmdebstrap
# (cached in ~/.cache/sigaudit-tools/base-<key>); skipped when the image's inputs have not changed.
image: system-deps
	bash tests/tools/podman/build-image.sh

# Regenerate the hashed lock files the image installs from (pip-tools, in its own venv beside the tools).
lock:
	bash tests/tools/lock.sh

demo: system-deps venv
	$(PY) -m tests.harness.demo --out demo-out

lint: venv
	$(VENV)/bin/ruff check scanner reports migrations tests bench
	$(VENV)/bin/mypy

# Each phase says how long it took (tests/tools/phase.sh); `make ci-fresh` collects the figures.
PHASE := bash tests/tools/phase.sh
test:
	@$(PHASE) apt $(MAKE) --no-print-directory system-deps
	@$(PHASE) venv $(MAKE) --no-print-directory venv
	@$(PHASE) tools bash tests/tools/ensure-tools.sh
	@$(PHASE) image bash tests/tools/podman/build-image.sh
	@$(PHASE) lint $(VENV)/bin/ruff check scanner reports migrations tests bench
	@$(PHASE) typecheck $(VENV)/bin/mypy
	@$(PHASE) pytest env -u SIGAUDIT_PHASE_LOG $(PY) -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

# What a new machine does: a clone with no ../shared beside it, HOME (and so every tool, Go module,
# pip and npm cache) empty, then CI=true bash .ci/run; prints the wall time of each phase.
ci-fresh:
	bash tests/tools/ci-fresh.sh

unit: venv
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# Tests of peers that cannot be built from the package registries here (the Go module proxy refuses
# Policy Reporter): not part of make test; they fail, never skip, when their peer is missing.
test-optional-peers: venv tools
	$(PY) -m pytest tests -q -p no:cacheprovider -m optional_peer $(PYTEST_ARGS)

bench: system-deps venv tools
	$(PY) -m bench.run

# 50 clusters x a year on a real PostgreSQL 15 (bench/fleet.py; ~20 min on 2 busy cores). Not part of `make test`.
bench-fleet: system-deps venv
	$(PY) -m bench.fleet --load-days 3 --json bench/results/fleet.json

fuzz: venv
	$(PY) -m tests.fuzz.run $(FUZZ_ARGS)

# Mutation testing of the trust-critical modules (not part of `make test`): one mutant at a time, each
# judged by its module's unit tests; writes mutation-out/summary.md and results.json. Fails under 90%.
# MUTATION_ARGS="--budget 20" for a quick sample, "--module scanner/verify/cosign.py" for one module.
MUTATION_ARGS ?=
mutation: venv
	$(PY) -m tests.tools.mutation --min-score 0.9 $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
