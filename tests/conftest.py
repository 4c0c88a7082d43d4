"""Shared fixtures. torch's triton must load before TensorFlow in one process: triton loaded
after TensorFlow segfaults (seen with torch 2.14 and TensorFlow 2.21; see frameworks.tensorflow)."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    """Before any test module is imported, in each process that runs tests. pytest-xdist's
    controller (make test) runs none, so it skips the import (~5 s, before the workers start)."""
    controller = getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput")
    if not controller and importlib.util.find_spec("torch") is not None:
        import torch._dynamo  # noqa: F401  (loads triton first; TensorFlow then triton segfaults)


ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT / "data" / "mirror"


def clone_env(repo: Path) -> dict[str, str]:
    """The environment for running `dvc` and `mnistbench` in a clone of this repository at
    repo: this Python's commands, the clone's src/, MNIST from its mirror copy, a git identity."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(repo / "src"),  # the clone's code, not the editable install's
        "MNIST_MIRRORS": str(repo / "data" / "mirror"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def _made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder that make(path) fills once per test run. Under pytest-xdist (make test runs
    the tests in several processes) the first worker to ask makes it in the run's shared
    temporary folder, and the others wait for it (a file lock) rather than each making a copy."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        path = tmp_path_factory.mktemp(name)
        make(path)
        return path
    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, above each worker's
    path, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # what a failed attempt left
            path.mkdir()
            make(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    """data/raw made by the real download code from the repository's mirror copy."""
    from mnistbench import config, download

    def make(raw: Path) -> None:
        download.download_all(
            config.DataConfig(raw_dir=str(raw), mirrors=(str(MIRROR),)), environ={}
        )

    return _made_once(tmp_path_factory, "raw", make)


@pytest.fixture(scope="session")
def tfds_dir(raw_dir, tmp_path_factory) -> Path:
    """data/tfds built by the real TFDS builder from raw_dir."""
    from mnistbench import config, tfds_build

    def make(parent: Path) -> None:
        tfds_build.build(config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(parent / "tfds")))

    return _made_once(tmp_path_factory, "tfds", make) / "tfds"


# `make test` is the contributors' check (under 5 minutes on 2 cores); `make test-all` (CI:
# .ci/run) sets MNISTBENCH_TEST_ALL=1 and runs these too. Elsewhere they are skipped, and
# pytest's summary names the command, rather than deselected without a word:
#   - tests marked docker: build and run the images (GBs of disk, a Docker daemon);
#   - tests marked long, and those listed in LONG: whole workflows end to end, or repeats of
#     what `make test` already runs once per backend. CPU seconds measured on 2 cores.
TEST_ALL_VAR = "MNISTBENCH_TEST_ALL"
LONG = {
    "tests/test_compare.py::test_branches_compare_with_dvc_metrics_and_plots_diff": (
        "the README's branch workflow, `dvc repro` twice (~325 CPU-s)"
    ),
    "tests/test_sweep.py::test_queued_sweep_end_to_end": "a queued DVC sweep end to end (~1.5 min)",
    "tests/test_run_cuda.py::test_run_cuda_script_writes_a_complete_report": (
        "scripts/gpu/run-cuda.sh end to end (~50 CPU-s)"
    ),
    "tests/test_seed_check.py::test_seed_check_trains_once_per_seed_and_tabulates": (
        "scripts/cpu/seed_check.sh end to end, one training per seed (~30 CPU-s)"
    ),
    "tests/test_backends.py::test_same_seed_gives_the_same_accuracy": (
        "each backend trained twice, for determinism (~55 CPU-s in all)"
    ),
    # `make test` measures the same kernels in-process (test_kernel_parts_are_timed_...)
    "tests/test_roofline.py::test_cli_writes_the_file_compare_reads": (
        "`mnistbench roofline` in its own process, every kernel timed (~31 CPU-s)"
    ),
    # `make test` checks the build's all-or-nothing swap with the child's work faked
    "tests/test_tfds_build.py::test_a_failed_arrayrecord_child_fails_the_build": (
        "a real ArrayRecord child process that fails (~14 s: it imports TensorFlow first)"
    ),
    "tests/test_tfds_build.py::test_a_killed_build_takes_its_child_with_it": (
        "a real build killed once its child has started (~15 s)"
    ),
    # `make test` checks each of its parts' logic on canned inputs
    "tests/test_gpu_profile.py::test_runs_end_to_end_on_a_cpu": (
        "scripts/gpu/gpu_profile.py end to end, each part in its own process (~21 CPU-s)"
    ),
}


def _skip_reason(item) -> str | None:
    if "docker" in item.keywords:
        return "builds and runs the Docker images: `make test-all` runs it"
    why = LONG.get(item.nodeid.split("[")[0])
    if why or "long" in item.keywords:
        return f"{why or 'long'}: `make test-all` runs it"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("[")[0] in LONG:
            item.add_marker(pytest.mark.long)
    if os.environ.get(TEST_ALL_VAR) == "1":
        return
    for item in items:
        reason = _skip_reason(item)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
