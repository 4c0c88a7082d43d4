"""Helper commands: env, params, backends."""

from __future__ import annotations

import json

import click

from mnistbench import config as config_mod
from mnistbench.cli.common import PARAMS_HELP, known_errors, load_params


@click.command()
def env() -> None:
    """Print, as JSON, the environment that metrics are recorded with."""
    from mnistbench import envinfo

    click.echo(json.dumps(envinfo.collect(), indent=2))


@click.command("params")
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
@known_errors
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


@click.command("backends")
@click.option(
    "--params",
    default="params.yaml",
    show_default=True,
    help="Its backends come first, in its order (the reports' order); a missing file: none.",
)
@known_errors
def list_backends(params: str) -> None:
    """List the known backends (one module each under mnistbench/backends/): those params
    lists first, in its order, as every report orders them; then any other module, by name."""
    from pathlib import Path

    from mnistbench import backends as backends_mod

    listed = list(load_params(params).backends) if Path(params).is_file() else []
    known = backends_mod.names()
    for name in [n for n in listed if n in known] + [n for n in known if n not in listed]:
        click.echo(name)
