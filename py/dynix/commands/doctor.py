"""`dynix doctor`: is this machine ready to build, share and serve the stack?"""

from __future__ import annotations

import sys

import click

from .. import doctor as checks
from ..output import emit_json, table
from .cache import config_option, load_config
from .options import Seconds


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--timeout",
    type=Seconds(),
    default=15.0,
    show_default=True,
    help="Seconds to wait for each builder or cache.",
)
@config_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, timeout: float) -> None:
    """Check Nix, caches, builders, aarch64 emulation, GPUs and the stack's services and ports.

    Each check is ok, warn or fail, with a one-line fix; exits 1 when one fails.
    """
    results = checks.run_all(load_config(ctx), timeout=timeout)
    failed = any(c.status == checks.FAIL for c in results)
    if as_json:
        emit_json({"ok": not failed, "checks": [c.to_json() for c in results]})
    else:
        rows = [[c.status.upper(), c.name, c.detail, c.fix] for c in results]
        click.echo(table(rows, ["", "CHECK", "DETAIL", "FIX"]))
    if failed:
        sys.exit(1)
