"""mnistbench's command line: one thin command per DVC stage, usable without DVC.

Only this file defines flags; each command loads params.yaml into a typed Config, then calls
one library function. Known failures (bad params, no mirror, missing data or framework) end
with a one-paragraph message and exit status 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import click

import mnistbench
from mnistbench import config as config_mod
from mnistbench import errors, layout, locks, progress
from mnistbench.errors import UserError

ROOT = layout.METRICS_ROOT  # every command's default metrics root: the pipeline's
PARAMS_HELP = "Parameters file (YAML) with sections data, model, train and backends."


def _known_errors(fn):
    """Turn the project's expected errors (errors.UserError) into one line and exit code 1;
    so too a full or read-only filesystem that no command named first (errors.from_os_error)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            progress.STATUS.done()  # a terminal's status line stays, the error goes below it
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except OSError as e:
            better = errors.from_os_error(e, e.filename or ".")
            if better is None:
                raise
            click.echo(f"error: {better}", err=True)
            sys.exit(1)

    return wrapper


def _print_version(ctx: click.Context) -> None:
    click.echo(f"mnistbench {mnistbench.__version__}")  # read only when asked: no start-up cost
    ctx.exit()


def _load(params: str) -> config_mod.Config:
    return config_mod.load(params)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _, on: on and _print_version(ctx),
    help="Print mnistbench's version and exit.",
)
def main(verbose: bool) -> None:
    """PyTorch vs JAX on an MNIST MLP, and what the data loader costs.

    Each stage of dvc.yaml is one command: download -> build-tfds -> machine -> train
    (one per backend) -> repeat -> roofline -> compare -> report. `dvc repro` runs them in
    order, or run any of them by hand. Settings come from params.yaml; numbers go to
    metrics/, each with how quiet the machine was while it was timed.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[progress.LogHandler()],
    )
    # mnistbench's own INFO lines; the frameworks' (JAX's "Unable to initialize backend
    # 'tpu'", TFDS's dataset notes) only with --verbose.
    logging.getLogger("mnistbench").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not sys.stderr.isatty():
        # No progress bars in logs: tqdm (TFDS's, and any other) reads TQDM_* defaults when
        # first imported, which no command has done yet; its bars' \r make a log unreadable.
        os.environ.setdefault("TQDM_DISABLE", "1")
    if not verbose:
        # torch.from_numpy on TFDS's read-only arrays (the article's torch-tfds loader, kept
        # as written): a warning about writing to them, which the loader never does
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
    label = progress.stage_label()
    if label:
        logging.getLogger("mnistbench").info("%s started", label)


@main.command()
def env() -> None:
    """Print, as JSON, the environment that metrics are recorded with."""
    from mnistbench import envinfo

    click.echo(json.dumps(envinfo.collect(), indent=2))


@main.command()
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@_known_errors
def download(params: str) -> None:
    """Fetch the four MNIST files into data.raw_dir, verified by SHA-256.

    Mirrors are tried in order: those in $MNIST_MIRRORS (https://, http://, file:// or a
    folder; separated by spaces or commas), then data.mirrors from the params file, whose
    last entry is the verified copy kept in this repository (data/mirror/).
    """
    from mnistbench import download as dl

    cfg = _load(params)
    with locks.exclusive(cfg.data.raw_dir, "download"):
        served = dl.download_all(cfg.data)
    for name, mirror in served.items():
        click.echo(f"{name}: {mirror}")


@main.command("build-tfds")
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@_known_errors
def build_tfds(params: str) -> None:
    """Build TFDS's `mnist` 3.0.1 (TFRecord + ArrayRecord) from data.raw_dir, offline."""
    from mnistbench import frameworks, tfds_build

    frameworks.without_torch()
    cfg = _load(params)
    with locks.exclusive(cfg.data.tfds_dir, "build-tfds"):
        click.echo(f"built: {tfds_build.build(cfg.data)}")


@main.command()
@click.argument("backend")
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@click.option(
    "--out",
    default=ROOT,
    show_default=True,
    help="Metrics root; results go to <out>/<backend>/.",
)
@_known_errors
def train(backend: str, params: str, out: str) -> None:
    """Train and time one BACKEND (e.g. jax-tfds); write metrics/<BACKEND>/.

    The harness times each epoch (train pass + validation pass) with the device
    synchronised; epoch 1 (compile, warm-up) is reported apart from the steady median.
    Known backends: see `mnistbench backends`.
    """
    from mnistbench import backends as backends_mod
    from mnistbench import train as train_mod

    cfg = _load(params)
    backends_mod.load(backend)  # a mistyped name fails before any lock file is made
    with locks.exclusive(layout.backend_dir(out, backend), f"train {backend}"):
        summary = train_mod.train(cfg, backend, out)
    click.echo(
        f"{backend}: val_acc {summary['val_acc']:.4f}, steady epoch "
        f"{summary['epoch_time_median_s']:.2f} s, first epoch {summary['first_epoch_s']:.2f} s"
    )


@main.command()
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@click.option(
    "--out",
    default=ROOT,
    show_default=True,
    help="Metrics root; repeats go to <out>/repeats/<round>/<backend>/.",
)
@_known_errors
def repeat(params: str, out: str) -> None:
    """Time every backend again, bench.repeats - 1 more rounds, each run a fresh process.

    Rounds go through every backend in params' order (interleaved, so a slow spell of the
    machine hits them all); the train stage's own run is round 1. compare then shows each
    backend's spread across runs beside its spread across epochs, and calls a backend whose
    runs disagree unstable. bench.repeats: 1 makes this a no-op.
    """
    from mnistbench import repeat as repeat_mod

    cfg = _load(params)
    with locks.exclusive(Path(out) / "repeats", "repeat"):
        root = repeat_mod.run(cfg, params, out)
    click.echo(
        f"repeats: {cfg.bench.repeats - 1} more rounds of {len(cfg.backends)} backends in {root}/"
    )


@main.command()
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@click.option(
    "--metrics",
    "metrics_root",
    default=ROOT,
    show_default=True,
    help="Metrics root holding <backend>/metrics.json for every backend in params.",
)
@click.option(
    "--out",
    default=None,
    help="Where summary.json, summary.md and the PNGs go [default: the metrics root].",
)
@click.option(
    "--roofline",
    default=None,
    help="The roofline stage's metrics.json: adds roofline_epoch_s and efficiency per backend.",
)
@_known_errors
def compare(params: str, metrics_root: str, out: str | None, roofline: str | None) -> None:
    """Summarise every backend's metrics beside the article's table.

    Writes summary.md (with each backend's verdict: quiet, unsteady, unstable or disturbed),
    summary.json (its numbers, for `mnistbench report`), epoch_time.png and curves.png.
    Every backend's metrics.json and curves are checked first: one missing or malformed
    file is an error naming it, and nothing is written.
    """
    from mnistbench import compare as compare_mod
    from mnistbench.compare.fmt import seconds

    cfg = _load(params)
    with locks.exclusive(Path(out or metrics_root) / layout.SUMMARY_FILE, "compare"):
        summary = compare_mod.compare(cfg, metrics_root, out, roofline)
    for name, row in summary["backends"].items():
        speedup = row[compare_mod.SPEEDUP_KEY]
        ratio = f", {speedup:.2f}x {compare_mod.BASELINE}" if speedup is not None else ""
        runs = f" over {row['runs']} runs" if row["runs"] > 1 else ""
        click.echo(
            f"{name}: steady epoch {seconds(row['epoch_time_s'])} s{runs}{ratio}, "
            f"{compare_mod.verdict_word(row)}"
        )
    click.echo(f"wrote {', '.join(compare_mod.OUTPUTS)} to {out or metrics_root}/")


@main.command()
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@click.option(
    "--out",
    default=ROOT,
    show_default=True,
    help="Metrics root; results go to <out>/roofline/metrics.json.",
)
@_known_errors
def roofline(params: str, out: str) -> None:
    """Measure this machine's float32 matmul peak; write the epoch's roofline time.

    Counts the model's matmul FLOPs per epoch from its shapes and times float32 products
    (the model's shapes and a large square, torch and JAX, train.threads and train.device as
    the backends use them). roofline_epoch_s = GFLOP per epoch / peak GFLOP/s: a lower bound
    on any backend's epoch time.
    """
    from mnistbench import roofline as roofline_mod

    cfg = _load(params)
    with locks.exclusive(Path(out) / layout.ROOFLINE_DIR, "roofline"):
        result = roofline_mod.run(cfg, out)
    click.echo(
        f"roofline: {result['gflop_per_epoch']:.2f} GFLOP per epoch at "
        f"{result['matmul_gflops']:.1f} GFLOP/s ({result['peak_source']} on "
        f"{result['device']}"
        + (f", {result['threads']} threads" if result["threads"] else "")
        + f") = {result['roofline_epoch_s']:.3g} s per epoch"
    )


@main.command("machine")
@click.option(
    "--out",
    default=f"{ROOT}/{layout.MACHINE_FILE}",
    show_default=True,
    help="Where the fingerprint goes (JSON).",
)
@_known_errors
def machine(out: str) -> None:
    """Write this machine's fingerprint: what decides the timings (CPU and its flags, usable
    CPUs, memory, GPUs and driver, container image, Python and framework versions, thread
    settings). Every timed stage depends on it, so another machine reruns them all."""
    from mnistbench import machine as machine_mod

    record = machine_mod.write(out)
    click.echo(f"{out}: {record['name']} (fingerprint {record['id']})")


@main.command()
@click.option(
    "--results",
    "results_dir",
    default="results",
    show_default=True,
    help="Folder of reference machines: <results>/<machine>/summary.json and machine.json.",
)
@click.option(
    "--metrics",
    "metrics_dir",
    default=ROOT,
    show_default=True,
    help="This machine's run (summary.json, machine.json); its column is left out "
    "when it holds no summary.json.",
)
@click.option("--no-local", is_flag=True, help="Only the article and the reference machines.")
@click.option(
    "--out",
    default=None,
    help="Where machines.md and machines.png go [default: the metrics folder].",
)
@_known_errors
def report(results_dir: str, metrics_dir: str, no_local: bool, out: str | None) -> None:
    """Every machine side by side: steady s/epoch, speed-up over torch-dataloader and val_acc
    per backend, one column per machine (the article, each reference, this machine)."""
    from mnistbench import report as report_mod

    cols = report_mod.write(
        results_dir, None if no_local else metrics_dir, out if out is not None else metrics_dir
    )
    click.echo(
        f"wrote {', '.join(report_mod.OUTPUTS)} to {out or metrics_dir}/: "
        f"{', '.join(c.name for c in cols)}"
    )


@main.command()
@click.option(
    "--metrics", "metrics_dir", default=ROOT, show_default=True, help="This machine's run."
)
@click.option(
    "--results",
    "results_dir",
    default="results",
    show_default=True,
    help="Where reference machines live.",
)
@click.option(
    "--name",
    default=None,
    help="The folder's name under the results folder: letters, digits, '.', '_' and '-', "
    "not starting with '.' [default: the machine's name from its fingerprint, "
    "e.g. amd-epyc-2cpu].",
)
@click.option(
    "--force",
    is_flag=True,
    help="Keep a disturbed run too (other processes took CPU time while it was timed); every "
    "report then marks it disturbed.",
)
@_known_errors
def keep(metrics_dir: str, results_dir: str, name: str | None, force: bool) -> None:
    """Keep this machine's run as a reference: copy metrics/ (and the params.yaml and dvc.lock
    it ran with) into results/<name>/, where no later run writes. Commit that folder to add
    a column to every report. It never overwrites an existing folder, and refuses a disturbed
    run unless --force."""
    from mnistbench import keep as keep_mod

    dest = keep_mod.keep(metrics_dir, results_dir, name, force=force)
    click.echo(
        f"kept {metrics_dir}/ as {dest}/; `mnistbench report --no-local --out "
        f"{results_dir}` redraws the references' report"
    )


@main.command()
@click.argument("runs_dir")
@click.option(
    "--results",
    "results_dir",
    default="results",
    show_default=True,
    help="Reference machines shown beside the runs: <results>/<machine>/.",
)
@click.option("--no-references", is_flag=True, help="Only the article and the runs.")
@click.option("--out", default=None, help="Where machines.md and machines.png go [RUNS_DIR].")
@_known_errors
def gather(runs_dir: str, results_dir: str, no_references: bool, out: str | None) -> None:
    """Gather a cluster's runs (scripts/slurm/, docs/cluster.md) into one report.

    RUNS_DIR holds one folder per node's run. One column per machine kind (same fingerprint
    and run settings); several nodes of a kind give the median and their min-max. Failed
    runs are listed with their node and the last line of their log, and submitted tasks that
    left no run with Slurm's output.
    """
    from mnistbench import gather as gather_mod

    g = gather_mod.write(runs_dir, None if no_references else results_dir, out)
    click.echo(
        f"wrote machines.md, machines.png to {out or runs_dir}/: {len(g.kinds)} machine kinds "
        f"from {len(g.runs)} runs ({len(g.failed)} failed), {len(g.missing)} submitted tasks "
        "without a run"
    )


@main.command("sweep-plot")
@click.option(
    "--exp-show",
    "exp_show_file",
    default=None,
    help="Saved `dvc exp show --json` output to read instead of running dvc.",
)
@click.option("--all-commits", is_flag=True, help="Also experiments based on older commits.")
@click.option(
    "--metrics",
    "metrics_roots",
    multiple=True,
    metavar="ROOT",
    help="Read <ROOT>/<backend>/metrics.json instead of DVC experiments (runs made "
    "without DVC, one ROOT per batch size); repeat for each.",
)
@click.option(
    "--out",
    default=f"{ROOT}/sweep/batch_size.png",
    show_default=True,
    help="PNG to write; the points go beside it as .json.",
)
def sweep_plot(
    exp_show_file: str | None, all_commits: bool, metrics_roots: tuple[str, ...], out: str
) -> None:
    """Plot steady epoch time and val_acc vs batch size, per backend, from DVC experiments.

    Run the sweep first, through DVC's queue (README, "Batch-size sweep"):
    `dvc exp run --queue -S train.batch_size=128` per size, then `dvc queue start --jobs 1`.
    """
    from mnistbench import sweep

    try:
        if metrics_roots:
            points = sweep.collect_roots(list(metrics_roots))
        else:
            if exp_show_file is None:
                entries = sweep.exp_show(all_commits)
            else:
                with open(exp_show_file) as f:
                    entries = json.load(f)
            points = sweep.collect(entries)
        path = sweep.plot(points, out)
    except (sweep.SweepError, OSError, json.JSONDecodeError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    sizes = sorted({p.batch_size for p in points})
    click.echo(
        f"{path}: {len(points)} results, {len({p.backend for p in points})} backends, "
        f"batch sizes {', '.join(map(str, sizes))}"
    )


@main.command("params")
@click.argument("out")
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one parameter (the value parsed as YAML: 3, null, [128, 256]); repeat for each.",
)
@click.option(
    "--backends",
    "backend_names",
    default=None,
    metavar="'NAME ...'",
    help="Keep only these backends (space-separated); default: all of --params.",
)
@_known_errors
def params_file(
    out: str, params: str, overrides: tuple[str, ...], backend_names: str | None
) -> None:
    """Write OUT: --params with overrides, for runs made without DVC (scripts/gpu/run-cuda.sh).

    Backends follow their data directory when --set moves data.raw_dir or data.tfds_dir.
    OUT is validated as every command validates params before it is written, so a mistyped
    key fails here, not in the middle of a run.
    """
    from mnistbench import variants

    config_mod.load(params)  # the base must be valid itself: its own errors, named as its own
    derived = variants.derive(
        variants.read(params),
        list(overrides),
        backend_names.split() if backend_names is not None else None,
    )
    cfg = variants.write(out, derived)
    click.echo(
        f"{out}: {len(cfg.backends)} backends ({', '.join(cfg.backends)}), "
        f"{len(overrides)} overrides"
    )


@main.command("backends")
def list_backends() -> None:
    """List the known backends (one module each under mnistbench/backends/)."""
    from mnistbench import backends as backends_mod

    for name in backends_mod.names():
        click.echo(name)


if __name__ == "__main__":
    main()
