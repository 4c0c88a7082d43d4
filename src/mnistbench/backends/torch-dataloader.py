"""Article row 1: PyTorch, fed by torchvision's MNIST + ToTensor through a shuffled DataLoader."""

from __future__ import annotations

from pathlib import Path

from mnistbench import frameworks, inputs
from mnistbench.backends._article_torch import ArticleTorchTrainer
from mnistbench.config import Config

FRAMEWORK = "PyTorch"
LOADER = "PyTorch DataLoader (torchvision MNIST + ToTensor)"


def build(cfg: Config, device: str, data: Path) -> ArticleTorchTrainer:
    raw = inputs.require_raw(data)
    torch, device = frameworks.torch(cfg.train.threads, device)
    datasets = frameworks.require("torchvision.datasets")
    transforms = frameworks.require("torchvision.transforms")
    from torch.utils.data import DataLoader, Subset

    class RawMNIST(datasets.MNIST):
        """torchvision's MNIST reading the verified IDX files in data/raw itself."""

        @property
        def raw_folder(self) -> str:
            return self.root

    def split(train: bool, limit: int | None):
        ds = RawMNIST(str(raw), train=train, download=False, transform=transforms.ToTensor())
        return ds if limit is None else Subset(ds, range(min(limit, len(ds))))

    torch.manual_seed(cfg.train.seed)  # model init and the DataLoader's shuffle order
    train_set, val_set = split(True, cfg.data.limit_train), split(False, cfg.data.limit_test)
    bs = cfg.train.batch_size
    train_loader = DataLoader(train_set, batch_size=bs, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=bs, shuffle=False)
    return ArticleTorchTrainer(
        torch, device, cfg, lambda: train_loader, lambda: val_loader, len(train_set), len(val_set)
    )
