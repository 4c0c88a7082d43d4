"""Step 1, daemon: a Docker daemon that answers `docker info`: the running one, else, only
with MNISTBENCH_CI_INSTALL_DOCKER=1 (CI's disposable machines), docker.io from apt when dockerd
is missing, and a dockerd started here and stopped at exit."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ci_steps.common import Settings, Skipped, StepError, answers, log, log_tail, sh


def step_daemon(s: Settings, stack: contextlib.ExitStack) -> None:
    """Use the Docker daemon that answers; make one only where CI allowed it (a disposable
    machine): apt-get docker.io if dockerd is missing, start dockerd, stop it at exit."""
    if shutil.which("docker") and answers(["docker", "info"]):
        log("using the Docker daemon that is running (left running)")
    elif not s.install_allowed:
        raise Skipped(
            "no Docker daemon answers `docker info`; start Docker and rerun `make test-all`, or "
            "run `.ci/run` on a disposable machine (MNISTBENCH_CI_INSTALL_DOCKER=1 lets it "
            "install docker.io and start dockerd)"
        )
    else:
        if os.geteuid() != 0:
            raise StepError(
                f"MNISTBENCH_CI_INSTALL_DOCKER=1, no daemon answers, and uid {os.geteuid()} "
                "cannot install or start one: run as root",
                "docker info",
            )
        if not (shutil.which("dockerd") and shutil.which("docker")):
            apt_install(s, ["docker.io"])
        start_dockerd(s, stack)
    versions = "docker client {{.Client.Version}}, daemon {{.Server.Version}}"
    log(sh(["docker", "version", "--format", versions]).strip())  # they may differ: both logged


def apt_install(s: Settings, packages: list[str]) -> None:
    log(f"apt-get install {' '.join(packages)} (MNISTBENCH_CI_INSTALL_DOCKER=1)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not s.apt_updated:
        sh(["apt-get", "update", "-qq"], s.logs / "apt-update.log", 600, "apt-get update", env=env)
        s.apt_updated = True
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    sh(cmd, s.logs / f"apt-install-{packages[0]}.log", 900, "apt-get install", env=env)


def start_dockerd(s: Settings, stack: contextlib.ExitStack) -> None:
    """dockerd with overlay2, else vfs (where overlay cannot mount). Each one started is stopped
    when stack closes, also if this script is stopped while waiting for it."""
    for driver in ("overlay2", "vfs"):
        log(f"starting dockerd (storage driver {driver})")
        log_file = s.logs / f"dockerd-{driver}.log"
        with open(log_file, "w") as out:
            # its own session: a Ctrl-C in the terminal reaches this script, which stops it
            proc = subprocess.Popen(
                ["dockerd", "--storage-driver", driver],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.callback(stop_dockerd, proc)
        for _ in range(60):  # up to ~30 s
            if proc.poll() is not None or answers(["docker", "info"], timeout=5):
                break
            time.sleep(0.5)
        if proc.poll() is None and answers(["docker", "info"], timeout=5):
            return
        log(f"dockerd with {driver} did not come up:\n{log_tail(log_file, 3)}")
        stop_dockerd(proc)
    raise StepError(
        "dockerd does not start with overlay2 or vfs", "dockerd --debug", s.logs / "dockerd-vfs.log"
    )


def stop_dockerd(proc: subprocess.Popen) -> None:
    """SIGTERM to dockerd (it stops its containers and its containerd), SIGKILL after 30 s;
    then the same to any child it left behind (its containerd), each by its pid."""
    if proc.poll() is not None:  # stopped already (its pid may be another process's by now)
        return
    children = child_pids(proc.pid)
    log(f"stopping dockerd (pid {proc.pid}) and its children ({children or 'none'})")
    for pid in [proc.pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(60):
            if pid == proc.pid and proc.poll() is not None or not pid_alive(pid):
                break
            time.sleep(0.5)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    proc.wait()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is pid (from /proc/<pid>/stat's fourth field)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def pid_alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
