#!/usr/bin/env bash
# How much val_acc moves with the seed alone: train each backend once per seed, params.yaml
# otherwise unchanged (10 epochs, batch 32), and print each backend's range over the seeds.
#
#   scripts/cpu/seed_check.sh OUT_DIR [section.key=value ...]
#
# Run from the repository root after `make install` and the data stages (`dvc repro
# build_tfds` for the TFDS rows). SEEDS (default: 0 1 2 3 4) and BACKENDS (default: jax-scan
# torch-tensor jax-tfds) pick the runs; `mnistbench params` applies the overrides to
# params.yaml (each value parsed as YAML, e.g. train.epochs=3), as in run-cuda.sh. OUT_DIR
# gets params-<seed>.yaml, metrics-<seed>/train/<backend>/ as `mnistbench train` writes
# them, one log per run, and seeds.tsv (backend, seed, val_acc, steady s/epoch), written only
# when every run succeeded. The seed sets the init, the shuffles and every framework's RNG (README,
# "Backends and the harness"); on a CPU a run is repeatable, so each line is that seed's
# result. PYTHON (default python3) is the interpreter with mnistbench installed.
set -euo pipefail
out=${1:?usage: scripts/cpu/seed_check.sh OUT_DIR [section.key=value ...]}
shift
seeds=${SEEDS:-0 1 2 3 4}
backends=${BACKENDS:-jax-scan torch-tensor jax-tfds}
py=${PYTHON:-python3}
mkdir -p "$out"
table=$out/seeds.tsv
rm -f "$table"  # a table left from an earlier run must not pass for this one's
trap 'rm -f "$table.part"' EXIT  # a failed run leaves no partial table behind
printf 'backend\tseed\tval_acc\tepoch_time_median_s\n' > "$table.part"
sets=()
for item in "$@"; do sets+=(--set "$item"); done
for s in $seeds; do  # every params file first: a bad override or backend fails before any run
    "$py" -m mnistbench params "$out/params-$s.yaml" "${sets[@]}" --set "train.seed=$s" \
        --backends "$backends" > /dev/null
done
for b in $backends; do
    for s in $seeds; do
        echo "== $b, seed $s" >&2
        if ! "$py" -m mnistbench train "$b" --params "$out/params-$s.yaml" \
                --out "$out/metrics-$s" > "$out/$b-$s.log" 2>&1; then
            echo "train $b (seed $s) failed; its log: $out/$b-$s.log" >&2
            tail -5 "$out/$b-$s.log" >&2
            exit 1
        fi
        "$py" - "$out/metrics-$s/train/$b/metrics.json" "$b" "$s" >> "$table.part" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{m['val_acc']:.4f}\t{m['epoch_time_median_s']:.3f}")
PY
    done
done
mv "$table.part" "$table"  # whole or not at all
"$py" - "$table" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for b in dict.fromkeys(r["backend"] for r in rows):
    acc = [float(r["val_acc"]) for r in rows if r["backend"] == b]
    seeds = " ".join(f"{r['seed']}:{float(r['val_acc']):.4f}" for r in rows if r["backend"] == b)
    print(f"{b}: val_acc mean {statistics.mean(acc):.4f}, min {min(acc):.4f}, "
          f"max {max(acc):.4f} over {len(acc)} seeds ({seeds})")
PY
