"""Options that several commands take, defined once."""

from __future__ import annotations

import click

# A folder, made absolute: Nix reads a bare name ("mystore") as a store URI it does not know.
store_dir = click.option(
    "--store",
    metavar="DIR",
    type=click.Path(file_okay=False, resolve_path=True),
    help="Read from (and build into) the Nix store rooted at DIR.",
)
