"""Beyond the article: PyTorch on in-memory tensors, batches taken by index, no DataLoader.

Both splits are read once from data/raw (NumPy IDX reader), scaled by /255 as ToTensor does,
and moved to the device. Each epoch draws a seeded permutation on the device and slices it
into batches of train.batch_size, the last one smaller (as the article's DataLoader); each
batch is an index gather (`x[idx]`), then the article's model, NLLLoss and Adam step. The
loss is summed on the device and read once per epoch: no per-step `.item()`, so on a GPU the
host only queues kernels and never waits for them inside an epoch.

Evaluation runs one forward pass over the whole test split (no_grad; eval() set once), then
the article's per-batch averages (see _per_batch_mean). What bounds this row on a CPU is
PyTorch's eager per-op overhead (about 20 small kernels and their autograd bookkeeping per
step), not the data.
"""

from __future__ import annotations

from typing import Any

from mnistbench import frameworks, models
from mnistbench.backends import _idx
from mnistbench.config import Config

FRAMEWORK = "PyTorch"
LOADER = "in-memory tensors on the device (NumPy IDX reader), batches by index"
DATA = "raw"


def build(cfg: Config, device: str) -> "TensorTrainer":
    torch, device = frameworks.torch(cfg.train.threads, device)
    torch.manual_seed(cfg.train.seed)  # model init, as the article's rows
    train = _idx.load_split(cfg.data.raw_dir, "train", cfg.data.limit_train)
    test = _idx.load_split(cfg.data.raw_dir, "test", cfg.data.limit_test)
    return TensorTrainer(torch, device, cfg, train, test)


class TensorTrainer:
    def __init__(self, torch: Any, device: str, cfg: Config, train: tuple[Any, Any],
                 test: tuple[Any, Any]):
        self.torch, self.device = torch, device
        self.x_train, self.y_train = (torch.from_numpy(a).to(device) for a in train)
        self.x_test, self.y_test = (torch.from_numpy(a).to(device) for a in test)
        self.y_train, self.y_test = self.y_train.long(), self.y_test.long()  # NLLLoss targets
        self.num_train, self.num_test = len(self.x_train), len(self.x_test)
        self.batch_size = cfg.train.batch_size
        self.model = models.torch_mlp(cfg.model.hidden).to(device)
        # fused: the same Adam update as one kernel per parameter, not a dozen ops each
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr, fused=True)
        self.shuffle = torch.Generator(device=device).manual_seed(cfg.train.seed)

    def train_epoch(self) -> Any:
        torch, F = self.torch, self.torch.nn.functional
        self.model.train()
        perm = torch.randperm(self.num_train, generator=self.shuffle, device=self.device)
        batches = perm.split(self.batch_size)  # the last one smaller, as the DataLoader's
        total = torch.zeros((), device=self.device)
        for idx in batches:
            loss = F.nll_loss(self.model(self.x_train[idx]), self.y_train[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach()  # stays on the device: no host sync per step
        return total / len(batches)  # the article's train_loss: the mean of the batch losses

    def evaluate(self) -> tuple[Any, Any]:
        torch, F = self.torch, self.torch.nn.functional
        self.model.eval()
        with torch.no_grad():
            log_probs = self.model(self.x_test)
            loss = F.nll_loss(log_probs, self.y_test, reduction="none")
            correct = (log_probs.argmax(-1) == self.y_test).float()
        return (_per_batch_mean(torch, loss, self.batch_size),
                _per_batch_mean(torch, correct, self.batch_size))

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _per_batch_mean(torch: Any, values: Any, batch_size: int) -> Any:
    """The article's validation average: the mean over batches of `batch_size` (the last one
    smaller) of each batch's mean, so val_acc and val_loss compare with its rows exactly."""
    n = values.shape[0]
    full = n // batch_size * batch_size
    means = values[:full].reshape(-1, batch_size).mean(dim=1)
    if full < n:
        means = torch.cat([means, values[full:].mean().reshape(1)])
    return means.mean()
