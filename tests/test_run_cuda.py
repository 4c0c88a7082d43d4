"""scripts/gpu/run-cuda.sh, the script behind results/<gpu>/, run end to end on the CPU.

CI has no GPU, so the test overrides train.device back to cpu on a small subset: what it
checks is the script's plumbing (params written, MNIST fetched from a mirror, roofline, each
backend, compare's report), which is the same on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnistbench import records

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.long("scripts/gpu/run-cuda.sh end to end (~50 CPU-s)")
def test_run_cuda_script_writes_a_complete_report(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "BACKENDS": "torch-tensor jax-scan",
        "MNIST_MIRRORS": str(ROOT / "data" / "mirror"),
    }
    proc = subprocess.run(
        [
            str(ROOT / "scripts" / "gpu" / "run-cuda.sh"),
            str(out),
            "train.device=cpu",
            "train.epochs=2",
            "data.limit_train=600",
            "data.limit_test=200",
            f"data.raw_dir={tmp_path / 'raw'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    params = yaml.safe_load((out / "params.yaml").read_text())
    raw = str(tmp_path / "raw")
    assert {name: entry["data"] for name, entry in params["backends"].items()} == {
        "torch-tensor": raw,
        "jax-scan": raw,
    }
    assert params["train"]["device"] == "cpu" and params["train"]["epochs"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["backends"]) == {"torch-tensor", "jax-scan"}
    assert summary["roofline"]["roofline_epoch_s"] > 0
    for name in summary["backends"]:
        assert records.read_record(out / "metrics", name)["env"]["device"] == "cpu"
    roofline = json.loads((out / "metrics" / "roofline" / "metrics.json").read_text())
    assert roofline["device"] == "cpu" and roofline["threads"] >= 1
    for name in ("summary.md", "epoch_time.png", "curves.png", "env.txt", "run.log"):
        assert (out / name).stat().st_size > 0, name
    assert "jax-scan: val_acc" in (out / "run.log").read_text()
    # the layout of a reference machine's folder: the cross-machine report shows it
    from mnistbench import report

    (column,) = report.reference_columns(tmp_path)
    assert column.name == "out" and set(column.cells) == {"torch-tensor", "jax-scan"}
