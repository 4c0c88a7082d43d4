"""Backends, found by name: backend `jax-scan` is the file `backends/jax-scan.py`.

Adding a backend is adding a file here, named exactly as the backend, and its entry in
params.yaml's `backends` (the data it reads; the helper modules its loader and step come
from), from which dvc.yaml makes its `train@<name>` stage and every report picks it up.
Files starting with `_` are shared helpers, not backends. Each module defines, at module level:

    FRAMEWORK: str   # the table's "implementation" column, e.g. "PyTorch"
    LOADER: str      # the table's "data loader" column, e.g. "TFDS (tf.data)"
    def build(cfg: Config, device: str, data: Path) -> Trainer   # see mnistbench.harness

`data` is the folder params names for it (data/raw: MNIST's IDX files; data/tfds: the TFDS
build): what it reads is stated there once. It imports its framework inside `build` only, so
that listing or loading one backend never needs another's framework.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import TYPE_CHECKING

from mnistbench.errors import UserError

if TYPE_CHECKING:
    from mnistbench.config import Config
    from mnistbench.harness import Trainer


class UnknownBackendError(UserError, LookupError):
    """The name matches no module in this package; the message lists the known ones."""


def modules() -> list[str]:
    """Every module of this package, the shared helpers (`_*`) included."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def names() -> list[str]:
    """Known backend names, from the module files in this package."""
    return [name for name in modules() if not name.startswith("_")]


def load(name: str) -> ModuleType:
    known = names()
    if name not in known:
        raise UnknownBackendError(f"unknown backend {name!r}; known backends: {', '.join(known)}")
    return importlib.import_module(f"{__name__}.{name}")  # file names may hold '-': fine here


def build(name: str, cfg: Config, device: str) -> Trainer:
    """Backend `name` built on the data params' backends.<name> names."""
    return load(name).build(cfg, device, cfg.backend_data(name))
