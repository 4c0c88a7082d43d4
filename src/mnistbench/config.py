"""Typed configuration: params.yaml parsed once, validated before any work starts.

An unknown key, a wrong type or an impossible value raises ConfigError naming the key
(``train.bach_size`` is a typo, not a new setting).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "data/mirror/",  # verified copy kept in git: the last resort for offline machines
)


class ConfigError(ValueError):
    """A params.yaml problem; the message names the offending key."""


@dataclass(frozen=True)
class DataConfig:
    raw_dir: str = "data/raw"  # the four decompressed IDX files
    tfds_dir: str = "data/tfds"  # TFDS data_dir holding mnist/3.0.1
    mirrors: tuple[str, ...] = DEFAULT_MIRRORS  # tried in order, after $MNIST_MIRRORS
    limit_train: int | None = None  # first N training examples; None = all 60000
    limit_test: int | None = None  # first N test examples; None = all 10000
    timeout_s: float = 30.0  # per-request socket timeout for HTTP mirrors
    retries: int = 3  # attempts per mirror and file before moving to the next mirror

    def check(self) -> None:
        _require(len(self.mirrors) > 0, "data.mirrors", "must list at least one mirror")
        for key in ("limit_train", "limit_test"):
            value = getattr(self, key)
            _require(value is None or value > 0, f"data.{key}", "must be null or > 0")
        _require(self.timeout_s > 0, "data.timeout_s", "must be > 0")
        _require(self.retries >= 1, "data.retries", "must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (128, 256)  # hidden layer widths, ReLU after each (the article's MLP)

    def check(self) -> None:
        _require(len(self.hidden) > 0, "model.hidden", "must list at least one layer width")
        _require(all(h > 0 for h in self.hidden), "model.hidden", "widths must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # the article's 10 epochs
    batch_size: int = 32  # the article's batch size, train and validation
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0  # seeds Python, NumPy, torch, tf.data and JAX
    threads: int | None = None  # intra-op threads for every framework; None = framework default
    device: str = "auto"  # auto | cpu | cuda; cuda without a GPU is an error, never a fallback

    def check(self) -> None:
        _require(self.epochs >= 1, "train.epochs", "must be >= 1")
        _require(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _require(self.lr > 0, "train.lr", "must be > 0")
        _require(self.threads is None or self.threads >= 1, "train.threads", "must be null or >= 1")
        _require(self.device in ("auto", "cpu", "cuda"), "train.device", "must be auto, cpu or cuda")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # backend name -> the data stage output it reads (dvc.yaml's train@<name> depends on it)
    backends: dict[str, str] = field(default_factory=lambda: {
        "torch-dataloader": "data/raw", "torch-tfds": "data/tfds", "jax-tfds": "data/tfds"})

    def check(self) -> None:
        self.data.check()
        self.model.check()
        self.train.check()
        _require(len(self.backends) > 0, "backends", "must list at least one backend")
        from mnistbench import backends  # cheap: lists module files, imports no framework

        known = backends.names()
        inputs = (self.data.raw_dir, self.data.tfds_dir)
        for name, reads in self.backends.items():
            _require(name in known, f"backends.{name}", f"is not a backend (known: {', '.join(known)})")
            _require(reads in inputs, f"backends.{name}", f"must be one of {', '.join(inputs)}")

    def data_input(self, reads: str) -> str:
        """The folder a backend's DATA ("raw" or "tfds") refers to."""
        return {"raw": self.data.raw_dir, "tfds": self.data.tfds_dir}[reads]

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with some keys of one section changed (tests and quick runs)."""
        new = dataclasses.replace(getattr(self, section), **changes)
        cfg = dataclasses.replace(self, **{section: new})
        cfg.check()
        return cfg


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"params: {key} {message}")


_YAML11_EXPONENT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint; lists become tuples. Raises ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(value, inner, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"params: {key} must be a mapping, got {value!r}")
        (key_type, inner) = typing.get_args(hint)
        return {_coerce(k, key_type, key): _coerce(v, inner, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params: {key} must be a list, got {value!r}")
        (inner, _) = typing.get_args(hint)
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _YAML11_EXPONENT.match(value):
        return float(value)  # YAML 1.1 (PyYAML) reads `1e-3`, without a dot, as a string
    if hint in (int, float, str) and (type(value) is not hint):
        raise ConfigError(f"params: {key} must be {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"params: {prefix.rstrip('.') or 'top level'} must be a mapping, "
                          f"got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        names = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(f"params: unknown key {names} (known: {', '.join(sorted(known))})")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            values[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**values)


def from_dict(raw: dict) -> Config:
    cfg = _build(Config, raw or {}, "")
    if "backends" not in (raw or {}):  # default backends read the data dirs actually set
        moved = {DataConfig.raw_dir: cfg.data.raw_dir, DataConfig.tfds_dir: cfg.data.tfds_dir}
        cfg = dataclasses.replace(cfg, backends={n: moved[r] for n, r in cfg.backends.items()})
    cfg.check()
    return cfg


def load(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params: {path} not found (run from the repository root)")
    with path.open() as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"params: {path} is not valid YAML: {e}") from e
    return from_dict(raw)
