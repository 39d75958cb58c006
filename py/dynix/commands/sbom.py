"""`dynix sbom`: a bill of materials of a Nix closure, or the ones attached to an image."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import log
from ..errors import DynixError
from ..files import check_output, write_output, write_pieces
from .options import store_dir


@click.command()
@click.argument("installables", nargs=-1, required=True)
@click.option("--system", metavar="SYSTEM", help="Nix system to build for (flake installables).")
@click.option(
    "--format",
    "fmt",
    default="cyclonedx",
    show_default=True,
    metavar="cyclonedx|spdx",
    help="CycloneDX 1.6 JSON or SPDX 2.3 JSON.",
)
@click.option("-o", "--output", metavar="FILE", help="Write here, not stdout (- is stdout).")
@click.option("--created", help="Document time, RFC 3339 (default: $SOURCE_DATE_EPOCH or 1970).")
@store_dir
@click.option(
    "--pins",
    "pins_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pins file (default: pkgs/pins.toml of this checkout, or $DYNIX_PINS).",
)
@click.option(
    "--provenance",
    "as_provenance",
    is_flag=True,
    help="Write the build's provenance (in-toto statement, SLSA v1) instead of an SBOM.",
)
@click.option(
    "--signing-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign the provenance (DSSE, Ed25519): a PEM key or a Nix secret key file.",
)
@click.option("--no-licences", is_flag=True, help="Skip the evaluation that finds licences.")
@click.option("--tls-verify/--no-tls-verify", default=None, help="For docker:// images.")
@click.option("--authfile", type=click.Path(dir_okay=False), help="Registry credentials file.")
def sbom(
    installables: tuple[str, ...],
    system: str | None,
    fmt: str,
    output: str | None,
    created: str | None,
    store: str | None,
    pins_file: Path | None,
    as_provenance: bool,
    signing_key: Path | None,
    no_licences: bool,
    tls_verify: bool | None,
    authfile: str | None,
) -> None:
    """Write the SBOM of the runtime closure of INSTALLABLES.

    Every store path is a component with its NAR hash, licence (from Nix's meta) and
    references; packages built from pkgs/pins.toml name their upstream source (with a purl)
    and the patches applied. Same closure, same bytes.

    With --provenance, writes instead an in-toto statement with an SLSA provenance v1
    predicate (the flake and its locked inputs, the pins and patches used, Nix's version),
    signed with --signing-key.

    Given an image instead (oci:DIR[:TAG] or docker://REF), prints the SBOM (or with
    --provenance the provenance) attached to it by `dynix image build --sbom`.
    """
    from ..sbom import closure, documents, pedigree

    documents.check_format(fmt)
    if signing_key and not as_provenance:
        raise DynixError("--signing-key signs provenance: give --provenance too")
    if signing_key:
        from ..sbom.provenance import load_key

        load_key(signing_key)  # a key that cannot sign is found before the build
    to_file = output if output != "-" else None
    if to_file:
        check_output(to_file)  # before the build, not after it
    if installables[0].startswith(("oci:", "docker://")):
        from ..sbom import artifacts

        if len(installables) > 1:
            raise DynixError("give one image to read the SBOM of")
        types = artifacts.PROVENANCE_TYPES if as_provenance else (documents.media_type(fmt),)
        data = artifacts.read_back(installables[0], types, tls_verify=tls_verify, authfile=authfile)
    else:
        when = documents.timestamp(created)
        pins, patches_root = pedigree.load_project(pins_file)
        found = closure.read(
            installables,
            system=system,
            store=store,
            pins=pins,
            patches_root=patches_root,
            licences=not no_licences,
        )
        if as_provenance:
            data, _ = documents.render_provenance(found, store=store, key=signing_key)
        else:
            data = documents.render(found, fmt, created=when)
        log.info(
            f"{len(found.paths)} store paths, {len(found.sources)} pinned sources, "
            f"{sum(len(p.patches) for p in found.pedigree.values())} patches"
        )
    if to_file:
        write_output(to_file, data)
    else:
        write_pieces(sys.stdout.buffer, data)
        sys.stdout.flush()
