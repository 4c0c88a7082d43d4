"""scripts/gpu/gpu_profile.py: its trace and HLO readers on hand-made inputs, and (slow) its
plumbing run on the CPU, so that a GPU run fails on no plumbing the CPU could have caught."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu" / "gpu_profile.py"


@pytest.fixture(scope="module")
def gp():
    spec = importlib.util.spec_from_file_location("gpu_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_table_counts_kernels_and_time_per_step(gp):
    events = [
        {"name": "gemm", "ts": 0, "dur": 4},
        {"name": "adam", "ts": 5, "dur": 2},
        {"name": "gemm", "ts": 10, "dur": 6},
        {"name": "adam", "ts": 17, "dur": 3},
    ]
    table = gp.kernel_table(events, steps=2)
    assert table["kernels"] == 4 and table["kernels_per_step"] == 2
    assert table["kernel_us_per_step"] == pytest.approx(7.5)  # (4 + 2 + 6 + 3) / 2
    assert table["gpu_span_us_per_step"] == pytest.approx(10)  # 0 to 20, gaps included
    assert [k["name"] for k in table["top"]] == ["gemm", "adam"]
    assert table["top"][0] == {"name": "gemm", "per_step": 1, "us_per_step": 5, "mean_us": 5}
    assert gp.kernel_table([], steps=3)["kernels"] == 0


def test_torch_trace_keeps_device_events_only(gp):
    trace = {
        "traceEvents": [
            {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 9},
            {"ph": "X", "cat": "kernel", "name": "sgemm", "ts": 1, "dur": 3},
            {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoD", "ts": 5, "dur": 1},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": 0, "dur": 2},
        ]
    }
    assert [e["name"] for e in gp.torch_trace_kernels(trace)] == ["sgemm", "Memcpy DtoD"]


def test_jax_trace_keeps_the_gpu_streams_not_the_derived_lines(gp):
    meta = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        {
            "ph": "M",
            "pid": 2,
            "tid": 10,
            "name": "thread_name",
            "args": {"name": "Stream #13(Compute)"},
        },
        {"ph": "M", "pid": 2, "tid": 11, "name": "thread_name", "args": {"name": "XLA Ops"}},
        {"ph": "M", "pid": 1, "tid": 10, "name": "thread_name", "args": {"name": "Stream #1"}},
    ]
    events = [
        {"ph": "X", "pid": 2, "tid": 10, "name": "loop_fusion", "ts": 0, "dur": 2},
        {"ph": "X", "pid": 2, "tid": 11, "name": "loop_fusion", "ts": 0, "dur": 2},
        {"ph": "X", "pid": 1, "tid": 10, "name": "PjitFunction", "ts": 0, "dur": 9},
    ]
    assert gp.jax_trace_kernels({"traceEvents": meta + events}) == events[:1]
    assert gp.jax_trace_kernels(meta + events) == events[:1]  # a bare list is accepted too


HLO = """\
%fused_computation (p0: f32[32,256]) -> f32[256] {
  ROOT %r = f32[256]{0} reduce(%p0), dimensions={0}
}

%cond (arg: (s32[], f32[8])) -> pred[] {
  ROOT %lt = pred[] compare(%a, %b), direction=LT
}

%body.1 (arg_tuple.1: (s32[], f32[8])) -> (s32[], f32[8]) {
  %arg_tuple.1 = (s32[], f32[8]{0}) parameter(0)
  %gte.0 = s32[] get-tuple-element(%arg_tuple.1), index=0
  %gemm = (f32[32,128]{1,0}, s8[0]{0}) custom-call(%x, %w), custom_call_target="__cublas$gemm"
  %f.1 = f32[256]{0} fusion(%g), kind=kInput, calls=%fused_computation
  %f.2 = f32[8]{0} fusion(%g, %h), kind=kLoop, calls=%fused_computation
  %c = f32[8]{0} copy(%f.2)
  ROOT %t = (s32[], f32[8]{0}) tuple(%gte.0, %c)
}

%small_body (arg: (s32[])) -> (s32[]) {
  %p = (s32[]) parameter(0)
  ROOT %f = s32[] fusion(%p), kind=kLoop, calls=%fused_computation
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %w1 = (s32[]) while(%t0), condition=%cond, body=%small_body
  ROOT %w2 = (s32[], f32[8]{0}) while(%t1), condition=%cond, body=%body.1, metadata={}
}
"""


def test_while_body_ops_counts_the_work_of_the_largest_loop(gp):
    assert gp.while_body_ops(HLO) == {"custom-call": 1, "fusion": 2, "copy": 1}
    assert gp.while_body_ops("ENTRY %m () -> f32[] {\n}\n") == {}


# `make test` checks each of its parts' logic on canned inputs
@pytest.mark.long("scripts/gpu/gpu_profile.py end to end, each part in its own process (~21 CPU-s)")
def test_runs_end_to_end_on_a_cpu(raw_dir, tmp_path):
    """Every part in its own process, on 512 examples: JSON per part, the report, and the
    CUDA-only part saying why it did not run."""
    parts = "torch-graph,torch-step,jax-hlo"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(tmp_path),
            "--device",
            "cpu",
            "--raw-dir",
            str(raw_dir),
            "--limit-train",
            "512",
            "--epochs",
            "2",
            "--parts",
            parts,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    graph = json.loads((tmp_path / "torch-graph.json").read_text())
    assert graph["steps"] == 16 and graph["graph"] == "eager (CPU)" and len(graph["epoch_s"]) == 2
    assert json.loads((tmp_path / "torch-step.json").read_text()) == {
        "skipped": "CUDA graphs need a GPU"
    }
    hlo = json.loads((tmp_path / "jax-hlo.json").read_text())
    assert hlo["hlo"] and sum(hlo["loop_body_ops"].values()) > 0
    report = (tmp_path / "profile.md").read_text()
    assert "| torch-graph | eager (CPU) |" in report and "CUDA graphs need a GPU" in report
    assert (tmp_path / "torch-graph.trace.json.gz").stat().st_size > 0
