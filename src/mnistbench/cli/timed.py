"""The timed stages' commands: machine (the fingerprint they depend on), train, repeat,
roofline. Only these run what is timed: a train@ stage depends on this module, not on the
reports' commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mnistbench import layout, locks
from mnistbench.cli.common import PARAMS_HELP, ROOT, known_errors, load_params


@click.command("machine")
@click.option(
    "--out",
    default=f"{ROOT}/{layout.MACHINE_FILE}",
    show_default=True,
    help="Where the fingerprint goes (JSON).",
)
@known_errors
def machine(out: str) -> None:
    """Write this machine's fingerprint: what decides the timings (CPU and its flags, usable
    CPUs, memory, GPUs and driver, container image, Python and framework versions, thread
    settings). Every timed stage depends on it, so another machine reruns them all."""
    from mnistbench import machine as machine_mod

    record = machine_mod.write(out)
    click.echo(f"{out}: {record['name']} (fingerprint {record['id']})")


@click.command()
@click.argument("backend")
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@click.option(
    "--out",
    default=ROOT,
    show_default=True,
    help="Metrics root; results go to <out>/train/<backend>/.",
)
@known_errors
def train(backend: str, params: str, out: str) -> None:
    """Train and time one BACKEND (e.g. jax-tfds); write metrics/train/<BACKEND>/.

    The harness times each epoch (train pass + validation pass) with the device
    synchronised; epoch 1 (compile, warm-up) is reported apart from the steady median.
    Known backends: see `mnistbench backends`.
    """
    from mnistbench import backends as backends_mod
    from mnistbench import train as train_mod

    cfg = load_params(params)
    backends_mod.load(backend)  # a mistyped name fails before any lock file is made
    with locks.exclusive(layout.backend_dir(out, backend), f"train {backend}"):
        summary = train_mod.train(cfg, backend, out)
    click.echo(
        f"{backend}: val_acc {summary['val_acc']:.4f}, steady epoch "
        f"{summary['epoch_time_median_s']:.2f} s, first epoch {summary['first_epoch_s']:.2f} s"
    )


@click.command()
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@click.option(
    "--out",
    default=ROOT,
    show_default=True,
    help="Metrics root; repeats go to <out>/repeats/<round>/train/<backend>/.",
)
@known_errors
def repeat(params: str, out: str) -> None:
    """Run rounds 2.. of every backend, as many as the precision needs (round 1: the train
    stages' runs in <out>/train/).

    A round runs every backend once, each a fresh process, in an order drawn at random for
    that round from bench.seed. After each round from bench.rounds_min on, it stops once every
    speed-up over torch-dataloader has a 95% interval within +-bench.precision, at
    bench.rounds_max, or before a round it expects to end past bench.budget_s; rounds.json
    says which. bench.rounds_max: 1 makes this a no-op.
    """
    from mnistbench import repeat as repeat_mod

    cfg = load_params(params)
    with locks.exclusive(layout.repeats_root(out), "repeat"):
        root = repeat_mod.run(cfg, params, out)
    stop = json.loads((root / layout.ROUNDS_FILE).read_text())["stop"]
    click.echo(f"repeats: {stop['says']}; rounds in {root}/")


@click.command()
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@click.option(
    "--out",
    default=ROOT,
    show_default=True,
    help="Metrics root; results go to <out>/roofline/metrics.json.",
)
@known_errors
def roofline(params: str, out: str) -> None:
    """Measure this machine's float32 matmul peak; write the epoch's roofline time.

    Counts the model's matmul FLOPs per epoch from its shapes and times float32 products
    (the model's shapes and a large square, torch and JAX, train.threads and train.device as
    the backends use them). roofline_epoch_s = GFLOP per epoch / peak GFLOP/s: a lower bound
    on any backend's epoch time.
    """
    from mnistbench import roofline as roofline_mod

    cfg = load_params(params)
    with locks.exclusive(Path(out) / layout.ROOFLINE_DIR, "roofline"):
        result = roofline_mod.run(cfg, out)
    click.echo(
        f"roofline: {result['gflop_per_epoch']:.2f} GFLOP per epoch at "
        f"{result['matmul_gflops']:.1f} GFLOP/s ({result['peak_source']} on "
        f"{result['device']}"
        + (f", {result['threads']} threads" if result["threads"] else "")
        + f") = {result['roofline_epoch_s']:.3g} s per epoch"
    )
