"""Article row 2: PyTorch, fed by TFDS through tf.data (`as_numpy_iterator` + from_numpy)."""

from __future__ import annotations

from pathlib import Path

from mnistbench import frameworks
from mnistbench.backends._article_tfds import article_datasets
from mnistbench.backends._article_torch import ArticleTorchTrainer
from mnistbench.config import Config

FRAMEWORK = "PyTorch"
LOADER = "TFDS (tf.data: shuffle, batch, map, prefetch)"


def build(cfg: Config, device: str, data: Path) -> ArticleTorchTrainer:
    torch, device = frameworks.torch(cfg.train.threads, device)  # before TensorFlow: triton
    torch.manual_seed(cfg.train.seed)
    train_set, val_set, num_train, num_test = article_datasets(cfg, data)

    def batches(ds):
        for x, y in ds.as_numpy_iterator():
            yield torch.from_numpy(x), torch.from_numpy(y)

    return ArticleTorchTrainer(
        torch,
        device,
        cfg,
        lambda: batches(train_set),
        lambda: batches(val_set),
        num_train,
        num_test,
    )
