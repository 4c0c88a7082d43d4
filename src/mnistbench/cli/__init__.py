"""mnistbench's command line: one thin command per DVC stage, usable without DVC.

Each command loads params.yaml into a typed Config, then calls one library function. Known
failures (bad params, no mirror, missing data or framework) end with a one-paragraph message
and exit status 1, never a traceback. The commands live in modules by job (COMMANDS), loaded
only when run, so that a stage depends on its own command's module: editing the report's
command reruns no training.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

import click

import mnistbench
from mnistbench import progress

# command -> the module of mnistbench.cli that defines it; `--help` lists them in this order
COMMANDS = {
    "download": "data",
    "build-tfds": "data",
    "machine": "timed",
    "train": "timed",
    "repeat": "timed",
    "roofline": "timed",
    "compare": "reports",
    "report": "reports",
    "keep": "reports",
    "gather": "reports",
    "diff": "reports",
    "sweep-plot": "reports",
    "params": "tools",
    "backends": "tools",
    "env": "tools",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when asked for (click's lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"{__name__}.{COMMANDS[name]}")
        return next(
            c for c in vars(module).values() if isinstance(c, click.Command) and c.name == name
        )


def _print_version(ctx: click.Context) -> None:
    click.echo(f"mnistbench {mnistbench.__version__}")  # read only when asked: no start-up cost
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
