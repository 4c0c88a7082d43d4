"""docker/ci.py's logic without Docker: host address, disk check, skip rules, commands.

Each step is tested in its module of docker/ci_steps/, and patched there (where it looks up
what it calls); the entry point's main() through docker/ci.py.

The Docker suite itself (tests/test_docker.py, `make test-all`) runs these steps for real; here
each decision is fed the command outputs it would read, including the ones seen on machines
where the suite used to fail (an empty gateway from `docker network inspect`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import repo_backends

ROOT = Path(__file__).resolve().parents[1]


def _load_ci():
    spec = importlib.util.spec_from_file_location("docker_ci", ROOT / "docker" / "ci.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docker_ci"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


ci = _load_ci()  # puts docker/ on sys.path, for its ci_steps package
from ci_steps import base, build, common, daemon, disk, runs, wheels  # noqa: E402


def _inspect(config: list[dict], options: dict | None = None) -> str:
    """`docker network inspect bridge` as it prints: a JSON list of one network."""
    return json.dumps([{"Name": "bridge", "IPAM": {"Config": config}, "Options": options or {}}])


def _no_interface(name: str) -> None:
    raise AssertionError(f"interface {name} looked up although the gateway was there")


# ---- host address ---------------------------------------------------------------------------


def test_host_address_is_the_bridge_gateway():
    out = _inspect([{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}])
    address, source = wheels.host_address(out, _no_interface)
    assert address == "172.17.0.1"
    assert "gateway" in source


def test_host_address_skips_an_ipv6_gateway():
    out = _inspect(
        [
            {"Subnet": "fd00::/64", "Gateway": "fd00::1"},
            {"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"},
        ]
    )
    assert wheels.host_address(out, _no_interface)[0] == "172.18.0.1"


@pytest.mark.parametrize(
    "inspect_output",
    [
        "",  # the template printed nothing (docker 28.2 client, docker.io 20.10 daemon)
        _inspect([{"Subnet": "172.17.0.0/16"}]),  # a subnet without its gateway
        _inspect([{"Subnet": "172.17.0.0/16", "Gateway": ""}]),
        _inspect([]),
        json.dumps([{"Name": "bridge", "IPAM": {"Config": None}}]),
        "[]",
        "not json",
    ],
    ids=["empty", "no-gateway-key", "empty-gateway", "no-config", "null-config", "none", "junk"],
)
def test_host_address_falls_back_to_docker0(inspect_output):
    asked = []

    def docker0(name):
        asked.append(name)
        return "172.17.0.1"

    address, source = wheels.host_address(inspect_output, docker0)
    assert (address, asked) == ("172.17.0.1", ["docker0"])
    assert "docker0 interface" in source


def test_host_address_falls_back_to_the_interface_the_network_names():
    """The fallback reads a real interface's address (lo, through the ioctl), not a stub."""
    out = _inspect([{"Subnet": "10.0.0.0/8"}], {"com.docker.network.bridge.name": "lo"})
    assert wheels.host_address(out, wheels.interface_ipv4) == (
        "127.0.0.1",
        "the lo interface's address (the bridge network lists no gateway)",
    )


def test_host_address_names_both_sources_when_neither_has_one():
    with pytest.raises(common.StepError) as e:
        wheels.host_address("", lambda name: None)
    message = str(e.value)
    assert "docker network inspect bridge" in message and "docker0" in message
    assert "ip -4 addr show docker0" in e.value.reproduce


def test_interface_ipv4_reads_the_kernel():
    assert wheels.interface_ipv4("lo") == "127.0.0.1"
    assert wheels.interface_ipv4("nosuchif0") is None


def test_serve_uses_the_fallback_and_serves_the_wheelhouse(tmp_path, monkeypatch):
    """step_serve end to end on loopback: the inspect output names no gateway, the address
    comes from the interface, and pip's URL answers with the wheelhouse's files."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    settings = common.Settings(root=ROOT, work=tmp_path, cache=tmp_path, port=0)
    settings.logs.mkdir()
    inspect = _inspect([{"Subnet": "127.0.0.0/8"}], {"com.docker.network.bridge.name": "lo"})
    monkeypatch.setattr(wheels, "sh", lambda cmd, *a, **k: inspect)
    with contextlib.ExitStack() as stack:
        url = wheels.step_serve(settings, wheelhouse, stack)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "demo-1.0-py3-none-any.whl", timeout=10) as r:
            assert r.read() == b"wheel"
    with pytest.raises(OSError):  # closed with the stack
        urllib.request.urlopen(url, timeout=2)
    assert "GET /demo-1.0-py3-none-any.whl" in (settings.logs / "http.log").read_text()


def test_host_from_docker0_does_not_ask_docker(tmp_path, monkeypatch):
    """MNISTBENCH_DOCKER_HOST_FROM=docker0 forces the fallback (to exercise it for real)."""
    settings = common.Settings.from_env(tmp_path, {"MNISTBENCH_DOCKER_HOST_FROM": "docker0"})
    settings.port = 0
    settings.logs.mkdir()
    monkeypatch.setattr(wheels, "sh", lambda *a, **k: pytest.fail("docker network inspect ran"))
    monkeypatch.setattr(
        wheels, "interface_ipv4", lambda name: "127.0.0.1" if name == "docker0" else None
    )
    with contextlib.ExitStack() as stack:
        assert wheels.step_serve(settings, tmp_path, stack).startswith("http://127.0.0.1:")


# ---- disk -----------------------------------------------------------------------------------


def test_wheelhouse_disk_error_names_space_and_remedy(tmp_path, monkeypatch):
    settings = common.Settings(root=ROOT, work=tmp_path, cache=tmp_path / "cache")
    monkeypatch.setattr(disk, "WHEELHOUSE_GB", 1e9)  # more than any disk
    with pytest.raises(common.StepError) as e:
        disk.step_disk(settings)
    assert "GB needed" in str(e.value) and "GB free" in str(e.value)
    assert "MNISTBENCH_DOCKER_CACHE" in str(e.value) and e.value.reproduce.startswith("df -h ")


def test_wheelhouse_disk_counts_only_what_is_missing(tmp_path, monkeypatch):
    settings = common.Settings(root=ROOT, work=tmp_path, cache=tmp_path / "cache")
    (settings.cache / "wheelhouse").mkdir(parents=True)
    (settings.cache / "wheelhouse" / "a.whl").write_bytes(b"x" * 3000)
    free = disk.free_gb(tmp_path)
    monkeypatch.setattr(
        disk, "WHEELHOUSE_GB", free + 2000 / common.GB
    )  # all free disk, but 3000 B kept
    disk.step_disk(settings)


class FakeDocker:
    """What make_room sees: free GB, and which of this suite's images exist. Removing one adds
    its size to the free space; pruning adds `leftovers` GB."""

    def __init__(self, free: float, images: dict[str, float], leftovers: float = 0.0):
        self.free, self.images, self.leftovers = free, dict(images), leftovers
        self.removed: list[str] = []

    def answers(self, cmd, timeout=20):
        if cmd[:3] == ["docker", "image", "inspect"]:
            return cmd[3] in self.images
        if cmd[:3] == ["docker", "image", "rm"]:
            self.free += self.images.pop(cmd[3])
        elif cmd[2] == "prune":
            self.free += self.leftovers if cmd[1] == "container" else 0.0
            self.leftovers = 0.0 if cmd[1] == "container" else self.leftovers
        else:
            raise AssertionError(f"unexpected command {cmd}")
        self.removed.append(" ".join(cmd[1:]))
        return True


def _room(tmp_path, monkeypatch, docker: FakeDocker, image: str, ci_machine: bool = False):
    settings = common.Settings(root=ROOT, work=tmp_path, cache=tmp_path, install_allowed=ci_machine)
    monkeypatch.setattr(disk, "answers", docker.answers)
    disk.make_room(settings, image, lambda: docker.free)
    return docker.removed


NEED = {image: disk.IMAGE_GB[image] + disk.BUILD_TRANSIENT_GB for image in common.IMAGES}


def test_room_enough_removes_nothing(tmp_path, monkeypatch):
    docker = FakeDocker(free=NEED["cuda"], images={"mnistbench:cpu": 9.0, "mnistbench:cuda": 10.0})
    assert _room(tmp_path, monkeypatch, docker, "cuda", ci_machine=True) == []


def test_room_removes_the_other_image_first_and_stops_when_enough(tmp_path, monkeypatch):
    # the CPU image is built and its runs are done; the CUDA build needs its space
    docker = FakeDocker(
        free=NEED["cuda"] - 5, images={"mnistbench:cpu": 9.0, "mnistbench:cuda": 10.0}
    )
    assert _room(tmp_path, monkeypatch, docker, "cuda") == ["image rm mnistbench:cpu"]
    assert "mnistbench:cuda" in docker.images  # kept: its layers are the build's cache


def test_room_never_prunes_outside_ci(tmp_path, monkeypatch):
    docker = FakeDocker(free=NEED["cpu"] - 15, images={"mnistbench:cpu": 9.0}, leftovers=20.0)
    with pytest.raises(common.StepError) as e:
        _room(tmp_path, monkeypatch, docker, "cpu")
    assert docker.removed == ["image rm mnistbench:cpu"] and docker.leftovers == 20.0
    message = str(e.value)
    assert f"{NEED['cpu']:.1f} GB needed" in message and f"{docker.free:.1f} GB free" in message
    assert "docker system df" in message and "MNISTBENCH_DOCKER_CUDA=0" in message


def test_room_on_ci_clears_interrupted_builds_before_the_images(tmp_path, monkeypatch):
    # what a killed build leaves: its pip container (~9 GB), stopped or dead
    docker = FakeDocker(free=NEED["cpu"] - 5, images={"mnistbench:cuda": 10.0}, leftovers=9.0)
    assert _room(tmp_path, monkeypatch, docker, "cpu", ci_machine=True) == ["container prune -f"]
    assert "mnistbench:cuda" in docker.images


# ---- daemon: use, install only when allowed, else skip ---------------------------------------


@pytest.fixture
def no_daemon(monkeypatch):
    """No Docker daemon answers; installing or starting one fails the test."""
    monkeypatch.setattr(daemon, "answers", lambda cmd, timeout=20: False)
    monkeypatch.setattr(daemon, "apt_install", lambda *a: pytest.fail("apt-get install ran"))
    monkeypatch.setattr(daemon, "start_dockerd", lambda *a: pytest.fail("dockerd started"))


def test_no_daemon_without_permission_skips_with_the_reason(tmp_path, no_daemon):
    settings = common.Settings.from_env(tmp_path, {})
    assert not settings.install_allowed
    with pytest.raises(common.Skipped, match=r"no Docker daemon answers.*make test-all"):
        daemon.step_daemon(settings, contextlib.ExitStack())


@pytest.mark.parametrize("value", ["", "0", "yes", "true"])
def test_only_1_allows_installing(tmp_path, value):
    assert not common.Settings.from_env(
        tmp_path, {"MNISTBENCH_CI_INSTALL_DOCKER": value}
    ).install_allowed
    assert common.Settings.from_env(tmp_path, {"MNISTBENCH_CI_INSTALL_DOCKER": "1"}).install_allowed


def test_allowed_but_not_root_is_an_error(tmp_path, no_daemon, monkeypatch):
    monkeypatch.setattr(daemon.os, "geteuid", lambda: 1000)
    settings = common.Settings.from_env(tmp_path, {"MNISTBENCH_CI_INSTALL_DOCKER": "1"})
    with pytest.raises(common.StepError, match="run as root"):
        daemon.step_daemon(settings, contextlib.ExitStack())


def test_allowed_as_root_installs_and_starts(tmp_path, monkeypatch):
    done = []
    monkeypatch.setattr(daemon, "answers", lambda cmd, timeout=20: False)
    monkeypatch.setattr(daemon.shutil, "which", lambda name: None)  # neither docker nor dockerd
    monkeypatch.setattr(daemon.os, "geteuid", lambda: 0)
    monkeypatch.setattr(daemon, "apt_install", lambda s, pkgs: done.append(("apt", pkgs)))
    monkeypatch.setattr(daemon, "start_dockerd", lambda s, stack: done.append(("dockerd",)))
    monkeypatch.setattr(daemon, "sh", lambda *a, **k: "docker client 28.2.2, daemon 20.10.24")
    settings = common.Settings.from_env(tmp_path, {"MNISTBENCH_CI_INSTALL_DOCKER": "1"})
    daemon.step_daemon(settings, contextlib.ExitStack())
    assert done == [("apt", ["docker.io"]), ("dockerd",)]


def test_stop_dockerd_stops_the_process_and_its_children_once(tmp_path):
    """A stand-in for dockerd with a child (its containerd): both end; a second stop (the exit
    stack's, after a failed start) signals nothing, since the pid may be reused by then."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    for _ in range(50):
        if daemon.child_pids(proc.pid):
            break
        time.sleep(0.1)
    (child,) = daemon.child_pids(proc.pid)
    daemon.stop_dockerd(proc)
    assert proc.returncode is not None
    for _ in range(50):
        if not daemon.pid_alive(child):
            break
        time.sleep(0.1)
    assert not daemon.pid_alive(child)
    daemon.stop_dockerd(proc)  # no error, no signal


def test_main_exits_77_and_writes_the_reason(tmp_path, no_daemon, monkeypatch):
    for var in ("MNISTBENCH_CI_INSTALL_DOCKER", "MNISTBENCH_DOCKER_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MNISTBENCH_DOCKER_CACHE", str(tmp_path / "cache"))
    assert ci.main([str(tmp_path / "work")]) == ci.SKIP_EXIT
    assert "make test-all" in (tmp_path / "work" / "skipped").read_text()


def test_main_reports_the_failed_step_and_how_to_reproduce(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MNISTBENCH_DOCKER_CACHE", str(tmp_path / "cache"))

    def fail(s, stack):
        raise common.StepError("docker info exited 1", "docker info", tmp_path / "x.log")

    monkeypatch.setattr(ci, "step_daemon", fail)
    assert ci.main([str(tmp_path / "work")]) == 1
    err = capsys.readouterr().err
    assert "FAILED: step daemon: docker info exited 1" in err
    assert f"log: {tmp_path / 'x.log'}" in err
    assert "to reproduce by hand: docker info" in err


# ---- commands -------------------------------------------------------------------------------


def test_sh_failure_names_what_and_the_log_tail(tmp_path):
    log = tmp_path / "step.log"
    with pytest.raises(common.StepError) as e:
        common.sh(["sh", "-c", "echo first; echo last words; exit 3"], log, what="demo step")
    assert str(e.value).startswith("demo step exited 3:") and "last words" in str(e.value)
    assert e.value.reproduce == "sh -c 'echo first; echo last words; exit 3'"
    assert e.value.log == log


def test_sh_timeout_is_a_step_error():
    with pytest.raises(common.StepError, match="no answer in 1 s"):
        common.sh(["sleep", "5"], timeout=1, what="sleep")


def test_base_image_is_one_name(tmp_path):
    assert base.base_image(ROOT) == "python:3.11-slim-bookworm"
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile.a").write_text("# c\nFROM debian:12\nRUN true\n")
    (tmp_path / "docker" / "Dockerfile.b").write_text("FROM debian:11\n")
    with pytest.raises(common.StepError, match="one image"):
        base.base_image(tmp_path)


def test_build_command_installs_from_the_wheelhouse_only(tmp_path):
    settings = common.Settings(root=ROOT, work=tmp_path, cache=tmp_path)
    cmd = build.build_command(settings, "cpu", "http://172.17.0.1:38717/", "abc123")
    args = " ".join(cmd)
    for arg in (
        "PIP_NO_INDEX=1",
        "PIP_FIND_LINKS=http://172.17.0.1:38717/",
        "PIP_TRUSTED_HOST=172.17.0.1",
        "MNISTBENCH_IMAGE_VERSION=abc123",
    ):
        assert f"--build-arg {arg}" in args
    assert cmd[-1] == str(ROOT) and "--no-cache" not in cmd
    settings.no_cache = True
    assert "--no-cache" in build.build_command(settings, "cuda", "http://h:1/", "v")


def test_runs_cover_both_images_and_the_pipeline(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    params = {"backends": repo_backends("jax-scan", "torch-tfds")}  # full entries, as DVC reads
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = common.Settings(root=ROOT, work=tmp_path, cache=tmp_path)
    chosen = runs.runs(settings, clone, tmp_path / "mnist")
    assert chosen["pipeline"][-1] == "mnistbench:cpu"  # the image's default command: dvc repro
    assert "jax-scan" in chosen["cuda-param-cuda-image"]  # the first backend of the params
    settings.build_cuda = False
    assert not any(
        "cuda-image" in n or "frameworks" in n for n in runs.runs(settings, clone, clone)
    )


# ---- entry points ---------------------------------------------------------------------------


def _make_n(target: str) -> str:
    done = subprocess.run(
        ["make", "-n", "-B", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_test_changes_nothing_outside_the_clone():
    """`make test` installs into .venv only, never apt-get, and never opts in to installing."""
    recipe = _make_n("test")
    assert "pytest" in recipe and "ruff check" in recipe and "ruff format --check" in recipe
    assert "apt-get" not in recipe and "MNISTBENCH_CI_INSTALL_DOCKER" not in recipe
    assert "MNISTBENCH_TEST_ALL" not in recipe
    assert "uv pip install --python" in recipe  # into .venv's python
    assert "-r requirements-dev.txt -c constraints.txt" in recipe


def test_make_test_all_runs_the_docker_tests_and_ci_opts_in():
    recipe = _make_n("test-all")
    assert "MNISTBENCH_TEST_ALL=1" in recipe and "MNISTBENCH_CI_INSTALL_DOCKER" not in recipe
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "export MNISTBENCH_CI_INSTALL_DOCKER=1" in ci_run
    assert ci_run.rstrip().endswith("make test-all")


class _Item:
    """What conftest reads of a collected test: its id, keywords and markers."""

    def __init__(self, *marks):
        self.nodeid = "tests/test_x.py::test_x"
        self.marks = {m.mark.name: m.mark for m in marks}
        self.keywords = dict(self.marks)

    def get_closest_marker(self, name):
        return self.marks.get(name)


def test_a_long_test_is_skipped_with_its_own_reason():
    import conftest

    item = _Item(pytest.mark.long("a DVC sweep end to end (~90 CPU-s)"))
    assert (
        conftest._skip_reason(item) == "a DVC sweep end to end (~90 CPU-s): `make test-all` runs it"
    )
    assert conftest._skip_reason(_Item()) is None


@pytest.mark.parametrize("mark", [pytest.mark.long, pytest.mark.long(""), pytest.mark.long(3)])
def test_a_long_test_without_its_reason_is_refused(mark):
    import conftest

    with pytest.raises(pytest.UsageError, match="say why it is long"):
        conftest._skip_reason(_Item(mark))
