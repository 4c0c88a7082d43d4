"""Stage `compare`: this run's table beside the article's, ratios, where the time goes, plots.

Reads metrics/train/<backend>/ (metrics.json, run.json and its per-epoch curves) for every
backend in params' `backends`, and optionally the roofline stage's metrics.json. One module
per job, called in this order by `compare` below:

    load      read and validate every input; a missing or malformed one raises CompareError
              naming the file, and nothing is written
    summary   the numbers and verdicts over every run of each backend (summary.json keeps
              the numbers the cross-machine report reads)
    markdown  summary.md, the report
    plots     epoch_time.png (steady s/epoch with its spread, the article's ranges marked)
              and curves.png (per epoch)

and writes curves/<key>.tsv, each curve of every backend in one file (dvc.yaml's plots).
Every file is rendered in memory, then each is renamed into place from a temporary file.
Cheap to import (no matplotlib until a PNG is drawn): the CLI imports CompareError at start-up.
"""

from __future__ import annotations

import json
from pathlib import Path

from mnistbench import layout, metrics, outputs, records
from mnistbench.compare.load import (
    BackendRun,
    CompareError,
    load_machine,
    load_roofline,
    load_rounds,
    load_runs,
)
from mnistbench.compare.markdown import render_markdown, verdict_word, where_time_goes
from mnistbench.compare.plots import curves_png, epoch_time_png
from mnistbench.compare.summary import BASELINE, SPEEDUP_KEY, build_summary, compact, headline
from mnistbench.config import Config

OUTPUTS = layout.SUMMARY_FILES  # written to the metrics root, or --out

__all__ = [
    "BASELINE",
    "OUTPUTS",
    "SPEEDUP_KEY",
    "BackendRun",
    "CompareError",
    "build_summary",
    "compact",
    "compare",
    "curves_png",
    "epoch_time_png",
    "load_roofline",
    "load_runs",
    "render_markdown",
    "verdict_word",
    "where_time_goes",
]


def compare(
    cfg: Config,
    metrics_root: str | Path = layout.METRICS_ROOT,
    out_dir: str | Path | None = None,
    roofline_path: str | Path | None = None,
) -> dict:
    """Validate every input, render the four outputs in memory, then write them all.

    Returns the whole summary (summary.json holds its numbers)."""
    runs = load_runs(cfg, metrics_root)
    roofline = load_roofline(roofline_path) if roofline_path is not None else None
    summary = build_summary(runs, roofline)
    machine = load_machine(metrics_root)
    if machine is not None:
        summary["machine"] = machine
    rounds = load_rounds(metrics_root)
    summary["measured"] = {  # whose run this is: the checkout, when, how the rounds ended
        "checkout": machine["checkout"] if machine else "",
        "machine": machine["name"] if machine else "",
        "finished": rounds.get("finished", "") if rounds else "",
        "stop": (rounds or {}).get("stop"),
    }
    files = {
        layout.SUMMARY_FILE: (
            json.dumps(compact(summary), indent=2, allow_nan=False) + "\n"
        ).encode(),
        **{
            f"{layout.HEADLINE_DIR}/{name}.json": (
                json.dumps(row, indent=2, allow_nan=False) + "\n"
            ).encode()
            for name, row in headline(summary).items()
        },
        layout.SUMMARY_MD: render_markdown(summary).encode(),
        layout.COMPARE_PLOTS[0]: epoch_time_png(summary),
        layout.COMPARE_PLOTS[1]: curves_png(runs),
        **{
            f"{layout.ALL_CURVES_DIR}/{key}.tsv": records.curve_table(
                key, {name: run.curves[key] for name, run in runs.items()}
            ).encode()
            for key in metrics.CURVES
        },
    }
    out = Path(out_dir if out_dir is not None else metrics_root)
    outputs.write_files(out, files)
    for stale in (out / layout.HEADLINE_DIR).glob("*.json"):  # a backend no longer compared
        if stale.stem not in summary["backends"]:
            stale.unlink()
    return summary
