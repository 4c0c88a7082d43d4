"""Times you can trust, end to end: a training run beside a real CPU hog comes out disturbed and
names its epochs; repeats in fresh processes feed compare's spread across runs; a disturbed
run is marked in every report and `keep` refuses it unless forced.

(The measuring itself, on canned /proc readings, is tests/test_interference.py's.)"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import repo_backends
from test_compare import TIMES, make_cfg, write_metrics

from mnistbench import compare, config, keep, layout, metrics, records, repeat, report, train
from mnistbench.cli import main as cli

FAKE = "numpy-mlp"


# A busy loop outside the run's process tree (a child of the run would count as its own):
# a short-lived launcher starts it in a session of its own and prints its pid.
LAUNCH = (
    "import subprocess, sys; "
    "p = subprocess.Popen([sys.executable, '-c', 'while True: pass'], start_new_session=True, "
    "stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(p.pid)"
)


def _hogs() -> list[int]:
    """A busy loop per usable CPU, none of them a descendant of this process; their pids."""
    pids = []
    for _ in os.sched_getaffinity(0):
        done = subprocess.run([sys.executable, "-c", LAUNCH], capture_output=True, text=True)
        pids.append(int(done.stdout))
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class NumpyTrainer:
    """Real CPU work in every epoch (float32 products for ~0.4 s), no framework: the run the
    interference is measured against."""

    device, num_train, num_test = "cpu", 1000, 300

    def __init__(self, seconds: float = 0.4):
        self.seconds = seconds
        self.a = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)

    def train_epoch(self) -> float:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            self.a = np.tanh(self.a @ self.a / 256)
        return 0.5

    def evaluate(self) -> tuple[float, float]:
        return 0.4, 0.9

    def sync(self) -> None:
        pass

    def num_params(self) -> int:
        return 65536


@pytest.fixture
def numpy_backend(monkeypatch):
    module = type(
        "Backend",
        (),
        {
            "FRAMEWORK": "NumPy",
            "LOADER": "none",
            "build": lambda cfg, device, data: NumpyTrainer(),
        },
    )
    monkeypatch.setattr(train.backends, "load", lambda name: module)


def _cfg(epochs: int) -> config.Config:
    return config.Config(
        data=config.DataConfig(limit_train=1000, limit_test=300),
        train=config.TrainConfig(epochs=epochs, device="cpu"),
        backends={FAKE: config.Backend(data="data/raw")},
    )


def test_a_run_beside_a_cpu_hog_is_disturbed_and_names_the_epochs(numpy_backend, tmp_path):
    """Epochs 1-2 alone, then a hog on every usable CPU for epochs 3-5."""
    hogs: list[int] = []

    def start_hogs_after_epoch_2(e):
        if e.epoch == 2:
            hogs.extend(_hogs())
            time.sleep(0.3)  # let them reach the run queue

    real = train.harness.run
    try:
        train.harness.run = lambda trainer, epochs, on_epoch: real(
            trainer, epochs, lambda e: (on_epoch(e), start_hogs_after_epoch_2(e))
        )
        record = train.train(_cfg(5), FAKE, tmp_path)
    finally:
        train.harness.run = real
        _kill(hogs)
    q = record["quiet"]
    assert q["verdict"] == "disturbed" and record["disturbed"] == 1
    assert {3, 4, 5} <= set(q["disturbed_epochs"]), q
    named = [c.split(":")[0] for c in q["causes"] if "others used" in c]
    assert named and {"3", "4", "5"} <= set(named[0].replace(",", " ").split()), q
    assert record["foreign_cpu_max"] > 0.05
    shares = records.read_curve(
        layout.curve_path(tmp_path, FAKE, "foreign_share"), "foreign_share", 5
    )
    if not {1, 2} & set(q["disturbed_epochs"]):  # a machine quiet before the hog (as on CI)
        assert min(shares[2:]) > max(shares[:2])  # the hog's epochs stand out
    assert json.loads(layout.metrics_path(tmp_path, FAKE).read_text())["disturbed"] == 1


# ---------------------------------------------------------------- repeats, compare, reports


def _with_repeat(root, name, steady, round_=2, foreign=0.0):
    write_metrics(layout.repeats_root(root) / str(round_), name, 30.0, steady, foreign=foreign)


def test_repeats_are_fresh_train_runs_each_round_a_metrics_root(raw_dir, tmp_path):
    """`repeat` trains every backend again in its own process, into repeats/<round>/train/
    <backend>/ where compare finds them (layout.repeat_roots), and lists what ran."""
    params = tmp_path / "params.yaml"
    doc = {
        "data": {"raw_dir": str(raw_dir), "limit_train": 256, "limit_test": 64},
        "train": {"epochs": 1, "device": "cpu"},
        "bench": {"rounds_min": 3, "rounds_max": 3},
        "backends": repo_backends("torch-tensor", raw=raw_dir),
    }
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    root = tmp_path / "metrics"
    assert repeat.run(config.load(params), params, root) == layout.repeats_root(root)
    rounds = layout.repeat_roots(root, "torch-tensor")
    assert rounds == [layout.repeats_root(root) / "2", layout.repeats_root(root) / "3"]
    for round_root in rounds:
        record = records.read_record(round_root, "torch-tensor")
        assert metrics.validate(record, backend="torch-tensor") == []
        assert record["test_examples"] == 64
    listing = json.loads((layout.repeats_root(root) / repeat.ROUNDS_FILE).read_text())
    assert [r["round"] for r in listing["rounds"]] == [1, 2, 3]  # 1: the train@ stages
    assert all(r["order"] == ["torch-tensor"] for r in listing["rounds"])
    assert listing["backends"] == ["torch-tensor"] and listing["seed"] == 0
    assert listing["stop"]["reason"] in ("precision", "rounds_max")
    assert listing["stop"]["rounds"] == 3
    assert sorted(p.name for p in root.iterdir()) == [layout.REPEATS_DIR]  # no staging left

    before = sorted(p for p in layout.repeats_root(root).rglob("*") if p.is_file())
    doc["backends"] = {}
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(repeat.RepeatError, match="backends lists no backend"):
        repeat.run(config.load(params), params, root)
    assert sorted(p for p in layout.repeats_root(root).rglob("*") if p.is_file()) == before


def test_one_odd_run_is_an_outlier_two_speeds_need_two_runs_each(tmp_path):
    """Three runs, one twice as slow: an outlier, not a second mode. Four runs, two at each
    speed: unstable, both speeds listed."""
    root = tmp_path / "metrics"
    for name, (first, steady) in TIMES.items():
        write_metrics(root, name, first, steady)
    slow = [(t * 2, e * 2) for t, e in TIMES["jax-tfds"][1]]  # a slow mode: twice the time
    _with_repeat(root, "jax-tfds", slow, 2)
    _with_repeat(root, "jax-tfds", TIMES["jax-tfds"][1], 3)
    summary = compare.compare(make_cfg(), root)
    jax = summary["backends"]["jax-tfds"]
    assert jax["runs"] == 3 and jax["runs_s"] == pytest.approx([4.5, 9.0, 4.5])
    assert jax["epoch_time_s"] == pytest.approx(4.5 * 2 ** (1 / 3))  # geometric mean
    assert jax["epoch_time_lo_s"] < 4.5 and jax["epoch_time_hi_s"] > 9.0  # 3 runs: wide
    assert jax["unstable"] == 0 and jax["outliers"] == pytest.approx([9.0])
    md = (root / "summary.md").read_text()
    assert "| jax-tfds | quiet, outlier 9.00 s |" in md

    _with_repeat(root, "jax-tfds", slow, 4)
    jax = compare.compare(make_cfg(), root)["backends"]["jax-tfds"]
    assert jax["unstable"] == 1 and jax["modes"] == [[4.5, 4.5], [9.0, 9.0]]
    assert jax["outliers"] == []
    md = (root / "summary.md").read_text()
    assert "| jax-tfds | unstable: 4.50 s (2) and 9.00 s (2) |" in md
    assert "†" in md.split("## The answer")[0]


def test_a_disturbed_repeat_is_left_out_of_the_headline_and_named(tmp_path):
    root = tmp_path / "metrics"
    for name, (first, steady) in TIMES.items():
        write_metrics(root, name, first, steady)
    slow = [(t * 3, e * 3) for t, e in TIMES["torch-tfds"][1]]
    _with_repeat(root, "torch-tfds", slow, 2, foreign=0.4)
    summary = compare.compare(make_cfg(), root)
    row = summary["backends"]["torch-tfds"]
    assert row["disturbed"] == 1 and row["epoch_time_s"] == pytest.approx(10.5)
    md = (root / "summary.md").read_text()
    # left out, and named among the causes; the headline rests on the clean run, so neither
    # the mark nor keep's refusal applies
    assert "torch-tfds: run 2: epochs 1, 2, 3: others used 40%" in md
    assert "| torch-tfds | quiet, 1 of 2 runs disturbed (left out) |" in md
    assert "‡ disturbed" not in md
    row_md = next(line for line in md.splitlines() if line.startswith("| torch-tfds | quiet"))
    assert row_md.endswith("| 1 clean run |")  # a spread across runs needs two clean runs
    assert keep.disturbed_parts(json.loads((root / "summary.json").read_text())) == []
    # every run disturbed: the headline is a disturbed number, marked, and keep refuses it
    _with_repeat(root, "torch-tfds", slow, 3, foreign=0.4)
    shutil.rmtree(layout.backend_dir(root, "torch-tfds"))  # round 1 again, disturbed too
    write_metrics(root, "torch-tfds", *TIMES["torch-tfds"], foreign=0.4)
    compare.compare(make_cfg(), root)
    md = (root / "summary.md").read_text()
    assert "‡ disturbed" in md
    assert keep.disturbed_parts(json.loads((root / "summary.json").read_text())) == ["torch-tfds"]


def _machine(root) -> None:
    (root / "machine.json").write_text(
        json.dumps({"name": "test-2cpu", "id": "abc", "fingerprint": {"cpu": "Test CPU"}})
    )


def test_keep_refuses_a_disturbed_run_unless_forced_and_reports_mark_it(tmp_path):
    root = tmp_path / "metrics"
    for name, (first, steady) in TIMES.items():
        write_metrics(root, name, first, steady, foreign=0.3 if name == "jax-tfds" else 0.0)
    compare.compare(make_cfg(), root)
    _machine(root)
    results = tmp_path / "results"
    results.mkdir()
    args = ["keep", "--metrics", str(root), "--results", str(results)]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1
    assert "a disturbed run (jax-tfds)" in refused.output and "--force" in refused.output
    assert not list(results.iterdir())
    kept = CliRunner().invoke(cli, [*args, "--force"])
    assert kept.exit_code == 0, kept.output
    report.write(results, root, tmp_path / "out")
    md = (tmp_path / "out" / "machines.md").read_text()
    assert "‡ disturbed:" in md
    line = next(row for row in md.splitlines() if row.startswith("| `jax-tfds`"))
    assert line.count("s‡ ·") == 2  # the kept reference and this machine's column


def test_a_quiet_run_is_kept(tmp_path):
    root = tmp_path / "metrics"
    for name, (first, steady) in TIMES.items():
        write_metrics(root, name, first, steady)
    compare.compare(make_cfg(), root)
    _machine(root)
    dest = keep.keep(root, tmp_path / "results", extra=())
    assert (dest / "summary.json").is_file()
