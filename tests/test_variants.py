"""Params files derived from params.yaml (`mnistbench params`, used by scripts/*/*.sh)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnistbench import config, variants

ROOT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
MNISTBENCH = str(Path(sys.executable).parent / "mnistbench")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MNISTBENCH, *args], capture_output=True, text=True, timeout=120)


BASE = {
    "data": {"raw_dir": "data/raw", "tfds_dir": "data/tfds"},
    "train": {"epochs": 10, "seed": 0},
    "backends": {  # params.yaml's full entries, as dvc.yaml's train stage needs them
        "jax-scan": {"data": "data/raw", "loader": "_idx", "step": "_jax_common"},
        "jax-tfds": {"data": "data/tfds", "loader": "_article_tfds", "step": "jax-tfds"},
        "torch-tensor": {"data": "data/raw", "loader": "_idx", "step": "_torch_common"},
    },
}


def test_overrides_are_parsed_as_yaml_and_leave_the_base_alone():
    p = variants.derive(BASE, ["train.epochs=3", "train.threads=null", "data.limit_train=600"])
    assert p["train"] == {"epochs": 3, "seed": 0, "threads": None}
    assert p["data"]["limit_train"] == 600
    assert BASE["train"] == {"epochs": 10, "seed": 0}  # a copy, not the caller's dict
    with pytest.raises(config.ConfigError, match="no section 'model'"):  # BASE has none
        variants.derive(BASE, ["model.hidden=[64]"])


def test_backends_are_kept_by_name_and_follow_their_data_dir():
    p = variants.derive(BASE, ["data.raw_dir=/tmp/raw"], ["jax-tfds", "jax-scan"])
    assert p["backends"] == {  # loader and step kept: only the data folder moves
        "jax-tfds": {"data": "data/tfds", "loader": "_article_tfds", "step": "jax-tfds"},
        "jax-scan": {"data": "/tmp/raw", "loader": "_idx", "step": "_jax_common"},
    }
    assert BASE["backends"]["jax-scan"]["data"] == "data/raw"  # the caller's entries untouched
    assert list(variants.derive(BASE, [])["backends"]) == list(BASE["backends"])
    with pytest.raises(config.ConfigError, match="unknown backend.*nope"):
        variants.derive(BASE, [], ["jax-scan", "nope"])


def test_a_bare_folder_entry_follows_its_data_dir_too():
    short = {**BASE, "backends": {"jax-scan": "data/raw", "jax-tfds": "data/tfds"}}
    p = variants.derive(short, ["data.tfds_dir=/tmp/tfds"])
    assert p["backends"] == {"jax-scan": "data/raw", "jax-tfds": "/tmp/tfds"}
    assert config.from_dict(p).backend_data("jax-tfds") == Path("/tmp/tfds")


def test_params_without_backends_lists_none_when_asked_for_one():
    bare = {k: v for k, v in BASE.items() if k != "backends"}
    assert variants.derive(bare, [])["backends"] == {}
    with pytest.raises(config.ConfigError, match="unknown backend.*jax-scan.*params has: none"):
        variants.derive(bare, [], ["jax-scan"])


@pytest.mark.parametrize("item", ["trainseed=1", "train.seed", "=1", "train.=1"])
def test_a_malformed_override_is_named(item):
    with pytest.raises(config.ConfigError, match="expected section.key=value"):
        variants.derive(BASE, [item])


def test_write_validates_before_writing(tmp_path):
    out = tmp_path / "sub" / "p.yaml"
    with pytest.raises(config.ConfigError, match="unknown key train.bach_size"):
        variants.write(out, variants.derive(BASE, ["train.bach_size=64"]))
    assert not out.exists() and not out.with_name("p.yaml.part").exists()
    cfg = variants.write(out, variants.derive(BASE, ["train.seed=7"], ["jax-scan"]))
    assert cfg.train.seed == 7 and yaml.safe_load(out.read_text())["train"]["seed"] == 7


def test_params_command_writes_a_file_every_command_accepts(tmp_path):
    out = tmp_path / "p.yaml"
    proc = run(
        "params",
        str(out),
        "--params",
        str(ROOT_PARAMS),
        "--set",
        "train.epochs=2",
        "--set",
        f"data.raw_dir={tmp_path}",
        "--backends",
        "jax-scan torch-tensor",
    )
    assert proc.returncode == 0, proc.stderr
    cfg = config.load(out)
    assert cfg.train.epochs == 2
    assert {n: b.data for n, b in cfg.backends.items()} == {
        "jax-scan": str(tmp_path),
        "torch-tensor": str(tmp_path),
    }
    entries = config.read_yaml(ROOT_PARAMS)["backends"]  # loader and step as params.yaml's
    assert yaml.safe_load(out.read_text())["backends"] == {
        b: {**entries[b], "data": str(tmp_path)} for b in ("jax-scan", "torch-tensor")
    }
    bad = run(
        "params", str(tmp_path / "q.yaml"), "--params", str(ROOT_PARAMS), "--set", "train.epochs=x"
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "error: params: train.epochs must be int" in bad.stderr
    assert not (tmp_path / "q.yaml").exists()
