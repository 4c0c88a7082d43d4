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

import hashlib
import importlib
import pkgutil
from types import ModuleType

from mnistbench.errors import UserError


class UnknownBackendError(UserError, LookupError):
    """The name matches no module in this package; the message lists the known ones."""


def names() -> list[str]:
    """Known backend names, from the module files in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


# One matplotlib colour per backend, fixed by name: adding a backend changes no other's colour.
# The seven backends keep the colours they had when they were numbered in name order.
COLORS = {
    "jax-grain": "C0",
    "jax-scan": "C1",
    "jax-tfds": "C2",
    "torch-dataloader": "C3",
    "torch-graph": "C4",
    "torch-tensor": "C5",
    "torch-tfds": "C6",
}
SPARE_COLORS = ("C7", "C8", "C9")  # for a backend not in COLORS: none of the seven's


def color(name: str) -> str:
    """A backend's colour, the same in every plot (CPU or GPU report, sweep) and every process.

    A backend not in COLORS gets a spare colour picked by a hash of its name (SHA-256, not
    Python's hash(), which changes between processes); add it to COLORS to choose one."""
    if name in COLORS:
        return COLORS[name]
    digest = hashlib.sha256(name.encode()).digest()
    return SPARE_COLORS[int.from_bytes(digest[:4], "big") % len(SPARE_COLORS)]


def load(name: str) -> ModuleType:
    known = names()
    if name not in known:
        raise UnknownBackendError(f"unknown backend {name!r}; known backends: {', '.join(known)}")
    return importlib.import_module(f"{__name__}.{name}")  # file names may hold '-': fine here
