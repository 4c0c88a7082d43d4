"""How cost grows with work: results of a batch-size sweep run through DVC's experiment queue.

The sweep itself is plain DVC (docs/sweep.md):

    dvc exp run --queue -S train.batch_size=128     # one queued experiment per batch size
    dvc queue start --jobs 1                        # one at a time: timings need the whole CPU

This module reads what `dvc exp show --json` reports for every experiment (or, for runs made
without DVC, metrics roots given by hand), keeps each backend's steady s/epoch and val_acc
(metrics/headline/<backend>.json, its estimate over rounds; older experiments: its own
metrics.json) with the experiment's batch size and epochs, and plots steady epoch time and
val_acc against batch size, one line per backend, in one PNG; the points go to a JSON file
beside it.
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mnistbench import colors, layout, metrics, outputs
from mnistbench.errors import UserError

# needed from each metrics.json: names of the metrics contract (mnistbench.metrics.NUMBERS)
KEYS = ("batch_size", "epoch_time_median_s", "val_acc", "epochs")


class SweepError(UserError, RuntimeError):
    """No results to plot, or `dvc exp show` failed; the message says what to run."""


@dataclass(frozen=True)
class Point:
    backend: str
    batch_size: int
    epoch_time_s: float  # steady epoch (median of epochs 2..N), train + eval
    val_acc: float  # after the last epoch
    epochs: int
    source: str  # experiment name, or the commit / "workspace" it came from


def exp_show(all_commits: bool = False, cwd: str | Path = ".") -> list[dict]:
    """`dvc exp show --json` of the repository at `cwd`, parsed."""
    args = [
        sys.executable,
        "-m",
        "dvc",
        "exp",
        "show",
        "--json",  # the dvc beside mnistbench
        *(["--all-commits"] if all_commits else []),
    ]
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as e:
        raise SweepError(f"`dvc exp show --json` failed: {e.stderr.strip()[-500:]}") from e
    return json.loads(done.stdout)


def _records(entries: list[dict], experiment: bool = False) -> Iterator[tuple[str, dict]]:
    """(name, data) of each experiment in `dvc exp show --json`. The workspace and baseline
    commits are left out: they hold the pipeline's committed results, usually run with other
    epochs or limits than the sweep (a 10-epoch run would sit beside 3-epoch points)."""
    for entry in entries or []:
        if experiment and entry.get("data"):
            rev = entry.get("rev") or "?"
            yield entry.get("name") or (rev[:7] if len(rev) == 40 else rev), entry["data"]
        for exp in entry.get("experiments") or []:
            yield from _records(exp.get("revs") or [], experiment=True)


def collect(entries: list[dict]) -> list[Point]:
    """Every backend result of the experiments in `dvc exp show --json` output, without
    duplicates (an experiment may repeat another's unchanged metrics)."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        got = "a JSON object" if isinstance(entries, dict) else "something else"
        raise SweepError(
            f"not `dvc exp show --json` output: expected a JSON list of objects "
            f"(one per commit), got {got}"
        )
    points, seen = [], set()
    for source, data in _records(entries):
        ran_with = _train_params(data)
        for path, shown in _per_backend(data, ran_with):
            backend = layout.backend_of(path)
            values = (shown or {}).get("data") or {}
            if backend is None or _problems(values):
                continue  # another metrics file (roofline, summary), or missing here
            if any(values[k] != v for k, v in ran_with.items()):
                continue  # a stage the experiment did not rerun: the baseline's stale result
            key = (backend, *(values[k] for k in KEYS))
            if key in seen:
                continue
            seen.add(key)
            points.append(_point(backend, values, source))
    return sorted(points, key=lambda p: (p.backend, p.batch_size, p.source))


HEADLINE = f"{layout.METRICS_ROOT}/{layout.HEADLINE_DIR}/"  # <backend>.json under it


def _per_backend(data: dict, ran_with: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    """(metrics/train/<backend>/metrics.json, {"data": values}) per backend of one experiment.
    DVC's metrics are metrics/headline/<backend>.json (a backend's estimate over rounds, with
    the batch size and epochs it was made with); experiments made before they existed show
    each backend's own metrics.json, passed on as they are."""
    for path, shown in (data.get("metrics") or {}).items():
        if not path.startswith(HEADLINE):
            yield path, shown
            continue
        if set(ran_with) != {"batch_size", "epochs"}:
            continue  # no params shown: nothing to place the points at
        made_with = (shown or {}).get("data") or {}
        if any(made_with.get(k) != v for k, v in ran_with.items()):
            continue  # compare did not rerun in this experiment: the baseline's headline
        backend = PurePosixPath(path).stem
        values = {
            **ran_with,
            "epoch_time_median_s": made_with.get("epoch_s"),
            "val_acc": made_with.get("val_acc"),
        }
        yield str(layout.metrics_path(layout.METRICS_ROOT, backend)), {"data": values}


def collect_roots(roots: list[str | Path]) -> list[Point]:
    """Every <root>/train/<backend>/metrics.json (mnistbench.layout) under the given metrics
    roots: runs made without DVC (e.g. scripts/gpu/run-cuda.sh once per batch size on a
    machine with no DVC). A root with no results, or a malformed metrics.json, is an error
    naming it."""
    points = []
    for root in map(Path, roots):
        found = sorted(layout.train_dir(root).glob(f"*/{layout.METRICS_FILE}"))
        if not found:
            raise SweepError(f"{root}: no {layout.TRAIN_DIR}/<backend>/{layout.METRICS_FILE} here")
        for path in found:
            try:
                values = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SweepError(f"{path}: not readable JSON ({e})") from e
            if _problems(values):
                raise SweepError(f"{path}: {'; '.join(_problems(values))}")
            points.append(_point(path.parent.name, values, str(root)))
    return sorted(points, key=lambda p: (p.backend, p.batch_size, p.source))


def _problems(values: dict[str, Any]) -> list[str]:
    """What keeps one metrics.json's values from being a point: KEYS missing or invalid."""
    missing = [k for k in KEYS if k not in values]
    if missing:
        return [f"lacks {', '.join(missing)}"]
    return metrics.value_problems(values, {k: metrics.NUMBERS[k] for k in KEYS})


def _point(backend: str, values: dict[str, Any], source: str) -> Point:
    """A Point from one metrics.json's values (the KEYS present)."""
    return Point(
        backend,
        int(values["batch_size"]),
        float(values["epoch_time_median_s"]),
        float(values["val_acc"]),
        int(values["epochs"]),
        source,
    )


def _train_params(data: dict) -> dict[str, Any]:
    """The experiment's train.batch_size and train.epochs, from its params.yaml (if shown)."""
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    train = params.get("train") or {}
    return {k: train[k] for k in ("batch_size", "epochs") if k in train}


def plot(points: list[Point], out: str | Path) -> Path:
    """Steady epoch time and val_acc vs batch size per backend (median where a batch size has
    several results); the points themselves go to <out>.json. Both written atomically."""
    if not points:
        raise SweepError(
            "no backend results in `dvc exp show`: queue the sweep first "
            "(`dvc exp run --queue -S train.batch_size=...`, `dvc queue start`)"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in sorted({p.backend for p in points}):
        sizes = sorted({p.batch_size for p in points if p.backend == backend})
        mine = [[p for p in points if p.backend == backend and p.batch_size == b] for b in sizes]
        times = [statistics.median(p.epoch_time_s for p in group) for group in mine]
        accs = [statistics.median(p.val_acc for p in group) for group in mine]
        color = colors.color(backend)
        ax_time.plot(sizes, times, marker="o", label=backend, color=color)
        ax_acc.plot(sizes, accs, marker="o", label=backend, color=color)
    epochs = sorted({p.epochs for p in points})
    all_sizes = sorted({p.batch_size for p in points})
    for ax, label in ((ax_time, "steady epoch time (s, train + eval)"), (ax_acc, "val_acc")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_sizes, [str(b) for b in all_sizes])  # the sizes run, not powers of 2
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_time.set_yscale("log")
    ax_acc.legend(fontsize=8)
    fig.suptitle(
        f"Batch-size sweep ({', '.join(map(str, epochs))} epochs; val_acc after the last epoch)"
    )
    fig.tight_layout()

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    table = json.dumps([asdict(p) for p in points], indent=2) + "\n"
    out = Path(out)
    outputs.write_files(
        out.parent, {out.name: png.getvalue(), out.with_suffix(".json").name: table.encode()}
    )
    return out
