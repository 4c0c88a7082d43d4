"""The article's tf.data pipeline over TFDS's mnist, shared by the TFDS rows.

As in the article: shuffle over the whole split (reshuffled every epoch, seeded), batch, map
to float32 / 255, prefetch(1); the test split unshuffled. Each split gets its own explicit
options. `data.limit_*` takes the first N examples before anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistbench import frameworks, inputs
from mnistbench.config import Config


def article_datasets(cfg: Config, data: Path) -> tuple[Any, Any, int, int]:
    """(train, val, num_train, num_test): batched tf.data datasets as in the article, from
    the TFDS build in `data`."""
    data_dir = inputs.require_tfds(data)
    tf = frameworks.tensorflow()
    tfds = frameworks.tensorflow_datasets()
    tf.random.set_seed(cfg.train.seed)

    def preprocessing(x, y):
        x = tf.cast(x, tf.float32) / 255.0
        return x, y

    ds = tfds.load(
        "mnist", data_dir=str(data_dir), as_supervised=True, shuffle_files=False, download=False
    )
    train_set, val_set = (
        _take(ds["train"], cfg.data.limit_train),
        _take(ds["test"], cfg.data.limit_test),
    )
    num_train, num_test = len(train_set), len(val_set)
    bs = cfg.train.batch_size
    train_set = (
        train_set.shuffle(num_train, seed=cfg.train.seed, reshuffle_each_iteration=True)
        .batch(bs)
        .map(preprocessing)
        .prefetch(1)
    )
    val_set = val_set.batch(bs).map(preprocessing).prefetch(1)
    return train_set, val_set, num_train, num_test


def _take(split: Any, limit: int | None) -> Any:
    return split if limit is None else split.take(limit)
