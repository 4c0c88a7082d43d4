"""One command at a time per output: real processes holding real flocks.

A holder process takes an output's lock (as a command does) and waits; the real `mnistbench`
commands on that output must then fail at once with one line naming the output and the
holder; commands on other outputs, and commands after the holder ends or is killed, run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import repo_backends

from mnistbench import layout, locks

MNISTBENCH = str(Path(sys.executable).parent / "mnistbench")

HOLD = textwrap.dedent("""\
    import sys
    from mnistbench import locks
    with locks.exclusive(sys.argv[1], sys.argv[2]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin (or kills us)
""")


class Holder:
    """A second process holding the lock of `output` until released or killed."""

    def __init__(self, output: Path, command: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(output), command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline() == "held\n"

    def release(self) -> None:
        self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MNISTBENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def params(tmp_path) -> Path:
    """Data and outputs under tmp_path; no mirror that works (nothing is fetched here)."""
    path = tmp_path / "params.yaml"
    raw, tfds = tmp_path / "data" / "raw", tmp_path / "data" / "tfds"
    params = {
        "data": {
            "raw_dir": str(raw),
            "tfds_dir": str(tfds),
            "mirrors": [str(tmp_path / "no-mirror")],
        },
        "backends": repo_backends("jax-scan", raw=raw, tfds=tfds),
    }
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "command, output",
    [
        (["download"], "data/raw"),
        (["build-tfds"], "data/tfds"),
        (["train", "jax-scan", "--out", "metrics"], "metrics/train/jax-scan"),
        (["compare", "--metrics", "metrics"], "metrics/summary.json"),
        (["roofline", "--out", "metrics"], "metrics/roofline"),
    ],
)
def test_a_second_command_on_the_same_output_fails_at_once(tmp_path, params, command, output):
    holder = Holder(tmp_path / output, "test holder")
    try:
        proc = _run(*command, "--params", str(params), cwd=tmp_path)
    finally:
        holder.release()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"error: {tmp_path / output if command[0] in ('download', 'build-tfds') else output} is "
        f"being written by another command (pid {holder.proc.pid}, mnistbench test holder); "
        "wait until it ends, or write elsewhere (--out, data.*_dir)"
    )
    assert not locks.lock_path(tmp_path / output).exists()  # released and removed


def test_other_outputs_are_not_blocked(tmp_path, params):
    """Holding data/tfds does not stop a download into data/raw (which then fails on its
    own: the mirror is missing)."""
    holder = Holder(tmp_path / "data" / "tfds", "build-tfds")
    try:
        proc = _run("download", "--params", str(params), cwd=tmp_path)
    finally:
        holder.release()
    assert "could not get train-images-idx3-ubyte from any mirror" in proc.stderr


def test_a_killed_holder_leaves_a_lock_file_that_does_not_block(tmp_path):
    output = layout.backend_dir(tmp_path / "metrics", "jax-scan")
    Holder(output, "train jax-scan").kill()  # SIGKILL: no cleanup at all
    assert locks.lock_path(output).exists()
    with locks.exclusive(output, "train jax-scan"):
        holder = locks.lock_path(output).read_text()
        assert f"pid {os.getpid()}, mnistbench train jax-scan" in holder
    assert not locks.lock_path(output).exists()


def test_the_lock_is_released_on_error(tmp_path):
    output = tmp_path / "out"
    with pytest.raises(RuntimeError), locks.exclusive(output, "x"):
        raise RuntimeError("the command failed")
    with locks.exclusive(output, "x"):  # free again, at once
        pass
