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


# `make test` is the contributors' check (minutes); `make test-all` (CI: .ci/run) sets
# MNISTBENCH_TEST_ALL=1 and runs these too. Elsewhere they are skipped, and pytest's summary
# names the command, rather than deselected without a word:
#   - tests marked docker: build and run the images (GBs of disk, a Docker daemon);
#   - tests marked long, and those listed in LONG: whole workflows end to end (each a minute or
#     more of CPU on 2 cores: `dvc repro` of every stage, twice, or a queued sweep), whose parts
#     the other tests cover one by one.
TEST_ALL_VAR = "MNISTBENCH_TEST_ALL"
LONG = (
    "tests/test_compare.py::test_branches_compare_with_dvc_metrics_and_plots_diff",
    "tests/test_sweep.py::test_queued_sweep_end_to_end",
    "tests/test_run_cuda.py::test_run_cuda_script_writes_a_complete_report",
)
SKIP_REASONS = {
    "docker": "builds and runs the Docker images: `make test-all` runs it",
    "long": "end-to-end run of a whole workflow (minutes): `make test-all` runs it",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("[")[0] in LONG:
            item.add_marker(pytest.mark.long)
    if os.environ.get(TEST_ALL_VAR) == "1":
        return
    for item in items:
        for marker, reason in SKIP_REASONS.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
                break
