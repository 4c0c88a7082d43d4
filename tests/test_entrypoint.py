"""docker/entrypoint.sh run with plain sh, outside any image: a DVC command with no clone
mounted, and the CUDA image without a GPU, each stop with one line saying what to add.

Each run has a fake `dvc`, `mnistbench` and (where a GPU is pretended) `nvidia-smi` first on
PATH, this Python (with PyYAML) next, then the system's tools. The images' own runs of the same
cases are in tests/test_docker.py (make test-all).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
MOUNT_HINT = 'docker run --rm -v "$PWD:/workspace" mnistbench:cpu'

no_host_gpu = pytest.mark.skipif(
    any(Path("/dev").glob("nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None,
    reason="this machine has an NVIDIA GPU: the entry point would see it",
)


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _run(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    gpu: str | None = None,
) -> subprocess.CompletedProcess:
    """The entry point in cwd; gpu: None (no nvidia-smi), "ok" or "broken" (exits 9, as
    without the driver)."""
    fake = cwd.parent / f"{cwd.name}-bin"
    fake.mkdir(exist_ok=True)
    _tool(fake, "dvc", 'echo "ran: dvc $*"')
    _tool(fake, "mnistbench", 'echo "ran: mnistbench $*"')
    if gpu is not None:
        _tool(fake, "nvidia-smi", "echo 'GPU 0: fake'" if gpu == "ok" else "exit 9")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MNISTBENCH_")}
    path = f"{fake}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        cwd=cwd,
        env={**base, "PATH": path, "MNISTBENCH_KEEP_ROOT": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _clone(tmp: Path, device: str = "auto") -> Path:
    clone = tmp / "workspace"
    (clone / ".dvc").mkdir(parents=True)
    (clone / "params.yaml").write_text(f"train:\n  epochs: 1\n  device: {device}\n")
    return clone


CUDA_IMAGE = {"MNISTBENCH_EXPECT_GPU": "1", "MNISTBENCH_IMAGE": "mnistbench:cuda"}


def test_no_clone_says_what_to_mount(tmp_path):
    empty = tmp_path / "workspace"
    empty.mkdir()
    run = _run(empty)  # the default command: dvc repro
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: no clone"), run.stderr
    assert MOUNT_HINT in run.stderr and str(empty) in run.stderr


def test_no_clone_in_the_cuda_image_names_gpus_too(tmp_path):
    empty = tmp_path / "workspace"
    empty.mkdir()
    run = _run(empty, "dvc", "metrics", "show", env=CUDA_IMAGE)
    assert run.returncode == 1 and "ran:" not in run.stdout
    assert 'docker run --gpus all --rm -v "$PWD:/workspace" mnistbench:cuda' in run.stderr


def test_commands_other_than_dvc_need_no_clone(tmp_path):
    empty = tmp_path / "workspace"
    empty.mkdir()
    run = _run(empty, "mnistbench", "--help")
    assert run.returncode == 0 and run.stdout == "ran: mnistbench --help\n", run.stderr


def test_a_clone_runs_the_pipeline(tmp_path):
    clone = _clone(tmp_path)
    (clone / "sub").mkdir()
    assert _run(clone).stdout == "ran: dvc repro\n"
    assert _run(clone / "sub", "dvc", "status").stdout == "ran: dvc status\n"  # DVC looks up


@no_host_gpu
@pytest.mark.parametrize("gpu", [None, "broken"])
def test_cuda_image_without_gpu_stops(tmp_path, gpu):
    run = _run(_clone(tmp_path), env=CUDA_IMAGE, gpu=gpu)
    assert run.returncode == 1 and run.stdout == "", run.stdout
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: no GPU visible")
    assert 'docker run --gpus all --rm -v "$PWD:/workspace" mnistbench:cuda' in run.stderr
    assert "MNISTBENCH_EXPECT_GPU=0" in run.stderr


@no_host_gpu
def test_cuda_image_without_gpu_stops_a_timed_stage(tmp_path):
    run = _run(_clone(tmp_path), "mnistbench", "train", "jax-scan", env=CUDA_IMAGE)
    assert run.returncode == 1 and "error: no GPU visible" in run.stderr


def test_cuda_image_with_gpu_runs(tmp_path):
    run = _run(_clone(tmp_path), env=CUDA_IMAGE, gpu="ok")
    assert run.returncode == 0 and run.stdout == "ran: dvc repro\n", run.stderr


@no_host_gpu
@pytest.mark.parametrize("device", ["cpu", "cuda"])  # cuda: the frameworks' own error
def test_cuda_image_without_gpu_runs_when_params_name_the_device(tmp_path, device):
    run = _run(_clone(tmp_path, device), env=CUDA_IMAGE)
    assert run.returncode == 0 and run.stdout == "ran: dvc repro\n", run.stderr


@no_host_gpu
def test_cuda_image_without_gpu_reads_the_commands_params(tmp_path):
    clone = _clone(tmp_path)  # params.yaml: auto
    (clone / "p-cpu.yaml").write_text("train:\n  device: cpu\n")
    for args in (["--params", "p-cpu.yaml"], ["--params=p-cpu.yaml"]):
        run = _run(clone, "mnistbench", "train", "jax-scan", *args, env=CUDA_IMAGE)
        assert run.returncode == 0 and run.stdout.startswith("ran: mnistbench train"), run.stderr
    run = _run(clone, "mnistbench", "train", "jax-scan", "--params", env=CUDA_IMAGE)  # no value
    assert run.returncode == 1 and "error: no GPU visible" in run.stderr


@no_host_gpu
def test_cuda_image_without_gpu_runs_on_request_or_untimed(tmp_path):
    clone = _clone(tmp_path)
    run = _run(clone, env={**CUDA_IMAGE, "MNISTBENCH_EXPECT_GPU": "0"})
    assert run.returncode == 0 and run.stdout == "ran: dvc repro\n", run.stderr
    run = _run(clone, "dvc", "metrics", "show", env=CUDA_IMAGE)  # nothing timed
    assert run.returncode == 0 and run.stdout == "ran: dvc metrics show\n", run.stderr


@no_host_gpu
def test_cpu_image_without_gpu_runs(tmp_path):
    run = _run(_clone(tmp_path))
    assert run.returncode == 0 and run.stdout == "ran: dvc repro\n", run.stderr


def test_dockerfiles_set_the_expectation():
    """Only the CUDA image expects a GPU."""
    cuda = (ROOT / "docker" / "Dockerfile.cuda").read_text()
    cpu = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    assert "MNISTBENCH_EXPECT_GPU=1" in cuda and "MNISTBENCH_EXPECT_GPU" not in cpu
