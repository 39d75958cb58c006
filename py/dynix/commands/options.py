"""Options that several commands take, defined once."""

from __future__ import annotations

import math
from typing import Any

import click

# A folder, made absolute: Nix reads a bare name ("mystore") as a store URI it does not know.
store_dir = click.option(
    "--store",
    metavar="DIR",
    type=click.Path(file_okay=False, resolve_path=True),
    help="Read from (and build into) the Nix store rooted at DIR.",
)


class Seconds(click.ParamType):
    """A time to wait: a finite number of seconds above 0 (not nan, inf or a negative)."""

    name = "SECONDS"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r}: give a number of seconds above 0", param, ctx)
        return seconds
