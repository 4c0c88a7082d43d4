"""Where a GPU training step goes: the kernels of one step and their time, for jax-scan and
torch-graph (and torch-tensor, eager, for reference), and torch-graph's choice of one CUDA graph
per epoch against one per step. Measurement only, not a pipeline stage (docs/bounds.md).

    python scripts/gpu/gpu_profile.py OUT [--raw-dir data/raw] [--parts ...] [--device cuda]

Run from the repository root with torch (CUDA), JAX (CUDA), Flax, Optax and PyYAML, after
`mnistbench download` (scripts/gpu/run-cuda.sh does it). Model, batch size, Adam and seed come from
params.yaml. Each part runs in a process of its own (two CUDA profilers must not share one,
and a part that fails does not stop the others):

  torch-graph   epochs timed (the first includes the capture), then one epoch's replay under
                torch.profiler: the kernels of one step are the epoch's kernels / its steps
  torch-step    the alternative: the same step captured as one CUDA graph, replayed per batch
                after copying the batch's indices into its static buffer; epochs timed
  torch-tensor  the eager step: epochs timed, then --steps steps under torch.profiler
  jax-scan      epochs timed, then one epoch under jax.profiler (its Perfetto trace is read)
  jax-kineto    jax-scan's epoch under torch.profiler instead (CUPTI sees XLA's kernels): a
                cross-check of jax-scan's kernel count from another profiler
  jax-hlo       jax-scan's epoch compiled with XLA_FLAGS=--xla_dump_to: the optimized HLO of
                the epoch (OUT/hlo/), and the work-launching instructions in its loop body

OUT gets <part>.json (timings, kernel table), <part>.trace.json.gz (open in Perfetto or
chrome://tracing), hlo/, and profile.md: one table of all parts, then each part's kernels.
"epoch" below is the training pass only, device synchronised; "issue" is how long the host
took to queue it (issue close to epoch: the host is the bound; much less: the GPU is).
`--device cpu --limit-train N` runs the same plumbing on a CPU (tests do; no kernels there).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # scripts/gpu/ -> the repository root
PARTS = ("torch-graph", "torch-step", "torch-tensor", "jax-scan", "jax-kineto", "jax-hlo")
KERNEL_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")  # torch.profiler's device events
TOP = 12  # kernels listed per part


# ------------------------------------------------------------------ pure helpers (tested)


def kernel_table(events: list[dict], steps: int) -> dict[str, Any]:
    """Kernels per step and their time, from device events ({"name", "ts", "dur"} in µs)."""
    if not events:
        return {
            "kernels": 0,
            "kernels_per_step": 0.0,
            "kernel_us_per_step": 0.0,
            "gpu_span_us_per_step": 0.0,
            "top": [],
        }
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        by_name[e["name"]].append(float(e["dur"]))
    start = min(float(e["ts"]) for e in events)
    end = max(float(e["ts"]) + float(e["dur"]) for e in events)
    total = sum(sum(d) for d in by_name.values())
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:TOP]
    return {
        "kernels": len(events),
        "kernels_per_step": len(events) / steps,
        "kernel_us_per_step": total / steps,  # sum of kernel durations: the GPU's busy time
        "gpu_span_us_per_step": (end - start) / steps,  # first start to last end: busy + gaps
        "top": [
            {
                "name": _short(n),
                "per_step": len(d) / steps,
                "us_per_step": sum(d) / steps,
                "mean_us": sum(d) / len(d),
            }
            for n, d in top
        ],
    }


def torch_trace_kernels(trace: dict) -> list[dict]:
    """Device events of a torch.profiler Chrome trace."""
    return [
        e
        for e in trace.get("traceEvents", [])
        if e.get("ph") == "X" and e.get("cat") in KERNEL_CATEGORIES
    ]


def jax_trace_kernels(trace: Any) -> list[dict]:
    """Kernel events of jax.profiler's Perfetto trace: complete events on a GPU process's
    stream threads ("Stream #1(...)"). The derived threads ("XLA Ops", "XLA Modules", "Steps")
    repeat the same time per op and are left out."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    gpu_pids = {
        e["pid"]
        for e in events
        if e.get("ph") == "M"
        and e.get("name") == "process_name"
        and "GPU" in str(e.get("args", {}).get("name", ""))
    }
    streams = {
        (e["pid"], e.get("tid"))
        for e in events
        if e.get("ph") == "M"
        and e.get("name") == "thread_name"
        and e["pid"] in gpu_pids
        and str(e.get("args", {}).get("name", "")).startswith("Stream")
    }
    return [e for e in events if e.get("ph") == "X" and (e.get("pid"), e.get("tid")) in streams]


_FREE = {
    "parameter",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "constant",
    "after-all",
    "partition-id",
    "replica-id",
    "opt-barrier",
    "add-dependency",
}  # launch no kernel
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*.*?\s([a-z][a-z0-9\-]*)\(")


def while_body_ops(hlo_text: str) -> dict[str, int]:
    """Opcode counts of the instructions that launch work (fusions, library calls, copies...)
    in the body of the optimized module's largest while loop: the scan over steps."""
    bodies = re.findall(r"\bwhile\(.*?\bbody=%?([\w.\-]+)", hlo_text)
    counts: dict[str, dict[str, int]] = {}
    for body in set(bodies):
        block = re.search(
            r"^(?:%)?" + re.escape(body) + r"\b[^\n]*\{\n(.*?)^\}", hlo_text, re.M | re.S
        )
        if block:
            ops = [
                m.group(1)
                for line in block.group(1).splitlines()
                if (m := _INSTRUCTION.match(line))
            ]
            counts[body] = dict(collections.Counter(o for o in ops if o not in _FREE))
    return max(counts.values(), key=lambda c: sum(c.values()), default={})


def _short(name: str, width: int = 110) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


# ------------------------------------------------------------------ the parts (one process each)


def _config(args: argparse.Namespace) -> Any:
    import yaml

    from mnistbench import config

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return config.from_dict(
        {
            "data": {"raw_dir": args.raw_dir, "limit_train": args.limit_train, "limit_test": None},
            "model": params["model"],
            "train": {**params["train"], "device": args.device},
            # the backends profiled here, params.yaml's entries, each reading RAW_DIR
            "backends": {
                name: {**params["backends"][name], "data": args.raw_dir}
                for name in ("torch-graph", "torch-tensor", "jax-scan")
            },
        }
    )


def _time_epochs(trainer: Any, epochs: int) -> dict[str, Any]:
    """Training passes only (the profile is about steps), each device synchronised."""
    issue, total, loss = [], [], None
    for _ in range(epochs):
        trainer.sync()
        t0 = time.perf_counter()
        loss = trainer.train_epoch()
        t1 = time.perf_counter()
        trainer.sync()
        issue.append(t1 - t0)
        total.append(time.perf_counter() - t0)
    steady = total[1:] or total
    return {
        "epoch_s": total,
        "issue_s": issue,
        "steady_epoch_s": sorted(steady)[len(steady) // 2],
        "train_loss": float(loss),
    }


def _torch_profile(torch: Any, run, out: Path, name: str) -> dict:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if torch.cuda.is_available() else []
    )
    with profile(activities=activities) as prof:
        run()
    tmp = out / f"{name}.trace.json"
    prof.export_chrome_trace(str(tmp))
    trace = json.loads(tmp.read_text())
    with open(tmp, "rb") as f, gzip.open(out / f"{name}.trace.json.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    tmp.unlink()
    return trace


def part_torch_graph(args, out: Path) -> dict:
    from mnistbench import backends, frameworks

    frameworks.configure_threads(None)
    cfg = _config(args)
    trainer = backends.build("torch-graph", cfg, args.device)
    result = _time_epochs(trainer, args.epochs)
    steps = len(trainer.bounds)

    def one_epoch():
        trainer.train_epoch()
        trainer.sync()

    trace = _torch_profile(trainer.torch, one_epoch, out, "torch-graph")
    return {
        **result,
        "steps": steps,
        "us_per_step": 1e6 * result["steady_epoch_s"] / steps,
        "graph": "one CUDA graph per epoch" if trainer.device == "cuda" else "eager (CPU)",
        **kernel_table(torch_trace_kernels(trace), steps),
    }


def part_torch_step(args, out: Path) -> dict:
    """One CUDA graph per step: the batch's indices copied into a static buffer, then a replay."""
    from mnistbench import backends, frameworks
    from mnistbench.backends import _torch_common as common

    frameworks.configure_threads(None)
    cfg = _config(args)
    t = backends.build("torch-graph", cfg, args.device)
    torch, bs = t.torch, cfg.train.batch_size
    if t.device != "cuda":
        return {"skipped": "CUDA graphs need a GPU"}
    t.perm.copy_(torch.randperm(t.num_train, generator=t.shuffle, device=t.device))
    t._warm_up()  # the backend's own warm-up: side stream, then weights and Adam put back
    idx = torch.zeros(bs, dtype=torch.long, device=t.device)  # static: the graph reads it
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        t.total += common.train_step(t.model, t.opt, t.x_train[idx], t.y_train[idx])
    full = t.num_train // bs  # full batches only: a smaller last one would need a second graph

    class PerStep:
        device, sync = t.device, t.sync

        def train_epoch(self):
            perm = torch.randperm(t.num_train, generator=t.shuffle, device=t.device)
            t.total.zero_()
            for start in range(0, full * bs, bs):
                idx.copy_(perm[start : start + bs])
                graph.replay()
            return t.total / full

    result = _time_epochs(PerStep(), args.epochs)
    return {
        **result,
        "steps": full,
        "us_per_step": 1e6 * result["steady_epoch_s"] / full,
        "graph": "one CUDA graph per step",
    }


def part_torch_tensor(args, out: Path) -> dict:
    from mnistbench import backends, frameworks
    from mnistbench.backends import _torch_common as common

    frameworks.configure_threads(None)
    cfg = _config(args)
    trainer = backends.build("torch-tensor", cfg, args.device)
    torch = trainer.torch
    result = _time_epochs(trainer, args.epochs)
    steps = -(-trainer.num_train // cfg.train.batch_size)
    perm = torch.randperm(trainer.num_train, device=trainer.device)
    batches = perm.split(cfg.train.batch_size)[: args.steps]

    def some_steps():
        for b in batches:
            common.train_step(trainer.model, trainer.opt, trainer.x_train[b], trainer.y_train[b])
        trainer.sync()

    trace = _torch_profile(torch, some_steps, out, "torch-tensor")
    host_ops = [
        e
        for e in trace.get("traceEvents", [])
        if e.get("ph") == "X"
        and e.get("cat") == "cpu_op"
        and str(e.get("name", "")).startswith("aten::")
    ]
    return {
        **result,
        "steps": steps,
        "us_per_step": 1e6 * result["steady_epoch_s"] / steps,
        "profiled_steps": len(batches),
        "aten_ops_per_step": len(host_ops) / len(batches),
        **kernel_table(torch_trace_kernels(trace), len(batches)),
    }


def _jax_scan(args) -> tuple[Any, Any]:
    from mnistbench import backends, frameworks

    frameworks.configure_threads(None)
    trainer = backends.build("jax-scan", _config(args), args.device)
    return trainer, _time_epochs(trainer, args.epochs)


def part_jax_scan(args, out: Path) -> dict:
    import jax

    trainer, result = _jax_scan(args)
    steps = trainer.num_batches
    log_dir = out / "jax-scan.jaxprof"
    with jax.profiler.trace(str(log_dir), create_perfetto_trace=True):
        trainer.train_epoch()
        trainer.sync()
    (perfetto,) = log_dir.glob("plugins/profile/*/perfetto_trace.json.gz")
    shutil.copy(perfetto, out / "jax-scan.trace.json.gz")
    trace = json.loads(gzip.open(perfetto).read())
    return {
        **result,
        "steps": steps,
        "us_per_step": 1e6 * result["steady_epoch_s"] / steps,
        **kernel_table(jax_trace_kernels(trace), steps),
    }


def part_jax_kineto(args, out: Path) -> dict:
    import torch  # its profiler records every CUDA kernel of the process, XLA's included

    trainer, result = _jax_scan(args)
    steps = trainer.num_batches

    def one_epoch():
        trainer.train_epoch()
        trainer.sync()

    trace = _torch_profile(torch, one_epoch, out, "jax-kineto")
    return {
        **result,
        "steps": steps,
        "us_per_step": 1e6 * result["steady_epoch_s"] / steps,
        **kernel_table(torch_trace_kernels(trace), steps),
    }


def part_jax_hlo(args, out: Path) -> dict:
    dump = out / "hlo"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump}"
        " --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*train_epoch.*"
    )
    from mnistbench import backends

    args.epochs = 1  # the compile is what is wanted here
    trainer, result = _jax_scan(args)
    final = sorted(dump.glob("*train_epoch*after_optimizations.txt"))
    for extra in set(dump.glob("*")) - set(final):  # keep the optimized module only
        extra.unlink() if extra.is_file() else shutil.rmtree(extra)
    ops = while_body_ops(final[-1].read_text()) if final else {}
    unroll = backends.load("jax-scan").UNROLL
    return {
        "hlo": [p.name for p in final],
        "scan_unroll": unroll,
        "loop_body_ops": ops,
        "loop_body_ops_per_step": sum(ops.values()) / unroll,
        "train_loss": result["train_loss"],
    }


# ------------------------------------------------------------------ driver


def _report(results: dict[str, dict]) -> str:
    lines = [
        "# Where a training step goes",
        "",
        "| part | how | steady epoch s | µs a step | issue s | kernels a step | "
        "kernel µs a step | GPU span µs a step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for part, r in results.items():
        if "error" in r or "skipped" in r:
            lines.append(
                f"| {part} | {r.get('skipped') or 'failed: ' + r['error'][-200:]} | | | | | | |"
            )
            continue
        if "steady_epoch_s" not in r:
            continue
        issue = sorted(r["issue_s"][1:] or r["issue_s"])[len(r["issue_s"][1:] or r["issue_s"]) // 2]
        lines.append(
            f"| {part} | {r.get('graph', '')} | {r['steady_epoch_s']:.4f} | "
            f"{r['us_per_step']:.1f} | {issue:.4f} | {r.get('kernels_per_step', 0):.1f} | "
            f"{r.get('kernel_us_per_step', 0):.1f} | {r.get('gpu_span_us_per_step', 0):.1f} |"
        )
    for part, r in results.items():
        if r.get("top"):
            lines += [
                "",
                f"## {part}: top kernels",
                "",
                "| kernel | per step | µs a step | mean µs |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| `{k['name']}` | {k['per_step']:.2f} | {k['us_per_step']:.2f} | "
                f"{k['mean_us']:.2f} |"
                for k in r["top"]
            ]
        if r.get("loop_body_ops"):
            lines += [
                "",
                f"## {part}: work-launching HLO instructions in the scan's loop body "
                f"(unroll {r['scan_unroll']}: {r['loop_body_ops_per_step']:.1f} a step)",
                "",
                ", ".join(f"{k} {v}" for k, v in sorted(r["loop_body_ops"].items())),
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--raw-dir", default="data/raw")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--epochs", type=int, default=4, help="timed epochs (the first is warm-up)")
    ap.add_argument("--steps", type=int, default=200, help="eager steps profiled (torch-tensor)")
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part:
        result = globals()["part_" + args.part.replace("-", "_")](args, out)
        (out / f"{args.part}.json").write_text(json.dumps(result, indent=2) + "\n")
        return 0
    results = {}
    for part in args.parts.split(","):
        cmd = [
            sys.executable,
            __file__,
            *(argv if argv is not None else sys.argv[1:]),
            "--part",
            part,
        ]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        (out / f"{part}.log").write_text(done.stdout + done.stderr)
        if done.returncode == 0:
            results[part] = json.loads((out / f"{part}.json").read_text())
        else:
            results[part] = {
                "error": (done.stderr or done.stdout).strip().splitlines()[-1:][0]
                if (done.stderr or done.stdout).strip()
                else f"exit {done.returncode}"
            }
        print(
            f"{part}: {time.perf_counter() - t0:.0f} s, "
            + ("ok" if done.returncode == 0 else results[part]["error"]),
            flush=True,
        )
    (out / "profile.md").write_text(_report(results))
    print((out / "profile.md").read_text())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without `pip install -e .`
    sys.exit(main())
