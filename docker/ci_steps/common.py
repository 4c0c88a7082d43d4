"""What every step uses: the settings, the two ways a step ends early, the log, commands."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # docker/ci_steps/ -> the repository
IMAGES = ("cpu", "cuda")
GB = 1e9  # bytes; df and Docker report decimal GB


class StepError(Exception):
    """A step failed: what, where its log is, and the command that reproduces it by hand."""

    def __init__(self, what: str, reproduce: str = "", log: Path | None = None):
        super().__init__(what)
        self.reproduce = reproduce
        self.log = log
        self.step = ""


class Skipped(Exception):
    """The suite cannot run here and is not allowed to make itself a Docker daemon."""


@dataclass
class Settings:
    root: Path
    work: Path
    cache: Path
    install_allowed: bool = False
    build_cuda: bool = True
    no_cache: bool = False
    port: int = 38717
    host_from: str = "auto"
    debian_mirror: str = "http://deb.debian.org/debian"
    python: str = sys.executable
    apt_updated: bool = False
    times: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_env(cls, work: Path, environ: dict[str, str]) -> Settings:
        home_cache = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cls(
            root=ROOT,
            work=work,
            cache=Path(environ.get("MNISTBENCH_DOCKER_CACHE") or home_cache / "mnistbench-docker"),
            install_allowed=environ.get("MNISTBENCH_CI_INSTALL_DOCKER") == "1",
            build_cuda=environ.get("MNISTBENCH_DOCKER_CUDA", "1") != "0",
            no_cache=environ.get("MNISTBENCH_DOCKER_NO_CACHE") == "1",
            port=int(environ.get("MNISTBENCH_DOCKER_PORT", "38717")),
            host_from=environ.get("MNISTBENCH_DOCKER_HOST_FROM", "auto"),
            debian_mirror=environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian"),
        )

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def images(self) -> tuple[str, ...]:
        return IMAGES if self.build_cuda else ("cpu",)


LOG_FILE: Path | None = None  # WORKDIR/logs/ci.log once main() knows WORKDIR: the lines below


def log(message: str) -> None:
    line = f"[docker/ci.py {time.strftime('%H:%M:%S')}] {message}"
    print(line, file=sys.stderr, flush=True)
    if LOG_FILE is not None:
        with open(LOG_FILE, "a") as out:
            out.write(line + "\n")


def sh(
    cmd: Sequence[str],
    log_file: Path | None = None,
    timeout: float = 600,
    what: str = "",
    reproduce: str = "",
    **kwargs,
) -> str:
    """Run cmd; its output goes to log_file (returned when there is none). A non-zero exit or a
    timeout raises StepError naming `what`, the log, and `reproduce` (default: cmd itself)."""
    reproduce = reproduce or shlex.join(str(c) for c in cmd)
    out = open(log_file, "w") if log_file else subprocess.PIPE  # closed below
    try:
        done = subprocess.run(
            [str(c) for c in cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            **kwargs,
        )
    except subprocess.TimeoutExpired as e:
        raise StepError(
            f"{what or cmd[0]}: no answer in {timeout:.0f} s", reproduce, log_file
        ) from e
    finally:
        if log_file:
            out.close()
    if done.returncode != 0:
        tail = log_tail(log_file) if log_file else (done.stdout or "")[-3000:]
        raise StepError(f"{what or cmd[0]} exited {done.returncode}:\n{tail}", reproduce, log_file)
    return done.stdout if not log_file else ""


def log_tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def answers(cmd: Sequence[str], timeout: float = 20) -> bool:
    """Whether cmd exits 0 within timeout seconds (missing commands do not)."""
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def step(settings: Settings, name: str) -> Iterator[None]:
    """Log and time one step; a StepError raised in it is reported under its name."""
    log(f"step {name}")
    t0 = time.monotonic()
    try:
        yield
    except StepError as e:
        e.step = e.step or name
        raise
    settings.times[name] = round(time.monotonic() - t0, 1)
    (settings.work / "times.json").write_text(json.dumps(settings.times, indent=1) + "\n")
