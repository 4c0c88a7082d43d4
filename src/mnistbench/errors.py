"""The one base class of every expected failure: the CLI prints its message and exits 1.

Each module's own error (ConfigError, DownloadError, ...) derives from UserError as well as
from the built-in class it refines, so the CLI catches them all without importing the modules
that raise them (a stage then depends only on the modules its command really runs).
"""

from __future__ import annotations

import errno
import shutil
import stat
from pathlib import Path


class UserError(Exception):
    """A failure the user can fix; its message names the culprit and the fix, in one line."""


class DiskFullError(UserError, OSError):
    """No space left where a command writes; the message names the folder and the space."""


class ReadOnlyError(UserError, OSError):
    """A command's output folder is on a read-only filesystem; the message names it."""


# errno values meaning "this filesystem will not take the write": no space, over quota, read-only
_FULL = {errno.ENOSPC, errno.EDQUOT}


def from_os_error(e: OSError, folder: str | Path, needed: int | None = None) -> UserError | None:
    """The one-line UserError for a write into `folder` that failed with `e`, or None when `e`
    is not about the filesystem refusing writes (a missing file, a permission...). `needed`:
    the bytes the write needed in all, when known."""
    if isinstance(e, UserError):
        return e
    where = _existing(Path(e.filename) if e.filename else Path(folder))
    if e.errno in _FULL:
        free = shutil.disk_usage(where).free
        wanted = f"{size_text(needed)} needed, " if needed is not None else ""
        return DiskFullError(
            f"no space left in {where} ({wanted}{size_text(free)} free, {e.strerror}): "
            f"free some space there or write elsewhere; earlier results are as they were"
        )
    if e.errno == errno.EROFS:
        return ReadOnlyError(
            f"{where} is on a read-only filesystem: write elsewhere (--out, data.*_dir) "
            "or remount it read-write; earlier results are as they were"
        )
    if isinstance(e, NotADirectoryError | IsADirectoryError | FileExistsError):
        # an --out that names a file where a folder goes, or a folder where a file goes
        return WrongKindError(
            f"{e.filename or folder}: {e.strerror.lower()}: give a folder where a folder goes "
            "(--out, --metrics) and a file where a file goes; nothing was written there"
        )
    return None


class WrongKindError(UserError, OSError):
    """A path that is a file where a folder is needed, or the reverse."""


def size_text(n: int) -> str:
    """Bytes for people: 3.2 MB, 1.5 GB (powers of 1000, as df -H)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _existing(path: Path) -> Path:
    """The folder that holds `path`, or its nearest existing ancestor (which disk_usage needs)."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def kind(path: Path) -> str:
    """What `path` is, in words, for a message saying it is not what was expected."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "missing" if not path.is_symlink() else "a dangling symlink"
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"
