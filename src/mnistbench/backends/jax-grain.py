"""Beyond the article: JAX fed by `tfds.data_source` (ArrayRecord) and grain, no TensorFlow.

The loader TFDS now recommends for JAX: `tfds.data_source` gives random access to the
ArrayRecord build (data/tfds/array_record, made by build_tfds), and a grain pipeline shuffles
(seeded, a new order each epoch), decodes and batches it, with grain's thread prefetch so
that decoding overlaps the device's work. TensorFlow is never imported (tests check it).

Each record costs an ArrayRecord read, a tf.Example parse and a PNG decode (PIL), all in
Python: that is what bounds this row on a CPU, not the model. The step is jitted and
takes the batch as uint8 (scaled /255 on the device, so a GPU receives 4x fewer bytes); the
loss and accuracy sums stay on the device until sync. The last partial batch is kept (as
the article's loaders do), which costs one extra compile in epoch 1 per split.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from mnistbench import frameworks, models, tfds_build
from mnistbench.backends import _jax_common as common
from mnistbench.config import Config

FRAMEWORK = "JAX (Flax + Optax)"
LOADER = "tfds.data_source (ArrayRecord) + grain, no TensorFlow"
DATA = "tfds"

READ_THREADS = 1  # grain thread decoding ahead of the step; decoding holds the GIL, so more
# threads only contend (measured here: 0, 1, 2 and grain's default 16 within noise, 16 worst)
PREFETCH_BATCHES = 8  # batches decoded ahead


def build(cfg: Config, device: str) -> "GrainTrainer":
    jax, device = frameworks.jax(device)
    grain = frameworks.require("grain")
    tfds = frameworks.require("tensorflow_datasets")  # not frameworks.tensorflow_datasets(): no TF
    data_dir = tfds_build.require_tfds(tfds_build.array_record_dir(cfg.data.tfds_dir))
    sources = tfds.data_source("mnist", data_dir=str(data_dir), download=False,
                               builder_kwargs={"file_format": "array_record"})
    train = _take(grain, sources["train"], cfg.data.limit_train)
    test = _take(grain, sources["test"], cfg.data.limit_test)
    return GrainTrainer(jax, grain, device, cfg, train, test)


def _take(grain: Any, source: Any, limit: int | None) -> Any:
    """A grain MapDataset of the first `limit` records, each as (uint8 pixels (784,), label)."""
    ds = grain.MapDataset.source(source)
    if limit is not None:
        ds = ds[:limit]
    return ds.map(_record)


def _record(example: dict) -> tuple[np.ndarray, np.int32]:
    return example["image"].reshape(models.IN_FEATURES), np.int32(example["label"])


class GrainTrainer:
    def __init__(self, jax: Any, grain: Any, device: str, cfg: Config, train: Any, test: Any):
        self.jax, self.grain, self.device = jax, grain, device
        self.train_ds, self.test_ds = train, test
        self.num_train, self.num_test = len(train), len(test)
        self.batch_size, self.seed = cfg.train.batch_size, cfg.train.seed
        dev = jax.devices()[0]
        self.state = common.init_state(cfg, dev)
        self._zero = jax.device_put(np.zeros((), np.float32), dev)  # typed and committed as the
        # step's outputs are, so the step compiles once per batch shape
        self.epoch = 0
        self._train_step = jax.jit(_train_step, donate_argnums=0)
        self._eval_step = jax.jit(_eval_step)
        self._pending: Any = None  # last results, possibly still in flight (async dispatch)

    def _batches(self, ds: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        options = self.grain.ReadOptions(num_threads=READ_THREADS,
                                         prefetch_buffer_size=PREFETCH_BATCHES)
        return iter(ds.batch(self.batch_size).to_iter_dataset(options))  # last batch smaller

    def train_epoch(self) -> Any:
        self.epoch += 1
        epoch_seed = np.random.SeedSequence((self.seed, self.epoch)).generate_state(1)[0]
        shuffled = self.train_ds.shuffle(seed=int(epoch_seed))  # a new order each epoch
        loss_sum, n = self._zero, 0
        for x, y in self._batches(shuffled):
            self.state, loss_sum = self._train_step(self.state, loss_sum, x, y)
            n += 1
        self._pending = loss_sum / n  # the article's train_loss: mean of the batch losses
        return self._pending

    def evaluate(self) -> tuple[Any, Any]:
        sums, n = (self._zero, self._zero), 0
        for x, y in self._batches(self.test_ds):
            sums = self._eval_step(self.state, sums, x, y)
            n += 1
        self._pending = (sums[0] / n, sums[1] / n)  # the article's mean of per-batch means
        return self._pending

    def sync(self) -> None:
        self.jax.block_until_ready((self.state, self._pending))

    def num_params(self) -> int:
        return common.num_params(self.state)


def _scale(x: Any) -> Any:
    import jax.numpy as jnp

    return x.astype(jnp.float32) / 255.0  # the article's preprocessing, on the device


def _train_step(state: Any, loss_sum: Any, x: Any, y: Any) -> tuple[Any, Any]:
    state, loss = common.train_step(state, _scale(x), y)
    return state, loss_sum + loss


def _eval_step(state: Any, sums: tuple[Any, Any], x: Any, y: Any) -> tuple[Any, Any]:
    loss, correct = common.per_example(state, _scale(x), y)
    return sums[0] + loss.mean(), sums[1] + correct.mean()
