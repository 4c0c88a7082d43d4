"""The batch-size sweep: results read from `dvc exp show --json`, plotted per backend; and the
README's queue commands run for real on a tiny subset."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import clone_env

from mnistbench import layout, sweep

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(batch_size: int, epoch_time: float, val_acc: float, epochs: int = 3) -> dict:
    return {
        "data": {
            "batch_size": batch_size,
            "epoch_time_median_s": epoch_time,
            "val_acc": val_acc,
            "epochs": epochs,
            "train_loss": 0.1,
        }
    }


def _row(rev: str, name: str | None, metrics: dict) -> dict:
    return {"rev": rev, "name": name, "data": {"rev": rev, "params": {}, "metrics": metrics}}


def exp_show_output() -> list[dict]:
    """What `dvc exp show --json` prints (dvc 3.x): the workspace, the baseline commit, and its
    experiments, each with every metrics file (an error where a file is missing)."""
    missing = {"error": {"type": "FileNotFoundError", "msg": "No such file"}}
    base = {
        "metrics/train/jax-scan/metrics.json": _metrics(32, 0.9, 0.97),
        "metrics/train/torch-tensor/metrics.json": _metrics(32, 2.5, 0.97),
        "metrics/roofline/metrics.json": {"data": {"matmul_gflops": 100.0}},
        "metrics/summary.json": {"data": {"backends": {}}},
    }
    return [
        _row("workspace", None, dict(base)),  # the workspace repeats the commit's results
        {
            **_row("abc1234def", "main", base),
            "experiments": [
                {
                    "name": "exp-a",
                    "executor": None,
                    "revs": [
                        _row(
                            "1111111aaa",
                            "exp-a",
                            {
                                "metrics/train/jax-scan/metrics.json": _metrics(128, 0.3, 0.96),
                                "metrics/train/torch-tensor/metrics.json": missing,
                            },
                        )
                    ],
                },
                {
                    "name": "exp-b",
                    "executor": None,
                    "revs": [
                        _row(
                            "2222222bbb",
                            "exp-b",
                            {
                                "metrics/train/jax-scan/metrics.json": _metrics(512, 0.12, 0.95),
                                "metrics/train/torch-tensor/metrics.json": _metrics(512, 0.4, 0.95),
                            },
                        )
                    ],
                },
            ],
        },
    ]


def test_collect_reads_every_experiment_result_once():
    points = sweep.collect(exp_show_output())
    got = [(p.backend, p.batch_size, p.epoch_time_s, p.source) for p in points]
    assert got == [
        ("jax-scan", 128, 0.3, "exp-a"),
        ("jax-scan", 512, 0.12, "exp-b"),
        ("torch-tensor", 512, 0.4, "exp-b"),
    ]  # no roofline/summary, no duplicates


def test_committed_results_are_not_sweep_points():
    """The workspace and baseline hold the committed run (10 epochs, say): not the sweep's."""
    sources = {p.source for p in sweep.collect(exp_show_output())}
    assert sources == {"exp-a", "exp-b"}


def test_results_of_stages_the_experiment_did_not_rerun_are_left_out():
    """`dvc exp run -S train.batch_size=64 train@jax-scan` keeps the other backends' baseline
    metrics (batch 32): they must not count as batch-64 points."""
    row = _row(
        "3333333ccc",
        "exp-c",
        {
            "metrics/train/jax-scan/metrics.json": _metrics(64, 0.5, 0.96, epochs=2),
            "metrics/train/torch-tensor/metrics.json": _metrics(32, 2.5, 0.97, epochs=10),
        },
    )
    row["data"]["params"] = {"params.yaml": {"data": {"train": {"batch_size": 64, "epochs": 2}}}}
    entries = [
        {
            **_row("abc1234def", "main", {}),
            "experiments": [{"name": "exp-c", "executor": None, "revs": [row]}],
        }
    ]
    assert [(p.backend, p.batch_size) for p in sweep.collect(entries)] == [("jax-scan", 64)]


def test_plot_writes_a_png_and_the_points(tmp_path):
    out = sweep.plot(sweep.collect(exp_show_output()), tmp_path / "sweep" / "batch_size.png")
    assert out.read_bytes().startswith(PNG_MAGIC)
    table = json.loads(out.with_suffix(".json").read_text())
    assert {(p["backend"], p["batch_size"]) for p in table} == {
        ("jax-scan", 128),
        ("jax-scan", 512),
        ("torch-tensor", 512),
    }
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_no_results_is_an_error_that_says_what_to_run(tmp_path):
    with pytest.raises(sweep.SweepError, match="dvc exp run --queue"):
        sweep.plot(sweep.collect([_row("workspace", None, {})]), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cli_reads_a_saved_exp_show(tmp_path):
    saved = tmp_path / "exp.json"
    saved.write_text(json.dumps(exp_show_output()))
    out = tmp_path / "plot.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistbench",
            "sweep-plot",
            "--exp-show",
            str(saved),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "3 results, 2 backends, batch sizes 128, 512" in done.stdout
    assert out.read_bytes().startswith(PNG_MAGIC)


def _run(args: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (
        f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.mark.long("a queued DVC sweep end to end (~1.5 min)")
def test_queued_sweep_end_to_end(tmp_path):
    """The README's commands on a clone of HEAD (commit first): two batch sizes queued with
    `dvc exp run --queue -S`, run by `dvc queue start`, then plotted from `dvc exp show`.
    Tiny: 500/100 images, 2 epochs, one round, and only jax-scan in params; `compare` is the
    target (it writes headline/, DVC's metrics), so each experiment also runs the roofline."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    env = clone_env(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(limit_train=500, limit_test=100)
    params["train"].update(epochs=2, device="cpu")
    params["bench"].update(rounds_min=1, rounds_max=1)
    params["backends"] = {"jax-scan": params["backends"]["jax-scan"]}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "-c", "commit.gpgsign=false", "commit", "-qam", "tiny sweep"], repo, env)

    try:
        for size in (16, 64):
            _run(
                [
                    "dvc",
                    "exp",
                    "run",
                    "--queue",
                    "-S",
                    f"train.batch_size={size}",
                    "compare",
                ],
                repo,
                env,
            )
        _run(["dvc", "queue", "start", "--jobs", "1"], repo, env)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = _run(["dvc", "queue", "status"], repo, env)
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(3)
        assert status.count("Success") == 2, status
        points = sweep.collect(sweep.exp_show(cwd=repo))
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=env, capture_output=True)
    assert sorted((p.backend, p.batch_size, p.epochs) for p in points) == [
        ("jax-scan", 16, 2),
        ("jax-scan", 64, 2),
    ]
    assert all(p.val_acc > 0.5 and p.epoch_time_s > 0 for p in points)
    out = sweep.plot(points, tmp_path / "batch_size.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


def _write_run(root: Path, backend: str, batch_size: int, epoch_time: float) -> None:
    """A backend's metrics.json where `mnistbench train --out root` writes it."""
    layout.backend_dir(root, backend).mkdir(parents=True)
    layout.metrics_path(root, backend).write_text(
        json.dumps(
            {
                "batch_size": batch_size,
                "epoch_time_median_s": epoch_time,
                "val_acc": 0.97,
                "epochs": 3,
            }
        )
    )


def test_cli_plots_metrics_roots_made_without_dvc(tmp_path):
    for bs, t in ((32, 0.07), (512, 0.01)):
        _write_run(tmp_path / f"bs{bs}", "jax-scan", bs, t)
        (tmp_path / f"bs{bs}" / "roofline").mkdir()
        (tmp_path / f"bs{bs}" / "roofline" / "metrics.json").write_text('{"matmul_gflops": 1}')
    out = tmp_path / "plot.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistbench",
            "sweep-plot",
            "--metrics",
            str(tmp_path / "bs32"),
            "--metrics",
            str(tmp_path / "bs512"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "2 results, 1 backends, batch sizes 32, 512" in done.stdout
    table = json.loads(out.with_suffix(".json").read_text())
    assert [(p["batch_size"], p["epoch_time_s"]) for p in table] == [(32, 0.07), (512, 0.01)]


def test_a_metrics_root_without_results_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistbench",
            "sweep-plot",
            "--metrics",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "p.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "no train/<backend>/metrics.json" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "p.png").exists()


def test_a_metrics_root_with_a_nan_result_is_an_error_naming_the_key(tmp_path):
    """The contract's checks (mnistbench.metrics): a diverged run's NaN is no point to plot."""
    _write_run(tmp_path / "bs32", "jax-scan", 32, float("nan"))  # json writes a bare NaN
    with pytest.raises(sweep.SweepError, match="epoch_time_median_s must be a finite number"):
        sweep.collect_roots([tmp_path / "bs32"])


def test_exp_show_results_are_found_by_the_contracts_layout():
    """metrics/train/<backend>/metrics.json is a backend's; the roofline's, summaries, repeats
    and the layout before train/ are not."""
    metrics = {
        "metrics/train/jax-scan/metrics.json": _metrics(64, 0.5, 0.96),
        "metrics/roofline/metrics.json": _metrics(64, 0.5, 0.96),  # even if it looked so
        "metrics/torch-tensor/metrics.json": _metrics(64, 0.2, 0.96),  # the old layout's place
        "metrics/repeats/2/train/jax-scan/metrics.json": _metrics(64, 0.4, 0.96),
        "results/h200/metrics/train/jax-scan/metrics.json": _metrics(64, 0.1, 0.96),
    }
    entries = [
        {
            **_row("abc1234def", "main", {}),
            "experiments": [
                {"name": "exp-d", "executor": None, "revs": [_row("4444444ddd", "exp-d", metrics)]}
            ],
        }
    ]
    assert [(p.backend, p.epoch_time_s) for p in sweep.collect(entries)] == [("jax-scan", 0.5)]


def test_points_from_headline_json_take_batch_size_and_epochs_from_the_params():
    """DVC's metrics are metrics/headline/<backend>.json: its estimate over rounds, placed at
    the experiment's train.batch_size and train.epochs."""
    made = {"rounds": 3, "batch_size": 128, "epochs": 3}
    scan = {
        "data": {"epoch_s": 0.3, "epoch_s_lo": 0.29, "epoch_s_hi": 0.31, "val_acc": 0.96, **made}
    }
    tensor = {"data": {"epoch_s": 1.2, "val_acc": 0.97, **made}}
    shown = {"metrics/headline/jax-scan.json": scan, "metrics/headline/torch-tensor.json": tensor}
    row = _row("3333333ccc", "exp-c", shown)
    row["data"]["params"] = {"params.yaml": {"data": {"train": {"batch_size": 128, "epochs": 3}}}}
    entries = [
        {**_row("abc1234def", "main", {}), "experiments": [{"name": "exp-c", "revs": [row]}]}
    ]
    points = sweep.collect(entries)
    assert [(p.backend, p.batch_size, p.epoch_time_s, p.val_acc, p.epochs) for p in points] == [
        ("jax-scan", 128, 0.3, 0.96, 3),
        ("torch-tensor", 128, 1.2, 0.97, 3),
    ]
    for backend in (scan, tensor):  # compare did not rerun: the baseline's headline
        backend["data"]["batch_size"] = 32
    assert sweep.collect(entries) == []
    for backend in (scan, tensor):
        backend["data"]["batch_size"] = 128
    row["data"]["params"] = {}  # no params shown: nowhere to place the points
    assert sweep.collect(entries) == []
