"""A fresh clone always measures: a machine of the same kind as the committed run (here: the
same machine) must not inherit that run as its own. A real DVC in real clones: a "reference"
repository runs the pipeline and commits its metrics/ and dvc.lock, as main does; a clone of
it then runs every timed stage on its first `dvc repro`, and nothing on its second. Before its
first run, its report names the committed run as the committed reference."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from test_add_backend import _run  # a command in the clone, its output, rc 0 asserted

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch-tensor", "jax-scan")  # two quick ones: the rule is the same for all


@pytest.mark.long("dvc repro in a reference repository and twice in its clone (~200 CPU-s)")
def test_a_fresh_clone_of_the_same_machine_kind_measures_every_backend(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    reference = tmp_path / "reference"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(reference)], check=True)
    params = yaml.safe_load((reference / "params.yaml").read_text())
    params["data"].update(limit_train=400, limit_test=100)
    params["train"].update(epochs=2, batch_size=50)
    params["bench"].update(rounds_min=2, rounds_max=2)
    params["backends"] = {b: params["backends"][b] for b in BACKENDS}
    (reference / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(reference, "dvc", "repro", timeout=900)
    _run(reference, "git", "add", "-A", "params.yaml", "dvc.lock", "metrics")
    _run(reference, "git", "commit", "-qm", "reference run")

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(reference), str(clone)], check=True)
    assert not (clone / ".mnistbench").exists()  # the identity is never committed
    # the data stages' outputs from the reference's cache, as a DVC remote would give them
    _run(clone, "dvc", "cache", "dir", "--local", str(reference / ".dvc" / "cache"))

    said = _run(clone, "python", "-m", "mnistbench", "report")
    assert "committed reference (" in said and "not measured in this checkout" in said
    assert "this machine (" not in said

    first = _run(clone, "dvc", "repro", timeout=900)
    for name in BACKENDS:
        assert f"Running stage 'train@{name}'" in first, first
    assert "Running stage 'repeats'" in first and "Running stage 'roofline'" in first
    assert "this machine (" in (clone / "metrics" / "machines.md").read_text()

    second = _run(clone, "dvc", "repro")
    for name in BACKENDS:
        assert f"Stage 'train@{name}' didn't change, skipping" in second, second
    assert "Running stage 'repeats'" not in second
