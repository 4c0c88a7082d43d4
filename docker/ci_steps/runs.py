"""Steps 7 and 8, clone and runs: a clone of the repository on a subset (`mnistbench params`),
MNIST apart, made before the builds; then, after each build, `docker run --network=none` of the
image's default command and a few others."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from ci_steps.common import Settings, log, sh

OWNER_ID = (4242, 4343)  # as root: the clone's owner in the runs, a host user who is not root
OTHER_UID = 5555  # a --user that owns nothing in the clone
SUBSET = (
    "data.limit_train=2000",
    "data.limit_test=500",
    "train.epochs=1",
    "bench.rounds_min=1",
    "bench.rounds_max=1",
)


def step_clone(s: Settings) -> tuple[Path, Path]:
    """(clone, mirror): a clone of the repository's HEAD on a subset (its params.yaml through
    `mnistbench params`), with MNIST moved out to a mirror folder the runs mount read-only."""
    clone, mirror = s.work / "clone", s.work / "mnist"
    for path in (clone, mirror):
        shutil.rmtree(path, ignore_errors=True)
    sh(["git", "clone", "--quiet", s.root, clone], what="git clone")
    mnistbench = [s.python, "-m", "mnistbench", "params"]
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}  # the clone's code, not the host's
    sets = [a for kv in SUBSET for a in ("--set", kv)]
    for out, extra in (("params.yaml", []), ("params-cuda.yaml", ["--set", "train.device=cuda"])):
        sh(
            [*mnistbench, out, "--params", "params.yaml", *sets, *extra],
            cwd=clone,
            env=env,
            what=f"mnistbench params {out}",
            reproduce=f"cd {clone} && PYTHONPATH=src mnistbench params {out} "
            f"--params params.yaml {shlex.join(sets + extra)}",
        )
    # MNIST must come from the mounted mirror, through MNIST_MIRRORS: none in the clone
    shutil.move(clone / "data" / "mirror", mirror)
    uid, gid = OWNER_ID if os.geteuid() == 0 else (os.getuid(), os.getgid())
    if os.geteuid() == 0:
        sh(["chown", "-R", f"{uid}:{gid}", clone])
    (s.work / "owner_uid").write_text(f"{uid}\n")
    return clone, mirror


CUDA_FRAMEWORKS = """
import importlib.metadata as md, json, os
import jax, torch
print(json.dumps({
    "jax_cuda_plugin": md.version("jax-cuda13-plugin"),
    "jax_backend": jax.default_backend(),
    "torch_cuda": torch.version.cuda,
    "torch_cuda_available": torch.cuda.is_available(),
    "preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
    "image": os.environ.get("MNISTBENCH_IMAGE"),
}))
"""
TORCH_BUILD = (
    "import json, torch; "
    'print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda}))'
)


def runs(s: Settings, clone: Path, mirror: Path) -> dict[str, list[str]]:
    """name: `docker run --rm --network=none` arguments. tests/test_docker.py reads the logs."""
    mount = ["-v", f"{clone}:/workspace"]
    backend = next(iter(yaml.safe_load((clone / "params.yaml").read_text())["backends"]))
    train_cuda = ["mnistbench", "train", backend, "--params", "params-cuda.yaml", "--out", "/tmp/m"]
    chosen = {
        "pipeline": [
            *mount,
            "-v",
            f"{mirror}:/mnist:ro",
            "-e",
            "MNIST_MIRRORS=/mnist",
            "mnistbench:cpu",
        ],
        "help": ["mnistbench:cpu", "mnistbench", "--help"],
        "env": [*mount, "mnistbench:cpu", "mnistbench", "env"],
        "other-user": [
            *mount,
            "--user",
            f"{OTHER_UID}:{OTHER_UID}",
            "mnistbench:cpu",
            "sh",
            "-c",
            "id -u && git rev-parse HEAD && dvc metrics show --json",
        ],
        "cuda-param-cpu-image": [*mount, "mnistbench:cpu", *train_cuda],
        "torch-cpu-image": ["mnistbench:cpu", "python", "-c", TORCH_BUILD],
        "no-clone": ["mnistbench:cpu"],  # the pipeline with nothing mounted: one line, exit 1
    }
    if s.build_cuda:
        chosen["cuda-frameworks"] = ["mnistbench:cuda", "python", "-c", CUDA_FRAMEWORKS]
        chosen["cuda-param-cuda-image"] = [*mount, "mnistbench:cuda", *train_cuda]
        chosen["cuda-no-gpu"] = [*mount, "mnistbench:cuda"]  # no --gpus all: stops, exit 1
        chosen["cuda-no-gpu-on-request"] = [
            *mount,
            *["-e", "MNISTBENCH_EXPECT_GPU=0", "mnistbench:cuda", "dvc", "repro", "--dry"],
        ]
    return chosen


def step_runs(s: Settings, clone: Path, mirror: Path, image: str) -> None:
    """The runs of mnistbench:`image`, each one's output in logs/<name>.log, its exit status in
    logs/<name>.rc: a non-zero one is for the tests to judge (some runs must fail cleanly)."""
    for name, args in runs(s, clone, mirror).items():
        if f"mnistbench:{image}" not in args:
            continue
        cmd = ["docker", "run", "--rm", "--network=none", *args]
        t0 = time.monotonic()
        try:
            with open(s.logs / f"{name}.log", "w") as out:
                rc = subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, timeout=1200
                ).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        (s.logs / f"{name}.rc").write_text(f"{rc}\n")
        (s.logs / f"{name}.cmd").write_text(shlex.join(cmd) + "\n")
        s.times[f"run {name}"] = round(time.monotonic() - t0, 1)
        log(f"run {name}: exit {rc} in {s.times[f'run {name}']:.0f} s")
