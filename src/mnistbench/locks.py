"""One command at a time per output: a lock for the commands that write shared outputs.

`dvc repro` takes its own lock; the commands run by hand had none, and two at once on one
output broke each other (each removes the other's temporary files). Each writing command
(download, build-tfds, train, roofline, compare) now holds an exclusive flock on a file
beside its output, `<parent>/.<name>.lock`, while it runs. A second command on the same
output does not wait: it fails at once, naming the output and the command that holds it
(a training run can take many minutes, and the two would compute the same thing). Commands
on different outputs (two backends, say) run side by side.

A command that finds its output's filesystem full or read-only ends with one line naming the
folder (errors.DiskFullError, errors.ReadOnlyError), whether at the lock file or later.

The lock dies with its process, even on SIGKILL; the file is removed on release, and a file
left by a killed command is simply locked again by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from mnistbench import errors
from mnistbench.errors import UserError


class LockedError(UserError, RuntimeError):
    """Another process is writing the same output; the message names it and its holder."""


def lock_path(output: str | Path) -> Path:
    """The lock file of an output (a file or folder, existing or not)."""
    out = Path(output)
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def exclusive(output: str | Path, command: str) -> Iterator[None]:
    """Hold `output`'s lock for the duration of the block, or raise LockedError at once."""
    path = lock_path(output)
    with _filesystem_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, output)
    try:
        with _filesystem_errors(path.parent):
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}, mnistbench {command}\n".encode())
            yield
    finally:
        path.unlink(missing_ok=True)  # while still held: nobody can hold this inode after us
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _filesystem_errors(folder: Path) -> Iterator[None]:
    """A full or read-only filesystem under the command becomes one line naming the folder
    (errors.from_os_error); every other error passes unchanged."""
    try:
        yield
    except OSError as e:
        better = errors.from_os_error(e, folder)
        if better is None or better is e:
            raise
        raise better from e


def _acquire(path: Path, output: str | Path) -> int:
    """An fd of `path` holding its flock. The file may be unlinked by its previous holder
    between our open and our flock: then the lock is on a dead inode, and we open again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "starting"
            os.close(fd)
            raise LockedError(
                f"{output} is being written by another command ({holder}); "
                "wait until it ends, or write elsewhere (--out, data.*_dir)"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
