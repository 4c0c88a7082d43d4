"""The kernel bound: the fastest an epoch could be on this machine with one framework's own
kernels, per framework (torch and JAX), measured in the `roofline` stage's run.

The step's own matrix products and Adam's update, each timed alone at the model's shapes with
that framework's kernels (`measure_kernel_parts`, seconds per call), summed per step, times
the steps of an epoch, plus the evaluation pass's products (`kernel_bound`):

    kernel_bound_epoch_s[fw] = steps * (sum(products_s) + optimizer_s) + sum(eval_products_s)

in seconds per epoch, e.g. {"torch": 0.4, "jax": 0.5}. Everything else a step does (bias
adds, ReLU, log_softmax, the loss, the gather of the batch) and everything around the kernels
(Python, autograd, dispatch) is left out, so no backend of that framework can beat it. A
backend's kernel efficiency is its framework's bound over its steady epoch (compare's
`kernel_efficiency`): how much of the epoch the kernels are, the rest being what the framework
does around them (docs/bounds.md).

Also the pieces the roofline's matmul measurement shares (mnistbench.roofline imports this
module, never the reverse): the model's layer shapes (`layer_shapes`) and the timer
(`best_time`: the best wall time of a call, in seconds, over REPEATS rounds of at least
MIN_TIME_S / REPEATS seconds each). mnistbench.roofline writes the results into
metrics/roofline/metrics.json (keys kernel_bound_epoch_s and kernel_bound).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mnistbench import frameworks, mnist, models
from mnistbench.config import Config

log = logging.getLogger(__name__)

MIN_TIME_S = 0.2  # each shape is repeated for at least this long; the best repeat counts
REPEATS = 5  # timed repeats per shape (after one warm-up call)
FLOP_PER_CALL = 2e8  # small products are timed in runs of up to MAX_INNER, about this many FLOPs
MAX_INNER = 256
FRAMEWORKS = ("torch", "jax")
ADAM_CALLS = 64  # Adam updates per timed call


def layer_shapes(hidden: tuple[int, ...]) -> list[tuple[int, int]]:
    """(in, out) of each dense layer: 784 -> hidden... -> 10."""
    widths = [mnist.PIXELS, *hidden, mnist.CLASSES]
    return list(zip(widths[:-1], widths[1:]))


def best_time(run: Callable[[], None]) -> float:
    """Best wall time of one call, in seconds: one warm-up, then REPEATS rounds of
    >= MIN_TIME_S / REPEATS each."""
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


def inner_calls(flops: int) -> int:
    """Calls per timed run: about FLOP_PER_CALL of work, at most MAX_INNER calls."""
    return max(1, min(MAX_INNER, int(FLOP_PER_CALL // flops)))


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
    input is the data), its input gradient. roofline.model_flops counts the same products."""
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

        return best_time(run) / inner

    def product(self, p: Product) -> float:
        torch = self.torch
        if p.kind in ("forward", "eval forward"):  # nn.Linear: addmm(b, x, W.t()), W (out, in)
            x, w, b = self._randn(p.m, p.k), self._randn(p.n, p.k), self._randn(p.n)
            return self._seconds(lambda: torch.addmm(b, x, w.t()), inner_calls(p.flops))
        if p.kind == "weight grad":  # dW = dy.t() @ x: (out, batch) @ (batch, in)
            dy, x = self._randn(p.k, p.n), self._randn(p.k, p.m)
            return self._seconds(lambda: torch.mm(dy.t(), x), inner_calls(p.flops))
        dy, w = self._randn(p.m, p.k), self._randn(p.k, p.n)  # input grad: dy @ W
        return self._seconds(lambda: torch.mm(dy, w), inner_calls(p.flops))

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

        inner = inner_calls(p.flops)
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

        return best_time(lambda: loop(lhs, rhs).block_until_ready()) / inner

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

        return best_time(run) / ADAM_CALLS
