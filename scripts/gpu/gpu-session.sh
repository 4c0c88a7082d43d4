#!/usr/bin/env bash
# What a session with an NVIDIA GPU owes torch-graph and docs/bounds.md, in one go (a few
# minutes): the CUDA rows with torch-graph, the roofline with its kernel bound, compare's
# report (scripts/gpu/run-cuda.sh), then where a step goes (scripts/gpu/gpu_profile.py).
#
#   scripts/gpu/gpu-session.sh OUT_DIR        e.g. results/nvidia-h100
#
# Run from the repository root with what scripts/gpu/run-cuda.sh needs. BACKENDS (default:
# torch-tensor jax-scan torch-graph) picks the rows; torch-dataloader is left out by default
# (1.5 minutes, and already in results/nvidia-h200). The MNIST files come from data/mirror/
# unless MNIST_MIRRORS says otherwise (device machines are offline).
set -euo pipefail
out=${1:?usage: scripts/gpu/gpu-session.sh OUT_DIR}
py=${PYTHON:-python3}
export MNIST_MIRRORS=${MNIST_MIRRORS:-data/mirror/}
BACKENDS=${BACKENDS:-torch-tensor jax-scan torch-graph} scripts/gpu/run-cuda.sh "$out"
"$py" scripts/gpu/gpu_profile.py "$out/profile" --raw-dir data/raw
