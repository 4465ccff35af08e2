# Every target sets up what it needs and is safe to run again.
#   make serve       a registered demo model served on http://127.0.0.1:$(PORT)
#   make unit        the tests that need neither an engine nor a second Python environment
#   make test        unit and integration tests (a real Docker engine)
#   make test-all    those and the whole model matrix (MLflow versions x flavors)
#   make engine      start a Docker engine when none answers (Debian, as root)
#   make base-image  Debian bookworm images built with no registry: Python 3.11, HAProxy,
#                    binutils (the strip step of environment builds)
#   make lint        ruff and mypy
#   make bench       benchmarks (figures for the closing notes)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE := .state
BASE_IMAGE := mlflow-dockerhost/base:bookworm-python3.11
PROXY_IMAGE := mlflow-dockerhost/haproxy:bookworm
STRIP_IMAGE := mlflow-dockerhost/binutils:bookworm
PORT ?= 5000
MODEL_URI ?=
DEMO_TRACKING_URI := sqlite:///$(CURDIR)/$(STATE)/demo/mlflow.db
# MLServer and its MLflow runtime, the reference for the V2 protocol (tests/test_v2.py), in a
# virtualenv of their own, at our MLflow, NumPy, pandas and scikit-learn versions.
MLSERVER_VENV := $(STATE)/mlserver-venv

# Tests and the demo build on the local base, strip and front images; users' deployments
# default to python:X.Y-slim, no strip image and haproxy:2.8.
export MLFLOW_DOCKERHOST_BASE_IMAGE ?= $(BASE_IMAGE)
export MLFLOW_DOCKERHOST_PROXY_IMAGE ?= $(PROXY_IMAGE)
export MLFLOW_DOCKERHOST_STRIP_IMAGE ?= $(STRIP_IMAGE)

.PHONY: venv engine base-image mlserver serve unit test test-all test-tools lint bench clean

venv: $(VENV)/.installed

# uv installs what pip would, in a fraction of the time. It compiles the bytecode at install,
# as pip does: where PYTHONDONTWRITEBYTECODE is set, nothing else would, and each test's
# `mlflow` command would compile MLflow again (CI ran 1.5 times slower so).
UV_INSTALL := $(BIN)/python -m uv pip install -q --compile-bytecode
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q uv
	$(UV_INSTALL) --python $(BIN)/python -e '.[dev]'
	touch $@

mlserver: $(MLSERVER_VENV)/.installed

$(MLSERVER_VENV)/.installed: $(VENV)/.installed
	test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	$(BIN)/python -m pip freeze --exclude-editable | \
	  grep -iE '^(mlflow|mlflow-skinny|numpy|pandas|scikit-learn|scipy)==' >$(STATE)/mlserver-pins.txt
	$(UV_INSTALL) --python $(MLSERVER_VENV)/bin/python \
	  mlserver==1.7.1 mlserver-mlflow==1.7.1 scikit-learn -c $(STATE)/mlserver-pins.txt
	touch $@

# A Docker engine: the one DOCKER_HOST / the current context names if it answers; otherwise,
# on Debian as root, docker.io is installed and dockerd started in the background.
engine: venv
	@if $(BIN)/python -c 'import docker; docker.from_env(timeout=5).ping()' 2>/dev/null; then \
	  echo "Docker engine answers."; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  command -v dockerd >/dev/null || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; }; \
	  mkdir -p $(STATE); \
	  echo "Starting dockerd (log: $(STATE)/dockerd.log)"; \
	  nohup dockerd >$(STATE)/dockerd.log 2>&1 & echo $$! >$(STATE)/dockerd.pid; \
	  for i in $$(seq 60); do \
	    $(BIN)/python -c 'import docker; docker.from_env(timeout=5).ping()' 2>/dev/null && \
	      { echo "Docker engine answers."; exit 0; }; sleep 1; done; \
	  tail -20 $(STATE)/dockerd.log; echo "dockerd did not come up" >&2; exit 1; \
	else \
	  echo "No Docker engine answers. Start one (e.g. 'sudo systemctl start docker'), or" \
	       "point DOCKER_HOST at one; 'make engine' can install it only on Debian as root." >&2; \
	  exit 1; \
	fi

base-image: engine
	@command -v mmdebstrap >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
	$(BIN)/python -m mlflow_docker_target.image_build.local_images --kind base --tag $(BASE_IMAGE)
	$(BIN)/python -m mlflow_docker_target.image_build.local_images --kind proxy --tag $(PROXY_IMAGE)
	$(BIN)/python -m mlflow_docker_target.image_build.local_images --kind binutils --tag $(STRIP_IMAGE)

# The demo: a model registered in a local SQLite registry, served with run-local.
serve: base-image
	@if [ -z "$(MODEL_URI)" ]; then \
	  mkdir -p $(STATE)/demo; export MLFLOW_TRACKING_URI=$(DEMO_TRACKING_URI); \
	  uri=$$(cd $(STATE)/demo && $(CURDIR)/$(BIN)/python -m mlflow_docker_target.demo --if-missing | tail -1); \
	else uri="$(MODEL_URI)"; fi; \
	echo "Serving $$uri on http://127.0.0.1:$(PORT) (Ctrl-C stops it)"; \
	exec $(BIN)/mlflow deployments run-local -t dockerhost --name demo -m "$$uri" -C port=$(PORT)

# The remote-engine tests also need a network namespace, openssl, an sshd and curl; the strip
# test needs binutils; the swarm tests Debian's docker-registry; the front's metrics test
# promtool (Debian's prometheus package; nothing of it runs).
test-tools:
	@missing=""; for tool in ip:iproute2 openssl:openssl curl:curl /usr/sbin/sshd:openssh-server strip:binutils docker-registry:docker-registry promtool:prometheus; do \
	  command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool##*:}"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; fi

# The inner loop: no engine, no MLServer or old-MLflow virtualenv, no package index, no Docker
# needed at all; in parallel, each module on one worker (several share a server process per module).
unit: venv
	$(BIN)/python -m pytest -q -n 3 --dist loadscope -m "not engine and not venv and not index and not slow"

# Engine tests one at a time (they share an engine, and some measure it under load), then the
# rest in parallel as in make unit (133 s against about 220 s one at a time). Both always run.
# The slowest engine tests are listed at the end, to keep an eye on CI's 40 minutes.
test: base-image mlserver test-tools
	@status=0; \
	$(BIN)/python -m pytest -q -rs -m "engine and not slow" --durations=15 || status=$$?; \
	$(BIN)/python -m pytest -q -rs -n 3 --dist loadscope -m "not engine and not slow" \
	  || status=$$?; exit $$status

# The model matrix's virtualenvs and models are cached in .state/ between runs.
test-all: base-image mlserver test-tools
	@status=0; \
	$(BIN)/python -m pytest -q -rs -m engine || status=$$?; \
	$(BIN)/python -m pytest -q -rs -n 3 --dist loadscope -m "not engine" || status=$$?; \
	exit $$status

lint: venv
	$(BIN)/ruff check mlflow_docker_target serving_image tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .mypy_cache .ruff_cache

# Figures for the closing notes: deployments (cold/warm create, start-to-ready, image size), the
# server against MLflow's own and a bare FastAPI endpoint under wrk, and local against remote
# engines (create time, predict latency), and what the front costs (through it against a
# replica's own port; its memory; an update's wall time), HTTPS at the front against plain
# (keep-alive req/s; a new TLS connection's cost), and time limits and probes under slow
# models (each input shape on each path; /health while predictions run), and the protocols
# (a stream's first chunk against its whole; V2 against /invocations), and the model matrix
# (each MLflow version and flavor: create times, image size, start-to-ready, predictions), and
# a three-node test swarm against one engine (create time with push; req/s through the front),
# and four creates on one new environment at once against one after another, and the time to
# first token through the front on the OpenAI routes.
bench: base-image test-tools
	@command -v wrk >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -W ignore tests/benchmarks/server.py --rounds 3
	$(BIN)/python -W ignore tests/benchmarks/payload_log.py
	$(BIN)/python tests/benchmarks/deploy.py
	$(BIN)/python -W ignore tests/benchmarks/remote.py
	$(BIN)/python -W ignore tests/benchmarks/endpoints.py
	$(BIN)/python -W ignore tests/benchmarks/https.py
	$(BIN)/python -W ignore tests/benchmarks/hardening.py
	$(BIN)/python -W ignore tests/benchmarks/protocols.py
	$(BIN)/python -W ignore tests/benchmarks/matrix.py
	$(BIN)/python -W ignore tests/benchmarks/swarm.py
	$(BIN)/python -W ignore tests/benchmarks/builds.py
	$(BIN)/python -W ignore tests/benchmarks/first_token.py
