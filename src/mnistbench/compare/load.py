"""compare, step 1: read and validate its inputs.

Every backend's record (metrics.json + run.json) and per-epoch curves (plots/metrics/*.tsv), and optionally the
roofline stage's metrics.json, each checked against the metrics contract (mnistbench.metrics).
A backend's params must be the current ones: results made with another limit_train, hidden,
lr, seed, ... are not comparable. A missing or malformed file raises CompareError naming it;
load_runs collects every problem before raising, so one run reports them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistbench import layout, metrics, records
from mnistbench.config import Config


class CompareError(metrics.MetricsError):
    """Inputs missing or malformed; the message names each file and what is wrong with it."""


@dataclass(frozen=True)
class BackendRun:
    name: str
    metrics: dict[str, Any]  # the record: metrics.json and run.json in one, validated
    curves: dict[str, list[float]]  # metrics.CURVES key -> value per epoch (epochs 1..N)
    repeats: tuple[dict[str, Any], ...] = ()  # the repeats stage's records, rounds 2..R
    repeat_rounds: tuple[int, ...] = ()  # the round number of each repeat

    @property
    def records(self) -> tuple[dict[str, Any], ...]:
        """Every run of this backend: the train@ stage's, then each repeat."""
        return (self.metrics, *self.repeats)

    @property
    def rounds(self) -> tuple[int, ...]:
        """The round of each of `records`: 1 for the train@ stage's run."""
        return (1, *(self.repeat_rounds or range(2, len(self.repeats) + 2)))


def load_runs(cfg: Config, metrics_root: str | Path = layout.METRICS_ROOT) -> dict[str, BackendRun]:
    """Every backend of cfg.backends, in params order; all problems reported at once."""
    runs, problems = {}, []
    if not cfg.backends:
        raise CompareError("params: backends lists no backend: nothing to compare")
    for name in cfg.backends:
        try:
            runs[name] = load_run(cfg, metrics_root, name)
        except metrics.MetricsError as e:
            problems.append(str(e))
    if problems:
        raise CompareError(
            "compare: nothing written; fix or regenerate (`dvc repro`, or "
            "`mnistbench train <backend>`):\n  " + "\n  ".join(problems)
        )
    return runs


def load_run(cfg: Config, metrics_root: str | Path, name: str) -> BackendRun:
    path = layout.metrics_path(metrics_root, name)
    where = f"{path} (+ {layout.RUN_FILE})"
    record = metrics.check(records.read_record(metrics_root, name), where, backend=name)
    _check_params(record["params"], metrics.params_of(cfg), where)
    curves = {
        key: records.read_curve(layout.curve_path(metrics_root, name, key), key, record["epochs"])
        for key in metrics.CURVES
    }
    roots = layout.repeat_roots(metrics_root, name)
    repeats = tuple(_load_record(cfg, root, name) for root in roots)
    return BackendRun(name, record, curves, repeats, tuple(int(r.name) for r in roots))


def _load_record(cfg: Config, root: Path, name: str) -> dict[str, Any]:
    """One repeat's record, checked and made with the current params."""
    where = f"{layout.metrics_path(root, name)} (+ {layout.RUN_FILE})"
    record = metrics.check(records.read_record(root, name), where, backend=name)
    _check_params(record["params"], metrics.params_of(cfg), where)
    return record


def load_roofline(path: str | Path) -> dict[str, float | int | None]:
    """The roofline stage's metrics.json: the keys compare uses (metrics.ROOFLINE), checked."""
    path = Path(path)
    raw = read_json(path)
    values = {key: raw.get(key) for key in metrics.ROOFLINE}  # absent: None, named if required
    problems = metrics.value_problems(values, metrics.ROOFLINE)
    if problems:
        raise CompareError(f"{path}: {'; '.join(problems)}")
    exact = ("threads", "kernel_bound_epoch_s", "disturbed")
    return {
        key: value if key in exact or value is None else float(value)
        for key, value in values.items()
    }


def load_machine(metrics_root: str | Path) -> dict[str, str] | None:
    """The machine stage's name and fingerprint id from <root>/machine.json, if there is one."""
    path = Path(metrics_root) / layout.MACHINE_FILE
    if not path.is_file():
        return None
    raw = read_json(path)
    problems = metrics.value_problems(
        {k: raw.get(k) for k in ("name", "id")},
        {"name": metrics.text("machine name"), "id": metrics.text("fingerprint id")},
    )
    if problems:
        raise CompareError(f"{path}: {'; '.join(problems)} (rewrite it: `mnistbench machine`)")
    checkout = raw.get("checkout")  # absent from files written before runs had one
    return {
        "name": raw["name"],
        "id": raw["id"],
        "checkout": checkout if isinstance(checkout, str) else "",
    }


def load_rounds(metrics_root: str | Path) -> dict[str, Any] | None:
    """The repeats stage's rounds.json (rounds, their order, why they stopped), if any."""
    path = layout.repeats_root(metrics_root) / layout.ROUNDS_FILE
    if not path.is_file():
        return None
    raw = read_json(path)
    stop = raw.get("stop")
    if not isinstance(raw.get("rounds"), list) or not (stop is None or isinstance(stop, dict)):
        raise CompareError(
            f"{path}: rounds must be a list and stop an object (rerun `mnistbench repeat`)"
        )
    return raw


def read_json(path: Path, error: type[Exception] = CompareError) -> Any:
    """A JSON object from `path`, or `error` naming the file and what is wrong with it."""
    if not path.is_file():
        raise error(f"{path}: missing")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise error(f"{path}: must hold a JSON object, got {type(raw).__name__}")
    return raw


def _check_params(made_with: dict[str, Any], current: dict[str, Any], path: str) -> None:
    """Refuse results made with other params than the current ones, naming each key."""
    differ = [
        f"{key} {made_with[key]!r} (current params: {current[key]!r})"
        for key in metrics.PARAMS
        if made_with[key] != current[key]
    ]
    if differ:
        raise CompareError(
            f"{path}: made with other params: {', '.join(differ)}; not "
            "comparable: retrain this backend with the current params"
        )
