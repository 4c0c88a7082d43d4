"""`mnistbench keep`: the reference store, results/<machine>/: this machine's run copied in
as a reference machine, one column of every cross-machine report (mnistbench.report reads it).

The copy: the files at the top of the metrics folder (summary.json and .md, the PNGs,
machine.json) at the top of results/<machine>/, each stage's folder (metrics/train/<backend>/,
repeats/, roofline/) under results/<machine>/metrics/, and the params.yaml and dvc.lock it ran
with; the cross-machine report (machines.md, machines.png) is redrawn, never kept. The machine's
name defaults to its fingerprint's and must be one plain folder name. It never overwrites an
existing folder, and refuses a disturbed run (a backend or the roofline whose `disturbed` flag
is set in summary.json) unless `force`. The copy is made in a hidden staging folder, then
renamed into place whole. Errors are report.ReportError.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from mnistbench import outputs
from mnistbench.compare.load import read_json
from mnistbench.layout import MACHINE_FILE, METRICS_ROOT, SUMMARY_FILE
from mnistbench.report import OUTPUTS, ReportError


def _read_json(path: Path) -> dict:
    return read_json(path, ReportError)


def disturbed_parts(summary: dict) -> list[str]:
    """The backends (and the roofline) a summary.json calls disturbed; [] for a clean run."""
    rows = summary.get("backends") if isinstance(summary.get("backends"), dict) else {}
    names = [n for n, row in rows.items() if isinstance(row, dict) and row.get("disturbed")]
    roofline = summary.get("roofline")
    if isinstance(roofline, dict) and roofline.get("disturbed"):
        names.append("roofline")
    return names


def keep(
    metrics_dir: str | Path,
    results_dir: str | Path,
    name: str | None = None,
    extra: tuple[str, ...] = ("params.yaml", "dvc.lock"),
    force: bool = False,
) -> Path:
    """Copy this machine's run into results/<name>/ as a reference machine (default name: the
    fingerprint's); never over an existing folder, and never a disturbed run unless `force`
    (its verdict then shows in every report that reads it). Layout: the report files and
    machine.json at the top, each stage's metrics under metrics/, and the params and lock it
    ran with."""
    metrics_dir = Path(metrics_dir)
    for needed in (SUMMARY_FILE, MACHINE_FILE):
        if not (metrics_dir / needed).is_file():
            raise ReportError(
                f"{metrics_dir / needed}: missing; run the pipeline first "
                "(`make repro` or `dvc repro`)"
            )
    disturbed = disturbed_parts(_read_json(metrics_dir / SUMMARY_FILE))
    if disturbed and not force:
        raise ReportError(
            f"{metrics_dir}: a disturbed run ({', '.join(disturbed)}): other processes took "
            "CPU time while it was timed (summary.md says when); rerun on a quiet machine, "
            "or keep it anyway with --force (every report then marks it disturbed)"
        )
    name = name or _read_json(metrics_dir / MACHINE_FILE).get("name")
    _check_name(name)
    dest = Path(results_dir) / name
    if dest.exists():
        raise ReportError(f"{dest} exists: pick another name (--name) or remove it first")
    with outputs.replace_folder(dest) as staging:
        for item in sorted(metrics_dir.iterdir()):
            if item.name in OUTPUTS:  # the cross-machine report is redrawn, not kept
                continue
            target = staging / METRICS_ROOT / item.name if item.is_dir() else staging / item.name
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item, target)
        for file in extra:
            if Path(file).is_file():
                shutil.copy2(file, staging / Path(file).name)
    return dest


MACHINE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # one plain path segment, not hidden


def _check_name(name: object) -> None:
    """A machine's name is one folder directly under results/ (report lists only those): letters,
    digits, '.', '_', '-', not starting with '.' (no '..', no hidden folder, no '/')."""
    if not isinstance(name, str) or not MACHINE_NAME.fullmatch(name):
        raise ReportError(
            f"machine name {name!r} is not one plain folder name: use letters, digits, '.', "
            "'_' and '-', not starting with '.' (e.g. --name my-laptop)"
        )
