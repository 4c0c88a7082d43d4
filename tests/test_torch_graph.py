"""What torch-graph promises beyond every backend's tests (tests/test_backends.py): it is
torch-tensor's training to the bit where it runs eagerly, its warm-up before a CUDA capture
trains nothing, and it never falls back from CUDA to the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import repo_backends

from mnistbench import backends, config, frameworks


def tiny_config(raw_dir: Path, **train_keys) -> config.Config:
    """1,000 = 15 * 64 + 40 training examples: the last batch of each epoch is smaller."""
    return config.from_dict(
        {
            "data": {"raw_dir": str(raw_dir), "limit_train": 1000, "limit_test": 300},
            "train": {"epochs": 2, "device": "cpu", "batch_size": 64, **train_keys},
            "backends": repo_backends("torch-graph", "torch-tensor", raw=raw_dir),
        }
    )


def _train(trainer, epochs: int) -> list[tuple[float, float, float]]:
    out = []
    for _ in range(epochs):
        loss = trainer.train_epoch()
        val_loss, val_acc = trainer.evaluate()
        trainer.sync()
        out.append((float(loss), float(val_loss), float(val_acc)))
    return out


def _weights(trainer) -> list:
    return [p.detach().clone() for p in trainer.model.parameters()]


def _assert_same_weights(a, b) -> None:
    import torch

    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_on_a_cpu_it_is_torch_tensor_to_the_bit(raw_dir):
    """Same init, shuffle, batches (the last one smaller), loss and Adam: identical losses,
    accuracies and weights after two epochs."""
    cfg = tiny_config(raw_dir)
    graph = backends.build("torch-graph", cfg, "cpu")
    tensor = backends.build("torch-tensor", cfg, "cpu")
    assert _train(graph, 2) == _train(tensor, 2)
    _assert_same_weights(_weights(graph), _weights(tensor))


def test_batches_cover_every_example_once_the_last_one_smaller(raw_dir):
    trainer = backends.build("torch-graph", tiny_config(raw_dir), "cpu")
    sizes = [stop - start for start, stop in trainer.bounds]
    assert sizes == [64] * 15 + [40]
    assert [start for start, _ in trainer.bounds] == list(range(0, 1000, 64))
    assert trainer.bounds[-1][1] == trainer.num_train == 1000


def test_warm_up_before_a_capture_trains_nothing(raw_dir):
    """The CUDA path runs eager steps before capturing and then undoes them. Run that same
    warm-up here (it is device-independent but for the stream) and check that training
    afterwards gives the weights of a trainer that never warmed up: weights, both Adam
    moments and its step count were all put back."""
    cfg = tiny_config(raw_dir)
    warmed, fresh = (
        backends.build("torch-graph", cfg, "cpu"),
        backends.build("torch-graph", cfg, "cpu"),
    )
    before = _weights(warmed)
    warmed.perm.copy_(warmed.torch.randperm(warmed.num_train))  # any batches: undone anyway
    warmed._warm_up()
    _assert_same_weights(_weights(warmed), before)
    assert all(p.grad is None for p in warmed.model.parameters())
    assert warmed.opt.state, "the warm-up made Adam's state, as a capture needs"
    assert _train(warmed, 2) == _train(fresh, 2)
    _assert_same_weights(_weights(warmed), _weights(fresh))


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="a GPU is visible here")
def test_cuda_without_a_gpu_is_the_projects_error(raw_dir):
    with pytest.raises(frameworks.DeviceUnavailableError, match="cuda"):
        backends.build("torch-graph", tiny_config(raw_dir), "cuda")


def test_its_row_says_how_it_runs_on_each_device():
    module = backends.load("torch-graph")
    assert "CUDA graph" in module.FRAMEWORK and "CPU: eager" in module.FRAMEWORK
    entries = repo_backends("torch-graph", "torch-tensor")  # params.yaml's: torch-tensor's data
    assert entries["torch-graph"] == entries["torch-tensor"]  # and loader and step: no copy
    assert entries["torch-graph"]["data"] == config.DataConfig.raw_dir
