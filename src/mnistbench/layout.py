"""Where every output lives, relative to a metrics root (`metrics/` in the pipeline; every
command takes another). One constant per name, one function per path: nothing else spells
them.

    <root>/machine.json                          the machine stage's fingerprint
    <root>/train/<backend>/metrics.json          one run's main numbers (round 1)
    <root>/train/<backend>/run.json              the rest: details, verdict, env, params
    <root>/train/<backend>/plots/metrics/<k>.tsv its per-epoch curves (DVCLive's layout)
    <root>/repeats/<round>/train/<backend>/      the repeats stage's runs, a root each
    <root>/roofline/metrics.json                 the roofline stage's
    <root>/repeats/rounds.json                   the rounds: order, stop, precision
    <root>/summary.json, summary.md, *.png       compare's
    <root>/headline/<backend>.json               compare's: estimates and intervals (DVC metrics)
    <root>/curves/<k>.tsv                        compare's: each curve of every backend
    <root>/machines.md, machines.png             the report's

Backends live under train/ so that compare can depend on that one folder (DVC connects it
to every train@ stage's outputs inside it) instead of a list of backends.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

METRICS_ROOT = "metrics"  # the pipeline's metrics root (every command takes another)
TRAIN_DIR = "train"  # <root>/train/<backend>/: one folder per backend
METRICS_FILE = "metrics.json"  # in it: COMPARED, one run's main numbers
RUN_FILE = "run.json"  # beside it: DETAILS, the verdict, env and params (a DVC out, not a metric)
CURVES_DIR = ("plots", "metrics")  # DVCLive's layout: <backend>/plots/metrics/<key>.tsv
REPEATS_DIR = "repeats"  # <root>/repeats/<round>/: a metrics root per extra round
ROOFLINE_DIR = "roofline"  # <root>/roofline/metrics.json: the roofline stage's
SUMMARY_FILE = "summary.json"  # <root>/summary.json: compare's numbers, the report's input
SUMMARY_MD = "summary.md"  # compare's report for people
# compare's: one file per backend, estimate and interval (DVC's metrics: the folder is one
# metric, so `dvc metrics show` prints a row per backend, not every number in one wide row)
HEADLINE_DIR = "headline"
ROUNDS_FILE = "rounds.json"  # <root>/repeats/rounds.json: the rounds, their order, the stop
COMPARE_PLOTS = ("epoch_time.png", "curves.png")  # compare's charts
ALL_CURVES_DIR = "curves"  # <root>/curves/<key>.tsv: compare's, every backend's curve
SUMMARY_FILES = (
    SUMMARY_FILE,
    HEADLINE_DIR,
    SUMMARY_MD,
    *COMPARE_PLOTS,
    ALL_CURVES_DIR,
)  # compare writes these
MACHINE_FILE = "machine.json"  # <root>/machine.json: the machine stage's fingerprint
MACHINES_MD, MACHINES_PNG = "machines.md", "machines.png"  # the report's
# This checkout's run identity, relative to the repository root (the working directory of every
# stage): made once by the machine stage, never committed (.gitignore) and never copied into an
# image (.dockerignore), so a fresh clone or workspace has none and measures (mnistbench.machine).
CHECKOUT_FILE = ".mnistbench/checkout"


def headline_path(root: str | Path, name: str) -> Path:
    """<root>/headline/<backend>.json: one backend's estimates and intervals (compare's)."""
    return Path(root) / HEADLINE_DIR / f"{name}.json"


def train_dir(root: str | Path) -> Path:
    """<root>/train: every backend's folder (compare's one dependency on all of them)."""
    return Path(root) / TRAIN_DIR


def backend_dir(root: str | Path, name: str) -> Path:
    return train_dir(root) / name


def metrics_path(root: str | Path, name: str) -> Path:
    return backend_dir(root, name) / METRICS_FILE


def run_path(root: str | Path, name: str) -> Path:
    return backend_dir(root, name) / RUN_FILE


def curves_dir(root: str | Path, name: str) -> Path:
    return backend_dir(root, name).joinpath(*CURVES_DIR)


def curve_path(root: str | Path, name: str, key: str) -> Path:
    return curves_dir(root, name) / f"{key}.tsv"


def all_curves_path(root: str | Path, key: str) -> Path:
    """<root>/curves/<key>.tsv: compare's long table of curve `key` for every backend."""
    return Path(root) / ALL_CURVES_DIR / f"{key}.tsv"


def roofline_path(root: str | Path) -> Path:
    return Path(root) / ROOFLINE_DIR / METRICS_FILE


def repeats_root(root: str | Path) -> Path:
    return Path(root) / REPEATS_DIR


def repeat_roots(root: str | Path, name: str) -> list[Path]:
    """The metrics roots holding repeats of backend `name` (<root>/repeats/<round>/), in round
    order; the train@ stage's own run, round 1, is <root> itself."""
    top = repeats_root(root)
    found = [d for d in top.iterdir() if d.name.isdigit()] if top.is_dir() else []
    rounds = sorted(found, key=lambda d: int(d.name))
    return [d for d in rounds if backend_dir(d, name).is_dir()]


def backend_of(path: str) -> str | None:
    """The backend whose metrics.json `path` is, relative to the repository as DVC names it
    (metrics/train/<backend>/metrics.json); None for any other file."""
    parts = PurePosixPath(path).parts
    if len(parts) == 4 and parts[:2] == (METRICS_ROOT, TRAIN_DIR) and parts[3] == METRICS_FILE:
        return parts[2]
    return None
