"""Stage `machine`: the fingerprint of what decides the timings, an input of every timed stage.

Epoch times belong to a machine. `dvc repro` runs this stage every time (always_changed); it
writes metrics/machine.json, and every stage that measures time depends on that file. On the
same machine the file comes out byte for byte the same, so DVC skips everything downstream;
on another CPU, GPU, container image or framework version it differs, and every timing stage
reruns.

A run also belongs to the checkout that made it. metrics/ and dvc.lock on main hold a committed
reference run, so that DVC's views work on a fresh clone; a clone on a machine of the same kind
would otherwise find every timed stage up to date and present that reference as its own. So the
record also holds this checkout's identity (`checkout`: random, made on the first run and kept
in the untracked layout.CHECKOUT_FILE): a fresh clone or workspace has a new one, its
machine.json differs from the committed one, and every timed stage reruns; a second run in
the same checkout writes the same bytes and reruns nothing. Reports, `keep` and `gather` group
runs by the fingerprint `id` (the machine kind), never by the checkout.

What goes in: the CPU model and the instruction-set flags that change kernel speed (AVX2,
AVX-512, AMX; NEON/SVE on Arm), the CPUs this process may use and any cgroup CPU quota, the
memory size, the GPUs with their driver, the container image and its version, Python and the
frameworks' versions, and the thread settings from the environment. What stays out: anything
that changes between two runs on one machine (time, load, free memory, hostname).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from mnistbench import envinfo, layout, outputs
from mnistbench.checkout import checkout_id

FINGERPRINT_FILE = Path(layout.METRICS_ROOT) / layout.MACHINE_FILE


def fingerprint(snap: envinfo.Snapshot | None = None) -> dict:
    """What decides the timings on this machine; equal on every call on the same machine.

    Made from envinfo's snapshot (this machine now when none is given); its frameworks are the
    snapshot's packages less the orchestration ones (dvc, click), which change no number."""
    snap = envinfo.snapshot() if snap is None else snap
    return {
        "cpu": snap.cpu,
        "arch": snap.arch,
        "cpu_flags": snap.cpu_flags,
        # without an affinity API (macOS), every CPU of the machine
        "cpus_usable": snap.cpus_usable or snap.cpu_count or 1,
        "cpu_quota": snap.cpu_quota,
        "memory_gib": snap.memory_gib,
        "gpus": snap.gpus,  # "name, memory, driver" per GPU
        "image": snap.image,
        "image_version": snap.image_version,
        "python": snap.python,
        "frameworks": {  # in PACKAGES' order, whatever the snapshot's: the same bytes
            name: snap.packages[name]
            for name in envinfo.PACKAGES
            if name in snap.packages and name not in envinfo.ORCHESTRATION
        },
        "thread_env": snap.thread_env,
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


def record(fp: dict | None = None, checkout: str = "") -> dict:
    """metrics/machine.json's content: name, id, the checkout that ran, the fingerprint."""
    fp = fingerprint() if fp is None else fp
    return {
        "name": machine_name(fp),
        "id": fingerprint_id(fp),
        "checkout": checkout,
        "fingerprint": fp,
    }


def write(path: str | Path = FINGERPRINT_FILE) -> dict:
    """Write the record; the same machine in the same checkout writes the same bytes (so DVC
    skips what follows), another checkout or machine other bytes (so the timings rerun)."""
    rec = record(checkout=checkout_id())
    path = Path(path)
    outputs.write_files(path.parent, {path.name: (json.dumps(rec, indent=2) + "\n").encode()})
    return rec
