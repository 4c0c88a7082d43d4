"""Stage `machine`: the fingerprint of what decides the timings, an input of every timed stage.

Epoch times belong to a machine. `dvc repro` runs this stage every time (always_changed); it
writes metrics/machine.json, and every stage that measures time depends on that file. On the
same machine the file comes out byte for byte the same, so DVC skips everything downstream;
on another CPU, GPU, container image or framework version it differs, and every timing stage
reruns.

What goes in: the CPU model and the instruction-set flags that change kernel speed (AVX2,
AVX-512, AMX; NEON/SVE on Arm), the CPUs this process may use and any cgroup CPU quota, the
memory size, the GPUs with their driver, the container image and its version, Python and the
frameworks' versions, and the thread settings from the environment. What stays out: anything
that changes between two runs on one machine (time, load, free memory, hostname).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from pathlib import Path

from mnistbench import envinfo, outputs

FINGERPRINT_FILE = Path("metrics") / "machine.json"  # cli.py's default names it too
# The distributions whose version changes the numbers (not dvc, click: they only orchestrate).
FRAMEWORKS = (
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
)
# Instruction-set extensions that change matmul and element-wise kernel speed.
CPU_FLAGS = (
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
    "amx_int8",  # x86
    "asimd",
    "asimdhp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)  # Arm
GIB = 2**30


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


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):  # Linux; not macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_quota() -> float | None:
    """A cgroup v2 CPU limit in CPUs (`docker run --cpus 1.5` gives 1.5), or None for none."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else round(int(quota) / int(period), 2)


def memory_gib() -> int | None:
    """Physical memory, whole GiB (MemTotal moves by a few kB between boots: rounded away)."""
    try:
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB)
    except (AttributeError, OSError, ValueError):
        return None


def fingerprint() -> dict:
    """What decides the timings on this machine; equal on every call on the same machine."""
    versions = envinfo.versions()
    return {
        "cpu": envinfo.cpu_model(),
        "arch": platform.machine(),
        "cpu_flags": cpu_flags(),
        "cpus_usable": usable_cpus(),
        "cpu_quota": cpu_quota(),
        "memory_gib": memory_gib(),
        "gpus": envinfo.gpus(),  # "name, memory, driver" per GPU
        "image": os.environ.get("MNISTBENCH_IMAGE", "none (host)"),
        "image_version": os.environ.get("MNISTBENCH_IMAGE_VERSION", ""),
        "python": platform.python_version(),
        "frameworks": {name: versions[name] for name in FRAMEWORKS if name in versions},
        "thread_env": {k: os.environ[k] for k in envinfo.THREAD_VARS if k in os.environ},
    }


def fingerprint_id(fp: dict) -> str:
    """12 hex digits of the fingerprint's SHA-256: equal fingerprints, equal ids."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


def machine_name(fp: dict) -> str:
    """A readable name: the first GPU's model, else the CPU's, and the CPU count.

    `Intel(R) Xeon(R) Processor`, 2 CPUs -> intel-xeon-2cpu; `NVIDIA H200, 143771 MiB, ...`
    -> nvidia-h200. Not unique (the id is): two machines of one kind share it."""
    if fp["gpus"]:
        model = fp["gpus"][0].split(",")[0]
        return _slug(model)
    model = re.sub(r"\((R|TM|tm)\)|\bCPU\b|\bProcessor\b|@.*$|\b\d+-Core\b", " ", fp["cpu"])
    return f"{_slug(model) or fp['arch']}-{fp['cpus_usable']}cpu"


def _slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))


def record(fp: dict | None = None) -> dict:
    """metrics/machine.json's content: name, id and the fingerprint itself."""
    fp = fingerprint() if fp is None else fp
    return {"name": machine_name(fp), "id": fingerprint_id(fp), "fingerprint": fp}


def write(path: str | Path = FINGERPRINT_FILE) -> dict:
    """Write the record; the same machine writes the same bytes (so DVC skips what follows)."""
    rec = record()
    path = Path(path)
    outputs.write_files(path.parent, {path.name: (json.dumps(rec, indent=2) + "\n").encode()})
    return rec


def read(path: str | Path) -> dict | None:
    """A machine.json written by `write`, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())
