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
    assert {b.data for b in cfg.backends.values()} <= {cfg.data.raw_dir, cfg.data.tfds_dir}
    helpers = {m for b in cfg.backends.values() for m in (b.loader, b.step)}
    assert None not in helpers and helpers <= set(backends.modules())  # dvc.yaml needs both


def test_empty_params_are_the_defaults():
    assert config.from_dict({}) == config.Config()
    assert config.from_dict(None) == config.Config()


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"train": {"bach_size": 64}}, "train.bach_size"),
        ({"data": {"mirror": ["x/"]}}, "data.mirror"),
        ({"model": {"hiden": [10]}}, "model.hiden"),
        ({"trian": {"epochs": 1}}, "trian"),
    ],
)
def test_unknown_key_is_named(raw, key):
    with pytest.raises(ConfigError, match=f"unknown key {key.replace('.', '[.]')}"):
        config.from_dict(raw)


def test_typo_message_lists_the_known_keys():
    with pytest.raises(ConfigError) as e:
        config.from_dict({"train": {"bach_size": 64}})
    assert "train.bach_size" in str(e.value) and "(known: batch_size," in str(e.value)


@pytest.mark.parametrize(
    "section, key, value, named",
    [
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
    ],
)
def test_wrong_type_is_named(section, key, value, named):
    with pytest.raises(ConfigError) as e:
        config.from_dict(_with(section, key, value))
    assert f"params: {named} " in str(e.value)


@pytest.mark.parametrize(
    "section, key, value, named",
    [
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
    ],
)
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
    with pytest.raises(ConfigError, match="backends[.]jax-tfds[.]data must be one of"):
        config.from_dict({"backends": {"jax-tfds": "data/elsewhere"}})


def test_a_backend_entry_names_existing_modules_and_its_data():
    """The full entry (dvc.yaml's) and the bare folder (by hand) are the same Backend."""
    full = {"data": "data/raw", "loader": "_idx", "step": "_torch_common"}
    cfg = config.from_dict({"backends": {"torch-tensor": full}})
    assert cfg.backends["torch-tensor"] == config.Backend("data/raw", "_idx", "_torch_common")
    assert config.from_dict({"backends": {"torch-tensor": "data/raw"}}).backends[
        "torch-tensor"
    ] == config.Backend("data/raw")
    with pytest.raises(ConfigError, match="backends[.]torch-tensor[.]step must name a module"):
        config.from_dict({"backends": {"torch-tensor": {**full, "step": "_nope"}}})
    with pytest.raises(ConfigError, match="backends[.]torch-tensor[.]data is missing"):
        config.from_dict({"backends": {"torch-tensor": {"loader": "_idx"}}})
    with pytest.raises(ConfigError, match="backends has no jax-scan"):
        cfg.backend_data("jax-scan")


def test_values_are_normalised():
    cfg = config.from_dict(
        {"train": {"lr": 1, "threads": None}, "data": {"mirrors": ["a/", "b/"], "limit_train": 100}}
    )
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


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("train", "lr", float("inf")),
        ("train", "lr", float("nan")),
        ("train", "lr", "1e999"),  # YAML 1.1 reads it as a string; as a float it is inf
        ("train", "lr", 10**400),  # an int beyond any float
        ("data", "timeout_s", float("inf")),
    ],
)
def test_non_finite_numbers_are_named(section, key, value):
    with pytest.raises(ConfigError, match=f"params: {section}[.]{key} must be a finite number"):
        config.from_dict(_with(section, key, value))


def test_lr_inf_in_a_file_is_refused(tmp_path):
    """`lr: .inf` trained to NaN; it is now an error before any work."""
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: .inf\n")
    with pytest.raises(ConfigError, match="train[.]lr must be a finite number, got inf"):
        config.load(path)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_numpys_range_is_named(seed):
    with pytest.raises(ConfigError, match=f"train[.]seed must be between 0 and 4294967295.*{seed}"):
        config.from_dict({"train": {"seed": seed}})


def test_seed_at_the_ends_of_the_range_is_fine():
    assert config.from_dict({"train": {"seed": 0}}).train.seed == 0
    assert config.from_dict({"train": {"seed": 2**32 - 1}}).train.seed == 2**32 - 1


@pytest.mark.parametrize(
    "data, key",
    [
        ({"raw_dir": ""}, "data.raw_dir"),
        ({"tfds_dir": "."}, "data.tfds_dir"),
        ({"tfds_dir": "./"}, "data.tfds_dir"),
        ({"raw_dir": "data/x", "tfds_dir": "data/./x"}, "data.tfds_dir must differ"),
        ({"mirrors": ["a/", " "]}, "data.mirrors must not hold an empty entry"),
    ],
)
def test_data_dirs_that_would_be_replaced_whole_are_refused(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", "[.]")):
        config.from_dict({"data": data})


def test_duplicate_key_is_refused_with_its_lines(tmp_path):
    """PyYAML keeps the last of two equal keys silently; DVC refuses such a file."""
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 0.001\n  epochs: 2\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert str(e.value) == (
        f"params: {path} is not valid YAML: duplicate key 'lr', first given "
        "on line 2 (line 4, column 3)"
    )


def test_merge_keys_may_be_overridden(tmp_path):
    """`<<: {...}` then the same key beside it is YAML's override, not a duplicate."""
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  <<: {epochs: 2, lr: 0.1}\n  lr: 0.2\n")
    cfg = config.load(path)
    assert (cfg.train.epochs, cfg.train.lr) == (2, 0.2)


def test_empty_and_binary_files_are_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match="empty.yaml is empty [(]expected the sections"):
        config.load(empty)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(ConfigError, match="binary.yaml is not a text file [(]not UTF-8"):
        config.load(binary)
    control = tmp_path / "control.yaml"
    control.write_bytes(b"train: {lr: 1}\x01\n")
    with pytest.raises(ConfigError, match="control.yaml is not valid YAML: unacceptable"):
        config.load(control)


def test_yaml_errors_fit_on_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1\n")
    with pytest.raises(ConfigError) as e:
        config.load(bad)
    assert "\n" not in str(e.value) and "(line 2, column 1)" in str(e.value)


def test_error_under_dvc_exp_run_says_how_to_restore_params(tmp_path, monkeypatch):
    """`dvc exp run -S` writes its values into params.yaml and leaves them there when the
    stage fails; DVC sets DVC_EXP_BASELINE_REV in such a stage."""
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  bach_size: 64\n")
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert "git checkout" not in str(e.value)
    monkeypatch.setenv(config.EXP_RUN_ENV, "0" * 40)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert "train.bach_size" in str(e.value)
    assert str(e.value).endswith(
        f"(`dvc exp run -S` left its values in {path}: `git checkout {path}` undoes them)"
    )
