"""Stage `train@<backend>`: build one backend, time it with the harness, write its metrics.

Output in metrics/train/<backend>/, in DVCLive's layout (mnistbench.metrics, the metrics
contract): metrics.json (the numbers people compare), run.json (the other numbers, the verdict
on how quiet the machine was, `env`, the environment they came from, and `params`, the
parameters they were made with) and plots/metrics/<key>.tsv (per-epoch curves).

Before the backend is built the machine is sampled (a busy one is named at once, and params
may ask to wait for quiet) and a fixed-work probe is timed; the probe is timed again at the
end, so a machine that changed speed during the stage shows. Every epoch's
values are checked as they come: a loss that turns NaN or infinite stops the run (training
diverged). The record is validated against the contract before it is written, and everything
is written to a staging folder first and swapped in at the end, so a failed, diverged or
interrupted run never leaves half a result where the old one was.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from mnistbench import (
    backends,
    envinfo,
    frameworks,
    harness,
    interference,
    layout,
    metrics,
    outputs,
    progress,
    quiet,
    records,
)
from mnistbench.config import Config

log = logging.getLogger(__name__)


def train(cfg: Config, name: str, out_root: str | Path = layout.METRICS_ROOT) -> dict:
    """Train backend `name` for cfg.train.epochs; returns the record written to metrics.json."""
    backend = backends.load(name)
    data = cfg.backend_data(name)  # params must list it: said before any waiting
    threads = frameworks.configure_threads(cfg.train.threads)  # before any framework import
    limits = quiet.thresholds(cfg)
    busy = interference.wait_for_quiet(limits, cfg.bench.wait_quiet_s)
    probe_start_s = interference.probe()
    harness.seed_everything(cfg.train.seed)
    trainer = backend.build(cfg, cfg.train.device, data)
    log.info(
        "%s: %d parameters, %d train / %d test examples, batch %d, %d epochs",
        name,
        trainer.num_params(),
        trainer.num_train,
        trainer.num_test,
        cfg.train.batch_size,
        cfg.train.epochs,
    )

    with outputs.replace_folder(layout.backend_dir(out_root, name)) as staging:
        history, gpu = _train_logged(trainer, cfg, name, staging)
        verdict = quiet.judge(
            [e.epoch_time_s for e in history], [e.load for e in history], limits, gpu
        )
        record = harness.summarize(history, trainer.num_train, cfg.train.batch_size)
        record.update(
            disturbed=int(verdict.label == "disturbed"),
            busy_before=round(busy.foreign, 2),
            probe_start_s=probe_start_s,
            probe_end_s=interference.probe(),
            num_params=trainer.num_params(),
            train_examples=trainer.num_train,
            test_examples=trainer.num_test,
            quiet=quiet.section(verdict, limits, gpu),
            env={
                **envinfo.collect(),
                **threads,
                "backend": name,
                "framework": backend.FRAMEWORK,
                "loader": backend.LOADER,
                "device": trainer.device,
            },
            params=metrics.params_of(cfg),
        )
        metrics.check(record, f"{name}: the metrics to write", backend=name)
        record = {key: record[key] for key in metrics.KEYS}  # the contract's order
        records.write_record(staging, record)
        quiet.log_verdict(name, verdict)
    return record


def _train_logged(
    trainer: harness.Trainer, cfg: Config, name: str, out: Path
) -> tuple[list[harness.Epoch], dict | None]:
    """The timed epochs, their curves written as they come, and on a GPU its readings' summary."""
    plots = out.joinpath(*layout.CURVES_DIR)  # out: the staging folder of the backend
    plots.mkdir(parents=True)  # in the staging folder
    gpu_readings = []

    def on_epoch(e: harness.Epoch) -> None:
        if trainer.device == "cuda":  # after the clock: nvidia-smi takes ~0.1 s
            gpu_readings.append(interference.gpu_reading())
        values = e.curves()
        _check_epoch(values, e.epoch, name, cfg)
        for key in metrics.CURVES:
            records.append_curve(plots / f"{key}.tsv", key, e.epoch, values[key])
        timer.epoch_done(
            e.epoch,
            f"this epoch {e.epoch_time_s:.2f} s (train {e.train_time_s:.2f} + eval "
            f"{e.eval_time_s:.2f}), val_acc {e.val_acc:.4f}, others {e.load.foreign:.0%} "
            "of the CPUs",
        )

    timer = progress.start(cfg.train.epochs)
    history = harness.run(trainer, cfg.train.epochs, on_epoch)
    if not any(gpu_readings):
        return history, None
    summary = interference.summarize([e.load for e in history], gpu_readings)
    return history, {k: v for k, v in summary.items() if k.startswith("gpu_")}


def _check_epoch(values: dict[str, float], epoch: int, name: str, cfg: Config) -> None:
    """Stop at the first epoch whose values break the contract: nothing is written then."""
    problems = metrics.curve_problems(values)
    if not problems:
        return
    where = f"{name}: epoch {epoch}"
    if any(not math.isfinite(values[key]) for key in metrics.LOSSES):
        where = f"{name}: training diverged at epoch {epoch} (lower train.lr, now {cfg.train.lr!r})"
    raise metrics.MetricsError(
        f"{where}: {'; '.join(problems)}; nothing written, the previous results are as they were"
    )
