"""Every backend, tested the same way: it trains, it has the article's parameter count, it is
deterministic on the CPU, and its metrics keep the metrics contract (mnistbench.metrics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import repo_backends

from mnistbench import backends, colors, config, frameworks, inputs, layout, metrics, records, train

ARTICLE_PARAMS = 136_074  # 784*128+128 + 128*256+256 + 256*10+10
ALL = backends.names()


def small_config(raw_dir: Path, tfds_dir: Path, **train) -> config.Config:
    """4,000 train / 500 test images, one epoch, every backend wired to its input."""
    return config.from_dict(
        {
            "data": {
                "raw_dir": str(raw_dir),
                "tfds_dir": str(tfds_dir),
                "limit_train": 4000,
                "limit_test": 500,
            },
            "train": {"epochs": 1, "device": "cpu", **train},
            "backends": repo_backends(*ALL, raw=raw_dir, tfds=tfds_dir),
        }
    )


@pytest.fixture(scope="module")
def cfg(raw_dir, tfds_dir) -> config.Config:
    return small_config(raw_dir, tfds_dir)


@pytest.mark.parametrize("name", ALL)
def test_trains_on_a_subset_and_writes_every_metric(name, cfg, tmp_path):
    summary = train.train(cfg, name, out_root=tmp_path)
    assert summary["val_acc"] >= 0.80  # an untrained 10-class model sits near 0.10
    assert summary["train_examples"] <= 4000 and summary["test_examples"] == 500
    assert list(json.loads(layout.metrics_path(tmp_path, name).read_text())) == list(
        metrics.COMPARED
    )
    written = records.read_record(tmp_path, name)
    assert list(written) == list(metrics.KEYS) and set(written["env"]) == set(metrics.ENV)
    assert metrics.validate(written, backend=name) == []
    assert written["epochs"] == 1 and written["batch_size"] == 32
    assert written["env"]["backend"] == name and written["env"]["device"] == "cpu"
    assert written["params"] == metrics.params_of(cfg)
    curves = layout.curves_dir(tmp_path, name)
    assert {p.stem for p in curves.glob("*.tsv")} == set(metrics.CURVES)
    for key in metrics.CURVES:  # each curve as compare reads it: header, one row an epoch
        assert len(records.read_curve(curves / f"{key}.tsv", key, epochs=1)) == 1
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("name", ALL)
def test_parameter_count_matches_the_article(name, cfg):
    trainer = backends.build(name, cfg, "cpu")
    assert trainer.num_params() == ARTICLE_PARAMS


@pytest.mark.long("each backend trained twice, for determinism (~55 CPU-s in all)")
@pytest.mark.parametrize("name", ALL)
def test_same_seed_gives_the_same_accuracy(name, cfg, tmp_path):
    first = train.train(cfg, name, out_root=tmp_path / "a")
    second = train.train(cfg, name, out_root=tmp_path / "b")
    assert first["val_acc"] == second["val_acc"]
    assert first["train_loss"] == second["train_loss"]


def test_unknown_backend_lists_the_known_ones(cfg, tmp_path):
    with pytest.raises(LookupError, match="known backends: .*jax-tfds.*torch-dataloader"):
        train.train(cfg, "tensorflow-keras", out_root=tmp_path)


@pytest.mark.parametrize("name", ALL)
def test_missing_data_names_the_stage_to_run(name, tmp_path):
    raw, tfds = tmp_path / "raw", tmp_path / "tfds"
    cfg = config.from_dict(
        {
            "data": {"raw_dir": str(raw), "tfds_dir": str(tfds)},
            "backends": repo_backends(name, raw=raw, tfds=tfds),
        }
    )
    with pytest.raises(inputs.MissingDataError, match=r"download|build_tfds") as e:
        backends.build(name, cfg, "cpu")
    assert str(cfg.backend_data(name)) in str(e.value)  # the folder its entry names


def test_missing_framework_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "optax", None)  # as if optax were not installed
    with pytest.raises(frameworks.MissingFrameworkError, match="pip install optax"):
        frameworks.require("optax")


def test_listing_and_loading_backends_imports_no_framework():
    code = (
        "import sys; from mnistbench import backends, cli\n"
        "[backends.load(n) for n in backends.names()]\n"
        "heavy = {'torch', 'jax', 'tensorflow', 'flax', 'grain'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("name", "reads"), [("jax-tfds", "raw_dir"), ("jax-scan", "tfds_dir")])
def test_params_must_name_the_data_a_backend_reads(name, reads, cfg, tmp_path):
    """A backend reads the folder its params entry names, and nothing else: naming the other
    data folder there fails in its reader, naming that folder, before anything is written."""
    wrong = getattr(cfg.data, reads)
    bad = config.from_dict(
        {
            "data": {"raw_dir": cfg.data.raw_dir, "tfds_dir": cfg.data.tfds_dir},
            "backends": {name: {**repo_backends(name)[name], "data": wrong}},
        }
    )
    assert bad.backend_data(name) == Path(wrong)
    with pytest.raises(inputs.MissingDataError, match=r"download|build_tfds") as e:
        train.train(bad, name, out_root=tmp_path)
    assert wrong in str(e.value)
    assert not layout.backend_dir(tmp_path, name).exists()


def test_a_backend_params_does_not_list_is_refused_before_training(cfg, tmp_path):
    only = config.from_dict(
        {
            "data": {"raw_dir": cfg.data.raw_dir, "tfds_dir": cfg.data.tfds_dir},
            "backends": repo_backends("jax-scan", raw=cfg.data.raw_dir),
        }
    )
    with pytest.raises(config.ConfigError, match="backends has no torch-tensor.*jax-scan"):
        train.train(only, "torch-tensor", out_root=tmp_path)
    assert not layout.train_dir(tmp_path).exists()


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="a GPU is visible here")
def test_cuda_without_a_gpu_is_an_error_not_a_fallback():
    with pytest.raises(frameworks.DeviceUnavailableError, match="cuda"):
        frameworks.torch(None, "cuda")


def test_cli_train_applies_threads_and_records_them(raw_dir, tfds_dir, tmp_path):
    """The command a DVC stage runs, in its own process: train.threads pins every framework."""
    params = tmp_path / "params.yaml"
    params.write_text(
        json.dumps(
            {  # JSON is YAML
                "data": {
                    "raw_dir": str(raw_dir),
                    "tfds_dir": str(tfds_dir),
                    "limit_train": 500,
                    "limit_test": 100,
                },
                "train": {"epochs": 1, "threads": 1},
                "backends": repo_backends("torch-dataloader", raw=raw_dir),
            }
        )
    )
    out = tmp_path / "metrics"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistbench",
            "train",
            "torch-dataloader",
            "--params",
            str(params),
            "--out",
            str(out),
        ],
        check=True,
    )
    env = records.read_record(out, "torch-dataloader")["env"]
    assert env["threads"] == 1 and env["cpus_usable"] == 1
    assert env["thread_env"]["OMP_NUM_THREADS"] == "1"


def test_each_backend_keeps_its_colour_whatever_else_is_added(monkeypatch):
    known = {name: colors.color(name) for name in backends.names()}
    assert known["jax-scan"] == "C1" and known["torch-tfds"] == "C6"  # the colours of the plots
    assert len(set(known.values())) == len(known)  # no two known backends share a colour
    # A new backend file (here one named to sort first) changes nobody else's colour.
    monkeypatch.setattr(backends, "names", lambda: ["aaa-new", *known])
    assert {name: colors.color(name) for name in known} == known
    assert colors.color("aaa-new") in colors.SPARE_COLORS


def test_an_unknown_backend_has_the_same_colour_in_every_process():
    code = "from mnistbench import colors; print(colors.color('my-backend'))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(seen) == 1 and seen <= set(colors.SPARE_COLORS)


SUBSET_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
import tensorflow_datasets as tfds
from mnistbench import config
from mnistbench.backends._article_tfds import article_datasets

tfds_dir = Path(sys.argv[1])
cfg = config.from_dict({"data": {"tfds_dir": str(tfds_dir), "limit_train": 300, "limit_test": 100}})
train, val, n_train, n_test = article_datasets(cfg, tfds_dir)
for _ in range(2):  # two epochs, as training reads them
    seen = sum(len(y) for _, y in train.as_numpy_iterator())
first = tfds.load("mnist", split="test", data_dir=str(tfds_dir), as_supervised=True,
                  shuffle_files=False, download=False,
                  read_config=tfds.ReadConfig(try_autocache=False)).take(100)  # no cache: no warning
same = all(np.array_equal(a[0], b[0] * 255) for a, b in zip(
    first.batch(32).as_numpy_iterator(), val.as_numpy_iterator()))
print(n_train, n_test, seen, same)
"""


def test_a_tfds_subset_is_the_first_examples_and_reads_its_cache_whole(tfds_dir):
    """data.limit_* on the article's TFDS rows: the first N examples, and no TensorFlow warning
    that the dataset being cached was not read whole (which a .take(N) after TFDS's own cache
    prints every epoch, reading the files again each time)."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "0",
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
    }
    done = subprocess.run(
        [sys.executable, "-c", SUBSET_SCRIPT, str(tfds_dir)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["300", "100", "300", "True"], done.stdout
    assert "did not fully read" not in done.stderr, done.stderr[-3000:]
