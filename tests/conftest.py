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
PARAMS = ROOT / "params.yaml"


def repo_backends(
    *names: str, raw: str | Path | None = None, tfds: str | Path | None = None
) -> dict[str, dict]:
    """params.yaml's backends entries ({data, loader, step}: what dvc.yaml's train stage
    needs), only `names` (default: all, in its order), each reading `raw` or `tfds` instead of
    data.raw_dir or data.tfds_dir where given. For a params file a test writes: DVC takes
    only full entries, and a backend reads the folder its entry names."""
    import yaml

    params = yaml.safe_load(PARAMS.read_text())
    entries = params["backends"]
    moved = {params["data"]["raw_dir"]: raw, params["data"]["tfds_dir"]: tfds}
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise KeyError(f"params.yaml has no backend {', '.join(unknown)}")
    return {
        name: {
            **entries[name],
            "data": str(moved.get(entries[name]["data"]) or entries[name]["data"]),
        }
        for name in names or entries
    }


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
#   - tests marked long("why"): whole workflows end to end, or repeats of what `make test`
#     already runs once per backend; the reason says which, with its CPU seconds on 2 cores.
TEST_ALL_VAR = "MNISTBENCH_TEST_ALL"


def long_reason(item) -> str | None:
    """Why a test is left to `make test-all` (its long marker's reason), None if it is not."""
    marker = item.get_closest_marker("long")
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str) or not marker.args[0]:
        raise pytest.UsageError(
            f"{item.nodeid}: say why it is long, with its CPU seconds: "
            '@pytest.mark.long("what it runs (~30 CPU-s)")'
        )
    return marker.args[0]


def _skip_reason(item) -> str | None:
    if "docker" in item.keywords:
        return "builds and runs the Docker images: `make test-all` runs it"
    why = long_reason(item)
    return f"{why}: `make test-all` runs it" if why else None


def pytest_collection_modifyitems(config, items):
    reasons = {item.nodeid: _skip_reason(item) for item in items}  # every marker checked
    if os.environ.get(TEST_ALL_VAR) == "1":
        return
    for item in items:
        if reasons[item.nodeid]:
            item.add_marker(pytest.mark.skip(reason=reasons[item.nodeid]))


@pytest.fixture(autouse=True)
def _thread_settings_restored():
    """A test that trains in this process applies its thread setting to the process (the
    thread variables, the CPU affinity), as each stage does to its own: put them back after
    it, so later tests see the machine as it was."""
    from mnistbench import envinfo

    saved = {k: os.environ.get(k) for k in envinfo.THREAD_VARS}
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if affinity is not None:
        os.sched_setaffinity(0, affinity)
