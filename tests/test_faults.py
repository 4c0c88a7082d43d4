"""Faults a user meets, each ending in one line `error: ...` (exit 1) that names the file or
key and what to do, with earlier results left as they were: a model too big for memory,
unbounded timeouts and retries, damaged TFDS files, a full disk (a real tmpfs), a read-only
folder (a real read-only bind mount), a dangling symlink, a machine name that is a path, a
first epoch faster than the steady median, and files that are not what they seem.

The mount tests need root and a working `mount`; elsewhere they are skipped, saying so. The
mirror tests use a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import repo_backends
from test_compare import ARTICLE_BACKENDS, write_metrics  # the runs compare reads, as train writes

from mnistbench import compare, config, download, errors, inputs, keep, layout, models
from mnistbench.compare import summary as compare_summary
from mnistbench.download import DownloadError
from mnistbench.inputs import MissingDataError
from mnistbench.mnist import FILES

ROOT = Path(__file__).resolve().parents[1]
MNISTBENCH = str(Path(sys.executable).parent / "mnistbench")
PAGE = 4096  # tmpfs allocates whole pages


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(download.ENV_MIRRORS, None)
    return subprocess.run(
        [MNISTBENCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _one_error(result: subprocess.CompletedProcess, *parts: str) -> str:
    """The run failed with exit 1, no traceback, and its last line is its one error, holding
    every one of `parts`; returns that line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    for part in parts:
        assert part in lines[-1], lines[-1]
    return lines[-1]


def _params(path: Path, **sections: dict) -> Path:
    """A params file: the repository's, with the given sections' keys replaced; backends'
    data follow data.raw_dir and data.tfds_dir (as `mnistbench params --set` makes them)."""
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    data = sections.get("data", {})
    for section, values in sections.items():
        doc.setdefault(section, {}).update(values)
    doc["backends"] = repo_backends(raw=data.get("raw_dir"), tfds=data.get("tfds_dir"))
    path.write_text(yaml.safe_dump(doc))
    return path


def _compare_inputs(tmp_path: Path, first_s: float = 10.0) -> tuple[Path, Path]:
    """(params, metrics root) for `compare`: the article's three backends trained 3 epochs,
    steady epochs of 4.1-4.2 s."""
    params = tmp_path / "compare.yaml"
    params.write_text(
        yaml.safe_dump({"train": {"epochs": 3}, "backends": repo_backends(*ARTICLE_BACKENDS)})
    )
    root = tmp_path / "runs"
    for name in ARTICLE_BACKENDS:
        write_metrics(root, name, first_s, [(3.0, 1.1), (3.0, 1.2)], cfg=config.load(params))
    return params, root


def _earlier_result(out: Path, name: str) -> Path:
    """A result of an earlier run in <out>/train/<name>/ (what a failed run must leave alone)."""
    layout.backend_dir(out, name).mkdir(parents=True, exist_ok=True)
    kept = layout.metrics_path(out, name)
    kept.write_text('{"earlier": "run"}\n')
    return kept


# ---------------------------------------------------------------- mounts


def _mount_problem() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux to mount a tmpfs and a read-only bind mount"
    if shutil.which("mount") is None:
        return "no `mount` command"
    return None


needs_mount = pytest.mark.skipif(_mount_problem() is not None, reason=str(_mount_problem()))


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} failed here: {done.stderr.strip()}")


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str = "5m") -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[Path]:
    """folder bind-mounted on itself, read-only (what `mount -o remount,ro` makes of a disk)."""
    _mount("--bind", str(folder), str(folder))
    try:
        _mount("-o", "remount,ro,bind", str(folder))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(folder: Path, leave: int = 0) -> None:
    """Fill folder's filesystem, leaving `leave` bytes free."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


# ---------------------------------------------------------------- model size


def test_a_model_too_big_for_memory_is_refused_before_it_is_built(raw_dir, tmp_path):
    params = tmp_path / "p.yaml"
    made = _cli(
        "params",
        str(params),
        "--set",
        f"data.raw_dir={raw_dir}",
        "--set",
        "model.hidden=[100000000000]",
    )
    assert made.returncode == 0, made.stderr
    out = tmp_path / "metrics"
    kept = _earlier_result(out, "jax-scan")
    line = _one_error(
        _cli("train", "jax-scan", "--params", str(params), "--out", str(out)),
        "model.hidden [100000000000]",
        "PB with gradients and Adam state",
        "available",
        "use smaller widths",
    )
    assert kept.read_text() == '{"earlier": "run"}\n', line


def test_the_roofline_refuses_the_same_model_with_the_same_line(tmp_path):
    """The roofline stage allocates the model's products (a 313 TB tensor for this width,
    a traceback from torch's allocator): it checks the limit train checks, first."""
    params = tmp_path / "p.yaml"
    params.write_text("model:\n  hidden: [100000000000]\n")
    out = tmp_path / "metrics"
    _one_error(
        _cli("roofline", "--params", str(params), "--out", str(out)),
        "params: model.hidden [100000000000] makes",
        "PB with gradients and Adam state",
        "use smaller widths",
    )
    assert not (out / "roofline").exists()


def test_memory_needed_counts_parameters_gradients_and_adam():
    assert models.num_params((128, 256)) == 136_074  # the article's MLP
    assert models.training_bytes((128, 256)) == 136_074 * 4 * 4
    models.require_memory((128, 256), 10**9, "here")
    with pytest.raises(config.ConfigError, match=r"2.2 MB with .* but here has 1.0 MB"):
        models.require_memory((128, 256), 10**6, "here")
    with pytest.raises(config.ConfigError, match="model.hidden"):
        models.torch_mlp((10**11,))  # checked before torch is imported


# ---------------------------------------------------------------- params bounds


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("timeout_s", 1.0e308, "data.timeout_s must be > 0 and at most 3600 s"),
        ("retries", 15, "data.retries must be between 1 and 10"),
    ],
)
def test_unbounded_timeout_and_retries_are_refused(tmp_path, key, value, message):
    mirror = "http://127.0.0.1:9/"  # never contacted: params are checked first
    params = _params(tmp_path / "p.yaml", data={key: value, "mirrors": [mirror]})
    _one_error(_cli("download", "--params", str(params)), message)
    made = _cli("params", str(tmp_path / "q.yaml"), "--set", f"data.{key}={value}")
    _one_error(made, message)


class _Failing(http.server.BaseHTTPRequestHandler):
    """A mirror answering 500 to everything."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.hits += 1
        self.send_error(500, "Internal Server Error")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def failing_mirror() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    srv.daemon_threads, srv.hits = True, 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_each_retry_wait_is_capped(failing_mirror, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(download.time, "sleep", waits.append)  # no real waiting
    url = f"http://127.0.0.1:{failing_mirror.server_address[1]}/"
    cfg = config.DataConfig(raw_dir=str(tmp_path / "raw"), mirrors=(url,), retries=10)
    with pytest.raises(DownloadError, match="HTTP 500"):
        download.download_all(cfg, environ={})
    per_file = [0.5, 1, 2, 4, 8, 8, 8, 8, 8]  # doubling from 0.5 s, capped at 8 s
    assert waits == per_file  # the first file fails on every try: the download stops there
    assert failing_mirror.hits == 10


def test_the_whole_download_has_a_deadline(failing_mirror, tmp_path, monkeypatch):
    assert download.deadline_s(config.DataConfig()) == 4 * 3 * (30 + 8)  # params' defaults: 456 s
    monkeypatch.setattr(download, "deadline_s", lambda cfg: 1.0)
    monkeypatch.setattr(download, "BACKOFF_S", 0.3)
    url = f"http://127.0.0.1:{failing_mirror.server_address[1]}/"
    cfg = config.DataConfig(raw_dir=str(tmp_path / "raw"), mirrors=(url,), retries=10)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"download stopped after 1 s, its deadline") as e:
        download.download_all(cfg, environ={})
    assert time.monotonic() - start < 5, "the deadline did not stop the retries"
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- damaged TFDS files


def _flip(path: Path, offset: int = 500_000, count: int = 16) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(count)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


@pytest.fixture
def tfds_copy(tfds_dir, tmp_path) -> Path:
    copy = tmp_path / "tfds"
    shutil.copytree(tfds_dir, copy)
    return copy


def test_the_build_records_every_files_sha256(tfds_copy):
    """Each format's data_dir lists all its files (the TFRecord one: not array_record/, the
    other format's), sorted, with their true SHA-256."""
    for data_dir, other in (
        (tfds_copy, "array_record/"),
        (inputs.array_record_dir(tfds_copy), None),
    ):
        lines = (data_dir / inputs.MANIFEST).read_text().splitlines()
        listed = [line.split("  ", 1)[1] for line in lines]
        files = [p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()]
        expected = [
            f for f in files if f != inputs.MANIFEST and not (other and f.startswith(other))
        ]
        assert listed == sorted(expected) and "mnist/3.0.1/dataset_info.json" in listed
        for line in lines:
            digest, rel = line.split("  ", 1)
            assert inputs.file_sha256(data_dir / rel) == digest


@pytest.mark.parametrize(
    "backend, shard",
    [
        ("jax-grain", "array_record/mnist/3.0.1/mnist-train.array_record-00000-of-00001"),
        ("jax-tfds", "mnist/3.0.1/mnist-train.tfrecord-00000-of-00001"),
    ],
)
def test_flipped_bytes_in_a_shard_are_named_before_training(
    raw_dir, tfds_copy, tmp_path, backend, shard
):
    _flip(tfds_copy / shard)
    params = _params(
        tmp_path / "p.yaml", data={"raw_dir": str(raw_dir), "tfds_dir": str(tfds_copy)}
    )
    out = tmp_path / "metrics"
    kept = _earlier_result(out, backend)
    _one_error(
        _cli("train", backend, "--params", str(params), "--out", str(out)),
        f"{tfds_copy / shard} differs from its SHA-256 recorded at build time",
        "mnistbench build-tfds",
        "dvc repro build_tfds",
    )
    assert kept.read_text() == '{"earlier": "run"}\n'


def test_each_reader_checks_only_the_format_it_reads(tfds_copy):
    _flip(tfds_copy / "mnist/3.0.1/mnist-train.tfrecord-00000-of-00001")
    assert inputs.require_tfds(inputs.array_record_dir(tfds_copy))  # grain's: intact
    with pytest.raises(MissingDataError, match="tfrecord-00000-of-00001 differs"):
        inputs.require_tfds(tfds_copy)


def test_a_build_without_checksums_or_with_a_garbled_list_is_refused(tfds_copy):
    manifest = tfds_copy / inputs.MANIFEST
    manifest.write_text("0" * 64 + "  ../../etc/passwd\n")
    with pytest.raises(MissingDataError, match="line 1 is not '<sha256>  <relative path>'"):
        inputs.require_tfds(tfds_copy)
    manifest.unlink()
    with pytest.raises(MissingDataError, match=f"{manifest} missing.*mnistbench build-tfds"):
        inputs.require_tfds(tfds_copy)


# ---------------------------------------------------------------- full disk


@needs_mount
def test_download_into_a_full_disk_says_needed_and_free(tmp_path):
    with _tmpfs(tmp_path / "small") as small:
        raw = small / "raw"
        raw.mkdir()
        labels = raw / "t10k-labels-idx1-ubyte"  # an earlier, verified file: kept
        shutil.copy(ROOT / "data" / "mirror" / "t10k-labels-idx1-ubyte.gz", small / "l.gz")
        subprocess.run(["gunzip", str(small / "l.gz")], check=True)
        (small / "l").rename(labels)
        params = _params(tmp_path / "p.yaml", data={"raw_dir": str(raw)})
        _one_error(
            _cli("download", "--params", str(params)),
            f"not enough space in {raw} for MNIST: 54.9 MB needed,",
            "MB free",
            "point data.raw_dir elsewhere",
        )
        assert inputs.problem(labels, FILES[3]) is None
        assert sorted(p.name for p in raw.iterdir()) == [labels.name]


@needs_mount
def test_a_disk_filling_up_mid_download_is_named_and_cleaned(tmp_path, monkeypatch):
    """The space check passed (or something else filled the disk since): the write fails,
    the partial file goes, the message gives the file's size and the space left."""
    monkeypatch.setattr(download, "_check_space", lambda raw, todo: None)
    with _tmpfs(tmp_path / "small") as small:
        cfg = config.DataConfig(raw_dir=str(small / "raw"), mirrors=(str(ROOT / "data/mirror"),))
        with pytest.raises(errors.DiskFullError) as e:
            download.download_all(cfg, environ={})
        assert f"no space left in {small / 'raw'} (47.0 MB needed, " in str(e.value)
        assert e.value.errno is None and "\n" not in str(e.value)
        assert list((small / "raw").iterdir()) == []  # no partial file


@needs_mount
def test_train_and_compare_on_a_full_disk_name_the_folder(raw_dir, tmp_path):
    params = _params(
        tmp_path / "p.yaml",
        data={"raw_dir": str(raw_dir), "limit_train": 2000, "limit_test": 500},
        train={"epochs": 2},
    )
    with _tmpfs(tmp_path / "small") as small:
        out = small / "metrics"
        kept = _earlier_result(out, "jax-scan")
        _fill(small, leave=PAGE)  # the lock file fits, the run's curves do not
        _one_error(
            _cli("train", "jax-scan", "--params", str(params), "--out", str(out)),
            f"no space left in {layout.train_dir(out)}",
            "free some space there or write elsewhere",
        )
        assert kept.read_text() == '{"earlier": "run"}\n'
        assert sorted(p.name for p in out.iterdir()) == [layout.TRAIN_DIR]
        trained = sorted(p.name for p in layout.train_dir(out).iterdir())
        assert trained == ["jax-scan"]  # no partial, no lock
        compare_params, runs = _compare_inputs(tmp_path)
        summary = out / "summary.json"
        summary.write_text('{"earlier": "summary"}\n')
        _one_error(
            _cli(
                "compare",
                "--params",
                str(compare_params),
                "--metrics",
                str(runs),
                "--out",
                str(out),
            ),
            f"no space left in {out}",
        )
        assert summary.read_text() == '{"earlier": "summary"}\n'
        assert sorted(p.name for p in out.iterdir()) == ["summary.json", layout.TRAIN_DIR]
        assert sorted(p.name for p in layout.train_dir(out).iterdir()) == ["jax-scan"]


# ---------------------------------------------------------------- read-only folder


@needs_mount
def test_train_and_compare_into_a_read_only_folder_name_it(raw_dir, tmp_path):
    params = _params(tmp_path / "p.yaml", data={"raw_dir": str(raw_dir)})
    compare_params, runs = _compare_inputs(tmp_path)
    out = tmp_path / "metrics"
    kept = _earlier_result(out, "jax-scan")
    with _read_only(out):
        for args, folder in (  # each names the folder it writes in: train its backend's parent
            (
                ("train", "jax-scan", "--params", str(params), "--out", str(out)),
                layout.train_dir(out),
            ),
            (
                (
                    "compare",
                    "--params",
                    str(compare_params),
                    "--metrics",
                    str(runs),
                    "--out",
                    str(out),
                ),
                out,
            ),
        ):
            _one_error(_cli(*args), f"{folder} is on a read-only filesystem", "write elsewhere")
    assert kept.read_text() == '{"earlier": "run"}\n'


def test_from_os_error_leaves_other_errors_alone(tmp_path):
    assert errors.from_os_error(PermissionError(errno.EACCES, "denied"), tmp_path) is None
    full = errors.from_os_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path, 10**6)
    assert isinstance(full, errors.DiskFullError) and "(1.0 MB needed, " in str(full)


# ---------------------------------------------------------------- paths that are not what they seem


def test_a_dangling_raw_dir_symlink_is_named(tmp_path):
    raw = tmp_path / "raw"
    raw.symlink_to(tmp_path / "gone")
    params = _params(tmp_path / "p.yaml", data={"raw_dir": str(raw)})
    _one_error(
        _cli("download", "--params", str(params)),
        f"data.raw_dir {raw} is a symlink to {tmp_path / 'gone'}, which does not exist",
    )


def test_params_that_are_a_device_a_fifo_or_a_folder_say_so(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, what in (
        ("/dev/null", "is a character device, not a regular file"),
        (str(fifo), "is a FIFO (named pipe), not a regular file"),
        (str(tmp_path), "is a folder, not a regular file"),
        (str(tmp_path / "nope.yaml"), "not found"),
    ):
        _one_error(_cli("download", "--params", path), f"params: {path} {what}")


def test_mirror_entries_that_are_not_regular_files_say_so(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for spec in FILES:
        shutil.copy(ROOT / "data" / "mirror" / f"{spec.name}.gz", mirror)
    images = mirror / "train-images-idx3-ubyte.gz"
    images.unlink()
    images.symlink_to("/dev/urandom")
    labels = mirror / "train-labels-idx1-ubyte.gz"
    labels.unlink()
    os.mkfifo(labels)
    cfg = config.DataConfig(raw_dir=str(tmp_path / "raw"), mirrors=(str(mirror),))
    with pytest.raises(DownloadError, match=f"{images} is a character device, not a regular"):
        download.download_all(cfg, environ={})
    images.unlink()
    shutil.copy(ROOT / "data" / "mirror" / images.name, images)
    with pytest.raises(DownloadError, match=f"{labels} is a FIFO \\(named pipe\\), not a regular"):
        download.download_all(cfg, environ={})


def test_a_folder_in_a_raw_files_place_is_called_a_folder(raw_dir, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    (raw / FILES[1].name).unlink()
    (raw / FILES[1].name).mkdir()
    with pytest.raises(MissingDataError, match="is a folder, not a file: move it away"):
        inputs.require_raw(raw)
    cfg = config.DataConfig(raw_dir=str(raw), mirrors=(str(ROOT / "data" / "mirror"),))
    with pytest.raises(DownloadError, match=f"{raw / FILES[1].name} is a folder, not a file"):
        download.download_all(cfg, environ={})


# ---------------------------------------------------------------- keep's machine name


@pytest.mark.parametrize("name", ["../../tmp/x", "a/b", "..", ".", ".hidden", "", "a b", "x\n"])
def test_keep_refuses_a_name_that_is_not_one_plain_folder(tmp_path, name):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    for needed in ("summary.json", "machine.json"):
        (metrics_dir / needed).write_text("{}")
    results = tmp_path / "results"
    result = _cli("keep", "--metrics", str(metrics_dir), "--results", str(results), "--name", name)
    _one_error(result, "is not one plain folder name")
    assert not results.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["metrics"]


def test_keep_takes_a_plain_name(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "summary.json").write_text('{"backends": {}}')  # keep checks it as report
    (metrics_dir / "machine.json").write_text("{}")
    dest = keep.keep(metrics_dir, tmp_path / "results", "my-laptop_2.0", extra=())
    assert dest == tmp_path / "results" / "my-laptop_2.0" and (dest / "summary.json").is_file()


# ---------------------------------------------------------------- first epoch


def test_a_first_epoch_faster_than_the_steady_median_costs_nothing_extra(tmp_path):
    params, root = _compare_inputs(tmp_path, first_s=4.0)  # steady 4.1-4.2 s
    _cli("compare", "--params", str(params), "--metrics", str(root)).check_returncode()
    summary = compare.compare(config.load(params), root)  # the whole summary, not its numbers
    for row in summary["backends"].values():
        assert row["first_epoch_s"] < row["epoch_time_median_s"]
        assert row["first_epoch_extra_s"] == 0.0
    table = (root / "summary.md").read_text()
    assert "-0." not in table and "| none |" in table
    assert compare_summary.first_epoch_extra_s(13.8, 5.1) == pytest.approx(8.7)
