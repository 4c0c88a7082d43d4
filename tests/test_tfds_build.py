"""Stage `build_tfds`: TFDS's own mnist 3.0.1, built from data/raw, readable with no network."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mnistbench import config, tfds_build
from mnistbench.download import FILES
from mnistbench.tfds_build import MissingDataError

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
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
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


@pytest.mark.slow
def test_build_output_layout(tfds_dir):
    assert (tfds_dir / "mnist" / "3.0.1" / "dataset_info.json").is_file()
    assert (tfds_build.array_record_dir(tfds_dir) / "mnist" / "3.0.1" / "dataset_info.json").is_file()
    assert not (tfds_dir / "downloads").exists()
    assert not list(tfds_dir.parent.glob(".tfds-build-*"))  # no staging left behind
    assert tfds_build.require_tfds(tfds_dir) == tfds_dir
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
        tfds_build.require_tfds(tmp_path / "tfds")


@pytest.mark.slow
def test_failed_build_keeps_the_previous_dataset(tfds_dir, raw_dir, tmp_path):
    previous = tmp_path / "data" / "tfds"
    shutil.copytree(tfds_dir, previous)
    before = _tree(previous)
    bad_raw = tmp_path / "bad-raw"
    bad_raw.mkdir()
    for f in FILES:  # image files cut short: the builder fails while reading them
        data = (raw_dir / f.name).read_bytes()
        (bad_raw / f.name).write_bytes(data[: len(data) // 3] if "images" in f.name else data)

    with pytest.raises(ValueError):  # TFDS cannot reshape the short image files
        tfds_build.build(config.DataConfig(raw_dir=str(bad_raw), tfds_dir=str(previous)))

    assert _tree(previous) == before
    assert sorted(os.listdir(previous.parent)) == ["tfds"]  # no staging left behind
