"""The data stages' commands: download and build-tfds."""

from __future__ import annotations

import click

from mnistbench import locks
from mnistbench.cli.common import PARAMS_HELP, known_errors, load_params


@click.command()
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@known_errors
def download(params: str) -> None:
    """Fetch the four MNIST files into data.raw_dir, verified by SHA-256.

    Mirrors are tried in order: those in $MNIST_MIRRORS (https://, http://, file:// or a
    folder; separated by spaces or commas), then data.mirrors from the params file, whose
    last entry is the verified copy kept in this repository (data/mirror/).
    """
    from mnistbench import download as dl

    cfg = load_params(params)
    with locks.exclusive(cfg.data.raw_dir, "download"):
        served = dl.download_all(cfg.data)
    for name, mirror in served.items():
        click.echo(f"{name}: {mirror}")


@click.command("build-tfds")
@click.option("--params", default="params.yaml", show_default=True, help=PARAMS_HELP)
@known_errors
def build_tfds(params: str) -> None:
    """Build TFDS's `mnist` 3.0.1 (TFRecord + ArrayRecord) from data.raw_dir, offline."""
    from mnistbench import frameworks, tfds_build

    frameworks.without_torch()
    cfg = load_params(params)
    with locks.exclusive(cfg.data.tfds_dir, "build-tfds"):
        click.echo(f"built: {tfds_build.build(cfg.data)}")
