"""MNIST's facts, stated once: split sizes, image shape, classes, and the four IDX files
(name, size, SHA-256 of the decompressed bytes, the same on every correct mirror).

Cheap to import: no framework, no I/O. The download writes these files, the readers check
them (mnistbench.inputs), the model and the roofline take their shapes from here.
"""

from __future__ import annotations

from dataclasses import dataclass

TRAIN_EXAMPLES, TEST_EXAMPLES = 60000, 10000  # examples in MNIST's splits, before data.limit_*
SIDE = 28  # pixels per image side (grey, one channel)
PIXELS = SIDE * SIDE  # a flattened image: the model's input width
CLASSES = 10  # digits 0..9: the model's output width
SPLIT_PREFIX = {"train": "train", "test": "t10k"}  # split -> IDX file-name prefix


@dataclass(frozen=True)
class MnistFile:
    name: str  # canonical name, served by mirrors as <name>.gz, stored decompressed
    size: int  # bytes, decompressed
    sha256: str  # of the decompressed bytes (identical on every correct mirror)


FILES = (
    MnistFile(
        "train-images-idx3-ubyte",
        47040016,
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    MnistFile(
        "train-labels-idx1-ubyte",
        60008,
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    MnistFile(
        "t10k-images-idx3-ubyte",
        7840016,
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    MnistFile(
        "t10k-labels-idx1-ubyte",
        10008,
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
)


def images_file(split: str) -> str:
    """The IDX file holding `split`'s images ("train" or "test")."""
    return f"{SPLIT_PREFIX[split]}-images-idx3-ubyte"


def labels_file(split: str) -> str:
    """The IDX file holding `split`'s labels ("train" or "test")."""
    return f"{SPLIT_PREFIX[split]}-labels-idx1-ubyte"
