"""The `dynix` command group. Commands live one per module under `dynix.commands`."""

from __future__ import annotations

import sys

import click

from . import __version__, log
from .commands import COMMANDS
from .errors import DynixError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dynix")
@click.option("--debug", is_flag=True, help="Log every command run and show tracebacks.")
def group(debug: bool) -> None:
    """Build, ship and run NVIDIA Dynamo's disaggregated LLM serving stack with Nix."""
    log.set_debug(debug)


for command in COMMANDS:
    group.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the group, turning a `DynixError` into one line and exit code 1."""
    try:
        group.main(args=argv, prog_name="dynix", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors: exit 2, as click does
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except DynixError as exc:
        if log.debug_enabled():
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        if log.debug_enabled():
            raise
        click.echo("Interrupted.", err=True)
        sys.exit(130)
