"""CI's Docker suite: build both images and run the CPU one on a temporary clone, offline.

Run by tests/test_docker.py under `make test-all` (so by .ci/run), which checks what it leaves
in WORKDIR; runs alone too:

    python docker/ci.py [WORKDIR]

The steps, in the order main() calls them, each a function step_<name> in its module of
docker/ci_steps/ (docs/docker.md says how to redo each by hand); ci_steps/common.py holds the
settings, the log and the command runner they share:

    module        step
    daemon        1. daemon       a Docker daemon that answers `docker info`: the running one,
                                  else, only with MNISTBENCH_CI_INSTALL_DOCKER=1 (CI's disposable
                                  machines), docker.io from apt when dockerd is missing, and a
                                  dockerd started here and stopped at exit
    base          2. base_image   the Dockerfiles' FROM image: present, else pulled, else a
                                  debootstrap stand-in
    disk          3. disk         free space for the wheelhouse; before each build, for that
                                  image where Docker keeps images (make_room: removes this
                                  suite's own images if short, and on CI what interrupted builds
                                  left)
    wheels        4. wheelhouse   `pip download` of the pinned runtime requirements, on the host
                  5. serve        the wheelhouse over HTTP on the host address containers reach
    build         6. build        mnistbench:cpu, then mnistbench:cuda (MNISTBENCH_DOCKER_CUDA=0
                                  skips it), each followed by its runs (8)
    runs          7. clone        a clone of the repository on a subset (`mnistbench params`),
                                  MNIST apart, made before the builds
                  8. runs         `docker run --network=none` of the default command and a few
                                  others

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
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ci_steps/, beside this file
from ci_steps import common  # noqa: E402
from ci_steps.base import step_base_image  # noqa: E402
from ci_steps.build import image_version, prune_untagged, step_build  # noqa: E402
from ci_steps.common import Settings, Skipped, StepError, log, sh, step  # noqa: E402
from ci_steps.daemon import step_daemon  # noqa: E402
from ci_steps.disk import free_gb, make_room, step_disk  # noqa: E402
from ci_steps.runs import step_clone, step_runs  # noqa: E402
from ci_steps.wheels import step_serve, step_wheelhouse  # noqa: E402

SKIP_EXIT = 77  # as automake's test drivers read it: skipped, not passed


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
    common.LOG_FILE = s.logs / "ci.log"
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
