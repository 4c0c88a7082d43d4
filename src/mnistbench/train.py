"""Stage `train@<backend>`: build one backend, time it with the harness, write its metrics.

Output in metrics/<backend>/, in DVCLive's layout (mnistbench.metrics, the metrics contract):
metrics.json (the results, `env`, the environment they came from, and `params`, the
parameters they were made with) and plots/metrics/<key>.tsv (per-epoch curves). Every epoch's
values are checked as they come: a loss that turns NaN or infinite stops the run (training
diverged). The record is validated against the contract before it is written, and everything
is written to a staging folder first and swapped in at the end, so a failed, diverged or
interrupted run never leaves half a result where the old one was.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from mnistbench import backends, envinfo, frameworks, harness, metrics, progress
from mnistbench.config import Config, ConfigError

log = logging.getLogger(__name__)


def train(cfg: Config, name: str, out_root: str | Path = "metrics") -> dict:
    """Train backend `name` for cfg.train.epochs; returns the record written to metrics.json."""
    backend = backends.load(name)
    _check_input(cfg, name, backend.DATA)
    threads = frameworks.configure_threads(cfg.train.threads)  # before any framework import
    harness.seed_everything(cfg.train.seed)
    trainer = backend.build(cfg, cfg.train.device)
    log.info(
        "%s: %d parameters, %d train / %d test examples, batch %d, %d epochs",
        name,
        trainer.num_params(),
        trainer.num_train,
        trainer.num_test,
        cfg.train.batch_size,
        cfg.train.epochs,
    )

    final = Path(out_root) / name
    staging = final.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        record = _train_logged(trainer, cfg, name, staging)
        record["num_params"] = trainer.num_params()
        record["train_examples"], record["test_examples"] = trainer.num_train, trainer.num_test
        record["env"] = {
            **envinfo.collect(),
            **threads,
            "backend": name,
            "framework": backend.FRAMEWORK,
            "loader": backend.LOADER,
            "device": trainer.device,
        }
        record["params"] = metrics.params_of(cfg)
        metrics.check(record, f"{name}: the metrics to write", backend=name)
        text = json.dumps(record, indent=2, allow_nan=False) + "\n"  # no bare NaN, ever
        (staging / metrics.METRICS_FILE).write_text(text)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def _check_input(cfg: Config, name: str, reads: str) -> None:
    """params' backends.<name> must name the data this backend really reads (dvc.yaml deps)."""
    expected = cfg.data_input(reads)
    if name in cfg.backends and cfg.backends[name] != expected:
        raise ConfigError(
            f"params: backends.{name} is {cfg.backends[name]!r} but {name} "
            f"reads {expected!r}; dvc.yaml's dependency would be wrong"
        )


def _train_logged(trainer: harness.Trainer, cfg: Config, name: str, out: Path) -> dict:
    plots = metrics.curves_dir(out.parent, out.name)
    plots.mkdir(parents=True)

    def on_epoch(e: harness.Epoch) -> None:
        values = e.curves()
        _check_epoch(values, e.epoch, name, cfg)
        for key in metrics.CURVES:
            metrics.append_curve(plots / f"{key}.tsv", key, e.epoch, values[key])
        log.info(
            "epoch %d/%d: train_loss %.4f, val_loss %.4f, val_acc %.4f, "
            "elapsed %.2f s (train %.2f + eval %.2f)",
            e.epoch,
            cfg.train.epochs,
            e.train_loss,
            e.val_loss,
            e.val_acc,
            e.epoch_time_s,
            e.train_time_s,
            e.eval_time_s,
        )
        timer.epoch_done(e.epoch)

    timer = progress.start(cfg.train.epochs)
    history = harness.run(trainer, cfg.train.epochs, on_epoch)
    return harness.summarize(history, trainer.num_train, cfg.train.batch_size)


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
