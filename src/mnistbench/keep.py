"""`mnistbench keep`: the reference store, results/<machine>/: this machine's run copied in
as a reference machine, one column of every cross-machine report (mnistbench.report reads it).

The copy: the files at the top of the metrics folder (summary.json and .md, the PNGs,
machine.json) at the top of results/<machine>/, each stage's folder (metrics/train/<backend>/,
repeats/, roofline/) under results/<machine>/metrics/, and the params.yaml and dvc.lock it ran
with; the cross-machine report (machines.md, machines.png) is redrawn, never kept. The machine's
name defaults to its fingerprint's and must be one plain folder name. It never overwrites an
existing folder, and refuses a disturbed run (a backend or the roofline whose `disturbed` flag
is set in summary.json) unless `force`. The copy is made in a hidden staging folder, then
renamed into place whole. It copies files and folders only: a symbolic link or a special file
(FIFO, device, socket) in the metrics folder is refused, never followed (a link could carry any
file of the machine, an ssh key, into results/); summary.json and machine.json are read and
checked as report reads them (report.read_json, check_summary, check_machine), so a run
report would refuse is not kept. Errors are report.ReportError.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from mnistbench import errors, outputs
from mnistbench.compare.summary import disturbed_headline
from mnistbench.layout import MACHINE_FILE, METRICS_ROOT, SUMMARY_FILE
from mnistbench.report import OUTPUTS, ReportError, check_machine, check_summary, read_json


def disturbed_parts(summary: dict) -> list[str]:
    """The backends (and the roofline) whose number a summary.json says is disturbed; [] for
    a clean run. A disturbed run among a backend's clean ones is left out of its headline,
    so it does not count here."""
    rows = summary.get("backends") if isinstance(summary.get("backends"), dict) else {}
    names = [n for n, row in rows.items() if isinstance(row, dict) and disturbed_headline(row)]
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
    if name is not None:  # given: checked as given, never replaced by the default
        _check_name(name, results_dir)
    _check_tree(metrics_dir, extra)
    for needed in (SUMMARY_FILE, MACHINE_FILE):
        if not (metrics_dir / needed).is_file():
            raise ReportError(
                f"{metrics_dir / needed}: missing; run the pipeline first "
                "(`make repro` or `dvc repro`)"
            )
    summary, machine = read_json(metrics_dir / SUMMARY_FILE), read_json(metrics_dir / MACHINE_FILE)
    check_summary(summary, metrics_dir / SUMMARY_FILE)  # what report would refuse to draw is
    check_machine(machine, metrics_dir / MACHINE_FILE)  # never kept for every later report
    disturbed = disturbed_parts(summary)
    if disturbed and not force:
        raise ReportError(
            f"{metrics_dir}: a disturbed run ({', '.join(disturbed)}): other processes took "
            "CPU time while it was timed (summary.md says when); rerun on a quiet machine, "
            "or keep it anyway with --force (every report then marks it disturbed)"
        )
    if name is None:
        name = machine.get("name")
        _check_name(name, results_dir)
    dest = Path(results_dir) / name
    if dest.exists():
        raise ReportError(f"{dest} exists: pick another name (--name) or remove it first")
    try:
        with outputs.replace_folder(dest) as staging:
            _copy(metrics_dir, extra, staging)
    except OSError as e:
        raise _copy_failed(e, Path(results_dir)) from e
    return dest


def _copy(metrics_dir: Path, extra: tuple[str, ...], staging: Path) -> None:
    """The layout keep() describes, file by file (copytree would hide each file's errno in
    one shutil.Error); a link made since _check_tree is copied as a link, never followed."""
    for item in sorted(metrics_dir.iterdir()):
        if item.name in OUTPUTS:  # the cross-machine report is redrawn, not kept
            continue
        if not item.is_dir():
            shutil.copy2(item, staging / item.name, follow_symlinks=False)
            continue
        for top, _, files in os.walk(item):
            folder = staging / METRICS_ROOT / Path(top).relative_to(metrics_dir)
            folder.mkdir(parents=True, exist_ok=True)
            for name in files:
                shutil.copy2(Path(top) / name, folder / name, follow_symlinks=False)
    for file in extra:
        if Path(file).exists():  # a regular file: _check_tree refused anything else
            shutil.copy2(file, staging / Path(file).name, follow_symlinks=False)


def _copy_failed(e: OSError, results_dir: Path) -> errors.UserError:
    """One line for a copy that failed, naming where keep writes: a full disk is results/'s,
    not metrics/' (which an errno's filename may name)."""
    where_full = errors.from_os_error(OSError(e.errno, e.strerror), results_dir)
    return where_full or ReportError(
        f"copying {e.filename} into {results_dir} failed ({e.strerror}); nothing was kept"
    )


MACHINE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # one plain path segment, not hidden
STAGING_SUFFIX = ".partial-old"  # outputs.replace_folder's longest sibling: .<name>.partial-old


def _check_name(name: object, results_dir: str | Path) -> None:
    """A machine's name is one folder directly under results/ (report lists only those): letters,
    digits, '.', '_', '-', not starting with '.' (no '..', no hidden folder, no '/'), short
    enough that its staging folder's name fits the file system too."""
    if name == "":
        raise ReportError(
            "machine name '' is not one plain folder name: it is empty (e.g. --name my-laptop)"
        )
    if not isinstance(name, str) or not MACHINE_NAME.fullmatch(name):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise ReportError(
            f"machine name {shown} is not one plain folder name: use letters, digits, '.', "
            "'_' and '-', not starting with '.' (e.g. --name my-laptop)"
        )
    longest = _name_max(Path(results_dir)) - len(STAGING_SUFFIX) - 1
    if len(name) > longest:
        raise ReportError(
            f"machine name of {len(name)} characters: at most {longest} fit a folder name "
            f"under {results_dir} (with its staging folder's); pick a shorter --name"
        )


def _name_max(results_dir: Path) -> int:
    """The longest file name the results folder's file system takes (255 on most)."""
    folder = results_dir
    while not folder.exists() and folder != folder.parent:  # not made yet: its disk's
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _check_tree(metrics_dir: Path, extra: tuple[str, ...]) -> None:
    """Everything keep would copy is a regular file or a folder, none a symbolic link: a link is
    refused, not followed, and a FIFO would hang the copy."""
    paths = [Path(f) for f in extra if os.path.lexists(f)]
    if metrics_dir.is_dir():  # the folder itself may be a link (the user's own choice)
        for top, dirs, files in os.walk(metrics_dir):  # follows no link below it
            paths += [Path(top) / n for n in (*dirs, *files)]
    for path in paths:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise ReportError(
                f"{path}: a symbolic link (to {os.readlink(path)}): keep copies files, never "
                "what a link points to; replace it with the file itself, or remove it"
            )
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ReportError(f"{path}: {errors.kind(path)}, not a file: remove it, then keep")
