"""params.yaml validation: unknown keys, wrong types and impossible values name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from mnistbench import backends, config
from mnistbench.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _with(section: str | None, key: str, value) -> dict:
    return {key: value} if section is None else {section: {key: value}}


def test_repository_params_load():
    cfg = config.load(ROOT / "params.yaml")
    assert cfg.train.batch_size == 32 and cfg.train.epochs == 10 and cfg.train.lr == 1e-3
    assert cfg.model.hidden == (128, 256)
    assert cfg.data.mirrors[-1].rstrip("/") == "data/mirror"
    assert isinstance(cfg.data.mirrors, tuple)
    assert set(cfg.backends) <= set(backends.names())
    assert set(cfg.backends.values()) <= {cfg.data.raw_dir, cfg.data.tfds_dir}


def test_empty_params_are_the_defaults():
    assert config.from_dict({}) == config.Config()
    assert config.from_dict(None) == config.Config()


@pytest.mark.parametrize("raw, key", [
    ({"train": {"bach_size": 64}}, "train.bach_size"),
    ({"data": {"mirror": ["x/"]}}, "data.mirror"),
    ({"model": {"hiden": [10]}}, "model.hiden"),
    ({"trian": {"epochs": 1}}, "trian"),
])
def test_unknown_key_is_named(raw, key):
    with pytest.raises(ConfigError, match=f"unknown key {key.replace('.', '[.]')}"):
        config.from_dict(raw)


def test_typo_message_lists_the_known_keys():
    with pytest.raises(ConfigError) as e:
        config.from_dict({"train": {"bach_size": 64}})
    assert "train.bach_size" in str(e.value) and "(known: batch_size," in str(e.value)


@pytest.mark.parametrize("section, key, value, named", [
    ("train", "batch_size", "32", "train.batch_size"),
    ("train", "batch_size", 32.0, "train.batch_size"),
    ("train", "epochs", True, "train.epochs"),
    ("train", "lr", "fast", "train.lr"),
    ("train", "lr", True, "train.lr"),
    ("train", "threads", 1.5, "train.threads"),
    ("train", "device", 0, "train.device"),
    ("data", "mirrors", "data/mirror/", "data.mirrors"),
    ("data", "mirrors", ["data/mirror/", 3], "data.mirrors[1]"),
    ("data", "timeout_s", "30", "data.timeout_s"),
    ("data", "limit_train", "all", "data.limit_train"),
    ("model", "hidden", [128, "256"], "model.hidden[1]"),
    ("model", "hidden", 128, "model.hidden"),
    (None, "train", [1, 2], "train"),
    (None, "backends", ["jax-tfds"], "backends"),
])
def test_wrong_type_is_named(section, key, value, named):
    with pytest.raises(ConfigError) as e:
        config.from_dict(_with(section, key, value))
    assert f"params: {named} " in str(e.value)


@pytest.mark.parametrize("section, key, value, named", [
    ("train", "batch_size", 0, "train.batch_size"),
    ("train", "epochs", -1, "train.epochs"),
    ("train", "epochs", 0, "train.epochs"),
    ("train", "lr", 0.0, "train.lr"),
    ("train", "threads", 0, "train.threads"),
    ("train", "device", "tpu", "train.device"),
    ("data", "mirrors", [], "data.mirrors"),
    ("data", "retries", 0, "data.retries"),
    ("data", "timeout_s", 0, "data.timeout_s"),
    ("data", "limit_train", 0, "data.limit_train"),
    ("data", "limit_test", -5, "data.limit_test"),
    ("model", "hidden", [], "model.hidden"),
    ("model", "hidden", [128, 0], "model.hidden"),
    (None, "backends", {}, "backends"),
])
def test_impossible_value_is_named(section, key, value, named):
    with pytest.raises(ConfigError) as e:
        config.from_dict(_with(section, key, value))
    assert f"params: {named} " in str(e.value)


def test_unknown_backend_is_named():
    with pytest.raises(ConfigError) as e:
        config.from_dict({"backends": {"torch-dataloader": "data/raw", "tf-keras": "data/tfds"}})
    assert "backends.tf-keras is not a backend" in str(e.value)
    assert "jax-tfds" in str(e.value)  # the known ones are listed


def test_backend_input_must_be_a_data_dir():
    with pytest.raises(ConfigError, match="backends[.]jax-tfds must be one of"):
        config.from_dict({"backends": {"jax-tfds": "data/elsewhere"}})


def test_default_backends_follow_the_data_dirs():
    """Moving data.raw_dir alone must not invalidate the default backend list."""
    cfg = config.from_dict({"data": {"raw_dir": "/x/raw", "tfds_dir": "/x/tfds"}})
    assert cfg.backends["torch-dataloader"] == "/x/raw"
    assert cfg.backends["jax-tfds"] == cfg.backends["torch-tfds"] == "/x/tfds"
    assert set(cfg.backends.values()) <= {"/x/raw", "/x/tfds"}


def test_values_are_normalised():
    cfg = config.from_dict({"train": {"lr": 1, "threads": None},
                            "data": {"mirrors": ["a/", "b/"], "limit_train": 100}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.data.mirrors == ("a/", "b/")
    assert cfg.data.limit_train == 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 2.0  # type: ignore[misc]


def test_load_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config.load(listing)
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  bach_size: 64\n")
    with pytest.raises(ConfigError, match="train.bach_size"):
        config.load(typo)


def test_exponent_without_a_dot_is_a_float():
    """PyYAML reads `lr: 1e-3` as the string '1e-3'; it must still mean 0.001."""
    cfg = config.from_dict(yaml.safe_load("train: {lr: 1e-3}"))
    assert cfg.train.lr == 0.001
