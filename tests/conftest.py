"""Shared fixtures. torch's triton must load before TensorFlow in one process (DESIGN.md)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if importlib.util.find_spec("torch") is not None:
    import torch._dynamo  # noqa: F401  (loads triton first; TensorFlow then triton segfaults)

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT / "data" / "mirror"


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    """data/raw made by the real download code from the repository's mirror copy."""
    from mnistbench import config, download

    raw = tmp_path_factory.mktemp("raw")
    cfg = config.DataConfig(raw_dir=str(raw), mirrors=(str(MIRROR),))
    download.download_all(cfg, environ={})
    return raw


@pytest.fixture(scope="session")
def tfds_dir(raw_dir, tmp_path_factory) -> Path:
    """data/tfds built by the real TFDS builder from raw_dir."""
    from mnistbench import config, tfds_build

    out = tmp_path_factory.mktemp("tfds") / "tfds"
    tfds_build.build(config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(out)))
    return out


# Tests marked docker build and run the images (minutes, GBs of disk, a Docker daemon): `make
# test-all` runs them (MNISTBENCH_DOCKER_TESTS=1); elsewhere they are skipped, and pytest's
# summary names the command, rather than deselected without a word.
DOCKER_TESTS_VAR = "MNISTBENCH_DOCKER_TESTS"


def pytest_collection_modifyitems(config, items):
    if os.environ.get(DOCKER_TESTS_VAR) == "1":
        return
    skip = pytest.mark.skip(reason="builds and runs the Docker images: `make test-all` runs it")
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(skip)
