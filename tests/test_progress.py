"""mnistbench.progress: each stage's place in the pipeline, training's time left, on one line
rewritten in place on a terminal and as plain log lines elsewhere, and logs without the
frameworks' noise."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mnistbench import progress

ROOT = Path(__file__).resolve().parents[1]
MNISTBENCH = str(Path(sys.executable).parent / "mnistbench")


# ---- the stage's place ------------------------------------------------------------------------


def test_repository_pipeline_in_dvcs_own_order(monkeypatch):
    """The order `dvc repro` runs this repository's stages in, as DVC itself plans it."""
    monkeypatch.chdir(ROOT)  # DVC names stages relative to the working directory
    from dvc.repo import Repo
    from dvc.repo.reproduce import plan_repro

    with Repo(str(ROOT)) as repo:
        planned = [stage.addressing for stage in plan_repro(repo.index.graph)]
    ours = progress.pipeline_stages(ROOT)
    assert ours == planned
    backends = yaml.safe_load((ROOT / "params.yaml").read_text())["backends"]
    assert [s for s in ours if s.startswith("train@")] == [f"train@{b}" for b in backends]
    assert ours[0] == "download" and ours[-1] == "report"


def test_dependencies_come_first_whatever_the_file_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DVC names stages relative to the working directory
    (tmp_path / "params.yaml").write_text("out_dir: build\nnames: [a, b]\n")
    (tmp_path / "dvc.yaml").write_text(
        textwrap.dedent(
            """\
            vars:
              - models: {small: {width: 1}, large: {width: 2}}
            stages:
              report:
                cmd: report
                deps:
                  - ${out_dir}/small
                  - ${out_dir}/large
                  - prep/b.txt
                outs:
                  - report.md
              fit:
                foreach: ${models}
                do:
                  cmd: fit ${key}
                  deps: [data/clean]
                  outs: ['${out_dir}/${key}']
              prep:
                foreach: ${names}
                do:
                  cmd: prep ${item}
                  outs:
                    - prep/${item}.txt
              clean:
                cmd: clean
                outs: [data/clean/]
            """
        )
    )
    from dvc.repo import Repo
    from dvc.repo.reproduce import plan_repro

    with Repo.init(str(tmp_path), no_scm=True) as repo:
        planned = [stage.addressing for stage in plan_repro(repo.index.graph)]
    assert (
        progress.pipeline_stages(tmp_path)
        == planned
        == [
            "clean",
            "fit@small",
            "fit@large",
            "prep@b",
            "report",
            "prep@a",
        ]
    )


def test_stage_label():
    env = {"DVC_STAGE": "train@jax-scan", "DVC_ROOT": str(ROOT)}
    order = progress.pipeline_stages(ROOT)
    n = order.index("train@jax-scan") + 1
    assert progress.stage_label(env) == f"[stage {n}/{len(order)} train@jax-scan]"
    assert (
        progress.stage_label({**env, "DVC_STAGE": "download"}) == f"[stage 1/{len(order)} download]"
    )
    assert progress.stage_label({}) is None  # run by hand, not by DVC


def test_stage_label_without_its_place(tmp_path):
    """A stage missing from dvc.yaml, or a dvc.yaml that cannot be read: the name alone."""
    assert progress.stage_label({"DVC_STAGE": "other", "DVC_ROOT": str(ROOT)}) == "[stage other]"
    (tmp_path / "dvc.yaml").write_text("stages: [unclosed\n")
    env = {"DVC_STAGE": "train@x", "DVC_ROOT": str(tmp_path)}
    assert progress.stage_label(env) == "[stage train@x]"
    assert progress.stage_label({**env, "DVC_ROOT": str(tmp_path / "none")}) == "[stage train@x]"


# ---- time left --------------------------------------------------------------------------------


class FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _epochs(status: progress.Status, durations: list[float], total: int) -> list[str]:
    now = [100.0]
    timer = progress.Epochs(total, "[stage 4/13 train@x]", status, clock=lambda: now[0])
    texts = []
    for i, seconds in enumerate(durations, 1):
        now[0] += seconds
        texts.append(timer.epoch_done(i))
    return texts


def test_time_left_from_the_epochs_after_the_first():
    """Epoch 1 (compile, warm-up) counts only until a steady epoch is done."""
    status = progress.Status(FakeStream(tty=False))
    texts = _epochs(status, [7.0, 0.5, 0.7, 0.6], total=10)
    assert texts == [
        "[stage 4/13 train@x] epoch 1/10, 7.00 s/epoch, ~63 s left",
        "[stage 4/13 train@x] epoch 2/10, 0.50 s/epoch, ~4 s left",
        "[stage 4/13 train@x] epoch 3/10, 0.60 s/epoch, ~4 s left",
        "[stage 4/13 train@x] epoch 4/10, 0.60 s/epoch, ~4 s left",
    ]
    long = _epochs(status, [200.0, 100.0], total=5)
    assert long[-1].endswith("100.00 s/epoch, ~5 min 00 s left")
    assert _epochs(status, [1.0], total=1) == ["[stage 4/13 train@x] epoch 1/1, 1.00 s/epoch, done"]


def test_plain_lines_where_stderr_is_no_terminal(caplog):
    stream = FakeStream(tty=False)
    with caplog.at_level(logging.INFO, logger="mnistbench.progress"):
        texts = _epochs(progress.Status(stream), [2.0, 1.0, 1.0], total=3)
    assert [r.getMessage() for r in caplog.records] == texts  # one log line each
    assert stream.getvalue() == ""  # nothing written around the logging


def test_one_line_rewritten_on_a_terminal():
    """Each epoch rewrites the line; a log line printed meanwhile goes above it, and the line
    is drawn again below; the last epoch ends the line."""
    stream = FakeStream(tty=True)
    status = progress.Status(stream)
    handler = progress.LogHandler(status)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test_progress.tty")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        now = [0.0]
        timer = progress.Epochs(2, "[stage 1/1 t]", status, clock=lambda: now[0])
        now[0] = 3.0
        timer.epoch_done(1)
        logger.warning("a log line")
        now[0] = 4.0
        timer.epoch_done(2)
    finally:
        logger.removeHandler(handler)
    first = "[stage 1/1 t] epoch 1/2, 3.00 s/epoch, ~3 s left"
    last = "[stage 1/1 t] epoch 2/2, 1.00 s/epoch, done"
    assert stream.getvalue() == (
        f"\r{first}\x1b[K"  # the status line
        "\r\x1b[Ka log line\n"  # cleared, the log line, then the status below it again
        f"{first}"
        f"\r{last}\x1b[K\n"  # rewritten in place; the end leaves it on screen
    )


# ---- native libraries' noise ------------------------------------------------------------------


def test_native_noise_dropped_keeps_every_other_line(capfd):
    with progress.native_noise_dropped():
        os.write(2, progress.NATIVE_NOISE[0] + b"\n")
        os.write(2, b"I0000 12:00:00 port.cc:153] " + progress.NATIVE_NOISE[1] + b" More.\n")
        os.write(2, b"F0000 something else went wrong\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "F0000 something else went wrong\nafter\n"


def test_native_noise_dropped_on_an_error_too(capfd):
    with pytest.raises(ImportError), progress.native_noise_dropped():
        os.write(2, b"why it failed\n")
        raise ImportError("no module")
    assert capfd.readouterr().err == "why it failed\n"


def test_tensorflow_loads_quietly():
    """TensorFlow's C++ start-up lines, which TF_CPP_MIN_LOG_LEVEL does not stop."""
    proc = subprocess.run(
        [sys.executable, "-c", "from mnistbench import frameworks; frameworks.tensorflow()"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# ---- a stage's output, for real ---------------------------------------------------------------


def test_stage_header_and_no_progress_bars_in_logs():
    """Under DVC (DVC_STAGE, DVC_ROOT) a command says where it is; with stderr no terminal it
    turns tqdm's bars off for everything it imports."""
    code = (
        "import os, sys; from mnistbench.cli import main; "
        "sys.argv = ['mnistbench', 'backends']; "
        "import atexit; atexit.register(lambda: print('TQDM_DISABLE=' + "
        "os.environ.get('TQDM_DISABLE', ''), file=sys.stderr)); main()"
    )
    env = {
        **os.environ,
        "DVC_STAGE": "train@jax-scan",
        "DVC_ROOT": str(ROOT),
        "PYTHONPATH": str(ROOT / "src"),
    }
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    label = progress.stage_label(env)
    assert f"INFO mnistbench: {label} started\n" in proc.stderr
    assert "TQDM_DISABLE=1" in proc.stderr


@pytest.mark.parametrize("backend", ["jax-scan"])
def test_training_log_has_time_left_and_no_framework_noise(tmp_path, raw_dir, backend):
    """A real training run, stderr a file: a plain progress line per epoch, JAX's backend
    probing ("Unable to initialize backend 'tpu'") and carriage returns left out."""
    params = tmp_path / "params.yaml"
    params.write_text(
        f"data:\n  raw_dir: {raw_dir}\n  limit_train: 200\n  limit_test: 100\n"
        f"train:\n  epochs: 3\nbackends:\n  {backend}: {raw_dir}\n"
    )
    env = {
        **os.environ,
        "DVC_STAGE": f"train@{backend}",
        "DVC_ROOT": str(ROOT),
        "PYTHONPATH": str(ROOT / "src"),
    }
    proc = subprocess.run(
        [MNISTBENCH, "train", backend, "--params", str(params), "--out", str(tmp_path / "m")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    label = progress.stage_label(env)
    lines = [line for line in proc.stderr.splitlines() if f"{label} epoch" in line]
    assert len(lines) == 3, proc.stderr
    assert "s/epoch, ~" in lines[0] and "s left" in lines[0]
    assert ", done; this epoch " in lines[-1]
    assert "\r" not in proc.stderr
    assert "Unable to initialize backend" not in proc.stderr
