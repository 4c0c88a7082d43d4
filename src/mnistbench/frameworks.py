"""Loading a framework, with what must come with it: the one import order that works (triton
before TensorFlow), TensorFlow kept off the GPU, the device choice and the thread settings, and
an error naming the pip package when one is missing.

Backends and stages load each framework through here first (torch(), jax(), tensorflow(),
tensorflow_datasets(), or require() for the others); after that they import its submodules
directly (jax.numpy, optax, torch.nn.functional...). Every framework import, here or there, is
inside a function, never at a module's top level: the CLI and the other backends never pay for
(or require) a framework they do not use.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

from mnistbench import progress
from mnistbench.errors import UserError

# pip distribution that provides each importable module, for "missing package" messages.
_PACKAGE_OF = {
    "torch": "torch",
    "torchvision": "torchvision",
    "tensorflow": "tensorflow-cpu",
    "tensorflow_datasets": "tensorflow-datasets",
    "jax": "jax",
    "flax": "flax",
    "optax": "optax",
    "grain": "grain",
}


class MissingFrameworkError(UserError, ImportError):
    """A backend's framework is not installed; the message names the pip package."""


def require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:
            raise  # the framework is there but one of its own dependencies is broken
        package = _PACKAGE_OF.get(top, top)
        raise MissingFrameworkError(
            f"{module} is not installed: pip install {package} "
            "(or `make install`, which installs requirements.txt)"
        ) from e


def tensorflow() -> ModuleType:
    """TensorFlow for data feeding only: loaded after triton, and kept off every GPU."""
    # torch loads triton lazily (e.g. on the first Adam); triton loaded after TensorFlow
    # segfaults, so load it first whenever torch is installed (seen with torch 2.14, TF 2.21).
    if importlib.util.find_spec("torch") is not None:
        require("torch._dynamo")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of logs
    with progress.native_noise_dropped():  # what TF writes before that level applies
        tf = require("tensorflow")
    tf.config.set_visible_devices([], "GPU")  # TF only feeds data; the GPU belongs to JAX/torch
    return tf


def without_torch() -> None:
    """For a process that will not use torch (the TFDS build): TensorFlow then loads without
    triton first (~5 s less), and a later `import torch` is an ImportError, not a segfault.
    Where torch is loaded already, nothing changes."""
    sys.modules.setdefault("torch", None)  # None in sys.modules: Python refuses the import


def tensorflow_datasets() -> ModuleType:
    tensorflow()
    return require("tensorflow_datasets")


class DeviceUnavailableError(UserError, RuntimeError):
    """train.device asks for a GPU the framework cannot see; never a silent CPU fallback."""


def configure_threads(threads: int | None) -> dict:
    """Call before importing any framework. `threads` CPUs for every framework, or defaults.

    The process is pinned to the first `threads` CPUs (torch/OpenMP, TensorFlow and XLA all
    size their pools from the affinity mask), and each framework's own knob is set too.
    Where the OS has no affinity API (macOS), nothing is pinned: the frameworks' knobs alone
    apply, and cpus_usable is None. Returns what was applied, for the metrics' environment.
    """
    affinity = hasattr(os, "sched_getaffinity") and hasattr(os, "sched_setaffinity")
    usable = sorted(os.sched_getaffinity(0)) if affinity else None
    if threads is None:
        return {"threads": None, "cpus_usable": len(usable) if usable is not None else None}
    if usable is not None:
        usable = usable[:threads]
        os.sched_setaffinity(0, usable)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(threads)
    if threads == 1:  # XLA:CPU has no n-thread flag; one thread it can be told directly
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()
    return {"threads": threads, "cpus_usable": len(usable) if usable is not None else None}


def torch(threads: int | None, device: str) -> tuple[ModuleType, str]:
    """torch with its thread count set, and the device to use ("cpu" or "cuda")."""
    torch_mod = require("torch")
    require("torch._dynamo")  # loads triton now, before any TensorFlow import (see tensorflow())
    if threads is not None:
        torch_mod.set_num_threads(threads)
    has_gpu = torch_mod.cuda.is_available()
    if device == "cuda" and not has_gpu:
        raise DeviceUnavailableError(
            "train.device is cuda but torch sees no GPU "
            "(use --gpus all with Docker, or set train.device: cpu)"
        )
    return torch_mod, ("cuda" if device in ("cuda", "auto") and has_gpu else "cpu")


def jax(device: str) -> tuple[ModuleType, str]:
    """jax on the requested platform, without preallocating GPU memory."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU politely
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    jax_mod = require("jax")
    if device == "cpu":
        jax_mod.config.update("jax_platforms", "cpu")  # in case jax was imported earlier
    platform = jax_mod.default_backend()
    if device == "cuda" and platform != "gpu":
        raise DeviceUnavailableError(
            f"train.device is cuda but JAX runs on {platform} "
            "(install jax[cuda13], as the mnistbench:cuda image does, "
            "and pass --gpus all, or use cpu)"
        )
    return jax_mod, ("cuda" if platform == "gpu" else "cpu")
