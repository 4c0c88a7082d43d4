"""Typed configuration: params.yaml parsed once, validated before any work starts.

An unknown key, a wrong type or an impossible value raises ConfigError naming the key
(``train.bach_size`` is a typo, not a new setting).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mnistbench import errors
from mnistbench.errors import UserError

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "data/mirror/",  # verified copy kept in git: the last resort for offline machines
)


TIMEOUT_MAX_S = 3600.0  # one HTTP request's limit: an hour fetches MNIST's 10 MB at 3 kB/s
RETRIES_MAX = 10  # tries per mirror and file; with download's capped wait, 10 tries wait ~48 s
SEED_MAX = 2**32 - 1  # NumPy's and tf.data's seeds are unsigned 32-bit
# A params file is a few kB (the repository's: 2.6 kB); 256 kB parses in about 0.2 s, so any
# bigger file is refused before parsing rather than read for minutes (a 50 MB file took 574 s).
PARAMS_MAX_BYTES = 256 * 1024
# Values after expanding YAML aliases: the repository's file holds ~100; an alias bomb ("billion
# laughs") holds 10**9 in a few lines, which every later step (checks, messages) would walk.
PARAMS_MAX_VALUES = 100_000
EXP_RUN_ENV = "DVC_EXP_BASELINE_REV"  # set by DVC in the stages of `dvc exp run`


class ConfigError(UserError, ValueError):
    """A params.yaml problem; the message names the offending key."""


@dataclass(frozen=True)
class DataConfig:
    raw_dir: str = "data/raw"  # the four decompressed IDX files
    tfds_dir: str = "data/tfds"  # TFDS data_dir holding mnist/3.0.1
    mirrors: tuple[str, ...] = DEFAULT_MIRRORS  # tried in order, after $MNIST_MIRRORS
    limit_train: int | None = None  # first N training examples; None = all 60000
    limit_test: int | None = None  # first N test examples; None = all 10000
    timeout_s: float = 30.0  # seconds for one whole HTTP request (connect, headers, every byte)
    retries: int = 3  # attempts per mirror and file before moving to the next mirror

    def check(self) -> None:
        for key in ("raw_dir", "tfds_dir"):  # "" or "." would make the stage replace the cwd
            _require(
                os.path.normpath(getattr(self, key) or ".") != ".",
                f"data.{key}",
                "must name a folder other than the current one",
            )
        _require(
            os.path.normpath(self.raw_dir) != os.path.normpath(self.tfds_dir),
            "data.tfds_dir",
            "must differ from data.raw_dir (build_tfds replaces it whole)",
        )
        _require(len(self.mirrors) > 0, "data.mirrors", "must list at least one mirror")
        _require(
            all(m.strip() for m in self.mirrors), "data.mirrors", "must not hold an empty entry"
        )
        for key in ("limit_train", "limit_test"):
            value = getattr(self, key)
            _require(value is None or value > 0, f"data.{key}", "must be null or > 0")
        _require(
            0 < self.timeout_s <= TIMEOUT_MAX_S,
            "data.timeout_s",
            f"must be > 0 and at most {TIMEOUT_MAX_S:g} s (one request), got {shown(self.timeout_s)}",
        )
        _require(
            1 <= self.retries <= RETRIES_MAX,
            "data.retries",
            f"must be between 1 and {RETRIES_MAX} (tries per mirror and file), "
            f"got {shown(self.retries)}",
        )


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
        _require(
            0 <= self.seed <= SEED_MAX,
            "train.seed",
            f"must be between 0 and {SEED_MAX} (2**32 - 1, the seeds NumPy accepts), "
            f"got {shown(self.seed)}",
        )
        _require(self.threads is None or self.threads >= 1, "train.threads", "must be null or >= 1")
        _require(
            self.device in ("auto", "cpu", "cuda"), "train.device", "must be auto, cpu or cuda"
        )


@dataclass(frozen=True)
class BenchConfig:
    """How each timing is judged (mnistbench.interference) and how many rounds are run."""

    # rounds: every backend once, each a fresh process, in an order drawn per round from
    # `seed` (null: train.seed); the train@ stages are round 1 (mnistbench.repeat)
    rounds_min: int = 2  # rounds before the stage may stop for precision
    rounds_max: int = 8  # rounds at most
    precision: float = 0.05  # stop once every speed-up's 95% interval is within +-5%
    budget_s: float = 1200.0  # the repeats stage starts no round it expects to end past this
    seed: int | None = None  # the rounds' order; null = train.seed
    max_foreign: float = 0.02  # others' largest share of the CPUs in any epoch
    max_steal: float = 0.02  # the hypervisor's largest share of the CPUs in any epoch
    max_spread: float = 0.15  # (slowest - fastest) / median of the steady epochs, and repeats
    wait_quiet_s: float = 0.0  # before a timed stage, wait up to this long for a quiet machine

    def check(self) -> None:
        _require(1 <= self.rounds_min <= 100, "bench.rounds_min", "must be between 1 and 100")
        _require(
            self.rounds_min <= self.rounds_max <= 100,
            "bench.rounds_max",
            f"must be between bench.rounds_min ({self.rounds_min}) and 100",
        )
        _require(0 < self.precision < 1, "bench.precision", "must be > 0 and < 1 (0.05 = +-5%)")
        _require(0 < self.budget_s <= 86400, "bench.budget_s", "must be > 0 and at most 86400")
        _require(
            self.seed is None or 0 <= self.seed <= SEED_MAX,
            "bench.seed",
            f"must be null or between 0 and {SEED_MAX}",
        )
        for key in ("max_foreign", "max_steal", "max_spread"):
            _require(0 < getattr(self, key) <= 1, f"bench.{key}", "must be > 0 and <= 1")
        _require(0 <= self.wait_quiet_s <= 3600, "bench.wait_quiet_s", "must be between 0 and 3600")


@dataclass(frozen=True)
class Backend:
    """One entry of params' backends: what its train@<name> stage reads (dvc.yaml's deps).

    `data` is the folder it trains on, data.raw_dir or data.tfds_dir. `loader` and `step` name
    the modules of mnistbench/backends/ its data loader and its training step come from (its
    own file where it has no shared helper): DVC cannot take a list of deps from params, so
    they are two named slots. Outside DVC (a test, `mnistbench train` by hand) they may be
    left out, and a bare folder stands for {data: <folder>}."""

    data: str
    loader: str | None = None
    step: str | None = None

    def check(self, name: str, folders: tuple[str, ...], modules: list[str]) -> None:
        """`folders`: the data folders it may read; `modules`: mnistbench/backends/'s."""
        _require(
            self.data in folders, f"backends.{name}.data", f"must be one of {', '.join(folders)}"
        )
        for slot in ("loader", "step"):
            module = getattr(self, slot)
            _require(
                module is None or module in modules,
                f"backends.{name}.{slot}",
                f"must name a module of mnistbench/backends/ (one of {', '.join(modules)})",
            )


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    # backend name -> what its train@<name> stage reads: params.yaml's list, the only one
    backends: dict[str, Backend] = field(default_factory=dict)

    def check(self) -> None:
        self.data.check()
        self.model.check()
        self.train.check()
        self.bench.check()
        from mnistbench import backends  # cheap: lists module files, imports no framework

        known, modules = backends.names(), backends.modules()  # listed once, for every entry
        for name, entry in self.backends.items():
            _require(
                name in known, f"backends.{name}", f"is not a backend (known: {', '.join(known)})"
            )
            entry.check(name, (self.data.raw_dir, self.data.tfds_dir), modules)

    def backend_data(self, name: str) -> Path:
        """The folder backend `name` reads, as params' backends.<name>.data names it."""
        if name not in self.backends:
            listed = ", ".join(self.backends) or "none"
            raise ConfigError(f"params: backends has no {name} (it lists: {listed})")
        return Path(self.backends[name].data)

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (tests and quick runs)."""
        new = dataclasses.replace(getattr(self, section), **changes)
        cfg = dataclasses.replace(self, **{section: new})
        cfg.check()
        return cfg


def shown(value: Any, limit: int = 60) -> str:
    """repr(value) for a one-line message: cut at `limit` characters, and an int too long for
    repr (over 4300 digits, a ValueError) described instead. Nested lists are cut while being
    written (reprlib), not after: a list shared a billion times over must not be written out."""
    short = reprlib.Repr()
    short.maxlevel = 3
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = limit // 3
    short.maxstring = short.maxlong = short.maxother = 2 * limit  # cut below, as before
    try:
        text = short.repr(value)
    except ValueError:
        return f"an integer of {int(value.bit_length() * math.log10(2)) + 1} digits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"params: {key} {message}")


# YAML 1.1 (PyYAML) reads `1e-3` (no dot) and `1.0e308` (no exponent sign) as strings
_YAML11_EXPONENT = re.compile(r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")


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
            raise ConfigError(f"params: {key} must be a mapping, got {shown(value)}")
        (key_type, inner) = typing.get_args(hint)
        return {
            _coerce(k, key_type, key): _coerce(v, inner, f"{key}.{k}") for k, v in value.items()
        }
    if hint is Backend:
        return _build(Backend, {"data": value} if isinstance(value, str) else value, f"{key}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params: {key} must be a list, got {shown(value)}")
        (inner, _) = typing.get_args(hint)
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is float:
        return _float(value, key)
    if hint in (int, str) and (type(value) is not hint):
        raise ConfigError(f"params: {key} must be {hint.__name__}, got {shown(value)}")
    return value


def _float(value: Any, key: str) -> float:
    """A finite float: ints are widened, `1e-3` read as a string by YAML 1.1 is parsed,
    `.inf` and `.nan` are refused (they train to NaN or never time out)."""
    if isinstance(value, str) and _YAML11_EXPONENT.match(value):
        value = float(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an int beyond float's range, e.g. 10**400
            value = math.inf
    if type(value) is not float:
        raise ConfigError(f"params: {key} must be float, got {shown(value)}")
    if not math.isfinite(value):
        raise ConfigError(f"params: {key} must be a finite number, got {shown(value)}")
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(
            f"params: {prefix.rstrip('.') or 'top level'} must be a mapping, got {shown(raw)}"
        )
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(k if isinstance(k, str) else shown(k) for k in set(raw) - known)
    if unknown:
        names = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(f"params: unknown key {names} (known: {', '.join(sorted(known))})")
    required = [
        f.name
        for f in fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    for name in required:
        if name not in raw:
            raise ConfigError(f"params: {prefix}{name} is missing")
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
    cfg.check()
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping is an error:
    PyYAML keeps the last value silently, DVC refuses the file."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` may be overridden by the keys beside it
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in first:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r}, first given on line {first[key] + 1}",
                    key_node.start_mark,
                )
            if isinstance(key, typing.Hashable):
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """A params file parsed (safe YAML, duplicate keys refused, size and aliases bounded).
    Raises ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params: {path} not found (run from the repository root)")
    if not path.is_file():
        raise ConfigError(f"params: {path} is {errors.kind(path)}, not a regular file")
    try:
        with path.open("rb") as f:
            data = f.read(PARAMS_MAX_BYTES + 1)  # never more: the file may grow while read
        if len(data) > PARAMS_MAX_BYTES:
            raise ConfigError(
                f"params: {path} is over {errors.size_text(PARAMS_MAX_BYTES)} (a params file "
                f"is a few kB): not read"
            )
        raw = _parse(data.decode("utf-8"), path)
    except ConfigError:  # already one line; a ValueError too, so not the clause below
        raise
    except PermissionError as e:
        raise ConfigError(f"params: cannot read {path} ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"params: {path} is not a text file (not UTF-8: {e.reason})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"params: {path} is not valid YAML: {_yaml_problem(e)}") from e
    except ValueError as e:  # an int of over 4300 digits: Python refuses to convert it
        reason = str(e).split(";")[0]
        raise ConfigError(f"params: {path} holds a value YAML cannot convert ({reason})") from e
    except RecursionError as e:  # "[[[[...": thousands of nested lists or mappings
        raise ConfigError(f"params: {path} nests lists or mappings too deeply to read") from e
    if raw is None:
        raise ConfigError(
            f"params: {path} is empty (expected the sections data, model, train "
            "and backends, as in the repository's params.yaml)"
        )
    return raw


def _parse(text: str, path: Path) -> Any:
    """yaml.load, with the document's size after alias expansion checked before it is built."""
    try:
        loader = _StrictLoader(text)
    except yaml.reader.ReaderError as e:  # a control character: name the file, not the text
        e.name = str(path)
        raise
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded_size(node, {})
        if values > PARAMS_MAX_VALUES:
            raise ConfigError(
                f"params: {path} expands its YAML aliases (*name) to {values:.3g} values, over "
                f"the limit of {PARAMS_MAX_VALUES} (an alias bomb?): write the values out"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """The values a node stands for once its aliases are expanded; each node counted once
    (`seen`), so a billion-value bomb costs a few steps, not a billion."""
    if id(node) not in seen:
        children = node.value if isinstance(node.value, list) else []
        parts = (c for child in children for c in (child if isinstance(child, tuple) else (child,)))
        seen[id(node)] = 1 + sum(_expanded_size(part, seen) for part in parts)
    return seen[id(node)]


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own text spans several, with a caret)."""
    mark = getattr(e, "problem_mark", None)
    if isinstance(e, yaml.MarkedYAMLError) and mark is not None:
        context = f"{e.context}, " if e.context else ""
        return f"{context}{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(e).split())


def load(path: str | Path = "params.yaml") -> Config:
    try:
        return from_dict(read_yaml(path))
    except ConfigError as e:
        if not os.environ.get(EXP_RUN_ENV):
            raise
        # DVC writes `dvc exp run -S` values into params.yaml before the stage runs and
        # leaves them there when it fails: say how to get the committed file back.
        raise ConfigError(
            f"{e} (`dvc exp run -S` left its values in {path}: `git checkout {path}` undoes them)"
        ) from e
