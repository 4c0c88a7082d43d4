#!/bin/sh
# Entry point of both mnistbench images: runs the given command (default: `dvc repro`) in the
# repository mounted at /workspace (the working directory).
#
# Files written into the mount must belong to the user who owns the clone, not to root. When the
# container runs as root (plain `docker run`) and the working directory belongs to someone else,
# the command runs as that user and group instead (setpriv, from util-linux). With
# `--user "$(id -u):$(id -g)"` nothing changes hands. MNISTBENCH_KEEP_ROOT=1 keeps root.
#
# Two mistakes stop it at once, with one line saying what to add: a DVC command with no clone
# mounted, and the CUDA image (MNISTBENCH_EXPECT_GPU=1) timing with no GPU visible.
set -eu

if [ "$#" -eq 0 ]; then
    set -- dvc repro
fi

image="${MNISTBENCH_IMAGE:-mnistbench:cpu}"
gpus=""
if [ "${MNISTBENCH_EXPECT_GPU:-0}" = 1 ]; then
    gpus="--gpus all "
fi

# DVC's commands need the clone mounted at the working directory (or above it); without it
# DVC says only "you are not inside of a DVC repository".
in_dvc_repo() {
    dir="$(pwd)"
    while [ ! -d "$dir/.dvc" ]; do
        [ "$dir" = / ] && return 1
        dir="$(dirname "$dir")"
    done
}
if [ "$1" = dvc ] && ! in_dvc_repo; then
    echo "error: no clone of mnistbench at $(pwd): mount yours there, from its folder:" \
        "docker run ${gpus}--rm -v \"\$PWD:/workspace\" $image" >&2
    exit 1
fi

# The CUDA image (MNISTBENCH_EXPECT_GPU=1) run without a GPU would train on the CPU under
# train.device: auto, quietly. The pipeline and the timed stages stop instead, unless the
# params ask for the CPU (train.device: cuda is the frameworks' own error, which names the
# fix) or MNISTBENCH_EXPECT_GPU=0 is passed.
gpu_visible() {
    { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; } \
        || ls /dev/nvidia[0-9]* >/dev/null 2>&1
}
timed_command() {  # dvc repro / dvc exp ..., mnistbench train / roofline
    case "$1 ${2:-}" in
    "dvc repro" | "dvc exp" | "mnistbench train" | "mnistbench roofline") return 0 ;;
    *) return 1 ;;
    esac
}
params_file() {  # the --params the command names, else params.yaml
    params=params.yaml
    while [ "$#" -gt 0 ]; do
        case "$1" in
        --params) params="${2:-}" ;; # its value is looked at next, and matches nothing
        --params=*) params="${1#--params=}" ;;
        esac
        shift
    done
    echo "$params"
}
train_device() {  # train.device in a params file; auto when it cannot be read
    python -c 'import sys, yaml
try:
    with open(sys.argv[1]) as f:
        print(((yaml.safe_load(f) or {}).get("train") or {}).get("device") or "auto")
except Exception:
    print("auto")' "$1" 2>/dev/null || echo auto
}
if [ "${MNISTBENCH_EXPECT_GPU:-0}" = 1 ] && timed_command "$@" && ! gpu_visible \
    && [ "$(train_device "$(params_file "$@")")" = auto ]; then
    echo "error: no GPU visible in $image, and train.device is auto: it would time the" \
        "CPU. Add --gpus all (docker run --gpus all --rm -v \"\$PWD:/workspace\" $image;" \
        "the host needs the NVIDIA Container Toolkit), or run on the CPU on purpose with" \
        "train.device: cpu in params.yaml or -e MNISTBENCH_EXPECT_GPU=0" >&2
    exit 1
fi

# HOME must be writable: DVC, git, matplotlib and TFDS keep small files there. The image's HOME
# is world-writable (like /tmp); this covers `-e HOME=...` pointing somewhere read-only.
if ! { [ -d "${HOME:-}" ] && [ -w "${HOME:-}" ]; }; then
    HOME="$(mktemp -d /tmp/home.XXXXXX)"
    export HOME
fi

# A uid without a passwd entry (any --user, or the clone's owner) has no user name, and
# Python's getpass.getuser() (DVC calls it for its site cache) then fails: give it one.
name_for() {
    getent passwd "$1" | cut -d: -f1 | grep . || echo "uid$1"
}

if [ "$(id -u)" = 0 ] && [ "${MNISTBENCH_KEEP_ROOT:-0}" != 1 ]; then
    uid="$(stat -c %u .)"
    gid="$(stat -c %g .)"
    if [ "$uid" != 0 ]; then
        USER="$(name_for "$uid")"
        LOGNAME="$USER"
        export USER LOGNAME
        exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
    fi
fi
USER="${USER:-$(name_for "$(id -u)")}"
LOGNAME="${LOGNAME:-$USER}"
export USER LOGNAME
exec "$@"
