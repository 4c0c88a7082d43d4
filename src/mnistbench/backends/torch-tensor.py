"""Beyond the article: PyTorch on in-memory tensors, batches taken by index, no DataLoader.

Both splits are read once from data/raw (NumPy IDX reader), scaled by /255 as ToTensor does,
and moved to the device. Each epoch draws a seeded permutation on the device and slices it
into batches of train.batch_size, the last one smaller (as the article's DataLoader); each
batch is an index gather (`x[idx]`), then the article's model, NLLLoss and Adam step
(backends/_torch_common.py, shared with torch-graph). The loss is summed on the device and
read once per epoch: no per-step `.item()`, so on a GPU the host only queues kernels and never
waits for them inside an epoch.

Evaluation runs one forward pass over the whole test split (no_grad), then the article's
per-batch averages (_torch_common.per_batch_mean). What bounds this row on a CPU is
PyTorch's eager per-op overhead (about 20 small kernels and their autograd bookkeeping per
step), not the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistbench import frameworks
from mnistbench.backends import _torch_common as common
from mnistbench.config import Config

FRAMEWORK = "PyTorch"
LOADER = "in-memory tensors on the device (NumPy IDX reader), batches by index"


def build(cfg: Config, device: str, data: Path) -> TensorTrainer:
    torch, device = frameworks.torch(cfg.train.threads, device)
    torch.manual_seed(cfg.train.seed)  # model init, as the article's rows
    return TensorTrainer(torch, device, cfg, data)


class TensorTrainer:
    def __init__(self, torch: Any, device: str, cfg: Config, data: Path):
        self.torch, self.device = torch, device
        self.x_train, self.y_train, self.x_test, self.y_test = common.load_splits(
            torch, cfg, device, data
        )
        self.num_train, self.num_test = len(self.x_train), len(self.x_test)
        self.batch_size = cfg.train.batch_size
        self.model, self.opt = common.model_and_adam(torch, cfg, device)
        self.shuffle = torch.Generator(device=device).manual_seed(cfg.train.seed)

    def train_epoch(self) -> Any:
        torch = self.torch
        perm = torch.randperm(self.num_train, generator=self.shuffle, device=self.device)
        batches = perm.split(self.batch_size)  # the last one smaller, as the DataLoader's
        total = torch.zeros((), device=self.device)
        for idx in batches:
            # stays on the device: no host sync per step
            total += common.train_step(self.model, self.opt, self.x_train[idx], self.y_train[idx])
        return total / len(batches)  # the article's train_loss: the mean of the batch losses

    def evaluate(self) -> tuple[Any, Any]:
        return common.evaluate(self.torch, self.model, self.x_test, self.y_test, self.batch_size)

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
