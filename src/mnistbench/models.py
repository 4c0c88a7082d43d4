"""The article's MLP, once per framework: 784 -> hidden... (ReLU) -> 10 -> log_softmax.

With hidden (128, 256) both have 136,074 parameters (tests check the parity). Each is checked
against the memory it will live in before it is built (`require_memory`): a width mistyped as
100000000000 is one line naming model.hidden and the bytes, not the framework's own
out-of-memory error (RESOURCE_EXHAUSTED for 400 GB) from inside it. The roofline stage, which
allocates the model's products, checks the same (`require_host_memory`).
"""

from __future__ import annotations

from typing import Any

from mnistbench import frameworks, mnist
from mnistbench.config import ConfigError
from mnistbench.errors import size_text

FLOAT32 = 4  # bytes per parameter
# Copies of the parameters training holds at once: the parameters, their gradients, and Adam's
# two moments (optax and torch.optim alike), each float32.
TRAINING_COPIES = 4


def num_params(hidden: tuple[int, ...]) -> int:
    """Weights and biases of the MLP: sum over layers of (inputs + 1) x outputs."""
    widths = (mnist.PIXELS, *hidden, mnist.CLASSES)
    return sum((a + 1) * b for a, b in zip(widths, widths[1:]))


def training_bytes(hidden: tuple[int, ...]) -> int:
    """Bytes of the parameters, gradients and Adam state (activations at batch 32 are small
    beside them for any model that fits)."""
    return num_params(hidden) * FLOAT32 * TRAINING_COPIES


def require_memory(hidden: tuple[int, ...], available: int, where: str) -> None:
    """ConfigError naming model.hidden, the bytes needed and those available `where`."""
    needed = training_bytes(hidden)
    if needed > available:
        raise ConfigError(
            f"params: model.hidden {list(hidden)} makes {num_params(hidden):,} parameters: "
            f"{size_text(needed)} with gradients and Adam state, but {where} has "
            f"{size_text(available)} available; use smaller widths"
        )


def require_host_memory(hidden: tuple[int, ...]) -> None:
    """require_memory against this machine's available memory: what train's models and the
    roofline stage check before they allocate anything (the one limit both share)."""
    require_memory(hidden, host_available(), "this machine")


def host_available() -> int:
    """Bytes of memory the host can give without swapping (psutil: MemAvailable on Linux)."""
    import psutil  # a dependency of DVC's, so always installed with mnistbench

    return psutil.virtual_memory().available


def _require_jax_memory(hidden: tuple[int, ...]) -> None:
    """Against the memory of the device JAX puts arrays on: a GPU's free bytes (its allocator's
    limit less what is in use), else the host's."""
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        available = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        require_memory(hidden, available, f"{device.device_kind} ({device.platform})")
    else:
        require_host_memory(hidden)


def torch_mlp(hidden: tuple[int, ...]) -> Any:
    """The article's `MLP` (torch.nn), built with the given hidden widths."""
    require_host_memory(hidden)  # built there, then moved
    nn = frameworks.require("torch.nn")

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            layers, width = [], mnist.PIXELS
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.net = nn.Sequential(*layers, nn.Linear(width, mnist.CLASSES), nn.LogSoftmax(-1))

        def forward(self, x):
            return self.net(x)

    return MLP()


def flax_mlp(hidden: tuple[int, ...]) -> Any:
    """The article's `MLP` (flax.linen, @compact), built with the given hidden widths."""
    fnn = frameworks.require("flax.linen")
    _require_jax_memory(hidden)

    class MLP(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            for h in hidden:
                x = fnn.relu(fnn.Dense(h)(x))
            return fnn.log_softmax(fnn.Dense(mnist.CLASSES)(x))

    return MLP()
