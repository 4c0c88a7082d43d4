#!/bin/sh
# Installs requirements into a virtual environment with uv, choosing PyTorch's build:
#
#   scripts/install.sh PYTHON [uv pip install arguments...]
#   e.g. scripts/install.sh .venv/bin/python -r requirements-dev.txt -c constraints.txt
#   scripts/install.sh --check   only checks TORCH_BACKEND (make install, before it installs)
#
# PyPI's Linux torch wheels are CUDA builds: they pull 4.1 GB of nvidia-* and triton wheels
# (of a 7.9 GB .venv) that a machine without an NVIDIA GPU never loads. There, torch and
# torchvision come from PyTorch's CPU index instead (2.14.1+cpu satisfies the pin
# torch==2.14.1, and sorts above PyPI's 2.14.1). When that index cannot be reached (a machine
# that reaches PyPI only, or a PyPI mirror), PyPI's build is installed, saying so in one line.
#
# Settings (environment):
#   TORCH_BACKEND         auto (default): cpu on Linux without an NVIDIA GPU (no working
#                         nvidia-smi, no /dev/nvidia0), else PyPI's build; cpu; cuda (PyPI's)
#   TORCH_INDEX_URL       PyTorch's CPU index [https://download.pytorch.org/whl/cpu]
#   TORCH_INDEX_TIMEOUT_S how long the index may take to answer, in seconds [5]
#   UV                    uv [uv beside PYTHON]
# An environment that has torch already keeps the build it has: `make clean install` switches.
set -eu

if [ "$#" -lt 1 ]; then
    echo "usage: $0 PYTHON [uv pip install arguments...]" >&2
    exit 2
fi
python="$1"
shift
uv="${UV:-$(dirname -- "$python")/uv}"
index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
index="${index%/}"
timeout_s="${TORCH_INDEX_TIMEOUT_S:-5}"

has_nvidia_gpu() {
    { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; } \
        || [ -e /dev/nvidia0 ]
}

# Why the index cannot be reached (printed), or nothing (exit 0) when it lists torch. The
# whole probe, name lookup included, is bounded by timeout_s: an unreachable index costs
# seconds, never uv's retries of each request (minutes).
unreachable() {
    "$python" - "$index/torch/" "$timeout_s" <<'PY'
import sys, threading, urllib.request

url, limit = sys.argv[1], float(sys.argv[2])
outcome = []


def probe():
    try:
        with urllib.request.urlopen(url, timeout=limit) as response:
            response.read(1)
        outcome.append("")
    except Exception as e:  # any failure means: use PyPI's build
        outcome.append(str(getattr(e, "reason", None) or e))


thread = threading.Thread(target=probe, daemon=True)
thread.start()
thread.join(limit)
reason = outcome[0] if outcome else f"no answer in {limit:g} s"
if reason:
    print(reason)
    sys.exit(1)
PY
}

backend="${TORCH_BACKEND:-auto}"
case "$backend" in
auto)
    if [ "$(uname -s)" = Linux ] && ! has_nvidia_gpu; then backend=cpu; else backend=cuda; fi
    ;;
cpu | cuda) ;;
*)
    echo "error: TORCH_BACKEND is '$backend': use auto, cpu or cuda" >&2
    exit 2
    ;;
esac
if [ "$python" = --check ]; then
    exit 0
fi

if [ "$backend" = cpu ]; then
    if reason="$(unreachable)"; then
        echo "install: torch from PyTorch's CPU index ($index; TORCH_BACKEND=cuda for PyPI's CUDA build)"
        # Best match across both indexes: torch 2.14.1+cpu from PyTorch's over PyPI's 2.14.1,
        # and every other package at its pinned version wherever it is (PyTorch's index holds
        # older copies of numpy, pillow, ..., which the first-match rule would take them from).
        set -- --index "$index" --index-strategy unsafe-best-match "$@"
    else
        echo "install: PyTorch's CPU index ($index) cannot be reached ($reason): installing PyPI's torch, a CUDA build, ~4.1 GB more in .venv (nvidia-*, triton) that this machine never loads"
    fi
fi
exec "$uv" pip install --python "$python" "$@"
