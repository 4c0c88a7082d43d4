"""jax-scan's scan unroll (1 against 4) on a GPU, in one process: steady training-pass time
and val_acc. Run from the checkout root after `mnistbench download`
(python3 scripts/gpu/unroll_check.py; its H200 output: results/nvidia-h200/unroll_check.log)."""

import importlib
import statistics
import sys
import time

sys.path.insert(0, "src")

from mnistbench import config, frameworks  # noqa: E402

scan = importlib.import_module("mnistbench.backends.jax-scan")


def run(unroll: int, epochs: int = 8) -> None:
    scan.UNROLL = unroll  # read when the epoch is traced, so before build()
    cfg = config.load("params.yaml").replace("train", device="cuda")
    trainer = scan.build(cfg, "cuda", cfg.backend_data("jax-scan"))  # params' data/raw
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        trainer.train_epoch()
        trainer.sync()
        times.append(time.perf_counter() - t0)
    _, acc = trainer.evaluate()
    trainer.sync()
    steady = statistics.median(times[1:])
    print(
        f"unroll {unroll}: first {times[0]:.3f} s, steady train pass {steady * 1e3:.1f} ms "
        f"({steady / trainer.num_batches * 1e6:.1f} us a step; min {min(times[1:]) * 1e3:.1f},"
        f" max {max(times[1:]) * 1e3:.1f}), val_acc after {epochs} epochs {float(acc):.4f}",
        flush=True,
    )


if __name__ == "__main__":
    jax, _ = frameworks.jax("cuda")
    print(jax.__version__, jax.devices(), flush=True)
    for unroll in (1, 4, 1, 4, 8):
        run(unroll)
