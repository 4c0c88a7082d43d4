"""Beyond the article: the fastest faithful PyTorch. torch-tensor's training, with the host's
work per step taken away where PyTorch can do that.

Same data, model, loss, Adam, batch size and shuffle as torch-tensor (backends/_torch_common.py):
the same seeded randperm each epoch, sliced into the same batches (the last one smaller), so
on a CPU the two rows train to the same bits.

On CUDA a training epoch is one CUDA graph. In the first epoch, after a few eager warm-up steps
on a side stream (the recipe of torch.cuda.graphs; their effect on the weights and on Adam's
state is undone), the whole epoch is captured: for every batch the index gather from the
split on the device, forward, loss, backward, Adam (fused, capturable: its step count stays on
the device) and the loss sum. The batches are read from a static permutation buffer; each
epoch refills it with that epoch's permutation and replays the graph: one launch per epoch,
no Python, autograd or dispatch per step. Why the epoch and not one graph per step:
docs/bounds.md.

On a CPU there are no CUDA graphs, and nothing else PyTorch offers ran faster than the eager
step on the CPU host (torch.compile of the whole step with its Adam, with max-autotune, the C++
wrapper or compiled autograd; of the model alone; of Adam's step alone; foreach Adam:
results/cpu-torch-graph/ and docs/bounds.md), so the same steps run eagerly: torch-tensor's
epoch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from mnistbench import frameworks
from mnistbench.backends import _torch_common as common
from mnistbench.config import Config

FRAMEWORK = "PyTorch, epoch replayed as one CUDA graph (on a CPU: eager, as torch-tensor)"
LOADER = "in-memory tensors on the device (NumPy IDX reader), batches by index"

WARMUP_STEPS = 3  # eager steps before the capture (torch.cuda.graphs' recipe): Adam's state,
# cuBLAS's workspace and autograd's per-stream setup are made there, not inside the capture


def build(cfg: Config, device: str, data: Path) -> GraphTrainer:
    torch, device = frameworks.torch(cfg.train.threads, device)
    torch.manual_seed(cfg.train.seed)  # model init, as torch-tensor
    return GraphTrainer(torch, device, cfg, data)


class GraphTrainer:
    def __init__(self, torch: Any, device: str, cfg: Config, data: Path):
        self.torch, self.device = torch, device
        self.x_train, self.y_train, self.x_test, self.y_test = common.load_splits(
            torch, cfg, device, data
        )
        self.num_train, self.num_test = len(self.x_train), len(self.x_test)
        self.batch_size = bs = cfg.train.batch_size
        self.model, self.opt = common.model_and_adam(
            torch, cfg, device, capturable=device == "cuda"
        )
        self.shuffle = torch.Generator(device=device).manual_seed(cfg.train.seed)
        # (start, stop) of each batch in the permutation, the last one smaller (torch-tensor's split)
        self.bounds = [(i, min(i + bs, self.num_train)) for i in range(0, self.num_train, bs)]
        # static buffers: a captured graph reads and writes these addresses on every replay
        self.perm = torch.empty(self.num_train, dtype=torch.long, device=device)
        self.total = torch.zeros((), device=device)  # the sum of the epoch's batch losses
        self.graph: Any = None  # the epoch's CUDA graph, captured in the first epoch

    def train_epoch(self) -> Any:
        torch = self.torch
        self.perm.copy_(torch.randperm(self.num_train, generator=self.shuffle, device=self.device))
        if self.device != "cuda":
            self._steps()
        else:
            if self.graph is None:
                self.graph = self._capture()
            self.graph.replay()  # the whole epoch, queued by one call
        return self.total / len(self.bounds)  # the article's train_loss: mean of the batch losses

    def _steps(self) -> None:
        """One epoch's steps, reading the batches from self.perm: run eagerly on a CPU,
        recorded once into the CUDA graph."""
        self.total.zero_()
        for start, stop in self.bounds:
            idx = self.perm[start:stop]  # a view: no copy, the address is fixed
            self.total += common.train_step(
                self.model, self.opt, self.x_train[idx], self.y_train[idx]
            )

    def _capture(self) -> Any:
        torch = self.torch
        self._warm_up()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records, runs nothing: epoch 1 is the first replay
            self._steps()
        return graph

    def _warm_up(self) -> None:
        """WARMUP_STEPS eager steps and one of the last batch's size (it may be smaller: its
        products are other kernels), on a side stream on CUDA; then the weights and Adam's
        state are put back as they were, so warming up trains nothing."""
        torch = self.torch
        params = list(self.model.parameters())
        saved = [p.detach().clone() for p in params]
        with self._side_stream():
            for start, stop in self.bounds[:WARMUP_STEPS] + self.bounds[-1:]:
                idx = self.perm[start:stop]
                common.train_step(self.model, self.opt, self.x_train[idx], self.y_train[idx])
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
            for state in self.opt.state.values():  # Adam starts from step 0 and zero moments
                for value in state.values():
                    value.zero_()
        self.opt.zero_grad(set_to_none=True)

    def _side_stream(self) -> Any:
        torch = self.torch
        if self.device != "cuda":
            return contextlib.nullcontext()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        return _then_join(torch, side)

    def evaluate(self) -> tuple[Any, Any]:
        return common.evaluate(self.torch, self.model, self.x_test, self.y_test, self.batch_size)

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@contextlib.contextmanager
def _then_join(torch: Any, side: Any):
    """Run the block on stream `side`, then make the current stream wait for it."""
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream().wait_stream(side)
