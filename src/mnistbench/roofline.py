"""Stage `roofline`: the fastest an epoch could be on this machine, measured in the same run.

Two numbers, divided:
- the model's FLOPs per epoch, counted from its shapes (`model_flops`): matrix products only;
- this machine's float32 matmul throughput, measured with the frameworks and thread settings
  the backends use (`measure_matmul_gflops`): the best of the model's own shapes and a large
  square product, in torch and in JAX.

roofline_epoch_s = gflop_per_epoch / matmul_gflops is a lower bound: it charges nothing for
bias adds, ReLU, log_softmax, Adam's element-wise update (a dozen or so FLOPs per parameter
per step, a square root and a division among them), data movement or per-step overhead, and
it assumes every product runs at the best rate seen, which small batch-32 products do not
reach. A backend's efficiency is roofline_epoch_s / its steady epoch time (compare's summary
computes it from this file).

The stage also measures a second bound per framework, nearer to what a step costs: the
kernel bound (kernel_bound_epoch_s, seconds per epoch, e.g. {"torch": 0.4, "jax": 0.5}),
measured and summed by mnistbench.kernel_bound, which this module calls (never the reverse).

Output: <out>/roofline/metrics.json with the keys matmul_gflops (GFLOP/s), threads,
train_gflop_per_epoch, eval_gflop_per_epoch, gflop_per_epoch (GFLOP; 1 GFLOP = 1e9 FLOPs),
roofline_epoch_s (seconds; read by compare), kernel_bound_epoch_s and kernel_bound (the timed
parts in seconds, per framework), plus how they were obtained (peak_source, by_shape, device,
env).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistbench import (
    envinfo,
    frameworks,
    interference,
    kernel_bound,
    layout,
    mnist,
    models,
    outputs,
    quiet,
)
from mnistbench.config import Config

log = logging.getLogger(__name__)

SQUARE = {"cpu": 2048, "cuda": 8192}  # the large square product's size per device kind
# the timer (kernel_bound.best_time, inner_calls) and its settings (MIN_TIME_S, REPEATS,
# FLOP_PER_CALL, MAX_INNER) are kernel_bound's, shared with the kernel bound


@dataclass(frozen=True)
class Flops:
    """Matmul FLOPs of one epoch (a multiply-add counts 2)."""

    forward_per_example: int
    train_per_example: int  # forward + backward
    train: int  # one pass over the training examples
    eval: int  # one forward pass over the test examples
    per_train_step: int  # one batch of batch_size

    @property
    def total(self) -> int:
        return self.train + self.eval


def model_flops(hidden: tuple[int, ...], batch_size: int, num_train: int, num_test: int) -> Flops:
    """Count the MLP's matmul FLOPs per epoch, analytically.

    Per example and dense layer (in -> out): forward 2*in*out; backward 2*in*out for the
    weight gradient plus 2*in*out for the gradient with respect to the layer's input, except
    for the first layer, whose input is the data and needs no gradient (frameworks skip it).
    So training costs 3x the forward FLOPs less the first layer's input gradient, evaluation
    1x. Bias, ReLU, softmax and optimizer FLOPs are not matmul work and are left out.
    `batch_size` does not change the count per example; it gives the per-step figure.
    """
    products = [2 * i * o for i, o in kernel_bound.layer_shapes(hidden)]
    forward = sum(products)
    train = forward + sum(products) + sum(products[1:])  # forward, weight grads, input grads
    return Flops(
        forward_per_example=forward,
        train_per_example=train,
        train=train * num_train,
        eval=forward * num_test,
        per_train_step=train * batch_size,
    )


def matmul_shapes(
    hidden: tuple[int, ...], batch_size: int, device: str
) -> list[tuple[int, int, int]]:
    """(m, k, n) products to time: the model's forward products at batch_size, its weight
    gradients (in x batch @ batch x out), the whole-test-split forward, and a large square."""
    shapes = []
    for i, o in kernel_bound.layer_shapes(hidden):
        shapes += [(batch_size, i, o), (i, batch_size, o)]
    shapes.append((mnist.TEST_EXAMPLES, mnist.PIXELS, hidden[0]))
    n = SQUARE[device]
    shapes.append((n, n, n))
    return shapes


def measure_matmul_gflops(
    threads: int | None,
    device: str = "cpu",
    hidden: tuple[int, ...] = (128, 256),
    batch_size: int = 32,
    frameworks_to_try: tuple[str, ...] = ("torch", "jax"),
) -> dict[str, Any]:
    """Float32 matmul throughput (GFLOP/s) of each framework on each shape; the peak and where.

    Call frameworks.configure_threads(threads) first, in a fresh process (as the CLI does), so
    that the thread pools are sized as in the backends. torch gets `threads` as its
    intra-op count, as frameworks.torch does for the torch backends. JAX products run at
    "highest" precision, i.e. true float32 (on GPUs JAX's default would be TF32). Small
    products are timed in runs: torch as eager calls (its per-call dispatch included, as in
    eager training), JAX inside one compiled loop (as in jax-scan's epoch).
    """
    by_shape: dict[str, dict[str, float]] = {}
    unavailable = []
    for name in frameworks_to_try:
        try:
            timer, device = {"torch": _torch_timer, "jax": _jax_timer}[name](threads, device)
        except frameworks.DeviceUnavailableError as e:  # e.g. torch sees the GPU, JAX does not
            log.warning("%s skipped: %s", name, e)
            unavailable.append(str(e))
            continue
        by_shape[name] = {}  # the first framework resolves "auto"; the others follow it
        for m, k, n in matmul_shapes(hidden, batch_size, device):
            inner = kernel_bound.inner_calls(2 * m * k * n)
            seconds = kernel_bound.best_time(timer(m, k, n, inner)) / inner
            by_shape[name][f"{m}x{k}x{n}"] = round(2 * m * k * n / seconds / 1e9, 2)
            log.info("%s %dx%dx%d: %.1f GFLOP/s", name, m, k, n, by_shape[name][f"{m}x{k}x{n}"])
    if not by_shape:  # no framework could use the device: nothing was measured
        raise frameworks.DeviceUnavailableError("; ".join(unavailable))
    peak_fw, peak_shape = max(
        ((fw, s) for fw in by_shape for s in by_shape[fw]), key=lambda fs: by_shape[fs[0]][fs[1]]
    )
    return {
        "matmul_gflops": by_shape[peak_fw][peak_shape],
        "peak_source": f"{peak_fw} {peak_shape}",
        "by_shape": by_shape,
        "device": device,
    }


def _torch_timer(threads: int | None, device: str):
    torch, dev = frameworks.torch(threads, device)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def timer(m: int, k: int, n: int, inner: int) -> Callable[[], None]:
        """`inner` eager torch.mm calls (dispatch included, as in eager training), one sync."""
        a = torch.randn(m, k, generator=gen).to(dev)
        b = torch.randn(k, n, generator=gen).to(dev)
        out = torch.empty(m, n, device=dev)

        def run():
            for _ in range(inner):
                torch.mm(a, b, out=out)
            sync()

        return run

    return timer, dev


def _jax_timer(threads: int | None, device: str):
    del threads  # XLA sizes its pool from the CPU affinity set by configure_threads
    jax, dev = frameworks.jax(device)
    import jax.numpy as jnp
    import numpy as np

    @jax.jit
    def products(a_stack, b):
        """One product per slice of a_stack inside one compiled loop, as in jax-scan's epoch:
        no dispatch per product. Each output is reduced so that none can be skipped."""

        def body(total, a):
            return total + jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST).sum(), None

        return jax.lax.scan(body, jnp.zeros((), jnp.float32), a_stack)[0]

    rng = np.random.default_rng(0)

    def timer(m: int, k: int, n: int, inner: int) -> Callable[[], None]:
        a = jax.device_put(rng.standard_normal((inner, m, k), dtype=np.float32))
        b = jax.device_put(rng.standard_normal((k, n), dtype=np.float32))
        return lambda: products(a, b).block_until_ready()

    return timer, dev


def split_sizes(cfg: Config) -> tuple[int, int]:
    """(training, test) examples the backends use, after data.limit_*."""
    return (
        min(cfg.data.limit_train or mnist.TRAIN_EXAMPLES, mnist.TRAIN_EXAMPLES),
        min(cfg.data.limit_test or mnist.TEST_EXAMPLES, mnist.TEST_EXAMPLES),
    )


def roofline(
    cfg: Config,
    measured: dict[str, Any],
    threads_used: int | None,
    kernel_parts: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The metrics file's content, from a measurement and the params (and, given the timed
    parts of kernel_bound.measure_kernel_parts, the kernel bound per framework)."""
    num_train, num_test = split_sizes(cfg)
    flops = model_flops(cfg.model.hidden, cfg.train.batch_size, num_train, num_test)
    gflop = flops.total / 1e9
    return {
        "matmul_gflops": measured["matmul_gflops"],  # peak float32 GFLOP/s, see peak_source
        "threads": threads_used,  # CPU threads; None on a GPU
        "train_gflop_per_epoch": flops.train / 1e9,
        "eval_gflop_per_epoch": flops.eval / 1e9,
        "gflop_per_epoch": gflop,
        "roofline_epoch_s": gflop / measured["matmul_gflops"],
        "peak_source": measured["peak_source"],  # "<framework> <m>x<k>x<n>" that gave the peak
        "by_shape": measured["by_shape"],  # GFLOP/s per framework and product shape
        "device": measured["device"],
        "batch_size": cfg.train.batch_size,
        "train_examples": num_train,
        "test_examples": num_test,
        **(
            kernel_bound.kernel_bound(kernel_parts, num_train, cfg.train.batch_size)
            if kernel_parts
            else {}
        ),
    }


def _quiet(
    load: interference.Share, limits: interference.Thresholds, busy: interference.Share
) -> tuple[dict[str, Any], interference.Verdict]:
    """The verdict on the whole measurement, judged as one epoch (no spread: its timings are
    best-of repeats already)."""
    verdict = quiet.judge([load.wall_s], [load], limits, None)
    causes = tuple(c.replace("epoch 1: ", "while it measured, ") for c in verdict.causes)
    verdict = dataclasses.replace(verdict, causes=causes)
    fields = {
        "disturbed": int(verdict.label == "disturbed"),
        "foreign_cpu_max": round(min(load.foreign, 1.0), 2),
        "busy_before": round(min(busy.foreign, 1.0), 2),
        "quiet": quiet.section(verdict, limits, None),
    }
    return fields, verdict


def run(cfg: Config, out_root: str | Path = layout.METRICS_ROOT) -> dict[str, Any]:
    """Measure and write <out_root>/roofline/metrics.json (atomically); returns its content."""
    models.require_host_memory(cfg.model.hidden)  # as train does: before anything is allocated
    applied = frameworks.configure_threads(cfg.train.threads)  # before any framework import
    limits = quiet.thresholds(cfg)
    busy = interference.wait_for_quiet(limits, cfg.bench.wait_quiet_s)
    probe_start_s = interference.probe()
    before = interference.read()
    measured = measure_matmul_gflops(
        cfg.train.threads, cfg.train.device, cfg.model.hidden, cfg.train.batch_size
    )
    # CPU threads do the products only on the CPU; a GPU's rate owes nothing to them
    threads_used = (
        None if measured["device"] == "cuda" else cfg.train.threads or applied["cpus_usable"]
    )
    parts = kernel_bound.measure_kernel_parts(cfg, measured["device"], split_sizes(cfg)[1])
    result = roofline(cfg, measured, threads_used, parts)
    fields, verdict = _quiet(interference.between(before, interference.read()), limits, busy)
    result |= fields
    result["probe_start_s"], result["probe_end_s"] = probe_start_s, interference.probe()
    result["env"] = {**envinfo.collect(), **applied}
    quiet.log_verdict("roofline", verdict)
    path = layout.roofline_path(out_root)
    outputs.write_files(path.parent, {path.name: (json.dumps(result, indent=2) + "\n").encode()})
    return result
