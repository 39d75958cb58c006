"""The `dynix` command group. Commands live one per module under `dynix.commands`."""

from __future__ import annotations

import importlib
import signal
import sys

import click

from . import log
from .commands import COMMANDS
from .errors import DynixError


class LazyGroup(click.Group):
    """A group whose commands are imported from `dynix.commands` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[cmd_name][0].partition(":")
        return getattr(importlib.import_module(f"dynix.commands.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the summaries in `COMMANDS`, without importing any command."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [
            (name, click.utils.make_default_short_help(summary, limit))
            for name, (_, summary) in COMMANDS.items()
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from . import __version__

    click.echo(f"dynix, version {__version__}")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.option("--debug", is_flag=True, help="Log every command run and show tracebacks.")
def group(debug: bool) -> None:
    """Build, ship and run NVIDIA Dynamo's disaggregated LLM serving stack with Nix."""
    log.set_debug(debug)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the group, turning a `DynixError` into one line and exit code 1."""
    from . import process

    process.stop_on_signals()
    try:
        group.main(args=argv, prog_name="dynix", standalone_mode=False)
    except click.exceptions.Abort as exc:  # click's name for a KeyboardInterrupt
        process.stop_all()  # what other threads were waiting for
        cause = exc.__cause__
        signum = cause.signum if isinstance(cause, process.Terminated) else signal.SIGINT
        click.echo("Aborted." if signum == signal.SIGINT else f"Aborted ({cause}).", err=True)
        sys.exit(128 + signum)
    except click.ClickException as exc:  # usage errors: exit 2, as click does
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except DynixError as exc:
        if log.debug_enabled():
            raise
        click.echo(f"Error: {log.redact(str(exc))}", err=True)
        sys.exit(1)
    except OSError as exc:  # one the code did not expect (a full disk, a read-only folder)
        if log.debug_enabled():
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"Error: {log.redact(f'{where}{exc.strerror or exc}')}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        process.stop_all()  # what other threads were waiting for
        if log.debug_enabled():
            raise
        signum = exc.signum if isinstance(exc, process.Terminated) else signal.SIGINT
        click.echo("Interrupted." if signum == signal.SIGINT else f"Aborted ({exc}).", err=True)
        sys.exit(128 + signum)
