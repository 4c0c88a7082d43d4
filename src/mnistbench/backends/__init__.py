"""Backends, found by name: backend `jax-scan` is the file `backends/jax-scan.py`.

Adding a backend is adding a file here, named exactly as the backend, so that dvc.yaml's
`train@<name>` stage can depend on `src/mnistbench/backends/<name>.py` and nothing else of
the other backends. Files starting with `_` are shared helpers, not backends. Each module defines, at module level:

    FRAMEWORK: str   # the table's "implementation" column, e.g. "PyTorch"
    LOADER: str      # the table's "data loader" column, e.g. "TFDS (tf.data)"
    DATA: str        # the stage output it reads: "raw" (data/raw) or "tfds" (data/tfds)
    def build(cfg: Config, device: str) -> Trainer   # see mnistbench.harness.Trainer

and imports its framework inside `build` only, so that listing or loading one backend never
needs another's framework.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from mnistbench.errors import UserError


class UnknownBackendError(UserError, LookupError):
    """The name matches no module in this package; the message lists the known ones."""


def names() -> list[str]:
    """Known backend names, from the module files in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def color(name: str) -> str:
    """One matplotlib colour per backend, the same in every plot (CPU or GPU report, sweep)."""
    known = names()
    return f"C{known.index(name) % 10}" if name in known else "black"


def load(name: str) -> ModuleType:
    known = names()
    if name not in known:
        raise UnknownBackendError(f"unknown backend {name!r}; known backends: {', '.join(known)}")
    return importlib.import_module(f"{__name__}.{name}")  # file names may hold '-': fine here
