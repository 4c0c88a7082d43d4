"""MNIST's IDX files (data/raw) read with NumPy alone, for the in-memory backends.

IDX layout (big-endian): images have a 16-byte header (magic 2051, count, rows, cols) and then
count*rows*cols uint8 pixels; labels an 8-byte header (magic 2049, count) and count uint8
labels. Each split's two files are checked against MNIST's size and SHA-256 before they are
read (inputs.require_raw), and the headers here, so that a damaged or wrong file is an
error naming it and the command that fetches it again, never training on garbage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnistbench import inputs, mnist

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def read_images(path: Path, limit: int | None = None) -> np.ndarray:
    """(N, 784) uint8 pixels, the first `limit` images if given."""
    with open(path, "rb") as f:
        magic, count, rows, cols = np.frombuffer(f.read(16), dtype=">u4")
        _check(path, magic, IMAGES_MAGIC)
        n = count if limit is None else min(limit, int(count))
        pixels = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
    return pixels.reshape(n, rows * cols)


def read_labels(path: Path, limit: int | None = None) -> np.ndarray:
    """(N,) int32 labels 0..9, the first `limit` if given."""
    with open(path, "rb") as f:
        magic, count = np.frombuffer(f.read(8), dtype=">u4")
        _check(path, magic, LABELS_MAGIC)
        n = count if limit is None else min(limit, int(count))
        labels = np.frombuffer(f.read(n), dtype=np.uint8)
    return labels.astype(np.int32)


def load_split(
    raw_dir: str | Path, split: str, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, 784) scaled to [0, 1] as the article's /255, labels int32 (N,))."""
    images_name, labels_name = mnist.images_file(split), mnist.labels_file(split)
    raw = inputs.require_raw(raw_dir, [images_name, labels_name])  # size and SHA-256
    images = read_images(raw / images_name, limit)
    labels = read_labels(raw / labels_name, limit)
    if len(images) != len(labels):
        raise ValueError(f"{raw}: {split} has {len(images)} images but {len(labels)} labels")
    return images.astype(np.float32) / 255.0, labels


def _check(path: Path, magic: int, expected: int) -> None:
    if magic != expected:
        raise inputs.MissingDataError(
            f"{path}: IDX magic number {magic}, expected {expected} "
            f"(not an MNIST file of this kind): {inputs.FIX_RAW}"
        )
