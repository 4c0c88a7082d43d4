"""compare, step 1: read and validate its inputs.

Every backend's metrics.json and per-epoch curves (plots/metrics/*.tsv), and optionally the
roofline stage's metrics.json. A missing or malformed file raises CompareError naming it;
load_runs collects every problem before raising, so one run reports them all.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistbench.config import Config

TIMES = ("epoch_time_median_s", "epoch_time_min_s", "epoch_time_max_s", "first_epoch_s",
         "train_time_median_s", "eval_time_median_s")  # seconds: finite, >= 0
NUMBERS = ("val_acc", "val_loss", "train_loss", "samples_per_s")  # any number (a loss may be nan)
COUNTS = ("epochs", "batch_size", "num_params", "train_examples", "test_examples")  # ints >= 1
ENV_STRINGS = ("backend", "framework", "loader", "device")
CURVES = ("val_acc", "train_loss", "val_loss", "epoch_time_s")  # the TSVs curves.png draws
ROOFLINE_KEYS = ("matmul_gflops", "train_gflop_per_epoch", "eval_gflop_per_epoch",
                 "gflop_per_epoch", "roofline_epoch_s")


class CompareError(ValueError):
    """Inputs missing or malformed; the message names each file and what is wrong with it."""


@dataclass(frozen=True)
class BackendRun:
    name: str
    metrics: dict[str, Any]  # metrics.json, validated
    curves: dict[str, list[float]]  # CURVES key -> value per epoch (epochs 1..N)


# ---------------------------------------------------------------- loading and validation


def metrics_path(metrics_root: str | Path, name: str) -> Path:
    return Path(metrics_root) / name / "metrics.json"


def curve_path(metrics_root: str | Path, name: str, key: str) -> Path:
    return Path(metrics_root) / name / "plots" / "metrics" / f"{key}.tsv"


def load_runs(cfg: Config, metrics_root: str | Path = "metrics") -> dict[str, BackendRun]:
    """Every backend of cfg.backends, in params order; all problems reported at once."""
    runs, problems = {}, []
    for name in cfg.backends:
        try:
            runs[name] = load_run(cfg, metrics_root, name)
        except CompareError as e:
            problems.append(str(e))
    if problems:
        raise CompareError("compare: nothing written; fix or regenerate (`dvc repro`, or "
                           "`mnistbench train <backend>`):\n  " + "\n  ".join(problems))
    return runs


def load_run(cfg: Config, metrics_root: str | Path, name: str) -> BackendRun:
    path = metrics_path(metrics_root, name)
    metrics = _check_metrics(_read_json(path), path, name, cfg)
    curves = {key: _read_curve(curve_path(metrics_root, name, key), key, metrics["epochs"])
              for key in CURVES}
    return BackendRun(name, metrics, curves)


def load_roofline(path: str | Path) -> dict[str, float]:
    """The roofline stage's metrics.json: the keys compare uses, checked."""
    path = Path(path)
    raw = _read_json(path)
    for key in ROOFLINE_KEYS:
        _need(_is_number(raw.get(key)) and math.isfinite(raw[key]) and raw[key] >= 0, path,
              f"{key} must be a finite number >= 0, got {raw.get(key)!r}")
    _need(raw["roofline_epoch_s"] > 0, path, "roofline_epoch_s must be > 0")
    return {**{k: float(raw[k]) for k in ROOFLINE_KEYS}, "threads": raw.get("threads")}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CompareError(f"{path}: missing")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompareError(f"{path}: not valid JSON ({e})") from e
    _need(isinstance(raw, dict), path, f"must hold a JSON object, got {type(raw).__name__}")
    return raw


def _check_metrics(raw: dict, path: Path, name: str, cfg: Config) -> dict[str, Any]:
    missing = [k for k in (*TIMES, *NUMBERS, *COUNTS, "env") if k not in raw]
    _need(not missing, path, f"missing keys: {', '.join(missing)}")
    for key in TIMES:
        value = raw[key]
        _need(_is_number(value) and math.isfinite(value) and value >= 0, path,
              f"{key} must be a finite number of seconds >= 0, got {value!r}")
    for key in NUMBERS:
        _need(_is_number(raw[key]), path, f"{key} must be a number, got {raw[key]!r}")
    for key in COUNTS:
        value = raw[key]
        _need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, path,
              f"{key} must be an integer >= 1, got {value!r}")
    env = raw["env"]
    _need(isinstance(env, dict), path, f"env must be an object, got {env!r}")
    for key in ENV_STRINGS:
        _need(isinstance(env.get(key), str), path,
              f"env.{key} must be a string, got {env.get(key)!r}")
    _need(env["backend"] == name, path, f"env.backend is {env['backend']!r}, not {name!r}")
    _need(raw["epoch_time_min_s"] <= raw["epoch_time_median_s"] <= raw["epoch_time_max_s"], path,
          "epoch_time_min_s <= epoch_time_median_s <= epoch_time_max_s does not hold")
    _need(raw["epoch_time_median_s"] > 0 and raw["train_time_median_s"] > 0, path,
          "epoch_time_median_s and train_time_median_s must be > 0")
    for key, want in (("epochs", cfg.train.epochs), ("batch_size", cfg.train.batch_size)):
        _need(raw[key] == want, path, f"{key} is {raw[key]} but params' train.{key} is {want} "
              "(stale: retrain this backend)")
    return raw


def _read_curve(path: Path, key: str, epochs: int) -> list[float]:
    """A DVCLive-layout TSV (columns step and KEY), one row per epoch 1..epochs."""
    if not path.is_file():
        raise CompareError(f"{path}: missing")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CompareError(f"{path}: unreadable ({e})") from e
    _need(bool(lines) and lines[0].split("\t") == ["step", key], path,
          f"header must be 'step<TAB>{key}', got {lines[0] if lines else ''!r}")
    values = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        try:
            step, value = int(cells[0]), float(cells[1])
        except (ValueError, IndexError):
            cells = []
        _need(len(cells) == 2, path, f"line {number} is not '<step><TAB><number>': {line!r}")
        _need(step == len(values) + 1, path,
              f"line {number}: step {step}, expected {len(values) + 1}")
        values.append(value)
    _need(len(values) == epochs, path, f"{len(values)} rows but metrics.json says {epochs} epochs")
    return values


def _need(ok: bool, path: Path, message: str) -> None:
    if not ok:
        raise CompareError(f"{path}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


