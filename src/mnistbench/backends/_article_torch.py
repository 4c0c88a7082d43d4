"""The article's PyTorch model, optimizer, `step` and epoch loop, shared by the PyTorch rows.

Kept as in the article: a host `loss.item()` per step, accuracy as the mean of per-batch
accuracies, `model.train()`/`model.eval()` per batch. Only `.to(device)` is added for GPUs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mnistbench import mnist, models
from mnistbench.config import Config

Batches = Callable[[], Iterable[tuple[Any, Any]]]  # a fresh pass of (x, y) torch tensors


class ArticleTorchTrainer:
    def __init__(
        self,
        torch: Any,
        device: str,
        cfg: Config,
        train_batches: Batches,
        val_batches: Batches,
        num_train: int,
        num_test: int,
    ):
        self.torch, self.device = torch, device
        self.model = models.torch_mlp(cfg.model.hidden).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr)
        self.criterion = torch.nn.NLLLoss()
        self.train_batches, self.val_batches = train_batches, val_batches
        self.num_train, self.num_test = num_train, num_test

    def step(self, x, y, is_train=True):
        x = x.reshape(-1, mnist.PIXELS)
        y_pred = self.model(x)
        loss = self.criterion(y_pred, y)
        if is_train:
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return loss, y_pred

    def train_epoch(self) -> float:
        train_loss, n = 0.0, 0
        for x, y in self.train_batches():
            x, y = x.to(self.device), y.to(self.device)
            self.model.train()
            loss, _ = self.step(x, y, is_train=True)
            train_loss += loss.item()
            n += 1
        return train_loss / n  # the article divides by len(loader): the number of batches

    def evaluate(self) -> tuple[float, Any]:
        val_loss, acc, n = 0.0, 0.0, 0
        for x, y in self.val_batches():
            x, y = x.to(self.device), y.to(self.device)
            self.model.eval()
            with self.torch.no_grad():
                loss, y_pred = self.step(x, y, is_train=False)
            val_loss += loss.item()
            acc += (y_pred.max(-1)[1] == y).float().mean()
            n += 1
        return val_loss / n, acc / n

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
