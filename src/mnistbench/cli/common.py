"""What every command shares: the default metrics root, the --params help, loading params,
and turning the project's expected errors into one line."""

from __future__ import annotations

import functools
import sys

import click

from mnistbench import config as config_mod
from mnistbench import errors, layout, progress
from mnistbench.errors import UserError

ROOT = layout.METRICS_ROOT  # every command's default metrics root: the pipeline's
PARAMS_HELP = "Parameters file (YAML) with sections data, model, train, bench and backends."


def known_errors(fn):
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


def load_params(params: str) -> config_mod.Config:
    return config_mod.load(params)
