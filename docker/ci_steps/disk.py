"""Step 3, disk: free space for the wheelhouse; before each build, for that image where Docker
keeps images (make_room: removes this suite's own images if short, and on CI what interrupted
builds left); and, during a build, the most disk it held (disk_watch)."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ci_steps.common import GB, IMAGES, Settings, StepError, answers, log

# Free disk where Docker keeps images for one build, GB (docs/docker.md): the image (both hold
# PyPI's CUDA torch here: 8.8 GB cpu, 9.6 GB cuda) plus a second copy of its pip layer while the
# build commits it; measured at most 17.3 GB (cpu) and 18.8 GB (cuda) on a 2-core Debian VM.
IMAGE_GB = {"cpu": 9.5, "cuda": 10.5}
BUILD_TRANSIENT_GB = 10.0  # one pip layer in its build container, before the commit
WHEELHOUSE_GB = 5.0  # the pinned wheels, the CUDA image's included (3.7 GB measured)


def free_gb(path: Path) -> float:
    return shutil.disk_usage(_existing(path)).free / GB


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def step_disk(s: Settings) -> None:
    """Room in the cache for the part of the wheelhouse not yet there, or stop before the
    download. (Room for each image is checked just before its build: make_room.)"""
    kept = sum(f.stat().st_size for f in (s.cache / "wheelhouse").glob("*") if f.is_file())
    need, free = max(0.0, WHEELHOUSE_GB - kept / GB), free_gb(s.cache)
    if free < need:
        raise StepError(
            f"not enough free disk for the wheelhouse in {s.cache}: {need:.1f} GB needed, "
            f"{free:.1f} GB free (MNISTBENCH_DOCKER_CACHE puts it elsewhere)",
            f"df -h {_existing(s.cache)}",
        )
    log(f"free disk: {free:.1f} GB in {s.cache}")


def reclaimable(s: Settings, image: str) -> list[tuple[str, list[str]]]:
    """(what, command) that free disk for building `image`, in the order tried: on a disposable
    CI machine, what interrupted builds left (stopped build containers, ~9 GB each, and dangling
    images); then this suite's own images, which it rebuilds anyway: the other one (its runs
    are done, or it is rebuilt later), and last the one to build (its layers are the cache)."""
    found: list[tuple[str, list[str]]] = []
    if s.install_allowed:
        found += [
            ("stopped containers", ["docker", "container", "prune", "-f"]),
            ("dangling images", ["docker", "image", "prune", "-f"]),
        ]
    for tag in [f"mnistbench:{i}" for i in IMAGES if i != image] + [f"mnistbench:{image}"]:
        if answers(["docker", "image", "inspect", tag]):
            found.append((tag, ["docker", "image", "rm", tag]))
    return found


def make_room(s: Settings, image: str, free: Callable[[], float]) -> None:
    """Free disk where Docker keeps images for building `image` (IMAGE_GB + BUILD_TRANSIENT_GB),
    removing what `reclaimable` lists, one at a time, only while short; else stop, naming the
    space needed and free."""
    need = IMAGE_GB[image] + BUILD_TRANSIENT_GB
    removable = reclaimable(s, image) if free() < need else []
    while free() < need:
        if not removable:
            raise StepError(
                f"not enough free disk to build mnistbench:{image}: {need:.1f} GB needed, "
                f"{free():.1f} GB free where Docker keeps images (`docker system df` shows what "
                "Docker keeps; MNISTBENCH_DOCKER_CUDA=0 builds the CPU image only)",
                "docker system df && df -h \"$(docker info -f '{{.DockerRootDir}}')\"",
            )
        what, cmd = removable.pop(0)
        log(f"{free():.1f} GB free, {need:.1f} GB needed: removing {what}")
        answers(cmd, timeout=300)
    log(f"free disk: {free():.1f} GB, {need:.1f} GB needed to build mnistbench:{image}")


@contextlib.contextmanager
def disk_watch(path: Path, label: str) -> Iterator[None]:
    """Log the most disk `label` held at once in path's filesystem, and what it kept (GB;
    free space sampled every 2 s): what IMAGE_GB and BUILD_TRANSIENT_GB estimate."""
    start = lowest = free_gb(path)
    done = threading.Event()

    def sample() -> None:
        nonlocal lowest
        while not done.wait(2):
            lowest = min(lowest, free_gb(path))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()
        lowest = min(lowest, free_gb(path))
        log(
            f"{label}: {start - lowest:.1f} GB of disk at most, {start - free_gb(path):.1f} GB kept"
        )
