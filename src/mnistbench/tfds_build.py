"""Stage `build_tfds`: TFDS's own `mnist` 3.0.1 dataset, built offline from data/raw.

TFDS's MNIST builder downloads from Google's bucket in `_split_generators`; the subclass below
keeps everything else (features, version, example generation) and points that one method at
the verified local files. The TFRecord build in <tfds_dir> serves `tfds.load`; an ArrayRecord
build of the same builder in <tfds_dir>/array_record serves `tfds.data_source` (random
access, for grain).

The build is byte-for-byte reproducible (data/tfds's hash in dvc.lock does not change when it is
rebuilt, so the TFDS rows do not rerun for nothing): see `_deterministic_examples`. Each
format's data_dir gets a SHA256SUMS file (`sha256sum -c` reads it) listing every file of that
format's build, written with the build and swapped in with it. Readers check the build before
using it (mnistbench.inputs.require_tfds: presence, sizes, then every file of the format they
read against SHA256SUMS, ~0.1 s for the 23 MB of one format), and the raw files' size and
SHA-256 (`require_raw`), so damaged data is an error naming the file and the command that
remakes it.

Where the build goes: a tfds_dir that is a symbolic link keeps its link, and the build is
written where it points (on the link's disk); a tfds_dir that is a mount point cannot be
renamed, so the build is staged inside it and its entries moved in. A full disk is one error
naming the folder, whichever format's writer hit it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mnistbench import errors, frameworks, inputs, mnist, outputs
from mnistbench.config import ConfigError, DataConfig
from mnistbench.inputs import MANIFEST, NAME, VERSION, array_record_dir, require_raw

log = logging.getLogger(__name__)

STAGING_PREFIX = ".tfds-build-"  # <parent>/.tfds-build-<pid>-<hex>: a build in progress
OURS = {
    NAME,
    inputs.ARRAY_RECORD_DIR,
    "downloads",
    MANIFEST,
}  # what a build of ours holds at its top
LOST_FOUND = "lost+found"  # what mkfs puts at the top of a new ext* file system
# Both formats with their checksum lists, as TFDS 4.9 writes them from MNIST (50.3 MB): what a
# build needs free beside (or, on a mount point, inside) data.tfds_dir, the old build kept
# until the swap.
BUILD_BYTES = 50_303_214
DISK_FULL_EXIT = errno.ENOSPC  # the ArrayRecord child's exit code when its disk is full


def _write_manifest(data_dir: Path, skip: frozenset[str] = frozenset()) -> None:
    """data_dir/SHA256SUMS for every file under it but the top-level names in `skip`; sorted
    paths and contents only, so a deterministic build writes the same bytes. Atomic: written
    beside, then renamed."""
    files = sorted(  # by the path's text: the same order on every platform and Python
        p.relative_to(data_dir).as_posix()
        for p in data_dir.rglob("*")
        if p.is_file() and p.relative_to(data_dir).parts[0] not in skip | {MANIFEST}
    )
    lines = [f"{inputs.file_sha256(data_dir / rel)}  {rel}\n" for rel in files]
    tmp = data_dir / f".{MANIFEST}.partial"
    tmp.write_text("".join(lines))
    os.replace(tmp, data_dir / MANIFEST)


def _local_builder_class(raw: Path):
    tfds = frameworks.tensorflow_datasets()
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    class LocalMNIST(tfds_mnist.MNIST, skip_registration=True):
        """TFDS's MNIST 3.0.1, reading the verified IDX files instead of downloading."""

        name = NAME

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download: the files were fetched and verified upstream
            return [
                tfds.core.SplitGenerator(
                    name=tfds.Split.TRAIN,
                    gen_kwargs=dict(
                        num_examples=mnist.TRAIN_EXAMPLES,
                        data_path=str(raw / mnist.images_file("train")),
                        label_path=str(raw / mnist.labels_file("train")),
                    ),
                ),
                tfds.core.SplitGenerator(
                    name=tfds.Split.TEST,
                    gen_kwargs=dict(
                        num_examples=mnist.TEST_EXAMPLES,
                        data_path=str(raw / mnist.images_file("test")),
                        label_path=str(raw / mnist.labels_file("test")),
                    ),
                ),
            ]

    return LocalMNIST


def build(cfg: DataConfig) -> Path:
    """Build into a temporary data_dir, then swap it into cfg.tfds_dir (all or nothing)."""
    raw = require_raw(cfg.raw_dir)
    out = Path(cfg.tfds_dir)
    target = _target(out)
    _check_replaceable(out, target)
    if _is_mount_point(target):
        _build_inside(raw, target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(target.parent)
        staging = target.parent / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        with _disk_full_names(target.parent):  # outside: the free space once staging is gone
            with outputs.replace_folder(target, staging):
                _fill(raw, staging)
    log.info("TFDS %s %s ready under %s", NAME, VERSION, out)
    return out


def _fill(raw: Path, staging: Path) -> None:
    """Both formats and their checksum lists into the (empty) staging folder."""
    _prepare_formats(raw, staging)
    shutil.rmtree(staging / "downloads", ignore_errors=True)  # empty: nothing downloaded
    _write_manifest(array_record_dir(staging))
    _write_manifest(staging, skip=frozenset({inputs.ARRAY_RECORD_DIR}))


def _target(out: Path) -> Path:
    """The folder the build replaces: tfds_dir, or where it points when it is a symbolic
    link (the link stays, and the build lands on the disk it was made to point at)."""
    if not out.is_symlink():
        return out
    if not out.exists():
        raise ConfigError(
            f"params: data.tfds_dir {out} is a symlink to {os.readlink(out)}, which does not "
            "exist: create that folder, or point data.tfds_dir elsewhere"
        )
    return Path(os.path.realpath(out))


def _is_mount_point(folder: Path) -> bool:
    """Whether `folder` is where a file system is mounted (a bind mount of a folder of the
    same disk too, which os.path.ismount does not see): renaming it fails with EBUSY."""
    if not folder.is_dir():
        return False
    if os.path.ismount(folder):
        return True
    try:
        with open("/proc/self/mountinfo", errors="replace") as f:  # field 5: the mount point
            points = {line.split()[4] for line in f if len(line.split()) > 4}
    except OSError:  # not Linux
        return False
    unescape = functools.partial(re.sub, r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)))
    return str(folder.resolve()) in {unescape(p) for p in points}  # "\040" is a space


def _build_inside(raw: Path, target: Path) -> None:
    """The build for a tfds_dir that is a mount point: staged in a hidden folder inside it,
    then the previous build's entries moved aside and the new ones moved in, one rename each
    (the swap as a whole is not atomic, but readers check every file against SHA256SUMS)."""
    _remove_stale_builds(target)
    staging = target / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    old = staging.with_name(f"{staging.name}-old")
    with _disk_full_names(target):  # outside: the free space once staging is gone
        try:
            staging.mkdir()
            _fill(raw, staging)
            old.mkdir()
            for name in sorted(OURS):
                if os.path.lexists(target / name):
                    (target / name).rename(old / name)
            for entry in sorted(staging.iterdir()):
                entry.rename(target / entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _disk_full_names(folder: Path) -> Iterator[None]:
    """A build that ran out of space (TFDS's writers wrap the errno in their own errors, the
    ArrayRecord child exits DISK_FULL_EXIT) becomes errors.DiskFullError naming `folder`."""
    try:
        yield
    except Exception as e:
        if not _no_space(e):
            raise
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise errors.from_os_error(full, folder, BUILD_BYTES) from e


def _no_space(e: BaseException | None) -> bool:
    """Whether `e` or an error it was raised from is a full disk or quota: an OSError with that
    errno, or TensorFlow's ResourceExhaustedError and ArrayRecord's RuntimeError, which carry
    only the C library's text for it."""
    texts = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
    seen = 0
    while e is not None and seen < 20:  # a cause chain is short; a loop in it is not followed
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(e) for text in texts):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _check_replaceable(out: Path, target: Path) -> None:
    """The build replaces tfds_dir whole: refuse if it holds anything but an earlier build
    (or builds in progress, on a mount point, and the file system's own lost+found)."""
    if not target.exists():
        return
    if not target.is_dir():
        foreign = [target.name]
    else:
        ours = OURS | ({LOST_FOUND} if _is_mount_point(target) else set())
        foreign = sorted(
            p.name
            for p in target.iterdir()
            if p.name not in ours and not p.name.startswith(STAGING_PREFIX)
        )
    if foreign:
        where = f"{out} (a link to {target})" if out != target else str(out)
        raise ConfigError(
            f"params: data.tfds_dir {where} holds {', '.join(foreign[:5])}, which no "
            "TFDS build made; build_tfds replaces that folder whole, so it stops "
            "here (move those files, or point data.tfds_dir elsewhere)"
        )


def _remove_stale_builds(parent: Path) -> None:
    """Staging folders of builds that were killed (SIGKILL skips every cleanup): those whose
    process is gone. A running build's folder, here or for another tfds_dir, is left alone."""
    for folder in parent.glob(STAGING_PREFIX + "*"):
        pid = folder.name[len(STAGING_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a build that was killed", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to another user
    return True


@contextlib.contextmanager
def _deterministic_examples() -> Iterator[None]:
    """TFDS serializes each tf.Example with protobuf's default, and protobuf (upb) writes a
    map's entries (the features `image` and `label`) in an order that changes from process to
    process: two builds of the same files then differ byte-wise, and so does data/tfds's hash.
    For the build, examples are serialized with deterministic=True (map keys sorted): readers
    parse either order; the bytes no longer depend on the process."""
    frameworks.tensorflow_datasets()  # imports in the order that works (frameworks.py)
    from tensorflow_datasets.core import example_serializer

    cls = example_serializer.ExampleSerializer
    original = cls.serialize_example

    def serialize_example(self, example):
        return self.get_tf_example(example).SerializeToString(deterministic=True)

    cls.serialize_example = serialize_example
    try:
        yield
    finally:
        cls.serialize_example = original


def _prepare_formats(raw: Path, staging: Path) -> None:
    """Both builds at once: TFRecord in this process, ArrayRecord in a child process. Each is
    ~25 s of TFDS encoding PNGs example by example on one core (threads gave nothing: the GIL),
    so on 2 cores the stage takes 33 s instead of 57. A plain child Python, not
    multiprocessing: spawn would run the caller's main module again, fork copies TensorFlow's
    threads' locks. The child exits if this process is killed (_exit_with_parent)."""
    package_root = str(Path(__file__).resolve().parents[1])  # the mnistbench this process runs
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(os.getpid()), str(raw), str(array_record_dir(staging))],
        env=env,
    )
    try:
        with _deterministic_examples():
            _prepare(raw, staging, "tfrecord")
    except BaseException:
        child.terminate()  # the stage has failed: no use finishing the other format
        raise
    finally:
        child.wait()
    if child.returncode == DISK_FULL_EXIT:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(array_record_dir(staging)))
    if child.returncode != 0:
        raise RuntimeError(
            f"the ArrayRecord build (process {child.pid}) failed with exit code "
            f"{child.returncode}; its error is printed above"
        )


# The child's program: run as mnistbench.tfds_build, not as __main__, whose name TFDS would
# write into dataset_info.json (its moduleName), changing the build's bytes.
CHILD = "import sys; from mnistbench import tfds_build; tfds_build._prepare_in_child(*sys.argv[1:])"


def _prepare_in_child(parent_pid: str, raw: str, data_dir: str) -> None:
    _exit_with_parent(int(parent_pid))
    frameworks.without_torch()
    frameworks.tensorflow_datasets().disable_progress_bar()  # one progress bar: the parent's
    try:
        with _deterministic_examples():
            _prepare(Path(raw), Path(data_dir), "array_record")
    except Exception as e:
        if not _no_space(e):
            raise  # a bug: its traceback, printed by Python, is what to read
        sys.exit(DISK_FULL_EXIT)  # the parent says it in one line, naming the folder


def _exit_with_parent(parent_pid: int) -> None:
    """A parent killed outright (SIGKILL, or SIGTERM, which skips Python's cleanup) cannot stop
    its child: the child stops itself once it has another parent (checked every second)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _prepare(raw: Path, data_dir: Path, file_format: str) -> None:
    """One format per data_dir: TFDS 4.9 cannot read an alternative format of a registered
    dataset (`tfds.data_source(..., file_format=...)` insists on the format in the info)."""
    tfds = frameworks.tensorflow_datasets()
    log.info("building TFDS %s %s (%s) from %s", NAME, VERSION, file_format, raw)
    builder = _local_builder_class(raw)(data_dir=str(data_dir), file_format=file_format)
    # TFDS prints its own "Downloading and preparing dataset Unknown size ..." lines (about a
    # download that does not happen here): the log line above says what is built
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    shutil.rmtree(data_dir / "downloads", ignore_errors=True)
