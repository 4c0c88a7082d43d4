"""The commands that read results and draw or keep them: compare, report, keep, gather,
sweep-plot. No timed stage depends on this module."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mnistbench import layout, locks
from mnistbench.cli.common import PARAMS_HELP, ROOT, known_errors, load_params


@click.command()
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@click.option(
    "--metrics",
    "metrics_root",
    default=ROOT,
    show_default=True,
    help="Metrics root holding train/<backend>/ (and repeats/<round>/train/<backend>/) for "
    "every backend in params.",
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
@known_errors
def compare(params: str, metrics_root: str, out: str | None, roofline: str | None) -> None:
    """Summarise every backend's metrics beside the article's table.

    Writes summary.md (with each backend's verdict: quiet, unsteady, unstable or disturbed),
    summary.json (its numbers, for `mnistbench report`), epoch_time.png and curves.png.
    Every backend's metrics.json and curves are checked first: one missing or malformed
    file is an error naming it, and nothing is written.
    """
    from mnistbench import compare as compare_mod
    from mnistbench.compare.fmt import seconds

    cfg = load_params(params)
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


@click.command()
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
@known_errors
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


@click.command()
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
@known_errors
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


@click.command()
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
@click.option(
    "--no-slurm",
    is_flag=True,
    help="Don't ask sacct and squeue why tasks ended (away from the cluster): only their "
    "Slurm output is read.",
)
@known_errors
def gather(
    runs_dir: str, results_dir: str, no_references: bool, out: str | None, no_slurm: bool
) -> None:
    """Gather a cluster's runs (scripts/slurm/, docs/cluster.md) into one report.

    RUNS_DIR holds one folder per node's run. One column per machine kind (same fingerprint
    and run settings); several nodes of a kind give the median and their min-max. Failed
    runs are listed with their node and the last line of their log, and submitted tasks that
    left no run with Slurm's output; why a task ended (time limit, scancel, a lost node,
    still queued) is asked of sacct, else squeue. When no run succeeded, the report is still
    written (it says why each failed), then gather fails with one `error: no run succeeded:
    ...` line (exit status 1).
    """
    from pathlib import Path

    from mnistbench import gather as gather_mod

    g = gather_mod.write(runs_dir, None if no_references else results_dir, out, not no_slurm)
    click.echo(
        f"wrote machines.md, machines.png to {out or runs_dir}/: {len(g.kinds)} machine kinds "
        f"from {len(g.runs)} runs ({len(g.failed)} failed), {len(g.missing)} submitted tasks "
        "without a run"
    )
    failure = gather_mod.none_succeeded(g, Path(out or runs_dir))
    if failure:
        raise gather_mod.GatherError(failure)


@click.command("sweep-plot")
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
    help="Read <ROOT>/train/<backend>/metrics.json instead of DVC experiments (runs made "
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

    Run the sweep first, through DVC's queue (docs/sweep.md):
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


@click.command("diff")
@click.argument("a", default="HEAD")
@click.argument("b", default="workspace")
@known_errors
def diff(a: str, b: str) -> None:
    """Did B make a backend faster than A, beyond the noise? Per backend, B's s/epoch over A's
    with its 95% confidence interval over both sides' rounds, and a verdict: faster, slower or
    no significant difference.

    A and B: git revisions (a branch, a tag, HEAD; their metrics/summary.json), `workspace`
    (metrics/ on disk), or result folders (results/<machine>). Default: HEAD against the
    workspace, i.e. what the last `make repro` changed. `dvc metrics diff` shows the same
    numbers without saying whether a difference is real.
    """
    from mnistbench import diff as diff_mod

    rows = diff_mod.compare_sides(diff_mod.read_side(a), diff_mod.read_side(b))
    click.echo(diff_mod.render(a, b, rows))
