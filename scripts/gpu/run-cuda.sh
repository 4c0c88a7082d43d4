#!/usr/bin/env bash
# Reproduce results/<gpu>/: the backends that need no TensorFlow, trained on an NVIDIA GPU
# (train.device: cuda), the GPU's float32 matmul roofline, and compare's summary of them.
#
#   scripts/gpu/run-cuda.sh OUT_DIR [section.key=value ...]
#
# Run from the repository root, with torch (CUDA), JAX (CUDA), Flax, Optax, torchvision,
# click, PyYAML and matplotlib installed (the mnistbench:cuda image has them; so does a
# plain GPU machine's Python with `pip install -e .`). The MNIST files come from the mirrors
# of params.yaml (set MNIST_MIRRORS=data/mirror/ offline). OUT_DIR gets params.yaml (the
# params used: params.yaml with train.device=cuda, only these backends, then the overrides),
# metrics/train/<backend>/ and metrics/roofline/ as the DVC stages write them, machine.json (the
# machine's fingerprint), summary.{json,md}, the plots, env.txt (nvidia-smi) and run.log: the
# layout of a reference machine's folder, so `mnistbench report` shows it as a column.
# PYTHON (default python3) is the interpreter that has them.
# BACKENDS (default: torch-dataloader torch-tensor jax-scan torch-graph) picks the rows; the TFDS rows
# need TensorFlow, and jax-grain needs TFDS's ArrayRecord build, so they are left to the
# CPU pipeline.
set -euo pipefail
out=${1:?usage: scripts/gpu/run-cuda.sh OUT_DIR [section.key=value ...]}
shift
backends=${BACKENDS:-torch-dataloader torch-tensor jax-scan torch-graph}
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
if ! "$py" -c "import mnistbench" 2>/dev/null; then  # not installed: run from the checkout
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
mnistbench() { "$py" -m mnistbench "$@"; }

mkdir -p "$out"
exec > >(tee -a "$out/run.log") 2>&1
params=$out/params.yaml
sets=(--set train.device=cuda)  # then the overrides, which may change it back (tests do)
for item in "$@"; do sets+=(--set "$item"); done
mnistbench params "$params" "${sets[@]}" --backends "$backends"  # validated before any work
{ nvidia-smi || true; } > "$out/env.txt" 2>&1
mnistbench env >> "$out/env.txt"
mnistbench machine --out "$out/machine.json"
mnistbench download --params "$params"
mnistbench roofline --params "$params" --out "$out/metrics"
for b in $backends; do
    mnistbench train "$b" --params "$params" --out "$out/metrics"
done
mnistbench compare --params "$params" --metrics "$out/metrics" \
    --roofline "$out/metrics/roofline/metrics.json" --out "$out"
