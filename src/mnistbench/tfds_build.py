"""Stage `build_tfds`: TFDS's own `mnist` 3.0.1 dataset, built offline from data/raw.

TFDS's MNIST builder downloads from Google's bucket in `_split_generators`; the subclass below
keeps everything else (features, version, example generation) and points that one method at
the verified local files. The TFRecord build in <tfds_dir> serves `tfds.load`; an ArrayRecord
build of the same builder in <tfds_dir>/array_record serves `tfds.data_source` (random
access, for grain).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from pathlib import Path

from mnistbench import frameworks
from mnistbench.config import DataConfig
from mnistbench.download import FILES

log = logging.getLogger(__name__)

NAME, VERSION = "mnist", "3.0.1"


class MissingDataError(FileNotFoundError):
    """Input data of a stage is absent; the message names the stage that makes it."""


def require_raw(raw_dir: str | Path) -> Path:
    raw = Path(raw_dir)
    missing = [f.name for f in FILES if not (raw / f.name).is_file()]
    if missing:
        raise MissingDataError(f"{raw} lacks {', '.join(missing)}: run the download stage first "
                               "(`dvc repro download` or `mnistbench download`)")
    return raw


def require_tfds(tfds_dir: str | Path) -> Path:
    version_dir = Path(tfds_dir) / NAME / VERSION
    if not (version_dir / "dataset_info.json").is_file():
        raise MissingDataError(f"no TFDS {NAME} {VERSION} under {tfds_dir}: run the build_tfds "
                               "stage first (`dvc repro build_tfds` or `mnistbench build-tfds`)")
    return Path(tfds_dir)


def _local_builder_class(raw: Path):
    tfds = frameworks.tensorflow_datasets()
    from tensorflow_datasets.image_classification import mnist

    class LocalMNIST(mnist.MNIST, skip_registration=True):
        """TFDS's MNIST 3.0.1, reading the verified IDX files instead of downloading."""

        name = NAME

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download: the files were fetched and verified upstream
            return [
                tfds.core.SplitGenerator(name=tfds.Split.TRAIN, gen_kwargs=dict(
                    num_examples=60000, data_path=str(raw / "train-images-idx3-ubyte"),
                    label_path=str(raw / "train-labels-idx1-ubyte"))),
                tfds.core.SplitGenerator(name=tfds.Split.TEST, gen_kwargs=dict(
                    num_examples=10000, data_path=str(raw / "t10k-images-idx3-ubyte"),
                    label_path=str(raw / "t10k-labels-idx1-ubyte"))),
            ]

    return LocalMNIST


def array_record_dir(tfds_dir: str | Path) -> Path:
    """data_dir of the ArrayRecord copy, for `tfds.data_source` (inside the stage's output)."""
    return Path(tfds_dir) / "array_record"


def build(cfg: DataConfig) -> Path:
    """Build into a temporary data_dir, then swap it into cfg.tfds_dir (all or nothing)."""
    raw = require_raw(cfg.raw_dir)
    out = Path(cfg.tfds_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: mkdtemp's private 0700 would become data/tfds's mode on rename
    staging = out.parent / f".tfds-build-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        _prepare(raw, staging, "tfrecord")
        _prepare(raw, array_record_dir(staging), "array_record")
        shutil.rmtree(staging / "downloads", ignore_errors=True)  # empty: nothing downloaded
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("TFDS %s %s ready under %s", NAME, VERSION, out)
    return out


def _prepare(raw: Path, data_dir: Path, file_format: str) -> None:
    """One format per data_dir: TFDS 4.9 cannot read an alternative format of a registered
    dataset (`tfds.data_source(..., file_format=...)` insists on the format in the info)."""
    tfds = frameworks.tensorflow_datasets()
    log.info("building TFDS %s %s (%s) from %s", NAME, VERSION, file_format, raw)
    builder = _local_builder_class(raw)(data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    shutil.rmtree(data_dir / "downloads", ignore_errors=True)
