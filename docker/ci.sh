#!/usr/bin/env bash
# Builds the Docker images and runs the pipeline inside the CPU one, for real, on this machine.
# Called by tests/test_docker.py (so by `make test`); runs alone too: `docker/ci.sh [WORKDIR]`.
#
# What it does, from nothing but root and Debian's apt repositories (no registry needed):
#   1. apt-get installs docker.io and debootstrap if missing; starts dockerd (overlay2, else
#      vfs) unless one already answers; stops what it started on exit, failure included.
#   2. The base image named by the Dockerfiles' FROM (python:3.11-slim-bookworm): used as is
#      when present, else a stand-in made with debootstrap (Debian bookworm + python3, venv,
#      pip, git) and `docker import`ed under that name.
#   3. A wheelhouse of the pinned requirements (pip download on the host: PyPI, and the
#      machine's local indexes), served over HTTP on the Docker bridge, so the image builds
#      install exactly requirements.txt + constraints.txt with PIP_NO_INDEX=1 and no CA bundle.
#      Here PyTorch's CPU index is unreachable, so the CPU image gets PyPI's (CUDA) torch
#      2.14.1 in this test; users' builds get 2.14.1+cpu (see README, "Docker").
#   4. Builds mnistbench:cpu (and mnistbench:cuda unless MNISTBENCH_DOCKER_CUDA=0) with the
#      classic builder; runs, with --network=none, in a temporary clone of this repository:
#      the image's default command (`dvc repro`, on a small subset, MNIST from a mounted mirror
#      via MNIST_MIRRORS), `mnistbench --help`, `mnistbench env`, git + `dvc metrics show` as
#      another uid, train.device=cuda without a GPU; and, in the CUDA image, a framework check.
#   Results go to WORKDIR (logs/<name>.log and logs/<name>.rc, clone/, times); the checks
#   themselves are in tests/test_docker.py.
#
# Exit status: 0 done (read the logs), 77 skipped (the reason is printed: not root, no
# apt-get), anything else a failure. Environment: MNISTBENCH_DOCKER_CACHE (wheelhouse,
# default ~/.cache/mnistbench-docker), MNISTBENCH_DOCKER_CUDA (1), MNISTBENCH_DOCKER_PORT
# (the wheelhouse's, 38717), MNISTBENCH_DOCKER_NO_CACHE (0; 1 builds every layer anew),
# DEBIAN_MIRROR.
#
# Disk: a full build of both images needs ~20 GB free where Docker keeps its images; a rebuild
# whose requirements did not change reuses the pip layers from Docker's cache and needs little.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d /tmp/mnistbench-docker.XXXXXX)}"
CACHE="${MNISTBENCH_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mnistbench-docker}"
BUILD_CUDA="${MNISTBENCH_DOCKER_CUDA:-1}"
NO_CACHE=()
[ "${MNISTBENCH_DOCKER_NO_CACHE:-0}" = 1 ] && NO_CACHE=(--no-cache)
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OWNER_UID=4242   # the clone's owner in the run: a host user who is not root
OWNER_GID=4343
OTHER_UID=5555   # a --user that owns nothing in the clone
export DOCKER_BUILDKIT=0   # the classic builder: what the Dockerfiles promise to work with

mkdir -p "$WORK/logs" "$CACHE"
# One run at a time per machine: a second `make test` would share (and stop) this dockerd.
exec 9>"$CACHE/ci.lock"
if ! flock -n 9; then
    echo "[docker/ci.sh] waiting for another docker/ci.sh run to finish" >&2
    flock 9
fi
LOGS="$WORK/logs"
DOCKERD_PID=""
HTTP_PID=""

log() { printf '[docker/ci.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
skip() { log "SKIP: $*"; echo "SKIP: $*" > "$WORK/skipped"; exit 77; }
now() { date +%s; }

cleanup() {
    local rc=$?
    if [ -n "$HTTP_PID" ] && kill -0 "$HTTP_PID" 2>/dev/null; then
        kill "$HTTP_PID" 2>/dev/null || true
        wait "$HTTP_PID" 2>/dev/null || true
    fi
    if [ -n "$DOCKERD_PID" ]; then
        local containerd_pids
        containerd_pids="$(pgrep -P "$DOCKERD_PID" containerd || true)"
        log "stopping dockerd (pid $DOCKERD_PID) and its containerd (${containerd_pids:-none})"
        kill -TERM "$DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
        for pid in $containerd_pids; do
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -TERM "$pid" 2>/dev/null || true
        done
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Tools and daemon -------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root (apt-get install docker.io debootstrap, dockerd); uid is $(id -u)"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
        || ! command -v docker >/dev/null; then
    command -v apt-get >/dev/null || skip "dockerd/debootstrap missing and no apt-get to install them"
    log "apt-get install docker.io debootstrap"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
        docker.io debootstrap >"$LOGS/apt.log" 2>&1 || { tail -20 "$LOGS/apt.log" >&2; exit 1; }
fi

if timeout 20 docker info >/dev/null 2>&1; then
    log "using the Docker daemon that is already running (left running)"
else
    for driver in overlay2 vfs; do
        log "starting dockerd (storage driver $driver)"
        dockerd --storage-driver "$driver" >"$LOGS/dockerd-$driver.log" 2>&1 9>&- &
        DOCKERD_PID=$!
        for _ in $(seq 60); do
            timeout 5 docker info >/dev/null 2>&1 && break
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.5
        done
        if timeout 5 docker info >/dev/null 2>&1; then
            break
        fi
        log "dockerd with $driver did not come up: $(tail -3 "$LOGS/dockerd-$driver.log")"
        kill -TERM "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
        DOCKERD_PID=""
    done
    [ -n "$DOCKERD_PID" ] || { log "dockerd does not start (logs in $LOGS)"; exit 1; }
fi
docker version --format 'docker client {{.Client.Version}}, server {{.Server.Version}}' >&2

# 2. Base image -------------------------------------------------------------------------------
BASE="$(awk 'toupper($1) == "FROM" { print $2; exit }' "$ROOT/docker/Dockerfile.cpu")"
for f in "$ROOT"/docker/Dockerfile.*; do
    other="$(awk 'toupper($1) == "FROM" { print $2; exit }' "$f")"
    [ "$other" = "$BASE" ] || { log "$f starts FROM $other, not $BASE: one stand-in cannot serve both"; exit 1; }
done
if docker image inspect "$BASE" >/dev/null 2>&1; then
    log "base image $BASE present: $(docker image inspect -f '{{index .Config.Labels "org.mnistbench.standin"}}' "$BASE" | sed 's/^$/the real one/;s/debootstrap/the debootstrap stand-in/')"
else
    suite="${BASE##*-}"   # python:3.11-slim-bookworm -> bookworm
    log "building a stand-in for $BASE: debootstrap $suite from $DEBIAN_MIRROR"
    t0=$(now)
    rootfs="$WORK/rootfs"
    timeout 900 debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates,git \
        "$suite" "$rootfs" "$DEBIAN_MIRROR" >"$LOGS/debootstrap.log" 2>&1 \
        || { tail -20 "$LOGS/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        --change 'LABEL org.mnistbench.standin=debootstrap' - "$BASE" >/dev/null
    rm -rf "$rootfs"
    echo $(( $(now) - t0 )) > "$WORK/standin_s"
fi

# 3. Wheelhouse, served on the bridge ----------------------------------------------------------
log "wheelhouse: pip download of requirements.txt + constraints.txt into $CACHE/wheelhouse"
t0=$(now)
extra=()
[ "$BUILD_CUDA" = 1 ] && extra+=("jax[cuda13]")
timeout 1200 "$PY" -m pip download --quiet --disable-pip-version-check \
    -r "$ROOT/requirements.txt" -c "$ROOT/constraints.txt" "${extra[@]}" setuptools wheel \
    -d "$CACHE/wheelhouse" >"$LOGS/wheelhouse.log" 2>&1 \
    || { grep -v "is ignored" "$LOGS/wheelhouse.log" | tail -20 >&2; exit 1; }
echo $(( $(now) - t0 )) > "$WORK/wheelhouse_s"

BRIDGE_IP="$(docker network inspect bridge -f '{{(index .IPAM.Config 0).Gateway}}')"
# A fixed port keeps the build args (PIP_FIND_LINKS) the same from run to run, so Docker's cache
# holds the pip layer (~8 GB) instead of writing a new one per run; a random one if it is taken.
PORT="${MNISTBENCH_DOCKER_PORT:-38717}"
# (SO_REUSEADDR as http.server sets it: a port left in TIME_WAIT by the last run is free.)
if ! "$PY" -c "import socket as so, sys; s = so.socket(); s.setsockopt(so.SOL_SOCKET, so.SO_REUSEADDR, 1); s.bind(('$BRIDGE_IP', int(sys.argv[1])))" "$PORT" 2>/dev/null; then
    PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')"
    log "port ${MNISTBENCH_DOCKER_PORT:-38717} is taken: wheelhouse on $PORT (the pip layers will not come from the cache)"
fi
"$PY" -m http.server "$PORT" --bind "$BRIDGE_IP" --directory "$CACHE/wheelhouse" \
    >"$LOGS/http.log" 2>&1 9>&- &
HTTP_PID=$!
for _ in $(seq 40); do
    "$PY" -c "import urllib.request as u; u.urlopen('http://$BRIDGE_IP:$PORT/', timeout=2)" \
        2>/dev/null && break
    sleep 0.25
done
WHEELS="http://$BRIDGE_IP:$PORT/"
log "wheelhouse served at $WHEELS"

# 4. Build -----------------------------------------------------------------------------------
VERSION="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
echo "$VERSION" > "$WORK/image_version"
free_space() {  # where Docker keeps images, and how much room is left there
    local dir
    dir="$(docker info -f '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)"
    df -h --output=avail "$dir" | awk -v d="$dir" 'NR == 2 { printf "%s free in %s", $1, d }'
}
prune_untagged() {  # earlier builds of these images, untagged by a newer one (~9 GB each)
    local title
    for title in "mnistbench (CPU)" "mnistbench (CUDA)"; do
        docker image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null || true
    done
}
build() {  # build <cpu|cuda>
    local t0
    t0=$(now)
    log "docker build -f docker/Dockerfile.$1 -t mnistbench:$1 (version $VERSION)"
    # --force-rm: a failed step leaves no container behind (a failed pip step's is ~9 GB).
    timeout 1500 docker build --force-rm "${NO_CACHE[@]}" -f "$ROOT/docker/Dockerfile.$1" -t "mnistbench:$1" \
        --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS="$WHEELS" \
        --build-arg PIP_TRUSTED_HOST="$BRIDGE_IP" \
        --build-arg MNISTBENCH_IMAGE_VERSION="$VERSION" \
        "$ROOT" >"$LOGS/build-$1.log" 2>&1 || {
            log "docker build of mnistbench:$1 failed; $(free_space); the end of its log:"
            tail -30 "$LOGS/build-$1.log" >&2
            exit 1
        }
    echo $(( $(now) - t0 )) > "$WORK/build_$1_s"
    log "built mnistbench:$1 in $(cat "$WORK/build_$1_s") s, $(docker image inspect -f '{{.Size}}' "mnistbench:$1" | awk '{printf "%.1f GB", $1/1e9}')"
}
prune_untagged   # left by a run that failed before its own prune
log "before building: $(free_space)"
build cpu
[ "$BUILD_CUDA" = 1 ] && build cuda
kill "$HTTP_PID" 2>/dev/null || true
wait "$HTTP_PID" 2>/dev/null || true
HTTP_PID=""
prune_untagged

# 5. Runs, all without network -----------------------------------------------------------------
CLONE="$WORK/clone"
MIRROR="$WORK/mnist"
rm -rf "$CLONE" "$MIRROR"
git clone --quiet "$ROOT" "$CLONE"
cp -r "$CLONE/data/mirror" "$MIRROR"
rm -rf "$CLONE/data/mirror"   # MNIST must come from the mounted mirror, through MNIST_MIRRORS
"$PY" - "$CLONE" <<'EOF'
import sys
from pathlib import Path

import yaml

clone = Path(sys.argv[1])
params = yaml.safe_load((clone / "params.yaml").read_text())
params["data"]["limit_train"], params["data"]["limit_test"] = 2000, 500
params["train"]["epochs"] = 1
(clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
params["train"]["device"] = "cuda"
(clone / "params-cuda.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
(clone.parent / "first_backend").write_text(next(iter(params["backends"])))
EOF
chown -R "$OWNER_UID:$OWNER_GID" "$CLONE"

run() {  # run <name> <docker run args...>: output in logs/<name>.log, status in logs/<name>.rc
    local name=$1 t0 rc=0
    shift
    t0=$(now)
    timeout 1200 docker run --rm --network=none "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
    echo "$rc" > "$LOGS/$name.rc"
    echo $(( $(now) - t0 )) > "$WORK/run_${name}_s"
    log "run $name: exit $rc in $(cat "$WORK/run_${name}_s") s"
}
MOUNT=(-v "$CLONE:/workspace")
run pipeline "${MOUNT[@]}" -v "$MIRROR:/mnist:ro" -e MNIST_MIRRORS=/mnist mnistbench:cpu
run help mnistbench:cpu mnistbench --help
run env "${MOUNT[@]}" mnistbench:cpu mnistbench env
run other-user "${MOUNT[@]}" --user "$OTHER_UID:$OTHER_UID" mnistbench:cpu \
    sh -c 'id -u && git rev-parse HEAD && dvc metrics show --json'
run cuda-param-cpu-image "${MOUNT[@]}" mnistbench:cpu \
    mnistbench train "$(cat "$WORK/first_backend")" --params params-cuda.yaml --out /tmp/m
run torch-cpu-image mnistbench:cpu python -c \
    'import json, torch; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda}))'
if [ "$BUILD_CUDA" = 1 ]; then
    run cuda-frameworks mnistbench:cuda python -c '
import importlib.metadata as md, json, os
import jax, torch
print(json.dumps({
    "jax_cuda_plugin": md.version("jax-cuda13-plugin"),
    "jax_backend": jax.default_backend(),
    "torch_cuda": torch.version.cuda,
    "torch_cuda_available": torch.cuda.is_available(),
    "preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
    "image": os.environ.get("MNISTBENCH_IMAGE"),
}))'
    run cuda-param-cuda-image "${MOUNT[@]}" mnistbench:cuda \
        mnistbench train "$(cat "$WORK/first_backend")" --params params-cuda.yaml --out /tmp/m
fi
log "done; results in $WORK"
