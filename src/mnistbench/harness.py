"""One harness times every backend the same way; no backend reads the clock itself.

An epoch is one training pass plus one validation pass (the article's definition). Before
each clock read the harness calls `Trainer.sync()`, which waits for all dispatched device work
(`jax.block_until_ready`, `torch.cuda.synchronize`), so asynchronous dispatch cannot hide
time. Epoch 1 (JIT compile, warm-up) is reported apart; steady = median of epochs 2..N.

Around each epoch, outside the clock, it also reads the machine's counters
(mnistbench.interference): how much of the CPUs the run's own process tree used, how much
everything else did and how much the hypervisor stole, so every epoch carries how quiet the
machine was while it was timed.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from mnistbench import interference


class Trainer(Protocol):
    """What a backend's `build` returns. Results may be device scalars; the harness reads
    them with float() after the clock, so no host round trip is forced inside the timing
    beyond what the backend's own (article) code does."""

    device: str  # where it computes: "cpu" or "cuda"
    num_train: int  # training examples per epoch
    num_test: int  # validation examples per pass

    def train_epoch(self) -> Any:
        """One pass over the shuffled training split; returns the mean training loss."""

    def evaluate(self) -> tuple[Any, Any]:
        """One pass over the test split; returns (mean loss, accuracy)."""

    def sync(self) -> None:
        """Block until every piece of work this trainer dispatched has finished."""

    def num_params(self) -> int:
        """Trainable parameter count (parity check across backends)."""


@dataclass(frozen=True)
class Epoch:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_acc: float
    train_time_s: float  # wall clock of the training pass, device synchronised
    eval_time_s: float  # wall clock of the validation pass, device synchronised
    load: interference.Share  # the machine's use while the epoch ran (read outside the clock)

    @property
    def epoch_time_s(self) -> float:
        return self.train_time_s + self.eval_time_s

    def curves(self) -> dict[str, float]:
        """This epoch's point on each per-epoch curve (mnistbench.metrics.CURVES' keys)."""
        values = {k: v for k, v in asdict(self).items() if k not in ("epoch", "load")}
        return {
            **values,
            "epoch_time_s": self.epoch_time_s,
            "foreign_share": self.load.foreign,
            "steal_share": self.load.steal,
            "own_share": self.load.own,
        }


def seed_everything(seed: int) -> None:
    """Python and NumPy; each backend seeds its own framework (torch, tf.data, JAX) in build."""
    random.seed(seed)
    np.random.seed(seed)


def run(
    trainer: Trainer,
    epochs: int,
    on_epoch: Callable[[Epoch], None] = lambda e: None,
    clock: Callable[[], float] = time.perf_counter,
    meter: Callable[[], interference.Reading] = interference.read,
) -> list[Epoch]:
    history = []
    for epoch in range(1, epochs + 1):
        before = meter()
        t0 = clock()
        train_loss = trainer.train_epoch()
        trainer.sync()
        t1 = clock()
        val_loss, val_acc = trainer.evaluate()
        trainer.sync()
        t2 = clock()
        load = interference.between(before, meter())
        losses = float(train_loss), float(val_loss), float(val_acc)
        record = Epoch(epoch, *losses, t1 - t0, t2 - t1, load)
        history.append(record)
        on_epoch(record)
    return history


def summarize(history: list[Epoch], num_train: int, batch_size: int) -> dict[str, float | int]:
    """The harness's share of the record (mnistbench.metrics.NUMBERS; train adds the verdict
    and the rest). Steady = epochs 2..N (epoch 1 alone if N == 1). Shares are rounded to 0.01
    (a percent): finer digits are noise, and would make every `dvc metrics diff` list them."""
    steady = history[1:] or history
    loads = [e.load for e in steady]
    epoch_times = [e.epoch_time_s for e in steady]
    train_median = statistics.median(e.train_time_s for e in steady)
    last = history[-1]
    return {
        "val_acc": last.val_acc,
        "val_loss": last.val_loss,
        "train_loss": last.train_loss,
        "epoch_time_median_s": statistics.median(epoch_times),
        "epoch_time_min_s": min(epoch_times),  # spread across the steady epochs
        "epoch_time_max_s": max(epoch_times),
        "first_epoch_s": history[0].epoch_time_s,
        "train_time_median_s": train_median,
        "eval_time_median_s": statistics.median(e.eval_time_s for e in steady),
        "foreign_cpu_max": round(max(x.foreign for x in loads), 2),
        "steal_max": round(max(x.steal for x in loads), 2),
        "samples_per_s": num_train / train_median,  # training images per second, steady
        "own_cpu_mean": round(statistics.fmean(x.own for x in loads), 2),
        "waited_max": round(max(x.waited for x in loads), 3),
        "epochs": len(history),
        "batch_size": batch_size,
    }
