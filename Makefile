# Entry points (README):
#   make repro      the pipeline (`dvc repro`)
#   make test       contributors' check: lint, then every test that needs no Docker (minutes);
#                   writes only inside the clone (.venv/, caches) and installs nothing on the system
#   make test-all   CI's suite (.ci/run): `make test` plus the Docker images built and run
#                   (docker/ci.py, docs/docker.md: a Docker daemon, ~25 GB free disk, ~35 min)
# Each creates .venv if missing and installs the pinned requirements into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install repro quick test test-all lint format clean docker-cpu docker-cuda docker-test

# The host gets the runtime requirements and the test and lint tools (requirements-dev.txt);
# the images get the runtime ones only. pip (which reads this machine's pip settings) installs
# uv, pinned; uv installs the requirements, downloading and unpacking on every core: ~50 s from
# an empty cache on 2 cores, where pip took ~3.3 min. uv reads its own settings (UV_INDEX_URL,
# UV_EXTRA_INDEX_URL, ...), not pip's. Its cache stays in the clone, under .venv/, and costs no
# disk of its own: the installed files are hard links to it.
UV_VERSION := 0.13.9
UV := $(BIN)/uv pip install --python $(BIN)/python
export UV_CACHE_DIR ?= $(abspath $(VENV))/uv-cache
# PyTorch's build (scripts/install.sh): TORCH_BACKEND=auto takes its CPU build on Linux without
# an NVIDIA GPU (no nvidia-* or triton: 4.1 GB of a 7.9 GB .venv, measured with PyPI's build),
# PyPI's (CUDA) otherwise, and PyPI's when PyTorch's index cannot be reached (decided in under
# a second for a refused port or an unknown host, 5 s at most), saying so; cpu or cuda force one.
# A wrong TORCH_BACKEND stops it first, before the venv, pip or uv is touched.
TORCH_BACKEND ?= auto
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml scripts/install.sh
	TORCH_BACKEND=$(TORCH_BACKEND) scripts/install.sh --check
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" "uv==$(UV_VERSION)"
	TORCH_BACKEND=$(TORCH_BACKEND) scripts/install.sh $(BIN)/python -r requirements-dev.txt -c constraints.txt
	$(UV) --no-deps -e .
	touch $@

# Python's bytecode, for every command make runs, is written under .venv/ (never beside the
# sources) when a module is first imported: make test imports 7,700 of the 17,000 files
# installed, so compiling all of them at install (45 s on 2 cores) would cost more than it
# saves. Where PYTHONDONTWRITEBYTECODE is set, nothing would be kept and each process would
# compile all it imports again (make test took 306 s instead of 222 s in one process), so
# make's commands drop it: they write the cache, but only there.
export PYTHONPYCACHEPREFIX ?= $(abspath $(VENV))/var/pycache
unexport PYTHONDONTWRITEBYTECODE

install: $(STAMP)

repro: install
	dvc repro

# The whole pipeline on a subset (2,000 / 500 images, 2 epochs): a check that everything runs
# here. The data stages are DVC's own (the full MNIST and its TFDS build, in DVC's cache and
# dvc.lock, so a later `make repro` or `dvc exp run` does not fetch and build them again);
# every timed stage runs as a plain command into build/quick/, so metrics/ and their records in
# dvc.lock are left alone. Report: build/quick/metrics/summary.md.
QUICK := build/quick
quick: install
	mnistbench params $(QUICK)/params.yaml --set data.limit_train=2000 \
		--set data.limit_test=500 --set train.epochs=2
	dvc repro download build_tfds
	mnistbench machine --out $(QUICK)/metrics/machine.json
	for b in $$(mnistbench backends); do \
		mnistbench train $$b --params $(QUICK)/params.yaml --out $(QUICK)/metrics || exit 1; \
	done
	mnistbench roofline --params $(QUICK)/params.yaml --out $(QUICK)/metrics
	mnistbench compare --params $(QUICK)/params.yaml --metrics $(QUICK)/metrics \
		--roofline $(QUICK)/metrics/roofline/metrics.json
	mnistbench report --metrics $(QUICK)/metrics

# ruff's settings: pyproject.toml. `make format` rewrites what `make lint` would reject.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Formatting first: it splits what check cannot fix by itself (`a; b`); check --fix may then
# reorder imports, which the second format pass settles. What is left is printed, and fails.
format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# What the tests' tools keep between runs stays in the clone (under .venv/, which git ignores):
# matplotlib's font cache (else ~/.cache/matplotlib) and DVC's site cache (else /var/tmp/dvc).
test test-all docker-test: export MPLCONFIGDIR ?= $(abspath $(VENV))/var/matplotlib
test test-all docker-test: export DVC_SITE_CACHE_DIR ?= $(abspath $(VENV))/var/dvc

# Tests marked docker or long (tests/conftest.py) are skipped here, each with the reason naming
# `make test-all`. The tests run in TEST_JOBS processes (pytest-xdist), each test file in one of
# them (its module fixtures are then made once): ~2.4 min instead of ~4.2 in one process on 2
# cores. Each process holds 1-2 GB (it imports torch, TensorFlow and JAX).
TEST_JOBS ?= 2
test: lint
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

# The same, with the docker and long tests run (tests/conftest.py reads MNISTBENCH_TEST_ALL).
# The docker ones use the Docker daemon that is running, or skip saying there is none; only
# .ci/run lets docker/ci.py install and start one (MNISTBENCH_CI_INSTALL_DOCKER=1, on CI's
# disposable machines).
# In one process: the Docker builds want the cores (and the disk) to themselves.
test-all: lint
	MNISTBENCH_TEST_ALL=1 $(BIN)/python -m pytest

# Only the Docker tests (the same daemon rules as test-all).
docker-test: install
	MNISTBENCH_TEST_ALL=1 $(BIN)/python -m pytest -m docker tests/test_docker.py

# Docker images (README, "Docker"); the version goes into every metrics.json's env.
IMAGE_VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo unknown)
docker-cpu docker-cuda: docker-%:
	docker build -f docker/Dockerfile.$* -t mnistbench:$* \
		--build-arg MNISTBENCH_IMAGE_VERSION=$(IMAGE_VERSION) .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
