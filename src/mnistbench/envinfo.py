"""The environment numbers are recorded with: versions, CPU, threads, GPU, container image.

Cheap to call: package versions come from installed metadata, not from importing frameworks.
`collect()`'s keys are the machine part of metrics.json's `env`: a key added here needs its
line in mnistbench.metrics.ENV_MACHINE (train refuses to write a key the contract lacks).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys

PACKAGES = (
    "torch",
    "torchvision",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "tensorflow-cpu",
    "tensorflow",
    "tensorflow-datasets",
    "grain",
    "opencv-python-headless",
    "numpy",
    "dvc",
    "click",
)
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "XLA_FLAGS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
IMAGE_VARS = ("MNISTBENCH_IMAGE", "MNISTBENCH_IMAGE_VERSION")  # baked into Docker images


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[str]:
    """GPU names from nvidia-smi, without importing a framework; [] when none is visible."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def collect() -> dict:
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "packages": versions(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "thread_env": {k: os.environ[k] for k in THREAD_VARS if k in os.environ},
        "gpus": gpus(),
        "image": os.environ.get("MNISTBENCH_IMAGE", "none (host)"),
        "image_version": os.environ.get("MNISTBENCH_IMAGE_VERSION", ""),
    }
