"""Measurement only (not a backend): ways to run torch-tensor's training step on the CPU.

Every variant trains the same model (mnistbench.models), NLLLoss and Adam(lr=1e-3) on the same
batches of 32 taken by index from a seeded permutation, as torch-tensor does:

  eager-fused            torch-tensor's step: eager, Adam(fused=True)
  eager-foreach          eager, Adam(foreach=True), torch's default on a GPU
  compile-model          torch.compile(model); loss, backward and Adam eager
  compile-opt(-foreach)  eager forward and backward, torch.compile(opt.step)
  compile-step(-foreach) torch.compile of the whole step: forward, loss, backward, Adam
  compile-step-autotune  the same, mode="max-autotune-no-cudagraphs"
  compile-step-cpp       the same, Inductor's C++ wrapper (no Python glue between kernels)
  compile-step-ca        the same, with compiled autograd (backward traced into the graph)

Each variant is built and warmed up (compiled) first; then the variants take turns, one
timed pass of STEPS steps each per round, so that the load of a shared machine falls on all
of them alike. Reported per variant: the median over rounds of wall and CPU µs a step, and
its speed relative to eager-fused (above 1: faster). Compile time is not in these numbers
(it is in a backend's first epoch).

    python scripts/cpu/variants.py RAW_DIR [--threads N] [--rounds R] [--variants a,b]
"""

import argparse
import statistics
import sys
import time

sys.path.insert(0, "src")
import torch  # noqa: E402
import torch._dynamo  # noqa: E402,F401

from mnistbench import models  # noqa: E402
from mnistbench.backends import _idx  # noqa: E402

F = torch.nn.functional
STEPS, BATCH = 150, 32


def make(variant: str, x, y):
    torch.manual_seed(0)
    model = models.torch_mlp((128, 256))
    fused = "foreach" not in variant
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused, foreach=not fused)
    forward = model
    if variant == "compile-model":  # forward and loss compiled; backward, Adam eager
        forward = torch.compile(model)

    update = opt.step
    if variant.startswith("compile-opt"):  # eager forward and backward, Adam compiled
        update = torch.compile(opt.step)

    def step(idx):
        loss = F.nll_loss(forward(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        update()
        return loss.detach()

    if variant.startswith("compile-step"):  # forward, backward and Adam in one compiled call
        mode = "max-autotune-no-cudagraphs" if "autotune" in variant else None
        options = {"cpp_wrapper": True} if "cpp" in variant else None  # C++, not Python, glue
        step = torch.compile(step, mode=mode, options=options)
    if "-ca" in variant:  # compiled autograd: backward and Adam traced into the step's graph
        inner = step

        def step(idx):
            with torch._dynamo.config.patch(compiled_autograd=True):
                return inner(idx)

    return step


def one_pass(step, x, gen) -> tuple[float, float]:
    """(wall, CPU) µs a step. The CPU time of this process is what the step costs when it is
    not waiting for a core: on a machine shared with other jobs it varies far less than wall
    time (with one thread, the two agree on an idle machine)."""
    perm = torch.randperm(len(x), generator=gen)[: STEPS * BATCH]
    total = torch.zeros(())
    t0, c0 = time.perf_counter(), time.process_time()
    for idx in perm.split(BATCH):
        total += step(idx)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert torch.isfinite(total), "diverged"
    return wall / STEPS * 1e6, cpu / STEPS * 1e6


def _first_line(e: Exception) -> str:
    """The line of a (long, multi-line) compile error that says what went wrong."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    said = [ln for ln in lines if "got" in ln or "Error" in ln] or lines or [""]
    return said[0][:300]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw_dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--variants",
        default="eager-fused,eager-foreach,compile-model,"
        "compile-step,compile-step-foreach,compile-step-autotune,compile-step-cpp,"
        "compile-step-ca,compile-opt,compile-opt-foreach",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    xs, ys = _idx.load_split(args.raw_dir, "train", STEPS * BATCH)
    x, y = torch.from_numpy(xs), torch.from_numpy(ys).long()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {STEPS} steps of {BATCH} a pass")
    steps, times = {}, {}
    for v in args.variants.split(","):
        try:
            t0 = time.perf_counter()
            step = make(v, x, y)
            one_pass(step, x, torch.Generator().manual_seed(1))  # warm-up, compiles
            steps[v] = step
            print(f"{v}: built and warmed up in {time.perf_counter() - t0:.1f} s", flush=True)
            times[v] = []
        except Exception as e:  # a variant torch cannot compile is reported, not fatal
            print(f"{v}: failed: {type(e).__name__}: {_first_line(e)}", flush=True)
    gen = torch.Generator().manual_seed(0)
    for r in range(args.rounds):
        for v in steps:
            times[v].append(one_pass(steps[v], x, gen))
        print(
            f"round {r + 1} (wall/CPU µs a step): "
            + ", ".join(f"{v} {times[v][-1][0]:.0f}/{times[v][-1][1]:.0f}" for v in steps),
            flush=True,
        )
    for kind, i in (("wall", 0), ("CPU", 1)):
        med = {v: statistics.median(t[i] for t in ts) for v, ts in times.items()}
        base = med.get("eager-fused")
        for v, ts in times.items():
            ratio = f", {base / med[v]:.2f}x eager-fused's speed" if base else ""
            print(
                f"{kind}: {v}: median {med[v]:.0f} µs a step (min {min(t[i] for t in ts):.0f},"
                f" max {max(t[i] for t in ts):.0f}){ratio}"
            )


if __name__ == "__main__":
    main()
