"""scripts/cpu/seed_check.sh, the script behind results/cpu-seeds/, run on a small subset."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import repo_backends

from mnistbench import layout

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cpu" / "seed_check.sh"


def _run(out: Path, raw_dir: Path, backends: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "BACKENDS": backends, "SEEDS": "0 1"}
    return subprocess.run(
        [
            str(SCRIPT),
            str(out),
            "train.epochs=2",
            "data.limit_train=256",
            "data.limit_test=128",
            f"data.raw_dir={raw_dir}",
            *overrides,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.long("scripts/cpu/seed_check.sh end to end, one training per seed (~30 CPU-s)")
def test_seed_check_trains_once_per_seed_and_tabulates(tmp_path, raw_dir):
    out = tmp_path / "out"
    proc = _run(out, raw_dir, "jax-scan")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for seed in (0, 1):
        params = yaml.safe_load((out / f"params-{seed}.yaml").read_text())
        assert params["train"]["seed"] == seed and params["train"]["epochs"] == 2
        assert params["data"]["limit_train"] == 256
        entry = repo_backends("jax-scan", raw=raw_dir)  # params.yaml's, data follows raw_dir
        assert params["backends"] == entry
    for seed in (0, 1):  # where `mnistbench train --out metrics-<seed>` wrote each run
        assert layout.metrics_path(out / f"metrics-{seed}", "jax-scan").is_file()
    rows = list(csv.DictReader((out / "seeds.tsv").open(), delimiter="\t"))
    assert [(r["backend"], r["seed"]) for r in rows] == [("jax-scan", "0"), ("jax-scan", "1")]
    assert all(0.0 < float(r["val_acc"]) <= 1.0 for r in rows)
    assert "jax-scan: val_acc mean" in proc.stdout and "over 2 seeds" in proc.stdout


def test_seed_check_failure_leaves_no_table(tmp_path, raw_dir):
    out = tmp_path / "out"
    proc = _run(out, raw_dir, "jax-scan", "train.batch_size=1000")  # > the 256 examples
    assert proc.returncode != 0
    assert "train jax-scan (seed 0) failed" in proc.stderr and "batch_size" in proc.stderr
    assert not (out / "seeds.tsv").exists() and not (out / "seeds.tsv.part").exists()


def test_seed_check_names_an_unknown_backend(tmp_path, raw_dir):
    proc = _run(tmp_path / "out", raw_dir, "jax-scan no-such-backend")
    assert proc.returncode != 0
    assert "unknown backend(s) no-such-backend" in proc.stderr
