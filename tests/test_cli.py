"""The `mnistbench` command as installed (a real subprocess): help, env, clean errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mnistbench import layout

MNISTBENCH = str(Path(sys.executable).parent / "mnistbench")
ROOT = Path(__file__).resolve().parents[1]
STAGE_COMMANDS = ("download", "build-tfds", "train", "backends", "env")


def run(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MNISTBENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _clean_failure(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") or "\nerror: " in proc.stderr, proc.stderr
    return proc.stderr


def test_help_lists_the_commands():
    proc = run("--help")
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.split("Commands:")[1]
    listed = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert set(STAGE_COMMANDS) <= listed


@pytest.mark.parametrize("command", STAGE_COMMANDS)
def test_each_command_has_help(command):
    proc = run(command, "-h")
    assert proc.returncode == 0, proc.stderr
    assert f"Usage: mnistbench {command}" in proc.stdout


def test_env_prints_json():
    proc = run("env")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert {"python", "packages", "cpu", "cpu_count", "gpus"} <= set(info)
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(info["packages"], dict) and "click" in info["packages"]
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert isinstance(info["cpu_count"], int) and info["cpu_count"] >= 1
    assert isinstance(info["gpus"], list)


def test_backends_lists_the_articles_three():
    proc = run("backends")
    assert proc.returncode == 0, proc.stderr
    assert {"torch-dataloader", "torch-tfds", "jax-tfds"} <= set(proc.stdout.split())


def test_params_typo_fails_before_any_work(tmp_path):
    raw = tmp_path / "raw"
    params = _params(
        tmp_path,
        f"""\
        data:
          raw_dir: {raw}
        train:
          bach_size: 64
        """,
    )
    stderr = _clean_failure(run("download", "--params", str(params), cwd=tmp_path))
    assert "train.bach_size" in stderr
    assert not raw.exists()  # nothing was started


@pytest.mark.parametrize(
    "text, key",
    [
        ("train:\n  epochs: ten\n", "train.epochs"),
        ("train:\n  batch_size: 0\n", "train.batch_size"),
        ("data:\n  mirrors: []\n", "data.mirrors"),
        ("backends:\n  tf-keras: data/tfds\n", "backends.tf-keras"),
    ],
)
def test_bad_params_exit_1_naming_the_key(tmp_path, text, key):
    params = _params(tmp_path, text)
    stderr = _clean_failure(run("download", "--params", str(params), cwd=tmp_path))
    assert key in stderr


def test_missing_or_invalid_params_file(tmp_path):
    stderr = _clean_failure(run("download", "--params", str(tmp_path / "nope.yaml")))
    assert "nope.yaml not found" in stderr
    params = _params(tmp_path, "train: {epochs: [1\n")
    assert "not valid YAML" in _clean_failure(run("download", "--params", str(params)))


def test_build_tfds_without_raw_names_the_download_stage(tmp_path):
    tfds_dir = tmp_path / "tfds"
    params = _params(
        tmp_path,
        f"""\
        data:
          raw_dir: {tmp_path / "raw"}
          tfds_dir: {tfds_dir}
        """,
    )
    stderr = _clean_failure(run("build-tfds", "--params", str(params), cwd=tmp_path))
    assert "download stage" in stderr and "mnistbench download" in stderr
    assert not tfds_dir.exists()


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The failure ends stderr with one line, `error: ...` (log lines may come before it)."""
    stderr = _clean_failure(proc)
    lines = stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], stderr
    return lines[-1]


@pytest.mark.parametrize(
    "content, named",
    [
        (b"train:\n  lr: .inf\n", "train.lr must be a finite number, got inf"),
        (b"train:\n  seed: -1\n", "train.seed must be between 0 and 4294967295"),
        (b"train:\n  lr: 0.001\n  lr: 0.1\n", "duplicate key 'lr', first given on line 2"),
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not a text file"),
    ],
)
def test_nonsense_params_are_one_line_errors(tmp_path, content, named):
    params = tmp_path / "params.yaml"
    params.write_bytes(content)
    line = _one_line_error(run("download", "--params", str(params), cwd=tmp_path))
    assert named in line
    assert list(tmp_path.iterdir()) == [params]  # nothing was started


def test_params_out_as_a_folder_is_an_error(tmp_path):
    line = _one_line_error(run("params", str(tmp_path), "--params", str(ROOT / "params.yaml")))
    assert f"{tmp_path} is a folder" in line


def test_sweep_plot_given_a_json_object_is_an_error(tmp_path):
    shown = tmp_path / "exp.json"
    shown.write_text('{"rev": "workspace"}')
    line = _one_line_error(
        run("sweep-plot", "--exp-show", str(shown), "--out", str(tmp_path / "x.png"))
    )
    assert "expected a JSON list of objects" in line and "got a JSON object" in line


def test_roofline_on_cuda_without_a_gpu_is_an_error(tmp_path):
    """Both frameworks refuse the device; it used to end in `max() arg is an empty sequence`."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    params = _params(tmp_path, "train:\n  device: cuda\n")
    line = _one_line_error(
        run("roofline", "--params", str(params), "--out", str(tmp_path / "m"), timeout=300)
    )
    assert "train.device is cuda but torch sees no GPU" in line
    assert not (tmp_path / "m" / "roofline").exists()


def _damaged_raw(tmp_path: Path, raw_dir: Path, how: str) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    images = raw / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    if how == "flipped":
        for i in range(1000, 1016):  # 16 bytes of pixels: the header and size stay right
            data[i] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    images.write_bytes(bytes(data))
    return raw


@pytest.mark.parametrize(
    "how, named",
    [
        ("flipped", "is damaged (SHA-256 differs"),
        ("truncated", "is 23520008 bytes instead of 47040016"),
    ],
)
def test_damaged_raw_data_is_named_with_the_command_that_fixes_it(tmp_path, raw_dir, how, named):
    """16 flipped bytes used to train silently; a truncated file ended in an AssertionError."""
    raw = _damaged_raw(tmp_path, raw_dir, how)
    params = _params(
        tmp_path,
        f"data:\n  raw_dir: {raw}\n  limit_train: 100\n  limit_test: 100\n"
        "train:\n  epochs: 1\nbackends:\n  jax-scan: " + str(raw) + "\n",
    )
    line = _one_line_error(
        run(
            "train",
            "jax-scan",
            "--params",
            str(params),
            "--out",
            str(tmp_path / "metrics"),
            timeout=300,
        )
    )
    assert f"{raw / 'train-images-idx3-ubyte'} {named}" in line
    assert "`mnistbench download` or `dvc repro download`" in line
    assert not layout.backend_dir(tmp_path / "metrics", "jax-scan").exists()
