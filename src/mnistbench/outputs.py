"""Writing a stage's output files all or nothing: nothing half-written is ever visible."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Each file (a name, or a path relative to out_dir) to a temporary one beside it, then all
    renamed into place."""
    staged = []
    try:
        for name, data in files.items():
            final = out_dir / name
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
            staged.append((tmp, final))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would survive the rename
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
