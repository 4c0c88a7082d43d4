"""Step 6, build: mnistbench:cpu, then mnistbench:cuda (MNISTBENCH_DOCKER_CUDA=0 skips it),
from the served wheelhouse only, with the classic builder."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from ci_steps.common import GB, Settings, answers, log, sh
from ci_steps.disk import disk_watch


def image_version(root: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def build_command(s: Settings, image: str, wheels_url: str, version: str) -> list[str]:
    host = wheels_url.split("//")[1].split(":")[0]
    return [
        "docker",
        "build",
        "--force-rm",  # a failed step leaves no container (~9 GB) behind
        *(["--no-cache"] if s.no_cache else []),
        "-f",
        str(s.root / "docker" / f"Dockerfile.{image}"),
        "-t",
        f"mnistbench:{image}",
        "--build-arg",
        "PIP_NO_INDEX=1",
        "--build-arg",
        f"PIP_FIND_LINKS={wheels_url}",
        "--build-arg",
        f"PIP_TRUSTED_HOST={host}",
        "--build-arg",
        f"MNISTBENCH_IMAGE_VERSION={version}",
        str(s.root),
    ]


def prune_untagged() -> None:
    """Earlier builds of these images, untagged by a newer one (~9 GB each)."""
    for title in ("mnistbench (CPU)", "mnistbench (CUDA)"):
        answers(
            [
                "docker",
                "image",
                "prune",
                "-f",
                "--filter",
                f"label=org.opencontainers.image.title={title}",
            ],
            timeout=300,
        )


def step_build(s: Settings, image: str, wheels_url: str, version: str, docker_root: Path) -> None:
    """docker build with the classic builder (what the Dockerfiles promise to work with)."""
    cmd = build_command(s, image, wheels_url, version)
    log(f"docker build -f docker/Dockerfile.{image} -t mnistbench:{image} (version {version})")
    with disk_watch(docker_root, f"build of mnistbench:{image}"):
        _build(s, image, cmd)
    size = sh(["docker", "image", "inspect", "-f", "{{.Size}}", f"mnistbench:{image}"])
    log(f"built mnistbench:{image}: {int(size) / GB:.1f} GB")


def _build(s: Settings, image: str, cmd: list[str]) -> None:
    sh(
        cmd,
        s.logs / f"build-{image}.log",
        1800,
        f"docker build of mnistbench:{image}",
        reproduce="DOCKER_BUILDKIT=0 " + shlex.join(cmd),
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
