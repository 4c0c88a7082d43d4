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

A second bound per framework, nearer to what a step costs: the kernel bound (`kernel_bound_epoch_s`, e.g.
{"torch": 0.4, "jax": 0.5}): the step's own products and Adam's update, each timed alone at
the model's shapes with that framework's kernels, summed per step, times the steps of an
epoch, plus the evaluation pass's products. A backend's kernel efficiency is its framework's
bound over its steady epoch (compare's `kernel_efficiency`): how much of the epoch the kernels are,
the rest being what the framework does around them (docs/bounds.md).

Output: <out>/roofline/metrics.json with the keys matmul_gflops, threads,
train_gflop_per_epoch, eval_gflop_per_epoch, gflop_per_epoch, roofline_epoch_s (read by
compare), kernel_bound_epoch_s and kernel_bound (the timed parts, per framework), plus how
they were obtained (peak_source, by_shape, device, env).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistbench import envinfo, frameworks, interference, layout, mnist, models, quiet
from mnistbench.config import Config

log = logging.getLogger(__name__)

SQUARE = {"cpu": 2048, "cuda": 8192}  # the large square product's size per device kind
MIN_TIME_S = 0.2  # each shape is repeated for at least this long; the best repeat counts
REPEATS = 5  # timed repeats per shape (after one warm-up call)
FLOP_PER_CALL = 2e8  # small products are timed in runs of up to MAX_INNER, about this many FLOPs
MAX_INNER = 256


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


def layer_shapes(hidden: tuple[int, ...]) -> list[tuple[int, int]]:
    """(in, out) of each dense layer: 784 -> hidden... -> 10."""
    widths = [mnist.PIXELS, *hidden, mnist.CLASSES]
    return list(zip(widths[:-1], widths[1:]))


def model_flops(hidden: tuple[int, ...], batch_size: int, num_train: int, num_test: int) -> Flops:
    """Count the MLP's matmul FLOPs per epoch, analytically.

    Per example and dense layer (in -> out): forward 2*in*out; backward 2*in*out for the
    weight gradient plus 2*in*out for the gradient with respect to the layer's input, except
    for the first layer, whose input is the data and needs no gradient (frameworks skip it).
    So training costs 3x the forward FLOPs less the first layer's input gradient, evaluation
    1x. Bias, ReLU, softmax and optimizer FLOPs are not matmul work and are left out.
    `batch_size` does not change the count per example; it gives the per-step figure.
    """
    products = [2 * i * o for i, o in layer_shapes(hidden)]
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
    for i, o in layer_shapes(hidden):
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
            inner = max(1, min(MAX_INNER, int(FLOP_PER_CALL // (2 * m * k * n))))
            seconds = _best_time(timer(m, k, n, inner)) / inner
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


def _best_time(run: Callable[[], None]) -> float:
    """Best wall time of one call: one warm-up, then REPEATS rounds of >= MIN_TIME_S each."""
    run()
    best = float("inf")
    for _ in range(REPEATS):
        calls, t0 = 0, time.perf_counter()
        while True:
            run()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= MIN_TIME_S / REPEATS:
                break
        best = min(best, elapsed / calls)
    return best


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


# ------------------------------------------------------------------ the kernel bound
# What one framework's own kernels allow: the step's products and Adam's update, each timed
# alone at the model's shapes, summed per step, times the steps of an epoch, plus the products
# of the evaluation pass. Everything else a step does (bias adds, ReLU, log_softmax, the loss,
# the gather of the batch) and everything around the kernels (Python, autograd, dispatch) is
# left out, so no backend of that framework can beat it; how near it comes is how much of
# its step the kernels are (docs/bounds.md).

FRAMEWORKS = ("torch", "jax")
ADAM_CALLS = 64  # Adam updates per timed call


@dataclass(frozen=True)
class Product:
    """One matrix product of a step or of the evaluation pass: (m x k) @ (k x n)."""

    kind: str  # "forward", "weight grad" (x^T @ dy), "input grad" (dy @ W^T), "eval forward"
    layer: int  # 1-based
    m: int
    k: int
    n: int

    @property
    def name(self) -> str:
        return f"{self.kind} {self.layer} {self.m}x{self.k}x{self.n}"

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def step_products(hidden: tuple[int, ...], batch_size: int) -> list[Product]:
    """The products of one training step, in the order they run: each layer's forward, then
    backward from the last layer: its weight gradient and, but for the first layer (whose
    input is the data), its input gradient. model_flops counts the same products."""
    layers = list(enumerate(layer_shapes(hidden), start=1))
    forward = [Product("forward", n, batch_size, i, o) for n, (i, o) in layers]
    backward = []
    for n, (i, o) in reversed(layers):
        backward.append(Product("weight grad", n, i, batch_size, o))
        if n > 1:
            backward.append(Product("input grad", n, batch_size, o, i))
    return forward + backward


def eval_products(hidden: tuple[int, ...], num_test: int) -> list[Product]:
    """The evaluation pass as the fast rows run it: one forward over the whole test split."""
    return [
        Product("eval forward", n, num_test, i, o)
        for n, (i, o) in enumerate(layer_shapes(hidden), start=1)
    ]


def steps_per_epoch(framework: str, num_train: int, batch_size: int) -> int:
    """jax-scan drops the partial last batch; the torch rows train it (charged here as a full
    one: the bound is then a little high, by at most one step's kernels)."""
    if framework == "jax":
        return num_train // batch_size
    return -(-num_train // batch_size)


def kernel_bound(
    parts: dict[str, dict[str, Any]], num_train: int, batch_size: int
) -> dict[str, Any]:
    """The metrics' kernel-bound keys from timed parts (seconds per call), per framework:
    {"products_s": {name: s}, "optimizer_s": s, "eval_products_s": {name: s}}.

    kernel_bound_epoch_s[fw] = steps * (sum(products_s) + optimizer_s) + sum(eval_products_s);
    `kernel_bound[fw]` keeps the parts and the step and evaluation sums it came from."""
    bound, detail = {}, {}
    for fw, p in parts.items():
        steps = steps_per_epoch(fw, num_train, batch_size)
        step_s = sum(p["products_s"].values()) + p["optimizer_s"]
        eval_s = sum(p["eval_products_s"].values())
        bound[fw] = steps * step_s + eval_s
        detail[fw] = {**p, "steps": steps, "step_s": step_s, "eval_s": eval_s}
    return {"kernel_bound_epoch_s": bound, "kernel_bound": detail}


def measure_kernel_parts(
    cfg: Config, device: str, num_test: int, frameworks_to_try: tuple[str, ...] = FRAMEWORKS
) -> dict[str, dict[str, Any]]:
    """Time each part of kernel_bound alone, per framework, on `device` ("cpu" or "cuda", as
    measure_matmul_gflops resolved it). Call frameworks.configure_threads first.

    torch: the products as nn.Linear and its autograd issue them (addmm with the bias and the
    transposed weight; mm for the gradients), and fused Adam's own two kernels (the step
    count's increment, then torch._fused_adam_, as torch.optim.Adam(fused=True) issues them)
    without the Python of Optimizer.step. On a CPU each call is eager, its dispatch included
    (a few µs); on CUDA a run of calls is captured in a CUDA graph and replayed, so the time
    is the GPU's alone. JAX: each product or Adam update (optax.adam applied through the
    TrainState, as jax-scan does) runs inside one jitted loop, no dispatch per call, at JAX's
    default matmul precision, as in jax-scan.
    """
    products = step_products(cfg.model.hidden, cfg.train.batch_size)
    evals = eval_products(cfg.model.hidden, num_test)
    parts: dict[str, dict[str, Any]] = {}
    for fw in frameworks_to_try:
        try:
            timer = {"torch": _TorchKernels, "jax": _JaxKernels}[fw](cfg, device)
        except frameworks.DeviceUnavailableError as e:
            log.warning("%s kernel bound skipped: %s", fw, e)
            continue
        parts[fw] = {
            "products_s": {p.name: timer.product(p) for p in products},
            "optimizer_s": timer.adam(),
            "eval_products_s": {p.name: timer.product(p) for p in evals},
        }
        log.info(
            "%s kernels: %.1f µs a step",
            fw,
            1e6 * (sum(parts[fw]["products_s"].values()) + parts[fw]["optimizer_s"]),
        )
    return parts


def _inner(flops: int) -> int:
    """Calls per timed run: about FLOP_PER_CALL of work, at most MAX_INNER calls."""
    return max(1, min(MAX_INNER, int(FLOP_PER_CALL // flops)))


class _TorchKernels:
    def __init__(self, cfg: Config, device: str):
        from mnistbench.backends import _torch_common

        self.torch, self.dev = frameworks.torch(cfg.train.threads, device)
        self.common, self.cfg = _torch_common, cfg  # the rows' Adam: _torch_common.adam
        self.gen = self.torch.Generator(device="cpu").manual_seed(0)

    def _randn(self, *shape: int) -> Any:
        return self.torch.randn(*shape, generator=self.gen).to(self.dev)

    def _seconds(self, call: Callable[[], Any], inner: int) -> float:
        """Seconds per call: `inner` calls eagerly on a CPU, replayed from a CUDA graph on CUDA."""
        torch = self.torch
        if self.dev != "cuda":

            def run():
                for _ in range(inner):
                    call()
        else:
            side = torch.cuda.Stream()  # warm-up off the capture stream (torch.cuda.graphs)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                call()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(inner):
                    call()

            def run():
                graph.replay()
                torch.cuda.synchronize()

        return _best_time(run) / inner

    def product(self, p: Product) -> float:
        torch = self.torch
        if p.kind in ("forward", "eval forward"):  # nn.Linear: addmm(b, x, W.t()), W (out, in)
            x, w, b = self._randn(p.m, p.k), self._randn(p.n, p.k), self._randn(p.n)
            return self._seconds(lambda: torch.addmm(b, x, w.t()), _inner(p.flops))
        if p.kind == "weight grad":  # dW = dy.t() @ x: (out, batch) @ (batch, in)
            dy, x = self._randn(p.k, p.n), self._randn(p.k, p.m)
            return self._seconds(lambda: torch.mm(dy.t(), x), _inner(p.flops))
        dy, w = self._randn(p.m, p.k), self._randn(p.k, p.n)  # input grad: dy @ W
        return self._seconds(lambda: torch.mm(dy, w), _inner(p.flops))

    def adam(self) -> float:
        """fused Adam's kernels over the model's parameters, with the rows' Adam's settings."""
        torch = self.torch
        model = models.torch_mlp(self.cfg.model.hidden).to(self.dev)
        params = list(model.parameters())
        opt = self.common.adam(torch, params, self.cfg.train.lr, capturable=self.dev == "cuda")
        for p in params:
            p.grad = 1e-3 * self._randn(*p.shape)
        opt.step()  # makes Adam's state (moments, step counts)
        return self._seconds(fused_adam_kernels(torch, opt), ADAM_CALLS)


def fused_adam_kernels(torch: Any, opt: Any) -> Callable[[], None]:
    """A call that does what `opt.step()` does (opt: Adam(fused=True), one parameter group,
    its state made by a first step), issuing only its kernels: the step counts' increment
    and torch._fused_adam_ (torch.optim.adam._fused_adam), without the Python around them."""
    (group,) = opt.param_groups
    params = group["params"]
    state = [opt.state[p] for p in params]
    steps = [s["step"] for s in state]
    tensors = (
        [p.detach() for p in params],
        [p.grad for p in params],
        [s["exp_avg"] for s in state],
        [s["exp_avg_sq"] for s in state],
        [],
        steps,
    )
    beta1, beta2 = group["betas"]

    def update():
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            *tensors,
            amsgrad=group["amsgrad"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )

    return update


class _JaxKernels:
    def __init__(self, cfg: Config, device: str):
        import numpy as np

        self.jax, _ = frameworks.jax(device)
        self.cfg = cfg
        self.rng = np.random.default_rng(0)

    def _randn(self, *shape: int) -> Any:
        import numpy as np

        return self.jax.device_put(self.rng.standard_normal(shape, dtype=np.float32))

    def product(self, p: Product) -> float:
        """`inner` products in one jitted scan, the left operand a fresh slice each time (so
        that none is loop-invariant, as a batch is not); the last product is the loop's
        output, so none can be skipped."""
        jax = self.jax
        import jax.numpy as jnp

        inner = _inner(p.flops)
        if p.kind == "weight grad":  # x.T @ dy: the batch is contracted, as in Dense's transpose
            lhs, rhs = self._randn(inner, p.k, p.m), self._randn(p.k, p.n)
            product = lambda a, b: jnp.dot(a.T, b)  # noqa: E731
        elif p.kind == "input grad":  # dy @ W.T, W (in, out) as Dense keeps it
            lhs, rhs = self._randn(inner, p.m, p.k), self._randn(p.n, p.k)
            product = lambda a, b: jnp.dot(a, b.T)  # noqa: E731
        else:
            lhs, rhs = self._randn(inner, p.m, p.k), self._randn(p.k, p.n)
            product = jnp.dot

        @jax.jit
        def loop(stack, b):
            out = jax.eval_shape(product, stack[0], b)
            return jax.lax.scan(
                lambda _, a: (product(a, b), None), jnp.zeros(out.shape, out.dtype), stack
            )[0]

        return _best_time(lambda: loop(lhs, rhs).block_until_ready()) / inner

    def adam(self) -> float:
        """ADAM_CALLS updates of jax-scan's TrainState (its init, its optax.adam) in one jitted
        loop. The gradients are scaled by 1 + 1e-12 * step, a multiply XLA fuses into the
        update, so that no part of the update is loop-invariant and hoisted out of the loop."""
        jax = self.jax
        import jax.numpy as jnp

        from mnistbench.backends import _jax_common

        state = _jax_common.init_state(self.cfg, jax.devices()[0])
        grads = jax.tree_util.tree_map(lambda p: 1e-3 * self._randn(*p.shape), state.params)

        @jax.jit
        def loop(state, grads):
            def body(state, _):
                scale = 1.0 + 1e-12 * state.step.astype(jnp.float32)
                g = jax.tree_util.tree_map(lambda x: x * scale, grads)
                return state.apply_gradients(grads=g), None

            return jax.lax.scan(body, state, None, length=ADAM_CALLS)[0]

        def run():
            nonlocal state
            state = loop(state, grads)
            jax.block_until_ready(state)

        return _best_time(run) / ADAM_CALLS


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
    parts of measure_kernel_parts, the kernel bound per framework)."""
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
        **(kernel_bound(kernel_parts, num_train, cfg.train.batch_size) if kernel_parts else {}),
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
    parts = measure_kernel_parts(cfg, measured["device"], split_sizes(cfg)[1])
    result = roofline(cfg, measured, threads_used, parts)
    fields, verdict = _quiet(interference.between(before, interference.read()), limits, busy)
    result |= fields
    result["probe_start_s"], result["probe_end_s"] = probe_start_s, interference.probe()
    result["env"] = {**envinfo.collect(), **applied}
    quiet.log_verdict("roofline", verdict)
    out = Path(out_root) / layout.ROOFLINE_DIR
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".metrics.json.partial"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out / layout.METRICS_FILE)
    return result
