"""`dynix patch`: placeholder until the patch series lands."""

import click


@click.command()
def patch() -> None:
    """Apply dynix's patch series to an unpacked source tree."""
