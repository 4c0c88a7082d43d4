# Two entry points (README): `make repro` runs the pipeline, `make test` runs the tests.
# Both create .venv if missing and install the pinned requirements first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install repro test lint clean docker-cpu docker-cuda docker-test

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=24"
	$(BIN)/python -m pip install -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

install: $(STAMP)

repro: install
	dvc repro

test: install
	$(BIN)/python -m pytest

# Docker images (README, "Docker"); the version goes into every metrics.json's env.
IMAGE_VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo unknown)
docker-cpu docker-cuda: docker-%:
	docker build -f docker/Dockerfile.$* -t mnistbench:$* \
		--build-arg MNISTBENCH_IMAGE_VERSION=$(IMAGE_VERSION) .

# What `make test` runs through tests/test_docker.py (as root: installs Docker, builds, runs).
docker-test: install
	$(BIN)/python -m pytest -m docker tests/test_docker.py

clean:
	rm -rf $(VENV) .pytest_cache
