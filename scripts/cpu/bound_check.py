"""Measurement only: each framework's training step on the CPU against its kernel bound.

In one process, one thread, taking turns: a training pass of torch-tensor (= torch-graph on a
CPU) and of jax-scan over STEPS batches, and the kernel bound's parts for each framework
(kernel_bound.measure_kernel_parts: the step's products and Adam's update, each alone). Timed
in CPU seconds of this process, not wall seconds: on a machine shared with other jobs the
wall clock also counts the time spent waiting for a core, the CPU clock does not.
Reported: µs a step, the kernels' µs a step, and their ratio (the kernel efficiency's
inverse) per round and their medians.

    python scripts/cpu/bound_check.py RAW_DIR [--rounds R]
"""

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, "src")
from mnistbench import backends, config, frameworks, kernel_bound  # noqa: E402

STEPS = 150


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw_dir")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    frameworks.configure_threads(1)
    cfg = config.from_dict(
        {
            "data": {"raw_dir": args.raw_dir, "limit_train": STEPS * 32, "limit_test": 500},
            "train": {"threads": 1, "device": "cpu"},
        }
    )
    kernel_bound.time = types.SimpleNamespace(
        perf_counter=time.process_time
    )  # its best_time, in CPU s
    raw = Path(args.raw_dir)  # what both backends read (params' data/raw)
    trainers = {
        "torch": backends.load("torch-tensor").build(cfg, "cpu", raw),
        "jax": backends.load("jax-scan").build(cfg, "cpu", raw),
    }
    for t in trainers.values():  # compile, warm up
        t.train_epoch()
        t.sync()
    step_us = {fw: [] for fw in trainers}
    kernel_us = {fw: [] for fw in trainers}
    for r in range(args.rounds):
        for fw, t in trainers.items():
            c0 = time.process_time()
            t.train_epoch()
            t.sync()
            step_us[fw].append(1e6 * (time.process_time() - c0) / STEPS)
        parts = kernel_bound.measure_kernel_parts(cfg, "cpu", 500)
        for fw, p in parts.items():
            kernel_us[fw].append(1e6 * (sum(p["products_s"].values()) + p["optimizer_s"]))
        print(
            f"round {r + 1}: "
            + ", ".join(
                f"{fw} step {step_us[fw][-1]:.0f} µs, kernels {kernel_us[fw][-1]:.0f} µs "
                f"(products {1e6 * sum(parts[fw]['products_s'].values()):.0f}, "
                f"Adam {1e6 * parts[fw]['optimizer_s']:.0f})"
                for fw in trainers
            ),
            flush=True,
        )
    for fw in trainers:
        s, k = statistics.median(step_us[fw]), statistics.median(kernel_us[fw])
        print(f"{fw}: median step {s:.0f} µs, kernels {k:.0f} µs: step / kernel bound {s / k:.2f}")


if __name__ == "__main__":
    main()
