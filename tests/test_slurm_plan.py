"""The batch script's plan (scripts/slurm/mnistbench.sbatch): which backends a task trains and
whether it builds TFDS first, run as the script runs it (its inline Python, taken from the
script), without Slurm.

Issue 29: the plan compared data.tfds_dir with the backends' entries themselves, which are
objects with a `data` field, so it never asked for the TFDS build and every TFDS backend failed
on every node.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import repo_backends

ROOT = Path(__file__).resolve().parents[1]
BATCH = ROOT / "scripts" / "slurm" / "mnistbench.sbatch"


def _plan_snippet() -> str:
    """The Python that plan() runs with `python -c '...' "$params"`."""
    body = re.search(r"^plan\(\) \{\n(.*?)^\}", BATCH.read_text(), re.S | re.M)
    assert body, "mnistbench.sbatch has no plan() function"
    snippet = re.search(r"python -c '(.*?)' \"\$params\"", body.group(1), re.S)
    assert snippet, "plan() no longer runs `python -c '...' \"$params\"`"
    return snippet.group(1)


def _plan(tmp_path: Path, *backends: str) -> list[str]:
    """plan()'s two lines for params whose backends are `backends` (entries as params.yaml's),
    the data folders as the batch script sets them (its scratch, not the repository's)."""
    raw, tfds = tmp_path / "work" / "data" / "raw", tmp_path / "work" / "data" / "tfds"
    doc = {
        "data": {"raw_dir": str(raw), "tfds_dir": str(tfds)},
        "backends": repo_backends(*backends, raw=raw, tfds=tfds),
    }
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", _plan_snippet(), str(params)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize(
    "backends, builds_tfds",
    [
        (("torch-dataloader", "jax-tfds"), "1"),  # one TFDS reader among raw readers
        (("torch-tfds",), "1"),
        (("jax-grain", "jax-scan"), "1"),
        (("torch-dataloader", "jax-scan", "torch-tensor"), "0"),  # no build when none reads it
    ],
)
def test_the_plan_builds_tfds_exactly_when_a_backend_reads_it(tmp_path, backends, builds_tfds):
    assert _plan(tmp_path, *backends) == [" ".join(backends), builds_tfds]


def test_every_tfds_backend_of_params_yaml_gets_the_build(tmp_path):
    """Each backend whose entry in the repository's params.yaml reads data.tfds_dir, alone."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tfds_readers = [
        name for name, e in params["backends"].items() if e["data"] == params["data"]["tfds_dir"]
    ]
    assert tfds_readers, "params.yaml lists no TFDS backend: this test checks nothing"
    for name in tfds_readers:
        assert _plan(tmp_path, name) == [name, "1"], name
