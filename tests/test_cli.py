"""The `mnistbench` command as installed (a real subprocess): help, env, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MNISTBENCH = str(Path(sys.executable).parent / "mnistbench")
STAGE_COMMANDS = ("download", "build-tfds", "train", "backends", "env")


def run(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([MNISTBENCH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


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
    params = _params(tmp_path, f"""\
        data:
          raw_dir: {raw}
        train:
          bach_size: 64
        """)
    stderr = _clean_failure(run("download", "--params", str(params), cwd=tmp_path))
    assert "train.bach_size" in stderr
    assert not raw.exists()  # nothing was started


@pytest.mark.parametrize("text, key", [
    ("train:\n  epochs: ten\n", "train.epochs"),
    ("train:\n  batch_size: 0\n", "train.batch_size"),
    ("data:\n  mirrors: []\n", "data.mirrors"),
    ("backends:\n  tf-keras: data/tfds\n", "backends.tf-keras"),
])
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
    params = _params(tmp_path, f"""\
        data:
          raw_dir: {tmp_path / "raw"}
          tfds_dir: {tfds_dir}
        """)
    stderr = _clean_failure(run("build-tfds", "--params", str(params), cwd=tmp_path))
    assert "download stage" in stderr and "mnistbench download" in stderr
    assert not tfds_dir.exists()
