"""Stage `build_tfds`: TFDS's own mnist 3.0.1, built from data/raw, readable with no network."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import yaml

from mnistbench import config, errors, inputs, tfds_build
from mnistbench.inputs import MissingDataError
from mnistbench.mnist import FILES

ROOT = Path(__file__).resolve().parents[1]
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

# Runs in a fresh process with no network: prints what it read as JSON.
OFFLINE_READ = textwrap.dedent("""\
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
    import tensorflow_datasets as tfds

    data_dir = sys.argv[1]
    splits = tfds.load("mnist", data_dir=data_dir, download=False, as_supervised=True)
    out = {"splits": sorted(splits)}
    image_spec, label_spec = splits["train"].element_spec
    out["image"] = [list(image_spec.shape), image_spec.dtype.name]
    out["label"] = label_spec.dtype.name
    for split, ds in splits.items():
        n, counts = 0, np.zeros(10, np.int64)
        for images, labels in ds.batch(10000).as_numpy_iterator():
            n += len(labels)
            counts += np.bincount(labels, minlength=10)
        out[split] = {"n": n, "counts": counts.tolist()}

    source = tfds.data_source("mnist", data_dir=os.path.join(data_dir, "array_record"),
                              builder_kwargs={"file_format": "array_record"}, download=False)
    record = source["train"][0]
    out["data_source"] = {"train": len(source["train"]), "test": len(source["test"]),
                          "image": [list(record["image"].shape), record["image"].dtype.name]}
    print("RESULT " + json.dumps(out))
""")

# Fallback when `unshare -n` is not allowed: every connect attempt is logged and refused.
SOCKET_GUARD = textwrap.dedent("""\
    import os, socket
    _log = os.environ["SOCKET_GUARD_LOG"]
    def _refuse(self, address, *args, **kwargs):
        with open(_log, "a") as f:
            f.write(repr(address) + "\\n")
        raise OSError("network disabled by the test's socket guard")
    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
""")


def _offline(cmd: list[str], tmp_path: Path) -> tuple[list[str], dict, Path | None]:
    """The command run with no network: in a new network namespace, or under a socket guard."""
    env = dict(os.environ)
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", *cmd], env, None
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(SOCKET_GUARD)
    log = tmp_path / "connects.log"
    log.touch()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(guard), env.get("PYTHONPATH")]))
    env["SOCKET_GUARD_LOG"] = str(log)
    return cmd, env, log


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256, for every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_built_dataset_loads_offline(tfds_dir, tmp_path):
    cmd, env, connect_log = _offline([sys.executable, "-c", OFFLINE_READ, str(tfds_dir)], tmp_path)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))

    assert out["splits"] == ["test", "train"]
    assert out["image"] == [[28, 28, 1], "uint8"]
    assert out["label"] == "int64"
    assert out["train"]["n"] == 60000 and out["test"]["n"] == 10000
    assert out["train"]["counts"] == TRAIN_LABEL_COUNTS
    assert sum(out["test"]["counts"]) == 10000 and min(out["test"]["counts"]) > 800
    assert out["data_source"] == {"train": 60000, "test": 10000, "image": [[28, 28, 1], "uint8"]}
    if connect_log is not None:
        assert connect_log.read_text() == "", "something tried to reach the network"


def test_build_output_layout(tfds_dir):
    assert (tfds_dir / "mnist" / "3.0.1" / "dataset_info.json").is_file()
    assert (inputs.array_record_dir(tfds_dir) / "mnist" / "3.0.1" / "dataset_info.json").is_file()
    assert not (tfds_dir / "downloads").exists()
    assert not list(tfds_dir.parent.glob(".tfds-build-*"))  # no staging left behind
    assert inputs.require_tfds(tfds_dir) == tfds_dir
    # as readable as any folder made by mkdir (not mkdtemp's private 0700)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(tfds_dir.stat().st_mode) == 0o777 & ~umask


def test_build_without_raw_names_the_download_stage(tmp_path):
    cfg = config.DataConfig(raw_dir=str(tmp_path / "raw"), tfds_dir=str(tmp_path / "tfds"))
    with pytest.raises(MissingDataError, match="download stage") as e:
        tfds_build.build(cfg)
    assert "mnistbench download" in str(e.value)
    assert not (tmp_path / "tfds").exists()


def test_build_with_a_missing_raw_file_names_it(tmp_path, raw_dir):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in FILES[1:]:
        (raw / f.name).symlink_to(raw_dir / f.name)
    cfg = config.DataConfig(raw_dir=str(raw), tfds_dir=str(tmp_path / "tfds"))
    with pytest.raises(MissingDataError, match=f"lacks {FILES[0].name}: run the download stage"):
        tfds_build.build(cfg)


def test_require_tfds_names_the_build_stage(tmp_path):
    with pytest.raises(MissingDataError, match="build_tfds"):
        inputs.require_tfds(tmp_path / "tfds")


def _fake_build(tfds_dir: Path) -> None:
    """What a build leaves: the two data_dirs, each with a dataset_info.json."""
    for data_dir in (tfds_dir, inputs.array_record_dir(tfds_dir)):
        (data_dir / "mnist" / "3.0.1").mkdir(parents=True)
        (data_dir / "mnist" / "3.0.1" / "dataset_info.json").write_text("{}")


def test_failed_build_keeps_the_previous_dataset(raw_dir, tmp_path, monkeypatch):
    """TFDS fails halfway (here: the ArrayRecord build, after the TFRecord one wrote files):
    the previous build stays as it was, and no staging folder is left."""
    previous = tmp_path / "data" / "tfds"
    _fake_build(previous)
    before = _tree(previous)

    def prepare_formats(raw, staging):
        (staging / "mnist").mkdir(parents=True, exist_ok=True)
        (staging / "mnist" / "half-tfrecord").write_text("written before the failure")
        raise RuntimeError("TFDS failed")

    monkeypatch.setattr(tfds_build, "_prepare_formats", prepare_formats)
    with pytest.raises(RuntimeError, match="TFDS failed"):
        tfds_build.build(config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(previous)))

    assert _tree(previous) == before
    assert sorted(os.listdir(previous.parent)) == ["tfds"]  # no staging left behind


def _record_children(monkeypatch) -> list[subprocess.Popen]:
    """The build's child processes, as they start (other programs started meanwhile are left
    out)."""
    children = []

    class Recorded(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            super().__init__(args, *rest, **kwargs)
            if tfds_build.CHILD in args:
                children.append(self)

    monkeypatch.setattr(tfds_build.subprocess, "Popen", Recorded)
    return children


# `make test` checks the build's all-or-nothing swap with the child's work faked
@pytest.mark.long(
    "a real ArrayRecord child process that fails (~14 s: it imports TensorFlow first)"
)
def test_a_failed_arrayrecord_child_fails_the_build(tmp_path, monkeypatch):
    """The ArrayRecord build runs in a child Python (for real here: TFDS finds no IDX files);
    its failure is the build's, even when the TFRecord build in this process went well."""
    children = _record_children(monkeypatch)
    monkeypatch.setattr(tfds_build, "_prepare", lambda raw, data_dir, fmt: None)
    with pytest.raises(RuntimeError, match=r"the ArrayRecord build \(process \d+\) failed"):
        tfds_build._prepare_formats(tmp_path / "no-raw", tmp_path / "staging")
    assert [child.returncode for child in children] == [1]


def test_a_failed_tfrecord_build_stops_the_child(tmp_path, monkeypatch):
    """This process's build fails: the child is terminated, not waited for (~30 s)."""
    children = _record_children(monkeypatch)

    def prepare(raw, data_dir, fmt):
        raise KeyboardInterrupt  # Ctrl-C during the TFRecord build

    monkeypatch.setattr(tfds_build, "_prepare", prepare)
    monkeypatch.setattr(tfds_build, "_deterministic_examples", contextlib.nullcontext)
    with pytest.raises(KeyboardInterrupt):
        tfds_build._prepare_formats(tmp_path / "raw", tmp_path / "staging")
    assert [child.returncode for child in children] == [-signal.SIGTERM]


# `make test` checks the build's all-or-nothing swap with the child's work faked
@pytest.mark.long("a real build killed once its child has started (~15 s)")
def test_a_killed_build_takes_its_child_with_it(raw_dir, tmp_path):
    """SIGKILL skips every cleanup: the ArrayRecord child sees it has lost its parent and
    exits, rather than building on into a folder that nobody will read."""
    import psutil  # a DVC dependency

    program = (
        "import sys; from mnistbench import config, tfds_build; "
        "tfds_build.build(config.DataConfig(raw_dir=sys.argv[1], tfds_dir=sys.argv[2]))"
    )
    build = subprocess.Popen(
        [sys.executable, "-c", program, str(raw_dir), str(tmp_path / "tfds")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stderr=subprocess.DEVNULL,
    )
    try:
        children = []
        deadline = time.monotonic() + 120
        while not children and time.monotonic() < deadline and build.poll() is None:
            time.sleep(0.2)
            children = psutil.Process(build.pid).children()
        assert len(children) == 1, "the build started no child"
    finally:
        build.kill()
        build.wait()
    (child,) = children
    deadline = time.monotonic() + 30
    try:
        while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"child {child.pid} still runs, its parent killed"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()  # when the test fails: leave nothing running


@pytest.mark.parametrize(
    "how, named",
    [("truncated", "bytes instead of 47040016"), ("flipped", "is damaged (SHA-256 differs")],
)
def test_build_from_damaged_raw_names_the_file(raw_dir, tmp_path, how, named):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    images = raw / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    if how == "flipped":
        data[5000] ^= 0xFF
    images.write_bytes(bytes(data[: len(data) // 2] if how == "truncated" else data))
    with pytest.raises(MissingDataError) as e:
        tfds_build.build(config.DataConfig(raw_dir=str(raw), tfds_dir=str(tmp_path / "tfds")))
    assert str(images) in str(e.value) and named in str(e.value)
    assert "mnistbench download" in str(e.value)
    assert not (tmp_path / "tfds").exists()


def test_stale_staging_folders_are_removed_and_live_ones_kept(raw_dir, tmp_path, monkeypatch):
    """A killed build leaves .tfds-build-<pid>-<hex>/ (23 MB each): the next build removes
    those whose process is gone, and leaves a running build's alone."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".tfds-build-{dead.stdout.strip()}-0badc0de"
    live = tmp_path / f".tfds-build-{os.getppid()}-600dc0de"  # pytest's parent: alive
    for folder in (stale, live, tmp_path / f"{stale.name}-old"):
        (folder / "mnist").mkdir(parents=True)
    monkeypatch.setattr(tfds_build, "_prepare_formats", lambda raw, staging: _fake_build(staging))

    tfds_build.build(config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(tmp_path / "tfds")))

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "tfds"])


def test_tfds_dir_holding_other_files_is_not_replaced(raw_dir, tmp_path):
    """build_tfds replaces data.tfds_dir whole: a folder it did not make is refused, untouched."""
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(config.ConfigError, match="holds notes, thesis.tex, which no TFDS build"):
        tfds_build.build(config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(mine)))
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_a_linked_tfds_dir_keeps_its_link_and_gets_the_build_where_it_points(
    raw_dir, tmp_path, monkeypatch
):
    """data/tfds a link to another disk: the build lands there, twice over, and the link stays
    (it was replaced by a real folder here, the link left behind as a hidden folder)."""
    elsewhere, project = tmp_path / "disk2" / "tfds", tmp_path / "project"
    elsewhere.mkdir(parents=True)
    project.mkdir()
    (project / "tfds").symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.setattr(tfds_build, "_prepare_formats", lambda raw, staging: _fake_build(staging))
    cfg = config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(project / "tfds"))
    for _ in range(2):  # the second build replaces the first, through the link
        assert tfds_build.build(cfg) == project / "tfds"
        assert os.readlink(project / "tfds") == str(elsewhere)
        assert sorted(os.listdir(project)) == ["tfds"]
        assert sorted(os.listdir(elsewhere.parent)) == ["tfds"]
        assert (elsewhere / "mnist" / "3.0.1" / "dataset_info.json").is_file()
        assert (elsewhere / inputs.MANIFEST).is_file()


def test_a_dangling_tfds_dir_link_is_one_line_naming_it(raw_dir, tmp_path):
    (tmp_path / "tfds").symlink_to(tmp_path / "gone")
    cfg = config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(tmp_path / "tfds"))
    with pytest.raises(config.ConfigError, match=r"is a symlink to .*gone, which does not exist"):
        tfds_build.build(cfg)
    assert (tmp_path / "tfds").is_symlink() and not (tmp_path / "gone").exists()


def _build_on_a_mount_point(raw_dir: Path, mount: Path, monkeypatch) -> None:
    """Two fake builds into `mount`, the second over the first, and what they leave."""
    monkeypatch.setattr(tfds_build, "_prepare_formats", lambda raw, staging: _fake_build(staging))
    cfg = config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(mount))
    for n in range(2):
        (mount / "mnist" / "3.0.1").mkdir(parents=True, exist_ok=True)
        (mount / "mnist" / "3.0.1" / "from-before").write_text(str(n))  # gone after the swap
        tfds_build.build(cfg)
        left = set(os.listdir(mount)) - {"lost+found"}  # the file system's own, kept
        assert left == {"array_record", "mnist", inputs.MANIFEST}
        assert not (mount / "mnist" / "3.0.1" / "from-before").exists()


def test_a_tfds_dir_that_is_a_mount_point_is_built_inside_never_renamed(
    raw_dir, tmp_path, monkeypatch
):
    """A mount point cannot be renamed (EBUSY, after the whole build): the build is staged
    inside it and its entries moved in. Here the folder is taken for one, and renaming it
    fails as it would."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    monkeypatch.setattr(tfds_build, "_is_mount_point", lambda folder: folder == mount)
    real_rename = Path.rename

    def rename(self, target):
        if self == mount:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(self), str(target))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    _build_on_a_mount_point(raw_dir, mount, monkeypatch)
    assert sorted(os.listdir(tmp_path)) == ["mnt"]


def test_a_tfds_dir_on_a_real_tmpfs_mount(raw_dir, tmp_path, monkeypatch):
    """The same on a real mount point, where this user may mount one (root, in a container
    that allows it), with the lost+found of a new file system left alone."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if os.geteuid() != 0 or mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root where mounts are allowed")
    try:
        assert tfds_build._is_mount_point(mount)
        (mount / "lost+found").mkdir()
        _build_on_a_mount_point(raw_dir, mount, monkeypatch)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


class _FakeTfdsError(Exception):
    """What TensorFlow's ResourceExhaustedError holds: the C library's text for ENOSPC."""


def _tfds_full_disk(raw, data_dir, fmt):
    """TFDS's writer on a full disk: RuntimeError raised from TensorFlow's error, no errno."""
    try:
        raise _FakeTfdsError(f"{data_dir}/mnist-train.tfrecord; {os.strerror(errno.ENOSPC)}")
    except _FakeTfdsError as e:
        raise RuntimeError(f"ResourceExhaustedError: Failed to finalize writing of {e}") from e


def test_a_full_disk_during_the_build_is_one_line_naming_the_folder(raw_dir, tmp_path, monkeypatch):
    """The TFRecord writer fills the disk (here: raises as TFDS does on one); the error names
    the folder the build writes in and what the build needs, and nothing is left there."""
    from click.testing import CliRunner

    from mnistbench.cli import main as cli

    out = tmp_path / "data" / "tfds"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"raw_dir": str(raw_dir), "tfds_dir": str(out)}}))
    monkeypatch.setattr(tfds_build, "_deterministic_examples", contextlib.nullcontext)
    monkeypatch.setattr(tfds_build, "_prepare", _tfds_full_disk)
    monkeypatch.setattr(tfds_build, "CHILD", "import time; time.sleep(60)")  # stopped at once
    done = CliRunner().invoke(cli, ["build-tfds", "--params", str(params)])
    assert done.exit_code == 1, done.output
    line = f"error: no space left in {out.parent} (50.3 MB needed, "
    assert done.output.startswith(line) and done.output.count("\n") == 1, done.output
    assert sorted(os.listdir(out.parent)) == []


def test_a_full_disk_in_the_arrayrecord_child_is_the_same_line(raw_dir, tmp_path, monkeypatch):
    """The child (the ArrayRecord build) fills the disk: it exits DISK_FULL_EXIT without a
    traceback, and the parent says it as above."""
    monkeypatch.setattr(tfds_build, "_exit_with_parent", lambda pid: None)
    monkeypatch.setattr(tfds_build.frameworks, "without_torch", lambda: None)  # this process's
    no_bar = types.SimpleNamespace(disable_progress_bar=lambda: None)
    monkeypatch.setattr(tfds_build.frameworks, "tensorflow_datasets", lambda: no_bar)
    monkeypatch.setattr(tfds_build, "_deterministic_examples", contextlib.nullcontext)
    monkeypatch.setattr(tfds_build, "_prepare", _tfds_full_disk)
    with pytest.raises(SystemExit) as info:
        tfds_build._prepare_in_child(str(os.getpid()), str(raw_dir), str(tmp_path / "ar"))
    assert info.value.code == tfds_build.DISK_FULL_EXIT

    monkeypatch.setattr(tfds_build, "_prepare", lambda raw, data_dir, fmt: None)
    monkeypatch.setattr(tfds_build, "CHILD", f"import sys; sys.exit({tfds_build.DISK_FULL_EXIT})")
    out = tmp_path / "tfds"
    with pytest.raises(errors.DiskFullError, match=f"no space left in {tmp_path} "):
        tfds_build.build(config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(out)))
    assert os.listdir(tmp_path) == []


def test_a_failure_that_is_not_a_full_disk_is_left_as_it_is(raw_dir, tmp_path, monkeypatch):
    def prepare_formats(raw, staging):
        raise RuntimeError("ResourceExhaustedError: out of memory")  # no disk in it

    monkeypatch.setattr(tfds_build, "_prepare_formats", prepare_formats)
    with pytest.raises(RuntimeError, match="out of memory"):
        tfds_build.build(config.DataConfig(raw_dir=str(raw_dir), tfds_dir=str(tmp_path / "t")))


def test_a_deleted_or_cut_shard_is_named_with_the_build_command(tfds_dir, tmp_path):
    copy = tmp_path / "tfds"
    shutil.copytree(tfds_dir, copy)
    shard = copy / "mnist" / "3.0.1" / "mnist-train.tfrecord-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(MissingDataError, match="train shards hold .* bytes instead of"):
        inputs.require_tfds(copy)
    shard.unlink()
    with pytest.raises(MissingDataError) as e:
        inputs.require_tfds(copy)
    assert f"{shard} missing" in str(e.value) and "mnistbench build-tfds" in str(e.value)
    grain = inputs.array_record_dir(copy) / "mnist" / "3.0.1"
    next(grain.glob("mnist-test.array_record-*")).unlink()
    with pytest.raises(MissingDataError, match="mnist-test.array_record-00000-of-00001 missing"):
        inputs.require_tfds(inputs.array_record_dir(copy))


def _dvc_dir_md5(root: Path, skip: str | None = None) -> str:
    """DVC's hash of a folder output (as dvc.lock writes it): the MD5 of the sorted JSON list
    of its files' MD5s and relative paths (files named `skip` left out)."""
    entries = sorted(
        (
            {
                "md5": hashlib.md5(p.read_bytes()).hexdigest(),
                "relpath": p.relative_to(root).as_posix(),
            }
            for p in root.rglob("*")
            if p.is_file() and p.name != skip
        ),
        key=lambda e: e["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def test_build_is_byte_for_byte_reproducible(tfds_dir):
    """protobuf writes tf.Example's feature map in an order that changes per process, so two
    builds used to differ (and data/tfds's hash with them). Every record is now in canonical
    (deterministic) form, and the build reproduces the hash in a reference run's dvc.lock."""
    from tensorflow.core.example import example_pb2

    for path in sorted(tfds_dir.rglob("mnist-*.tfrecord-*")):
        for record in _tfrecords(path):
            canonical = example_pb2.Example.FromString(record).SerializeToString(deterministic=True)
            assert record == canonical, path
    # a reference run's lock: the data stages' hashes do not depend on the machine
    lock = yaml.safe_load((ROOT / "results" / "intel-xeon-2cpu" / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["build_tfds"]["outs"] if o["path"] == "data/tfds"]
    assert f"{_dvc_dir_md5(tfds_dir)}.dir" == out["md5"]  # checksum lists included


def _tfrecords(path: Path):
    """The records of a TFRecord file: length (8 bytes LE), its CRC (4), data, data CRC (4)."""
    with path.open("rb") as f:
        while header := f.read(12):
            (length,) = struct.unpack("<Q", header[:8])
            yield f.read(length)
            f.read(4)
