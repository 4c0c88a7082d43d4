"""Pieces shared by the in-memory PyTorch rows (torch-tensor, torch-graph): data on the device,
model and Adam, the training step, evaluation. One place for each, so the rows differ only in
how the steps are issued (eagerly, or replayed from a CUDA graph).

torch is passed in or imported inside each function: a backend module must be importable
before frameworks.configure_threads has run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistbench import models
from mnistbench.backends import _idx
from mnistbench.config import Config


def load_splits(torch: Any, cfg: Config, device: str, data: Path) -> tuple[Any, Any, Any, Any]:
    """(x_train, y_train, x_test, y_test) on `device`: float32 images scaled by /255 as
    ToTensor does (NumPy IDX reader, from the IDX files in `data`), int64 labels as NLLLoss wants."""
    arrays = (
        *_idx.load_split(data, "train", cfg.data.limit_train),
        *_idx.load_split(data, "test", cfg.data.limit_test),
    )
    x_train, y_train, x_test, y_test = (torch.from_numpy(a).to(device) for a in arrays)
    return x_train, y_train.long(), x_test, y_test.long()


def model_and_adam(
    torch: Any, cfg: Config, device: str, capturable: bool = False
) -> tuple[Any, Any]:
    """The article's MLP (initialised from torch's global RNG: seed it first) and its Adam.

    fused: the same Adam update as one kernel per group of parameters, not a dozen ops each.
    capturable (CUDA only): the step count stays on the device, so the update can be
    captured in a CUDA graph; the arithmetic is the same."""
    model = models.torch_mlp(cfg.model.hidden).to(device)
    return model, adam(torch, model.parameters(), cfg.train.lr, capturable)


def adam(torch: Any, params: Any, lr: float, capturable: bool = False) -> Any:
    """The rows' optimizer, also timed alone by the roofline stage's kernel bound."""
    return torch.optim.Adam(params, lr=lr, fused=True, capturable=capturable)


def train_step(model: Any, opt: Any, x: Any, y: Any) -> Any:
    """One Adam step on one batch; returns the batch's mean loss, detached, on the device
    (no host sync)."""
    from torch.nn import functional as F

    loss = F.nll_loss(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def evaluate(torch: Any, model: Any, x: Any, y: Any, batch_size: int) -> tuple[Any, Any]:
    """(val_loss, val_acc) on the device: one forward pass over the whole split (no_grad),
    then the article's per-batch averages."""
    from torch.nn import functional as F

    model.eval()
    with torch.no_grad():
        log_probs = model(x)
        loss = F.nll_loss(log_probs, y, reduction="none")
        correct = (log_probs.argmax(-1) == y).float()
    model.train()
    return per_batch_mean(torch, loss, batch_size), per_batch_mean(torch, correct, batch_size)


def per_batch_mean(torch: Any, values: Any, batch_size: int) -> Any:
    """The article's validation average: the mean over batches of `batch_size` (the last one
    smaller) of each batch's mean, so val_acc and val_loss compare with its rows exactly."""
    n = values.shape[0]
    full = n // batch_size * batch_size
    means = values[:full].reshape(-1, batch_size).mean(dim=1)
    if full < n:
        means = torch.cat([means, values[full:].mean().reshape(1)])
    return means.mean()
