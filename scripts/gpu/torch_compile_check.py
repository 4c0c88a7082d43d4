"""Measurement only (not a backend): torch-tensor's loop on the GPU, eager vs torch.compile.

Run from the repository root: python3 scripts/gpu/torch_compile_check.py data/raw
(output of the H200 run: results/nvidia-h200/torch_compile_check.log)."""

import sys
import time
import traceback

sys.path.insert(0, "src")
import torch

from mnistbench import models
from mnistbench.backends import _idx

F = torch.nn.functional
x, y = _idx.load_split(sys.argv[1], "train", None)
x = torch.from_numpy(x).cuda()
y = torch.from_numpy(y).long().cuda()


def run(mode):
    torch.manual_seed(0)
    model = models.torch_mlp((128, 256)).cuda()
    fused = mode == "eager"  # as torch-tensor; compiled steps get Inductor's own fused update
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)

    def step(idx):
        loss = F.nll_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    if mode != "eager":
        step = torch.compile(step, mode=mode)
    g = torch.Generator(device="cuda").manual_seed(0)
    for epoch in range(4):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(60000, generator=g, device="cuda")
        total = torch.zeros((), device="cuda")
        for idx in perm.split(32):
            total += step(idx)
        torch.cuda.synchronize()
        print(
            f"{mode}: epoch {epoch} {time.perf_counter() - t0:.3f} s, "
            f"loss {(total / 1875).item():.4f}",
            flush=True,
        )


for mode in ("eager", "default", "reduce-overhead"):
    try:
        run(mode)
    except Exception:
        traceback.print_exc(limit=3)
