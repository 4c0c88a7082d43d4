"""This checkout's run identity: what tells a run made here from one that came with the clone.

A fresh clone (or a fresh workspace of an image) has no identity until its first
`mnistbench machine`, which makes one (12 random hex digits) and keeps it in the untracked
layout.CHECKOUT_FILE. The machine stage writes it into metrics/machine.json, so a clone's
first run never inherits the committed reference (mnistbench.machine); the report reads it to
say whether metrics/ is this checkout's run or the committed one.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from mnistbench import layout, outputs


def current_checkout(path: str | Path = layout.CHECKOUT_FILE) -> str | None:
    """This checkout's identity, or None before its first run (a fresh clone)."""
    try:
        value = Path(path).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return value if re.fullmatch(r"[0-9a-f]{12}", value) else None


def checkout_id(path: str | Path = layout.CHECKOUT_FILE) -> str:
    """This checkout's identity, made (12 random hex digits) and kept on its first call."""
    found = current_checkout(path)
    if found is not None:
        return found
    made = secrets.token_hex(6)
    path = Path(path)
    outputs.write_files(path.parent, {path.name: (made + "\n").encode()})
    return made
