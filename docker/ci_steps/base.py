"""Step 2, base image: the Dockerfiles' FROM image: present, else pulled, else a debootstrap
stand-in."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from ci_steps.common import Settings, StepError, answers, log, log_tail, sh
from ci_steps.daemon import apt_install


def base_image(root: Path) -> str:
    """The FROM of every Dockerfile: one name, so that one stand-in serves all of them."""
    bases = {}
    for dockerfile in sorted((root / "docker").glob("Dockerfile.*")):
        for line in dockerfile.read_text().splitlines():
            words = line.split()
            if words and words[0].upper() == "FROM":
                bases[dockerfile.name] = words[1]
                break
    if len(set(bases.values())) != 1:
        raise StepError(f"the Dockerfiles must start FROM one image, not {bases}")
    return next(iter(bases.values()))


def step_base_image(s: Settings) -> None:
    """The FROM image as it is, else pulled from its registry, else a Debian stand-in made with
    debootstrap (registries unreachable, as on CI's machines)."""
    base = base_image(s.root)
    if answers(["docker", "image", "inspect", base]):
        standin = '{{index .Config.Labels "org.mnistbench.standin"}}'  # build_standin's label
        label = sh(["docker", "image", "inspect", "-f", standin, base]).strip()
        log(f"base image {base} present ({'a ' + label + ' stand-in' if label else 'as pulled'})")
        return
    log(f"docker pull {base}")
    with contextlib.suppress(StepError):
        sh(["docker", "pull", base], s.logs / "pull.log", 600, "docker pull")
        return
    log(f"{base} cannot be pulled ({log_tail(s.logs / 'pull.log', 1)}): a debootstrap stand-in")
    if os.geteuid() != 0:
        raise StepError(
            f"{base} is not here, cannot be pulled, and a debootstrap stand-in needs root",
            f"docker pull {base}",
        )
    if not shutil.which("debootstrap"):
        if not s.install_allowed:
            raise StepError(
                f"{base} is not here, cannot be pulled, and debootstrap is not "
                "installed (MNISTBENCH_CI_INSTALL_DOCKER=1 would install it)",
                f"docker pull {base}",
            )
        apt_install(s, ["debootstrap"])
    build_standin(s, base)


def build_standin(s: Settings, base: str) -> None:
    """Debian (the release the tag names) with python3, venv, pip and git, imported as base."""
    suite = base.rsplit("-", 1)[-1]  # python:3.11-slim-bookworm -> bookworm
    rootfs = s.work / "rootfs"
    sh(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,python3-pip,ca-certificates,git",
            suite,
            rootfs,
            s.debian_mirror,
        ],
        s.logs / "debootstrap.log",
        900,
        "debootstrap",
    )
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (rootfs / cache).glob("*"):
            if f.is_file():
                f.unlink()
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
        "LABEL org.mnistbench.standin=debootstrap",
    ]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        sh(
            ["docker", "import", *[a for c in changes for a in ("--change", c)], "-", base],
            s.logs / "import.log",
            600,
            "docker import",
            stdin=tar.stdout,
        )
    finally:
        tar.stdout.close()
        tar.wait()
        shutil.rmtree(rootfs)
