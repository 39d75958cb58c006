"""`dynix pins`: show, verify, lock and bump the pinned upstream sources."""

from __future__ import annotations

from pathlib import Path

import click

from .. import log, nix, pinbuilds, pinning
from ..errors import DynixError
from ..files import locked
from ..output import emit_json, table
from ..pins import PinsFile, default_path


def _load(ctx: click.Context, *, edit: bool = False) -> PinsFile:
    """The pins file; to `edit` it, locked until the command ends and read under the lock."""
    path = (ctx.obj.get("file") if ctx.obj else None) or default_path()
    if edit:
        ctx.with_resource(locked(path))  # writes follow a link to the file it names
    return PinsFile.load(path)


@click.group()
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path),
    help="The pins file (default: $DYNIX_PINS, else pkgs/pins.toml of this checkout).",
)
@click.pass_context
def pins(ctx: click.Context, file: Path | None) -> None:
    """Every upstream source the flake builds from, pinned by hash."""
    ctx.obj = {"file": file}


@pins.command()
@click.option("--json", "as_json", is_flag=True, help="Print the pins as JSON.")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """List the pins: kind, version, where from, and what is still unresolved."""
    pf = _load(ctx)
    if as_json:
        emit_json([pin.to_json() for pin in pf.pins.values()])
        return
    rows = [
        [
            pin.name,
            pin.kind,
            pin.version,
            ("unresolved: " + ", ".join(pin.unresolved())) if pin.unresolved() else "pinned",
            pin.origin(),
        ]
        for pin in pf.pins.values()
    ]
    click.echo(table(rows, ["NAME", "KIND", "VERSION", "HASHES", "SOURCE"]))


@pins.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def verify(ctx: click.Context, names: tuple[str, ...], as_json: bool) -> None:
    """Fetch each source with Nix and compare it with its pinned hash.

    A source that cannot be reached is reported as unverified, not as a failure. Exits 1 when a
    hash does not match or a source is gone (HTTP error).
    """
    pf = _load(ctx)
    results = []
    for pin in pf.select(names):
        for source in pin.sources():
            log.info(f"checking {source.label} ...")
            results.append(pinning.check(source))
    if as_json:
        emit_json([r.to_json() for r in results])
    else:
        for r in results:
            line = f"{r.source.label}: {r.status}"
            if r.status == pinning.MISMATCH:
                line += f" (pinned {r.source.hash or r.source.digest}, got {r.got})"
            elif r.status == pinning.UNREACHABLE:
                line += f" (not verified: {r.detail})"
            elif r.detail:
                line += f" ({r.detail})"
            click.echo(line)
    failed = [r.source.label for r in results if r.failed]
    if failed:
        raise DynixError(f"pins do not match their sources: {', '.join(failed)}")


@pins.command()
@click.argument("names", nargs=-1)
@click.option(
    "--build",
    is_flag=True,
    help="Build what uses each hash (sources, images, Go vendor trees, Cargo git crates) and "
    "record the hashes Nix reports; without NAMEs, every unresolved one.",
)
@click.option(
    "--flake",
    help="With --build: the flake that reads this pins file (default: the checkout it is in).",
)
@click.option(
    "--system",
    "systems",
    multiple=True,
    help="With --build: the system(s) to build for (default: this machine's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what changed as JSON.")
@click.pass_context
def lock(
    ctx: click.Context,
    names: tuple[str, ...],
    build: bool,
    flake: str | None,
    systems: tuple[str, ...],
    as_json: bool,
) -> None:
    """Record the hashes Nix computes for unresolved or stale pins.

    Without --build, sources are fetched and hashed (`nix store prefetch-file`) and image
    digests asked of the registry. With --build, each fixed-output derivation that uses an
    unresolved hash (of the pins named: every hash) is built, the hash Nix reports on mismatch
    is recorded, and this repeats while it lets more build. Only the changed values are
    rewritten; comments and layout are kept and the file is replaced in one rename.
    """
    pf = _load(ctx, edit=True)
    if not build and (flake or systems):
        raise click.UsageError("--flake and --system go with --build")
    if build:
        changes, failures = pinbuilds.lock_by_build(
            pf,
            names,
            flake=flake or _flake_of(pf.path),
            systems=list(systems) or [nix.current_system()],
        )
        not_locked = [{"label": f.label, "reason": f.reason} for f in failures]
    else:
        changes, problems = pinning.lock(pf, list(names))
        not_locked = [p.to_json() for p in problems]
        failures = [pinbuilds.Failure(p.source.label, f"{p.status}: {p.detail}") for p in problems]
    if as_json:
        emit_json({"changed": [c.__dict__ for c in changes], "notLocked": not_locked})
    else:
        for c in changes:
            click.echo(f"{c.pin}: {c.key} {c.old} -> {c.new}")
        if not changes:
            log.info("nothing to change")
    for f in failures:
        log.warn(f"{f.label}: not locked ({f.reason})")
    if failures and (names or build):
        raise DynixError(f"could not lock {', '.join(f.label for f in failures)}")


def _flake_of(pins_file: Path) -> str:
    """The checkout a pins file belongs to (`<root>/pkgs/pins.toml`), as a flake reference."""
    root = pins_file.resolve().parent.parent
    if not (root / "flake.nix").is_file():
        raise DynixError(f"{pins_file} is not in a flake's pkgs/ folder: pass --flake")
    return str(root)


def _build_hash(value: str) -> tuple[str, str]:
    key, sep, hash_ = value.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=HASH, got {value!r}")
    return key, hash_


@pins.command(name="set")
@click.argument("name")
@click.option("--version", help="New version (pypi: the sdist URL is looked up on PyPI).")
@click.option("--rev", help="New commit (github pins).")
@click.option("--url", help="New URL (pypi and url pins).")
@click.option("--tag", help="New tag (github: for humans; oci: the image tag).")
@click.option("--hash", "hash_", help="Record a hash Nix reported (SRI).")
@click.option("--system", help="The system whose image hash --hash records (oci pins).")
@click.option(
    "--build-hash",
    "build_hashes",
    multiple=True,
    metavar="KEY=HASH",
    help="Record a build hash Nix reported (Go vendor tree, Cargo git crate).",
)
@click.pass_context
def set_(
    ctx: click.Context,
    name: str,
    version: str | None,
    rev: str | None,
    url: str | None,
    tag: str | None,
    hash_: str | None,
    system: str | None,
    build_hashes: tuple[str, ...],
) -> None:
    """Move a pin to new coordinates, or record hashes Nix reported.

    New coordinates make the pin's hashes unresolved until `dynix pins lock NAME` (or the first
    Nix build, for build hashes) establishes them.
    """
    if not any([version, rev, url, tag, hash_, build_hashes]):
        raise click.UsageError("nothing to set: give --version, --rev, --url, --tag or a hash")
    pf = _load(ctx, edit=True)
    changed = pinning.set_pin(
        pf,
        name,
        version=version,
        rev=rev,
        url=url,
        tag=tag,
        hash=hash_,
        system=system,
        build_hashes=dict(_build_hash(b) for b in build_hashes),
    )
    if changed:
        pin = pf.pins[name]
        click.echo(f"{name}: set {', '.join(changed)}")
        if pin.unresolved():
            log.info(f"{name}: unresolved: {', '.join(pin.unresolved())}")
            log.info(
                f"  source hashes and image digests: `dynix pins lock {name}`; build hashes: "
                f"the first `nix build` reports them, `dynix pins set {name} --build-hash KEY=HASH`"
            )
    else:
        log.info(f"{name}: already so; nothing changed")
