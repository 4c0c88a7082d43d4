"""Stage `train@<backend>`: build one backend, time it with the harness, write its metrics.

Output in metrics/<backend>/, in DVCLive's layout: metrics.json (the summary keys of DESIGN.md plus
`env`, the environment the numbers came from) and plots/metrics/*.tsv (per-epoch curves).
Everything is written to a staging folder first and swapped in at the end, so a failed or
interrupted run never leaves half a result where the old one was.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from mnistbench import backends, envinfo, frameworks, harness
from mnistbench.config import Config, ConfigError

log = logging.getLogger(__name__)

CURVES = ("train_loss", "val_loss", "val_acc", "epoch_time_s", "train_time_s", "eval_time_s")


def metrics_dir(out_root: str | Path, name: str) -> Path:
    return Path(out_root) / name


def train(cfg: Config, name: str, out_root: str | Path = "metrics") -> dict:
    """Train backend `name` for cfg.train.epochs; returns the summary written to metrics.json."""
    backend = backends.load(name)
    _check_input(cfg, name, backend.DATA)
    threads = frameworks.configure_threads(cfg.train.threads)  # before any framework import
    harness.seed_everything(cfg.train.seed)
    trainer = backend.build(cfg, cfg.train.device)
    log.info("%s: %d parameters, %d train / %d test examples, batch %d, %d epochs",
             name, trainer.num_params(), trainer.num_train, trainer.num_test,
             cfg.train.batch_size, cfg.train.epochs)

    final = metrics_dir(out_root, name)
    staging = final.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        summary = _train_logged(trainer, cfg, staging)
        summary["num_params"] = trainer.num_params()
        summary["train_examples"], summary["test_examples"] = trainer.num_train, trainer.num_test
        summary["env"] = {**envinfo.collect(), **threads, "backend": name,
                          "framework": backend.FRAMEWORK, "loader": backend.LOADER,
                          "device": trainer.device}
        (staging / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _check_input(cfg: Config, name: str, reads: str) -> None:
    """params' backends.<name> must name the data this backend really reads (dvc.yaml deps)."""
    expected = cfg.data_input(reads)
    if name in cfg.backends and cfg.backends[name] != expected:
        raise ConfigError(f"params: backends.{name} is {cfg.backends[name]!r} but {name} "
                          f"reads {expected!r}; dvc.yaml's dependency would be wrong")


def _train_logged(trainer: harness.Trainer, cfg: Config, out: Path) -> dict:
    plots = out / "plots" / "metrics"
    plots.mkdir(parents=True)

    def on_epoch(e: harness.Epoch) -> None:
        values = e.as_dict()
        for key in CURVES:
            _append_tsv(plots / f"{key}.tsv", key, e.epoch, values[key])
        log.info("epoch %d/%d: train_loss %.4f, val_loss %.4f, val_acc %.4f, "
                 "elapsed %.2f s (train %.2f + eval %.2f)", e.epoch, cfg.train.epochs,
                 e.train_loss, e.val_loss, e.val_acc, e.epoch_time_s, e.train_time_s,
                 e.eval_time_s)

    history = harness.run(trainer, cfg.train.epochs, on_epoch)
    return harness.summarize(history, trainer.num_train, cfg.train.batch_size)


def _append_tsv(path: Path, key: str, step: int, value: float) -> None:
    """DVCLive's plot layout (plots/metrics/<key>.tsv, columns step and <key>), written by hand:
    DVCLive itself needs a git repository with commits and touches it, which breaks fresh
    `git init` trees and containers whose mounted repo belongs to another user."""
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write(f"step\t{key}\n")
        f.write(f"{step}\t{value!r}\n")
