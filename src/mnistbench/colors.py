"""Each backend's colour in every chart (compare's, the report's, a sweep's), fixed by name.

Charts only: no timed stage imports this module, so a colour change reruns no training.
"""

from __future__ import annotations

import hashlib

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
