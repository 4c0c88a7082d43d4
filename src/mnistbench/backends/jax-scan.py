"""Beyond the article: JAX with the dataset on the device and one jitted call per epoch.

The whole split sits on the device (float32, /255 as the article). A training epoch is one
jitted function: a seeded permutation of the examples, then `lax.scan` over its batches, each
step the article's (same model, Adam, batch size, loss). No Python, no host transfer and no
dispatch per step: what is left is XLA's own code for the step, which shows how close JAX gets
to the machine's matmul limit (mnistbench roofline). On a CPU that is the batch-32 products,
which XLA runs on one core, and Adam's element-wise update, which costs nearly as much.

Evaluation is a second jitted function: one forward pass over the whole test split (the result
does not depend on how the forward pass is chunked), then the article's per-batch averages.

Remainder: the scan needs equal batches, so the last N % batch_size examples of each epoch's
permutation are not trained on (none for 60000 at batch 32; 96 at 128 or 512, 608 at 2048).
The permutation changes every epoch, so no example is always left out; `num_train` counts only
the examples trained on, so samples_per_s stays honest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistbench import frameworks
from mnistbench.backends import _idx
from mnistbench.backends import _jax_common as common
from mnistbench.config import Config, ConfigError

FRAMEWORK = "JAX (Flax + Optax), epoch under lax.scan"
LOADER = "whole split on the device (NumPy IDX reader), shuffled by index in the jitted epoch"

UNROLL = 4  # steps per iteration of the scan's loop: fewer loop iterations, each with more work
# for XLA to schedule. On the 2-core CPU host 4-9% faster than 1 at batch 32 and 128 (0.58-0.63 s
# against 0.63-0.68 s an epoch at 32; 8 was slower), with the same parameters to the last bit.
# On an H200 16% faster (29.6 against 35.0 µs a step), but its float rounding changes with the
# unroll (different kernels), so GPU results differ from unroll 1's (results/nvidia-h200).


def build(cfg: Config, device: str, data: Path) -> ScanTrainer:
    jax, device = frameworks.jax(device)
    x_train, y_train = _idx.load_split(data, "train", cfg.data.limit_train)
    x_test, y_test = _idx.load_split(data, "test", cfg.data.limit_test)
    if len(x_train) < cfg.train.batch_size:
        raise ConfigError(
            f"params: train.batch_size {cfg.train.batch_size} is more than the "
            f"{len(x_train)} training examples; jax-scan drops partial batches"
        )
    dev = jax.devices()[0]  # frameworks.jax chose the platform: its first device
    return ScanTrainer(
        cfg, device, jax.device_put((x_train, y_train), dev), jax.device_put((x_test, y_test), dev)
    )


class ScanTrainer:
    def __init__(self, cfg: Config, device: str, train: tuple[Any, Any], test: tuple[Any, Any]):
        import jax

        self.jax, self.device = jax, device
        self.train_data, self.test_data = train, test
        bs = cfg.train.batch_size
        self.num_batches = train[0].shape[0] // bs
        self.num_train = self.num_batches * bs  # examples trained on per epoch (remainder dropped)
        self.num_test = test[0].shape[0]
        self.state = common.init_state(cfg, train[0].device)
        self.epoch = 0
        self._train_epoch = _make_train_epoch(cfg.train.seed, bs, self.num_batches)
        self._evaluate = _make_evaluate(bs)
        self._pending: Any = None  # last results, possibly still in flight (async dispatch)

    def train_epoch(self) -> Any:
        self.epoch += 1
        self.state, loss = self._train_epoch(self.state, self.epoch, *self.train_data)
        self._pending = loss
        return loss

    def evaluate(self) -> tuple[Any, Any]:
        self._pending = self._evaluate(self.state, *self.test_data)
        return self._pending

    def sync(self) -> None:
        self.jax.block_until_ready((self.state, self._pending))

    def num_params(self) -> int:
        return common.num_params(self.state)


def _make_train_epoch(seed: int, batch_size: int, num_batches: int):
    import jax

    def train_epoch(state, epoch, x, y):
        perm = jax.random.permutation(common.data_key(seed, epoch), x.shape[0])
        batches = perm[: num_batches * batch_size].reshape(num_batches, batch_size)

        def body(state, idx):
            return common.train_step(state, x[idx], y[idx])

        state, losses = jax.lax.scan(body, state, batches, unroll=UNROLL)
        return state, losses.mean()  # the article's train_loss: mean of the batch losses

    return jax.jit(train_epoch, donate_argnums=0)  # the old state's buffers are reused


def _make_evaluate(batch_size: int):
    import jax

    def evaluate(state, x, y):
        loss, correct = common.per_example(state, x, y)
        return common.article_mean(loss, batch_size), common.article_mean(correct, batch_size)

    return jax.jit(evaluate)
