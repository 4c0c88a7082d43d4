"""One snapshot of the environment the numbers are measured in: versions, CPU, GPUs, threads,
container image. Both records are made from it: a run's `env` (`collect()`) and the machine
fingerprint (mnistbench.machine), so each fact is read once, in one way.

Cheap to call: package versions come from installed metadata, not from importing frameworks.
`collect()`'s keys are the machine part of metrics.json's `env`: a key added there needs its
line in mnistbench.metrics.ENV_MACHINE (train refuses to write a key the contract lacks).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

# The distributions recorded, in the order they are listed.
PACKAGES = (
    "torch",
    "torchvision",
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "flax",
    "optax",
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-datasets",
    "grain",
    "numpy",
    "opencv-python-headless",
    "dvc",
    "click",
)
ORCHESTRATION = ("dvc", "click")  # of PACKAGES, those that only orchestrate: no timing owes them
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "XLA_FLAGS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
# Instruction-set extensions that change matmul and element-wise kernel speed.
CPU_FLAGS = (
    # x86
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    # Arm
    "asimd",
    "asimdhp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)
GIB = 2**30
NO_IMAGE = "none (host)"  # `image` outside the Docker images, which set MNISTBENCH_IMAGE


@dataclasses.dataclass(frozen=True)
class Snapshot:
    python: str
    implementation: str
    platform: str
    arch: str
    packages: dict[str, str]  # the installed ones of PACKAGES, in PACKAGES' order
    cpu: str  # the CPU model
    cpu_flags: list[str]  # the CPU_FLAGS this CPU has
    cpu_count: int | None  # CPUs of the machine (None when the OS cannot tell)
    cpus_usable: int | None  # CPUs this process may run on (None without an affinity API)
    cpu_quota: float | None  # a cgroup CPU limit in CPUs; None for none
    memory_gib: int | None
    gpus: list[str]  # "name, memory, driver" per GPU; [] when none is visible
    thread_env: dict[str, str]  # the THREAD_VARS that are set
    image: str  # MNISTBENCH_IMAGE, baked into the Docker images; NO_IMAGE on the host
    image_version: str  # MNISTBENCH_IMAGE_VERSION; "" on the host


def snapshot() -> Snapshot:
    """The environment now: every environment variable and file read once, here."""
    return Snapshot(
        python=platform.python_version(),
        implementation=sys.implementation.name,
        platform=platform.platform(),
        arch=platform.machine(),
        packages=versions(),
        cpu=cpu_model(),
        cpu_flags=cpu_flags(),
        cpu_count=os.cpu_count(),
        cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        cpu_quota=cpu_quota(),
        memory_gib=memory_gib(),
        gpus=gpus(),
        thread_env={k: os.environ[k] for k in THREAD_VARS if k in os.environ},
        image=os.environ.get("MNISTBENCH_IMAGE", NO_IMAGE),
        image_version=os.environ.get("MNISTBENCH_IMAGE_VERSION", ""),
    )


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


def cpu_flags() -> list[str]:
    """The CPU_FLAGS this CPU has, from /proc/cpuinfo (x86: flags, Arm: Features); [] elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    have = set(value.split())
                    return [flag for flag in CPU_FLAGS if flag in have]
    except OSError:
        pass
    return []


CGROUP = Path("/sys/fs/cgroup")  # where the cgroup file system is mounted, v1 or v2


def cpu_quota(root: Path = CGROUP) -> float | None:
    """A cgroup CPU limit in CPUs (`docker run --cpus 1.5` gives 1.5), or None for none.
    cgroup v2: cpu.max ("max 100000" or "150000 100000"); v1: the cpu controller's
    cpu.cfs_quota_us (-1: no limit) over cpu.cfs_period_us."""
    try:
        quota, period = (root / "cpu.max").read_text().split()
        return None if quota == "max" else round(int(quota) / int(period), 2)
    except (OSError, ValueError):
        pass
    for controller in ("cpu", "cpu,cpuacct"):  # the v1 mount, named either way
        try:
            quota = int((root / controller / "cpu.cfs_quota_us").read_text())
            period = int((root / controller / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota <= 0 or period <= 0 else round(quota / period, 2)
    return None


def memory_gib() -> int | None:
    """Physical memory, whole GiB (MemTotal moves by a few kB between boots: rounded away)."""
    try:
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB)
    except (AttributeError, OSError, ValueError):
        return None


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


def collect(snap: Snapshot | None = None) -> dict:
    """The machine part of a run's metrics.json `env` (see metrics.ENV_MACHINE)."""
    snap = snapshot() if snap is None else snap
    return {
        "python": snap.python,
        "implementation": snap.implementation,
        "platform": snap.platform,
        "packages": snap.packages,
        "cpu": snap.cpu,
        "cpu_count": snap.cpu_count,
        "cpus_usable": snap.cpus_usable,
        "thread_env": snap.thread_env,
        "gpus": snap.gpus,
        "image": snap.image,
        "image_version": snap.image_version,
    }
