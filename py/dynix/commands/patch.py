"""`dynix patch`: apply a package's patch series to an unpacked source tree, outside Nix."""

from __future__ import annotations

from pathlib import Path

import click

from .. import log, patches, patching
from ..output import emit_json
from ..pins import PinsFile, default_path

PACKAGES = ("vllm", "dynamo", "nixl")


def _upstream(values: tuple[str, ...]) -> dict[str, Path]:
    local = {}
    for value in values:
        name, sep, file = value.partition("=")
        if not sep or not name or not file:
            raise click.BadParameter(
                f"expected NAME=FILE, got {value!r}", param_hint="--upstream-patch"
            )
        local[name] = Path(file)
    return local


@click.command()
@click.argument("package", type=click.Choice(PACKAGES))
@click.argument(
    "tree", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--upstream-patch",
    "upstream",
    multiple=True,
    metavar="NAME=FILE",
    help="Use FILE for the series entry pin:NAME instead of fetching it (its hash is checked).",
)
@click.option("--dry-run", is_flag=True, help="Check that the series applies; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was applied as JSON.")
def patch(
    package: str, tree: Path, upstream: tuple[str, ...], dry_run: bool, as_json: bool
) -> None:
    """Apply PACKAGE's patch series (patches/PACKAGE/series) to the unpacked source tree DIR.

    For building outside Nix. Entries `pin:NAME` are fetched with Nix and checked against the
    pins file, unless given with --upstream-patch NAME=FILE. The whole series is tried on a
    scratch copy first: if any patch fails, DIR is left as it was. A tree that already has the
    series (or its first patches) is recognised and only the rest is applied.
    """
    local = _upstream(upstream)
    root = patches.default_dir()
    entries = patches.read_series(root, package)
    pinned = {e.pin for e in entries if e.pin}
    for name in local:
        if name not in pinned:
            raise click.BadParameter(
                f"the {package} series has no entry pin:{name}", param_hint="--upstream-patch"
            )
    pins = PinsFile.read(default_path(start=root.parent)).pins if pinned else {}
    series = patching.resolve(entries, pins, local)
    planned = patching.plan(tree, series)
    if not dry_run:
        patching.apply(tree, planned)

    if not series:
        status = "nothing-to-apply"
    elif not planned.missing:
        status = "already-applied"
    else:
        status = "would-apply" if dry_run else "applied"
    if as_json:
        emit_json(
            {
                "package": package,
                "dir": str(tree.resolve()),
                "dryRun": dry_run,
                "status": status,
                "applied": [] if dry_run else [p.to_json() for p in planned.missing],
                "pending": [p.to_json() for p in planned.missing] if dry_run else [],
                "alreadyApplied": [p.to_json() for p in planned.present],
                "files": planned.files,
            }
        )
    else:
        verb = "would apply" if dry_run else "applied"
        for p in planned.missing:
            click.echo(f"{verb} {p.entry.label}")
    if planned.present:
        rest = "would apply the rest" if dry_run else "applied the rest"
        log.info(
            f"{tree} already has {', '.join(p.entry.label for p in planned.present)}: "
            + (rest if planned.missing else "nothing to do")
        )
    elif not series:
        log.info(f"the {package} series is empty: nothing to apply")
