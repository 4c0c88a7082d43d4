"""CI's Docker suite: build both images and run the CPU one on a temporary clone, offline.

Run by tests/test_docker.py under `make test-all` (so by .ci/run), which checks what it leaves
in WORKDIR; runs alone too:

    python docker/ci.py [WORKDIR]

One function per step, in the order main() calls them (docs/docker.md says how to redo each
by hand):

    1. daemon       a Docker daemon that answers `docker info`: the running one, else, only with
                    MNISTBENCH_CI_INSTALL_DOCKER=1 (CI's disposable machines), docker.io from
                    apt when dockerd is missing, and a dockerd started here and stopped at exit
    2. base_image   the Dockerfiles' FROM image: present, else pulled, else a debootstrap stand-in
    3. disk         free space for the wheelhouse; before each build, for that image where
                    Docker keeps images (make_room: removes this suite's own images if short,
                    and on CI what interrupted builds left)
    4. wheelhouse   `pip download` of the pinned runtime requirements, on the host
    5. serve        the wheelhouse over HTTP on the host address that containers reach
    6. build        mnistbench:cpu, then mnistbench:cuda (MNISTBENCH_DOCKER_CUDA=0 skips it),
                    each followed by its runs (8)
    7. clone        a clone of the repository on a subset (`mnistbench params`), MNIST apart,
                    made before the builds
    8. runs         `docker run --network=none` of the default command and a few others

A failed step exits 1 with what failed, its log, and the command that reproduces it by hand.
Exit 77: skipped (no Docker daemon and no permission to install one), the reason printed.

WORKDIR (default: a new temporary folder) receives logs/ci.log (what this script printed),
logs/<name>.log and logs/<name>.rc of each run, clone/, image_version, owner_uid, times.json,
and skipped when skipped.

Environment: MNISTBENCH_CI_INSTALL_DOCKER (0), MNISTBENCH_DOCKER_CUDA (1),
MNISTBENCH_DOCKER_CACHE (the wheelhouse; ~/.cache/mnistbench-docker), MNISTBENCH_DOCKER_PORT
(38717), MNISTBENCH_DOCKER_NO_CACHE (0), MNISTBENCH_DOCKER_HOST_FROM (auto; `docker0` ignores
the bridge's gateway, to exercise the fallback), DEBIAN_MIRROR.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import http.server
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SKIP_EXIT = 77  # as automake's test drivers read it: skipped, not passed
IMAGES = ("cpu", "cuda")
GB = 1e9  # bytes; df and Docker report decimal GB
# Free disk where Docker keeps images for one build, GB (docs/docker.md): the image (both hold
# PyPI's CUDA torch here: 8.8 GB cpu, 9.6 GB cuda) plus a second copy of its pip layer while the
# build commits it; measured at most 17.3 GB (cpu) and 18.8 GB (cuda) on a 2-core Debian VM.
IMAGE_GB = {"cpu": 9.5, "cuda": 10.5}
BUILD_TRANSIENT_GB = 10.0  # one pip layer in its build container, before the commit
WHEELHOUSE_GB = 5.0  # the pinned wheels, the CUDA image's included (3.7 GB measured)
OWNER_ID = (4242, 4343)  # as root: the clone's owner in the runs, a host user who is not root
OTHER_UID = 5555  # a --user that owns nothing in the clone
SUBSET = ("data.limit_train=2000", "data.limit_test=500", "train.epochs=1")


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
        tail = _tail(log_file) if log_file else (done.stdout or "")[-3000:]
        raise StepError(f"{what or cmd[0]} exited {done.returncode}:\n{tail}", reproduce, log_file)
    return done.stdout if not log_file else ""


def _tail(path: Path, lines: int = 25) -> str:
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


# 1. daemon -----------------------------------------------------------------------------------


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
        log(f"dockerd with {driver} did not come up:\n{_tail(log_file, 3)}")
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


# 2. base image -------------------------------------------------------------------------------


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
    log(f"{base} cannot be pulled ({_tail(s.logs / 'pull.log', 1)}): a debootstrap stand-in")
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


# 3. disk -------------------------------------------------------------------------------------


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


# 4. wheelhouse -------------------------------------------------------------------------------


def step_wheelhouse(s: Settings) -> Path:
    """Every pinned runtime wheel on the host: the builds then install with PIP_NO_INDEX=1."""
    wheels = s.cache / "wheelhouse"
    extra = ["jax[cuda13]"] if s.build_cuda else []  # Dockerfile.cuda's extra
    sh(
        [
            s.python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            s.root / "requirements.txt",
            "-c",
            s.root / "constraints.txt",
            *extra,
            "setuptools",
            "wheel",
            "-d",
            wheels,
        ],
        s.logs / "wheelhouse.log",
        1200,
        "pip download of the pinned requirements",
    )
    return wheels


# 5. serve ------------------------------------------------------------------------------------


def host_address(inspect_json: str, interface_ipv4: Callable[[str], str | None]) -> tuple[str, str]:
    """(address, source): the IPv4 address at which containers on Docker's default bridge reach
    this host. The bridge network's gateway from `docker network inspect bridge` (empty or
    missing with some daemon and client pairs), else the IPv4 address of the bridge's
    interface (docker0 unless the network names another)."""
    try:
        networks = json.loads(inspect_json) if inspect_json.strip() else []
    except json.JSONDecodeError:
        networks = []
    bridge = networks[0] if networks else {}
    for config in (bridge.get("IPAM") or {}).get("Config") or []:
        gateway = (config.get("Gateway") or "").split("/")[0]
        if gateway and ipaddress.ip_address(gateway).version == 4:
            return gateway, "the bridge network's gateway (docker network inspect bridge)"
    name = (bridge.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    address = interface_ipv4(name)
    if address:
        return address, f"the {name} interface's address (the bridge network lists no gateway)"
    raise StepError(
        "no address for containers to reach this host: `docker network inspect bridge` lists "
        f"no IPv4 gateway, and the {name} interface has no IPv4 address",
        f"docker network inspect bridge; ip -4 addr show {name}",
    )


def interface_ipv4(name: str) -> str | None:
    """The interface's IPv4 address (the SIOCGIFADDR ioctl), None where it has none."""
    SIOCGIFADDR = 0x8915  # linux/sockios.h
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:  # no such interface, or no IPv4 address on it
            return None
    return socket.inet_ntoa(ifreq[20:24])  # struct ifreq: name[16], sockaddr_in (port, addr)


def step_serve(s: Settings, wheels: Path, stack: contextlib.ExitStack) -> str:
    """Serve wheels over HTTP on the host address; return the URL. A fixed port keeps the build
    args the same from run to run, so Docker's cache keeps the pip layers (~9 GB each)."""
    inspect = "" if s.host_from == "docker0" else sh(["docker", "network", "inspect", "bridge"])
    address, source = host_address(inspect, interface_ipv4)
    log(f"host address {address}: {source}")
    handler = functools.partial(_QuietHandler, directory=str(wheels), log_file=s.logs / "http.log")
    try:
        server = http.server.ThreadingHTTPServer((address, s.port), handler)
    except OSError:  # taken: any free port (the pip layers will not come from Docker's cache)
        server = http.server.ThreadingHTTPServer((address, 0), handler)
        log(f"port {s.port} is taken: serving on {server.server_address[1]}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    url = f"http://{address}:{server.server_address[1]}/"
    with urllib.request.urlopen(url, timeout=10):
        pass
    log(f"wheelhouse served at {url}")
    return url


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Requests go to the log file, not to the suite's output."""

    def __init__(self, *args, log_file: Path, **kwargs):
        self.log_file = log_file
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args) -> None:
        with open(self.log_file, "a") as out:
            out.write(f"{self.address_string()} {format % args}\n")


# 6. build ------------------------------------------------------------------------------------


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


# 7. clone ------------------------------------------------------------------------------------


def step_clone(s: Settings) -> tuple[Path, Path]:
    """(clone, mirror): a clone of the repository's HEAD on a subset (its params.yaml through
    `mnistbench params`), with MNIST moved out to a mirror folder the runs mount read-only."""
    clone, mirror = s.work / "clone", s.work / "mnist"
    for path in (clone, mirror):
        shutil.rmtree(path, ignore_errors=True)
    sh(["git", "clone", "--quiet", s.root, clone], what="git clone")
    mnistbench = [s.python, "-m", "mnistbench.cli", "params"]
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


# 8. runs -------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_at_a_time(cache: Path) -> Iterator[None]:
    """One run per machine: a second would share (and stop) the dockerd of the first."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "ci.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another docker/ci.py run to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_all(s: Settings) -> None:
    with one_at_a_time(s.cache), contextlib.ExitStack() as stack:
        with step(s, "daemon"):
            step_daemon(s, stack)
        with step(s, "base_image"):
            step_base_image(s)
        with step(s, "disk"):
            step_disk(s)
            docker_root = Path(sh(["docker", "info", "-f", "{{.DockerRootDir}}"]).strip())
        with step(s, "wheelhouse"):
            wheels = step_wheelhouse(s)
        with step(s, "clone"):
            clone, mirror = step_clone(s)
        with contextlib.ExitStack() as serving:  # the wheelhouse is served while building
            with step(s, "serve"):
                url = step_serve(s, wheels, serving)
            version = image_version(s.root)
            (s.work / "image_version").write_text(version + "\n")
            # One image at a time, its runs right after its build: the one built first may
            # then make room for the next (each needs ~2x its size while it builds).
            for image in s.images:
                prune_untagged()  # what an earlier build replaced (~9 GB)
                with step(s, f"room {image}"):
                    make_room(s, image, lambda: free_gb(docker_root))
                with step(s, f"build {image}"):
                    step_build(s, image, url, version, docker_root)
                with step(s, f"runs {image}"):
                    step_runs(s, clone, mirror, image)
        prune_untagged()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    work = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="mnistbench-docker."))
    s = Settings.from_env(work.resolve(), dict(os.environ))
    s.logs.mkdir(parents=True, exist_ok=True)
    global LOG_FILE
    LOG_FILE = s.logs / "ci.log"
    t0 = time.monotonic()
    try:
        run_all(s)
    except Skipped as e:
        log(f"SKIP: {e}")
        (s.work / "skipped").write_text(f"{e}\n")
        return SKIP_EXIT
    except StepError as e:
        log(f"FAILED: step {e.step or '?'}: {e}")
        if e.log:
            log(f"log: {e.log}")
        if e.reproduce:
            log(f"to reproduce by hand: {e.reproduce}")
        return 1
    log(f"done in {time.monotonic() - t0:.0f} s; results in {s.work}")
    return 0


if __name__ == "__main__":
    # SIGTERM (a CI timeout, pytest killed) unwinds like an error: dockerd stopped, server closed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
