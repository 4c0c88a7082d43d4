"""A run's files on disk: a checked record as metrics.json and run.json, and its per-epoch
curve TSVs, written and read back. What the files must hold is the contract
(mnistbench.metrics); where they live is mnistbench.layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnistbench.layout import METRICS_FILE, RUN_FILE, metrics_path, run_path
from mnistbench.metrics import COMPARED, CURVES, DETAILS, SECTIONS, MetricsError


def split(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A valid record as its two files: {METRICS_FILE: COMPARED, RUN_FILE: the rest}."""
    details = {k: record[k] for k in DETAILS}
    return {
        METRICS_FILE: {k: record[k] for k in COMPARED},
        RUN_FILE: {"details": details, **{s: record[s] for s in SECTIONS}},
    }


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """Both files of a checked record into `folder` (a staging folder the caller swaps in)."""
    for name, content in split(record).items():
        text = json.dumps(content, indent=2, allow_nan=False) + "\n"  # no bare NaN, ever
        (folder / name).write_text(text)


def read_record(root: str | Path, name: str) -> dict[str, Any]:
    """<root>/<name>/metrics.json and run.json as one record (not yet checked); MetricsError
    names a missing or malformed file."""
    numbers = _read_object(metrics_path(root, name))
    run = _read_object(run_path(root, name))
    details = run.pop("details", {})
    if not isinstance(details, dict):
        raise MetricsError(f"{run_path(root, name)}: details must be an object, got {details!r}")
    clash = sorted(set(numbers) & (set(details) | set(run)))
    if clash:
        raise MetricsError(f"{run_path(root, name)}: {', '.join(clash)} also in {METRICS_FILE}")
    return {**numbers, **details, **run}


def _read_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MetricsError(f"{path}: missing")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MetricsError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise MetricsError(f"{path}: must hold a JSON object, got {type(raw).__name__}")
    return raw


# ---------------------------------------------------------------- curves on disk


def append_curve(path: Path, key: str, step: int, value: float) -> None:
    """One row of a curve TSV (DVCLive's plot layout: columns step and <key>), the header
    first when the file is new. Written by hand: DVCLive, run outside `dvc repro`, rewrites the
    project's dvc.yaml, and in a fresh `git init` tree runs `dvc init` and fails (docs/design.md,
    "What the code works around")."""
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write(f"step\t{key}\n")
        f.write(f"{step}\t{value!r}\n")


def read_curve(path: Path, key: str, epochs: int) -> list[float]:
    """A curve TSV's values for epochs 1..epochs, checked; MetricsError names the file."""
    if not path.is_file():
        raise MetricsError(f"{path}: missing")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MetricsError(f"{path}: unreadable ({e})") from e
    if not lines or lines[0].split("\t") != ["step", key]:
        raise MetricsError(
            f"{path}: header must be 'step<TAB>{key}', got {lines[0] if lines else ''!r}"
        )
    values = []
    for number_, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        try:
            step, value = int(cells[0]), float(cells[1])
        except (ValueError, IndexError):
            cells = []
        if len(cells) != 2:
            raise MetricsError(f"{path}: line {number_} is not '<step><TAB><number>': {line!r}")
        if step != len(values) + 1:
            raise MetricsError(f"{path}: line {number_}: step {step}, expected {len(values) + 1}")
        problem = CURVES[key].problem(f"line {number_}: {key}", value)
        if problem:
            raise MetricsError(f"{path}: {problem}")
        values.append(value)
    if len(values) != epochs:
        raise MetricsError(f"{path}: {len(values)} rows but metrics.json says {epochs} epochs")
    return values


def curve_table(key: str, curves: dict[str, list[float]]) -> str:
    """One curve of every backend as one TSV (columns step, backend, <key>; backends in the
    given order): what dvc.yaml's plots draw, one line per backend."""
    rows = [
        f"{step}\t{name}\t{value!r}"
        for name, values in curves.items()
        for step, value in enumerate(values, start=1)
    ]
    return "\n".join([f"step\tbackend\t{key}", *rows]) + "\n"
