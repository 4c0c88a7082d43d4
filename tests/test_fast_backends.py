"""What only the backends beyond the article promise (tests/test_backends.py covers what every
backend promises): jax-grain runs without TensorFlow, jax-scan's dropped remainder is counted
honestly and its epoch compiles once, validation is the article's mean of per-batch means."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import repo_backends

from mnistbench import backends, config, frameworks, train
from mnistbench.backends import _idx


def tiny_config(raw_dir: Path, tfds_dir: Path, **train_keys) -> config.Config:
    return config.from_dict(
        {
            "data": {
                "raw_dir": str(raw_dir),
                "tfds_dir": str(tfds_dir),
                "limit_train": 1000,
                "limit_test": 300,
            },
            "train": {"epochs": 2, "device": "cpu", **train_keys},
            "backends": repo_backends(
                "jax-scan", "torch-tensor", "jax-grain", raw=raw_dir, tfds=tfds_dir
            ),
        }
    )


def test_jax_grain_never_imports_tensorflow(raw_dir, tfds_dir, tmp_path):
    """In a fresh process (this one has TensorFlow from other tests): build, two epochs."""
    params = tmp_path / "params.json"
    params.write_text(
        json.dumps(
            {
                "data": {
                    "raw_dir": str(raw_dir),
                    "tfds_dir": str(tfds_dir),
                    "limit_train": 500,
                    "limit_test": 100,
                },
                "train": {"epochs": 2, "device": "cpu"},
                "backends": repo_backends("jax-grain", tfds=tfds_dir),
            }
        )
    )
    code = (
        "import sys; from mnistbench import config, train\n"
        f"summary = train.train(config.load({str(params)!r}), 'jax-grain', {str(tmp_path)!r})\n"
        "assert summary['val_acc'] > 0.5, summary\n"
        "tf = sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')\n"
        "assert not tf, tf"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_jax_grain_batched_read_is_the_records_in_the_order_asked(raw_dir, tfds_dir):
    """One __getitems__ per batch must give what one read per record gives, in the batch's
    (shuffled) order, and cover each training example once per epoch."""
    trainer = backends.build("jax-grain", tiny_config(raw_dir, tfds_dir), "cpu")
    split = trainer.train
    order = np.array([7, 0, 999, 3, 3])
    x, y = split.read(order)
    one_by_one = [split.source[int(i)] for i in order]
    assert x.dtype == np.uint8 and x.shape == (5, 784) and y.dtype == np.int32
    np.testing.assert_array_equal(x, np.stack([r["image"].reshape(784) for r in one_by_one]))
    np.testing.assert_array_equal(y, [r["label"] for r in one_by_one])
    seen = np.concatenate(list(split.indices.shuffle(seed=3).batch(64)))
    assert sorted(seen.tolist()) == list(range(1000)) and seen.tolist() != list(range(1000))


def test_jax_scan_counts_only_the_examples_it_trains_on(raw_dir, tfds_dir, tmp_path):
    cfg = tiny_config(raw_dir, tfds_dir, batch_size=64)  # 1000 = 15 * 64 + 40: 40 left out
    summary = train.train(cfg, "jax-scan", out_root=tmp_path)
    assert summary["train_examples"] == 960 and summary["test_examples"] == 300
    assert summary["samples_per_s"] == pytest.approx(960 / summary["train_time_median_s"])


def test_jax_scan_refuses_a_batch_larger_than_the_data(raw_dir, tfds_dir):
    cfg = tiny_config(raw_dir, tfds_dir).replace("data", limit_train=20)
    with pytest.raises(config.ConfigError, match="train.batch_size"):
        backends.build("jax-scan", cfg, "cpu")


def test_jax_scan_compiles_its_epoch_once(raw_dir, tfds_dir):
    """A second compile would land inside the timed epoch 2 (seen with an uncommitted state)."""
    trainer = backends.build("jax-scan", tiny_config(raw_dir, tfds_dir), "cpu")
    for _ in range(3):
        trainer.train_epoch()
        trainer.evaluate()
        trainer.sync()
    assert trainer._train_epoch._cache_size() == 1
    assert trainer._evaluate._cache_size() == 1


def test_torch_tensor_trains_on_every_example(raw_dir, tfds_dir, tmp_path):
    cfg = tiny_config(raw_dir, tfds_dir, batch_size=64)  # the last batch holds 40
    summary = train.train(cfg, "torch-tensor", out_root=tmp_path)
    assert summary["train_examples"] == 1000


@pytest.mark.parametrize("name", ["jax-scan", "torch-tensor", "jax-grain"])
def test_validation_is_the_articles_mean_of_batch_means(name, raw_dir, tfds_dir):
    """The fast rows score the whole test split at once; the article averages per-batch means
    over batches of batch_size (the last smaller). Check against that loop, done by hand with
    torch on the same weights: 300 = 4 * 64 + 44, so the last batch is partial."""
    torch, _ = frameworks.torch(None, "cpu")
    cfg = tiny_config(raw_dir, tfds_dir, batch_size=64)
    trainer = backends.build(name, cfg, "cpu")
    trainer.train_epoch()
    val_loss, val_acc = trainer.evaluate()
    trainer.sync()

    weights = _weights(name, trainer)
    x, y = _test_split(name, trainer, raw_dir)
    losses, accs = [], []
    for start in range(0, 300, 64):
        h = torch.from_numpy(x[start : start + 64]).double()
        for i, (w, b) in enumerate(weights):
            h = h @ w + b
            h = torch.relu(h) if i < len(weights) - 1 else torch.log_softmax(h, -1)
        target = torch.from_numpy(y[start : start + 64]).long()
        losses.append(torch.nn.functional.nll_loss(h, target).item())
        accs.append((h.argmax(-1) == target).double().mean().item())
    assert float(val_acc) == pytest.approx(np.mean(accs), abs=1e-6)
    assert float(val_loss) == pytest.approx(np.mean(losses), rel=1e-4)


def _test_split(name: str, trainer, raw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 300 test examples the backend scores (TFDS keeps its own record order)."""
    if name != "jax-grain":
        return _idx.load_split(raw_dir, "test", 300)
    x, y = trainer.test.read(np.arange(len(trainer.test)))
    return x.astype(np.float32) / 255.0, y


def _weights(name: str, trainer) -> list[tuple]:
    """(W as in x @ W, b) per layer, float64 torch tensors, from either framework."""
    import torch

    if name == "torch-tensor":
        linears = [m for m in trainer.model.net if isinstance(m, torch.nn.Linear)]
        return [(lin.weight.detach().double().T, lin.bias.detach().double()) for lin in linears]
    params = trainer.state.params
    return [
        (
            torch.from_numpy(np.asarray(params[k]["kernel"], np.float64)),
            torch.from_numpy(np.asarray(params[k]["bias"], np.float64)),
        )
        for k in sorted(params, key=lambda k: int(k.split("_")[1]))
    ]
