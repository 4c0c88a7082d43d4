"""Adding a backend is its own file plus one entry in params.yaml's `backends`: in a fresh
clone, a toy NumPy backend is added that way and nothing else is edited; real DVC then trains
it (its own train@ stage), compares it and reports it, and an edit to its file reruns its own
stage only. A real clone, a real `dvc repro`, MNIST from the repository's mirror copy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import clone_env

ROOT = Path(__file__).resolve().parents[1]
TOY = "toy-numpy"

# A softmax regression in NumPy: enough to be a backend (the harness's Trainer protocol), no
# framework of its own. It reads data/raw through the shared IDX helper.
TOY_SOURCE = '''"""A toy backend: softmax regression in NumPy, full-batch gradient steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnistbench.backends import _idx
from mnistbench.config import Config

FRAMEWORK = "NumPy"
LOADER = "in-memory arrays"


def build(cfg: Config, device: str, data: Path) -> "Toy":
    return Toy(cfg, data)


class Toy:
    device = "cpu"

    def __init__(self, cfg: Config, data: Path):
        self.x, self.y = _idx.load_split(data, "train", cfg.data.limit_train)
        self.xt, self.yt = _idx.load_split(data, "test", cfg.data.limit_test)
        self.num_train, self.num_test = len(self.x), len(self.xt)
        self.w = np.zeros((self.x.shape[1], 10), np.float32)
        self.lr = 0.5

    def _loss(self, x, y):
        z = x @ self.w
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return p, float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())

    def train_epoch(self):
        p, loss = self._loss(self.x, self.y)
        p[np.arange(len(self.y)), self.y] -= 1
        self.w -= self.lr * self.x.T @ p / len(self.y)
        return loss

    def evaluate(self):
        p, loss = self._loss(self.xt, self.yt)
        return loss, float((p.argmax(axis=1) == self.yt).mean())

    def sync(self):
        pass

    def num_params(self):
        return self.w.size
'''


def _run(repo: Path, *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        list(args), cwd=repo, env=clone_env(repo), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.long("a real dvc repro of two backends on 600 images, roofline included (~150 CPU-s)")
def test_a_new_backend_is_one_file_and_one_params_entry(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)

    # the only edits: the backend's file and its params entry (the rest of params is sizing,
    # to keep the run short; the other backends are left out to save time, not needed)
    (repo / "src" / "mnistbench" / "backends" / f"{TOY}.py").write_text(TOY_SOURCE)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(limit_train=500, limit_test=100)
    params["train"].update(epochs=2, batch_size=50)
    params["bench"].update(rounds_min=1, rounds_max=1)
    params["backends"] = {
        "torch-tensor": params["backends"]["torch-tensor"],
        TOY: {"data": "data/raw", "loader": "_idx", "step": TOY},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _run(repo, "git", "status", "--porcelain").split("\n")
    assert sorted(line[3:] for line in changed if line) == [
        "params.yaml",
        f"src/mnistbench/backends/{TOY}.py",
    ]

    stages = _run(repo, "dvc", "stage", "list", "--name-only").split()
    assert f"train@{TOY}" in stages
    _run(repo, "dvc", "repro", "report", timeout=900)

    record = json.loads((repo / "metrics" / "train" / TOY / "metrics.json").read_text())
    assert record["epochs"] == 2 and 0 < record["val_acc"] <= 1
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert list(summary["backends"]) == ["torch-tensor", TOY]
    assert TOY in (repo / "metrics" / "summary.md").read_text()
    assert TOY in (repo / "metrics" / "machines.md").read_text()
    curve = (repo / "metrics" / "curves" / "val_acc.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in curve[1:]].count(TOY) == 2  # one row per epoch
    shown = json.loads(_run(repo, "dvc", "metrics", "show", "--json"))
    headline = next(iter(shown.values()))["data"][f"metrics/headline/{TOY}.json"]["data"]
    assert headline["val_acc"] == record["val_acc"]

    # what reruns when the backend's file is edited: its own stage and what reads its results
    with (repo / "src" / "mnistbench" / "backends" / f"{TOY}.py").open("a") as f:
        f.write("# an edit\n")
    status = json.loads(_run(repo, "dvc", "status", "--json"))
    assert f"train@{TOY}" in status
    assert not any(s.startswith("train@") and s != f"train@{TOY}" for s in status)
    assert "roofline" not in status
