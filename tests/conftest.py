"""Shared fixtures. torch's triton must load before TensorFlow in one process: triton loaded
after TensorFlow segfaults (seen with torch 2.14 and TensorFlow 2.21; see frameworks.tensorflow)."""

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
