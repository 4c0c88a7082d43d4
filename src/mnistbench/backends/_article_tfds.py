"""The article's tf.data pipeline over TFDS's mnist, shared by the TFDS rows.

As in the article: shuffle over the whole split (reshuffled every epoch, seeded), batch, map
to float32 / 255, prefetch(1); the test split unshuffled. Each split gets its own explicit
options. `data.limit_*` takes the first N examples of a split before anything else.
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

    # A subset is a slice of the split ("train[:2000]": the same first N examples as
    # .take(N)). TFDS caches a small dataset in memory the first time it is read whole; a
    # .take(N) after that cache never reads it whole, so TensorFlow warns every epoch ("did
    # not fully read the dataset being cached") and every epoch reads the files again. A
    # slice is cached like the full split, so a subset reads its data as a full run does.
    train_set, val_set = tfds.load(
        "mnist",
        split=[_split("train", cfg.data.limit_train), _split("test", cfg.data.limit_test)],
        data_dir=str(data_dir),
        as_supervised=True,
        shuffle_files=False,
        download=False,
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


def _split(name: str, limit: int | None) -> str:
    """TFDS's name for the first `limit` examples of a split ("train[:2000]"), or all of it."""
    return name if limit is None else f"{name}[:{limit}]"
