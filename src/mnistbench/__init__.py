"""mnistbench: PyTorch vs JAX on an MNIST MLP, and what the data loader costs."""

from __future__ import annotations

from importlib import metadata


def __getattr__(name: str) -> str:
    """`mnistbench.__version__`: the installed distribution's version (pyproject.toml's), read
    on first use only, so that importing any submodule costs no metadata scan."""
    if name != "__version__":
        raise AttributeError(f"module 'mnistbench' has no attribute {name!r}")
    try:
        return metadata.version("mnistbench")
    except metadata.PackageNotFoundError:  # run from a checkout without `pip install -e .`
        return "unknown (not installed: pip install -e .)"
