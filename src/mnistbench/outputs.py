"""Writing a stage's outputs all or nothing: nothing half-written is ever visible, and a
failed or interrupted command leaves the previous outputs as they were. The one way every
command writes: `write_files` for files, `replace_folder` for a folder filled over time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mnistbench import errors


def write_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Each file (a name, or a path relative to out_dir) to a temporary one beside it, then all
    renamed into place. A full or read-only disk is errors.DiskFullError or ReadOnlyError
    naming the folder written to (a failed write() names no file of its own)."""
    staged = []
    final = out_dir
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
    except OSError as e:
        needed = sum(len(data) for data in files.values())
        better = errors.from_os_error(e, final.parent, needed)
        if better is None or better is e:
            raise
        raise better from e
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


@contextlib.contextmanager
def replace_folder(final: Path, staging: Path | None = None) -> Iterator[Path]:
    """A fresh staging folder beside `final` (default `.<name>.partial`) for the block to
    fill; when the block succeeds it replaces `final` whole (the old one moved aside first,
    then removed), when it fails it is removed and `final` is untouched."""
    staging = staging or final.with_name(f".{final.name}.partial")
    old = staging.with_name(f"{staging.name}-old")  # the previous folder, until the swap is done
    for leftover in (staging, old):  # what a killed command left (SIGKILL skips cleanup)
        shutil.rmtree(leftover, ignore_errors=True)
    # mkdir, not mkdtemp: mkdtemp's private 0700 would become the output's mode on rename
    staging.mkdir(parents=True)
    try:
        yield staging
        if final.exists():
            final.rename(old)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
