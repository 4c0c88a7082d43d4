"""The data a stage reads, checked before it is used: the raw IDX files against MNIST's sizes
and SHA-256 (mnistbench.mnist), a TFDS build against its dataset_info.json and the SHA256SUMS
written with it. Damaged or missing data is an error naming the file and the command that
makes it again, never training on garbage.

Readers (the backends) import this module, not the download or the TFDS build: a timed stage
depends on how its input is checked, not on how it was fetched or built.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from mnistbench import errors
from mnistbench.errors import UserError
from mnistbench.mnist import FILES, MnistFile

NAME, VERSION = "mnist", "3.0.1"
MANIFEST = "SHA256SUMS"  # in each format's data_dir: "<sha256>  <path>" per file, sorted
TFRECORD_FRAMING = 16  # bytes per record around its data: length (8), two CRCs (4 + 4)
FIX_RAW = "run `mnistbench download` or `dvc repro download`, which fetches it again"
FIX_TFDS = "rebuild it: `mnistbench build-tfds` or `dvc repro build_tfds`"
ARRAY_RECORD_DIR = "array_record"  # <tfds_dir>/array_record: the ArrayRecord build, for grain


class MissingDataError(UserError, FileNotFoundError):
    """Input data of a stage is absent or damaged; the message names the command that makes it."""


def require_raw(raw_dir: str | Path, names: Iterable[str] | None = None) -> Path:
    """raw_dir, once the files `names` (default: all four) have their known size and SHA-256
    (about 0.1 s for the 47 MB of training images; a flipped byte trains on garbage)."""
    raw = Path(raw_dir)
    specs = [f for f in FILES if names is None or f.name in set(names)]
    missing = [f.name for f in specs if not (raw / f.name).exists()]
    if missing:
        raise MissingDataError(
            f"{raw} lacks {', '.join(missing)}: run the download stage first "
            "(`dvc repro download` or `mnistbench download`)"
        )
    for spec in specs:
        why = problem(raw / spec.name, spec)
        if why is not None:
            fix = FIX_RAW
            if (raw / spec.name).is_dir():  # download never removes a folder: it may hold anything
                fix = "move it away, then run `mnistbench download` or `dvc repro download`"
            raise MissingDataError(f"{raw / spec.name} is {why}: {fix}")
    return raw


def require_tfds(tfds_dir: str | Path) -> Path:
    """tfds_dir, once its dataset_info.json and every shard it lists are there (whole, for
    TFRecord shards, whose size follows from the info)."""
    version_dir = Path(tfds_dir) / NAME / VERSION
    info_path = version_dir / "dataset_info.json"
    if not info_path.is_file():
        raise MissingDataError(
            f"no TFDS {NAME} {VERSION} under {tfds_dir}: run the build_tfds "
            "stage first (`dvc repro build_tfds` or `mnistbench build-tfds`)"
        )
    try:
        info = json.loads(info_path.read_text())
        problems = list(_shard_problems(version_dir, info))
    except (ValueError, KeyError, TypeError) as e:  # unreadable JSON or not TFDS's layout
        problems = [f"{info_path} is not a TFDS dataset_info.json ({type(e).__name__}: {e})"]
    if not problems:
        problems = _checksum_problems(Path(tfds_dir))
    if problems:
        raise MissingDataError(
            f"TFDS build under {tfds_dir} is damaged: {'; '.join(problems)}; {FIX_TFDS}"
        )
    return Path(tfds_dir)


def _checksum_problems(data_dir: Path) -> list[str]:
    """Files of data_dir's build whose SHA-256 differs from SHA256SUMS (written at build time),
    or that are gone; the manifest itself missing or garbled is a problem too."""
    manifest = data_dir / MANIFEST
    if not manifest.is_file():
        return [f"{manifest} missing (checksums are written by every build since they exist)"]
    problems = []
    for number, line in enumerate(manifest.read_text(errors="replace").splitlines(), 1):
        digest, _, rel = line.partition("  ")
        path = data_dir / rel
        if len(digest) != 64 or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            return [f"{manifest} line {number} is not '<sha256>  <relative path>'"]
        if not path.is_file():
            problems.append(f"{path} missing")
        elif file_sha256(path) != digest:
            problems.append(f"{path} differs from its SHA-256 recorded at build time")
    return problems


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_valid(path: Path, spec: MnistFile) -> bool:
    return problem(path, spec) is None


def problem(path: Path, spec: MnistFile) -> str | None:
    """What is wrong with `path` as the MNIST file `spec` (missing, size, SHA-256), or None."""
    if path.is_dir():
        return "a folder, not a file"
    if not path.is_file():
        return "missing" if not path.exists() else f"{errors.kind(path)}, not a regular file"
    size = path.stat().st_size
    if size != spec.size:
        return f"{size} bytes instead of {spec.size}"
    if file_sha256(path) != spec.sha256:
        return f"damaged (SHA-256 differs from MNIST's {spec.sha256[:12]}...)"
    return None


def _shard_problems(version_dir: Path, info: dict) -> Iterator[str]:
    """Shards of each split that are missing, or of the wrong size (TFRecord only: ArrayRecord
    files hold an index and compression, so their size is not known in advance)."""
    file_format = info.get("fileFormat", "tfrecord")
    for split in info["splits"]:
        lengths = [int(n) for n in split["shardLengths"]]
        paths = [
            version_dir
            / split["filepathTemplate"].format(
                DATASET=NAME,
                SPLIT=split["name"],
                FILEFORMAT=file_format,
                SHARD_X_OF_Y=f"{i:05d}-of-{len(lengths):05d}",
            )
            for i in range(len(lengths))
        ]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            yield f"{', '.join(map(str, missing))} missing"
        elif file_format == "tfrecord":
            size = sum(p.stat().st_size for p in paths)
            expected = int(split["numBytes"]) + TFRECORD_FRAMING * sum(lengths)
            if size != expected:
                yield f"{split['name']} shards hold {size} bytes instead of {expected}"


def array_record_dir(tfds_dir: str | Path) -> Path:
    """data_dir of the ArrayRecord copy, for `tfds.data_source` (inside the stage's output)."""
    return Path(tfds_dir) / ARRAY_RECORD_DIR
