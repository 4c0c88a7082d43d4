"""The article's MLP, once per framework: 784 -> hidden... (ReLU) -> 10 -> log_softmax.

With hidden (128, 256) both have 136,074 parameters (tests check the parity).
"""

from __future__ import annotations

from typing import Any

from mnistbench import frameworks

IN_FEATURES = 28 * 28  # flattened MNIST image
NUM_CLASSES = 10


def torch_mlp(hidden: tuple[int, ...]) -> Any:
    """The article's `MLP` (torch.nn), built with the given hidden widths."""
    nn = frameworks.require("torch.nn")

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            layers, width = [], IN_FEATURES
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.net = nn.Sequential(*layers, nn.Linear(width, NUM_CLASSES), nn.LogSoftmax(-1))

        def forward(self, x):
            return self.net(x)

    return MLP()


def flax_mlp(hidden: tuple[int, ...]) -> Any:
    """The article's `MLP` (flax.linen, @compact), built with the given hidden widths."""
    fnn = frameworks.require("flax.linen")

    class MLP(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            for h in hidden:
                x = fnn.relu(fnn.Dense(h)(x))
            return fnn.log_softmax(fnn.Dense(NUM_CLASSES)(x))

    return MLP()
