"""`dynix driver`: the host's NVIDIA driver libraries and the folder dynix links them into."""

from __future__ import annotations

import shlex

import click

from ..errors import DynixError
from ..gpu import driver as drivers
from ..gpu import folder as folders
from ..gpu import workerenv
from ..output import emit_json, table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the libraries and folder as JSON.")
@click.option(
    "--env",
    "as_env",
    is_flag=True,
    help='Print `export NAME=VALUE` lines for a shell (eval "$(dynix driver --env)"), to run '
    "the stack's programs outside `dynix serve`.",
)
def driver(as_json: bool, as_env: bool) -> None:
    """Find the host's NVIDIA driver libraries and link them into dynix's driver folder.

    Prints the folder (made if needed: it is a cache). Programs built by Nix do not read the
    host's loader cache; with the folder on their library path they find the driver.
    """
    found = drivers.discover()
    if found.missing:
        raise DynixError(workerenv.missing_message(found))
    folder = folders.ensure(found)
    env = workerenv.driver_env(folder)
    if as_env:
        for name, value in env.items():
            click.echo(f"export {name}={shlex.quote(value)}")
        return
    if as_json:
        emit_json({**found.to_json(), "folder": str(folder), "env": env})
        return
    rows = [[lib.name, lib.target, lib.source] for lib in found.libraries]
    click.echo(table(rows, ["LIBRARY", "FILE", "FOUND BY"]), err=True)
    click.echo(str(folder))
