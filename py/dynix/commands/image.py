"""`dynix image`: OCI images straight from Nix closures; push and inspect them."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

import click

from .. import log, skopeo
from ..errors import DynixError
from ..oci import config as cfg
from ..oci import grouping, layers, source
from ..oci.cache import default_root
from ..oci.spec import REF_NAME
from ..output import emit_json, table
from .options import store_dir


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise DynixError(f"{option} {value!r}: expected KEY=VALUE")
        pairs.append((key, val))
    return pairs


def _words(value: str | None, option: str) -> list[str] | None:
    if value is None:
        return None
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise DynixError(f"{option} {value!r}: {exc}") from exc


@click.group()
def image() -> None:
    """OCI images of Nix closures: build, push, inspect."""


@image.command()
@click.argument("installables", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="oci:DIR|docker-archive:FILE",
    help="Where to write the image.",
)
@click.option(
    "--system",
    "systems",
    multiple=True,
    metavar="SYSTEM",
    help="Nix system to build for (repeat for a multi-platform index). "
    "Flake installables resolve per system: .#pkg is packages.SYSTEM.pkg.",
)
@click.option(
    "--tag", metavar="NAME:TAG", help="Image name and tag (default: first package:latest)."
)
@click.option(
    "--base",
    metavar="oci:DIR|docker-archive:FILE|docker://REF",
    help="Put the layers on top of this image (pin registry images by digest).",
)
@click.option("--entrypoint", help="Entrypoint, split as a shell would ('' clears it).")
@click.option("--cmd", help="Command (arguments to the entrypoint), split as a shell would.")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Set a variable.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Set a label.")
@click.option("--created", help="Creation time, RFC 3339 (default: $SOURCE_DATE_EPOCH or 1970).")
@click.option(
    "--max-layers",
    type=click.IntRange(min=1),
    default=grouping.DEFAULT_MAX_LAYERS,
    show_default=True,
    help="Most layers dynix adds (a base image's own are not counted).",
)
@click.option(
    "--compress",
    "compression",
    type=click.Choice(layers.COMPRESSIONS),
    help="Layer compression (default: gzip for oci, none for docker-archive).",
)
@click.option("--level", type=int, help="Compression level (gzip 0-3, ISA-L's; zstd 1-22).")
@store_dir
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="Layer cache (default: $XDG_CACHE_HOME/dynix/layers).",
)
@click.option("--no-cache", is_flag=True, help="Neither use nor fill the layer cache.")
@click.option(
    "--verify-cache",
    is_flag=True,
    help="Hash every cached layer before reusing it (by default only changed-looking ones).",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Layers written at once.")
@click.option("--tls-verify/--no-tls-verify", default=None, help="For a docker:// base.")
@click.option("--authfile", type=click.Path(dir_okay=False), help="Registry credentials file.")
@click.option(
    "--sbom",
    "sbom_format",
    is_flag=False,
    flag_value="cyclonedx",
    metavar="[cyclonedx|spdx]",
    help="Attach each platform's SBOM (default format: cyclonedx) as an OCI artifact.",
)
@click.option("--provenance", is_flag=True, help="Attach each platform's provenance too.")
@click.option(
    "--signing-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign the provenance (DSSE, Ed25519): a PEM key or a Nix secret key file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def build(
    installables: tuple[str, ...],
    output: str,
    systems: tuple[str, ...],
    tag: str | None,
    base: str | None,
    entrypoint: str | None,
    cmd: str | None,
    env: tuple[str, ...],
    labels: tuple[str, ...],
    created: str | None,
    max_layers: int,
    compression: str | None,
    level: int | None,
    store: str | None,
    cache_dir: Path | None,
    no_cache: bool,
    verify_cache: bool,
    jobs: int | None,
    tls_verify: bool | None,
    authfile: str | None,
    sbom_format: str | None,
    provenance: bool,
    signing_key: Path | None,
    as_json: bool,
) -> None:
    """Build INSTALLABLES with Nix and write their closure as an image.

    One layer per store path up to --max-layers; past that, paths that change together share a
    layer. Layers are cached by store path, so a rebuild only writes the layers that changed.
    Prints the image's digest (of its manifest, or of its index with several --system).

    With --sbom and --provenance, each platform's SBOM and provenance are kept in the layout
    as OCI artifacts whose subject is that platform's manifest; `dynix image push` pushes
    them with the image.
    """
    from ..oci.image import Request  # its worker pool: only when building
    from ..oci.image import build as build_image

    settings = cfg.Settings(
        entrypoint=_words(entrypoint, "--entrypoint"),
        cmd=_words(cmd, "--cmd"),
        env=_pairs(env, "--env"),
        labels=dict(_pairs(labels, "--label")),
        created=cfg.check_created(created) if created is not None else cfg.default_created(),
    )
    request = Request(
        installables=list(installables),
        output=output,
        systems=list(systems),
        tag=tag,
        base=base,
        settings=settings,
        max_layers=max_layers,
        compression=compression,
        level=level,
        store=store,
        cache=None if no_cache else (cache_dir or default_root()),
        jobs=jobs or 0,
        tls_verify=tls_verify,
        authfile=authfile,
        verify_cache=verify_cache,
        sbom=sbom_format,
        provenance=provenance,
        signing_key=signing_key,
    )
    if signing_key and not provenance:
        raise DynixError("--signing-key signs provenance: give --provenance too")
    try:
        result = build_image(request)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise DynixError(f"{where}{exc.strerror or exc}") from exc
    if as_json:
        emit_json(result)
    else:
        click.echo(result["digest"])


@image.command()
@click.argument("src")
@click.argument("dest")
@click.option(
    "--tls-verify/--no-tls-verify",
    default=None,
    help="Require HTTPS and a valid certificate from the registries (default: yes).",
)
@click.option(
    "--authfile",
    type=click.Path(dir_okay=False),
    help="Registry credentials (containers-auth.json); never taken on the command line.",
)
def push(src: str, dest: str, tls_verify: bool | None, authfile: str | None) -> None:
    """Copy image SRC (oci:DIR[:TAG], docker-archive:FILE) to DEST (docker://HOST/REPO:TAG).

    Every platform is copied; blobs the registry already has are not sent again. Prints DEST
    with the digest it was pushed as.
    """
    src_ref, dest_ref = source.parse_ref(src), source.parse_ref(dest)
    if dest_ref.transport != "docker":
        # skopeo would add the image to a layout again (to its own source, even) and drop
        # what is attached to it: layouts and archives are written by `image build -o`
        raise DynixError(f"{dest}: push to a registry, docker://HOST/REPO:TAG")
    if src_ref.transport == "oci" and not src_ref.ref:
        src_ref = _only_name(src_ref)
    if authfile and not os.path.isfile(authfile):
        raise DynixError(f"--authfile {authfile}: no such file")
    with tempfile.TemporaryDirectory(prefix="dynix-push.") as scratch:
        digestfile = os.path.join(scratch, "digest")
        lines = skopeo.copy(
            str(src_ref),
            str(dest_ref),
            src_tls_verify=tls_verify if src_ref.transport == "docker" else None,
            dest_tls_verify=tls_verify if dest_ref.transport == "docker" else None,
            authfile=authfile,
            digestfile=digestfile,
        )
        digest = Path(digestfile).read_text().strip()
    for line in lines:
        log.info(line)
    if src_ref.transport == "oci" and dest_ref.transport == "docker":
        _push_artifacts(src_ref, str(dest_ref), tls_verify, authfile)
    repo = str(dest_ref).rsplit("@", 1)[0]
    click.echo(log.redact(f"{repo}@{digest}"))


def _push_artifacts(
    src: source.ImageRef, dest: str, tls_verify: bool | None, authfile: str | None
) -> None:
    """The artifacts the layout keeps about the image just pushed (SBOMs, provenance)."""
    from ..sbom.artifacts import push_from_layout

    img = source.open_source(src)
    subjects = {img.top_digest, *(i.manifest_digest for i in img.images)}
    img.close()
    pushed = push_from_layout(src.path, dest, subjects, tls_verify=tls_verify, authfile=authfile)
    for desc in pushed:
        log.info(f"pushed {desc['artifactType']} {desc['digest']}")


def _only_name(ref: source.ImageRef) -> source.ImageRef:
    """`oci:DIR` whose index names exactly one image: that name, since skopeo wants one."""
    try:
        index = json.loads((Path(ref.path) / "index.json").read_text())
        (entry,) = [e for e in index["manifests"] if not e.get("artifactType")]
        return source.ImageRef("oci", ref.path, entry["annotations"][REF_NAME])
    except (OSError, ValueError, KeyError, TypeError):
        return ref  # let skopeo say what is wrong with it


def _describe(img: source.Image) -> dict[str, Any]:
    conf = img.config.get("config") or {}
    history = [h for h in img.config.get("history") or [] if not h.get("empty_layer")]
    diff_ids = (img.config.get("rootfs") or {}).get("diff_ids", [])
    layer_rows = []
    for i, desc in enumerate(img.layers):
        entry = history[i] if i < len(history) and len(history) == len(img.layers) else {}
        layer_rows.append(
            {
                "digest": desc.get("digest"),
                "size": desc.get("size"),
                "mediaType": desc.get("mediaType"),
                "diffId": diff_ids[i] if i < len(diff_ids) else None,
                "storePaths": cfg.store_paths_of(entry),
                "createdBy": entry.get("created_by", ""),
            }
        )
    return {
        "platform": img.platform,
        "manifest": img.manifest_digest,
        "config": img.config_digest,
        "created": img.config.get("created"),
        "env": conf.get("Env") or [],
        "entrypoint": conf.get("Entrypoint"),
        "cmd": conf.get("Cmd"),
        "labels": conf.get("Labels") or {},
        "layers": layer_rows,
    }


@image.command()
@click.argument("src")
@click.option("--tls-verify/--no-tls-verify", default=None, help="For docker:// images.")
@click.option("--authfile", type=click.Path(dir_okay=False), help="Registry credentials file.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def inspect(src: str, tls_verify: bool | None, authfile: str | None, as_json: bool) -> None:
    """Show an image's platforms, layers (with their store paths) and labels.

    SRC is oci:DIR[:TAG], docker-archive:FILE or docker://REF (read through skopeo).
    """
    ref = source.parse_ref(src)
    img_src = source.open_source(ref, tls_verify=tls_verify, authfile=authfile)
    try:
        data = {
            "reference": str(ref),
            "digest": img_src.top_digest,
            "mediaType": img_src.top_media_type,
            "platforms": [_describe(img) for img in img_src.images],
        }
    finally:
        img_src.close()
    data["artifacts"] = _attached(ref, tls_verify, authfile)
    if as_json:
        emit_json(data)
        return
    click.echo(f"{data['reference']}  {data['digest']}")
    for plat in data["platforms"]:
        p = plat["platform"]
        click.echo(f"\n{p.get('os')}/{p.get('architecture')}  manifest {plat['manifest']}")
        if plat["entrypoint"] or plat["cmd"]:
            click.echo(f"  entrypoint {plat['entrypoint']}  cmd {plat['cmd']}")
        for key, value in sorted(plat["labels"].items()):
            shown = value if len(value) <= 80 else value[:77] + "..."
            click.echo(f"  label {key}={shown}")
        rows = [
            [
                (layer["digest"] or "")[7:19],
                _size(layer["size"]),
                " ".join(cfg.store_name(s) for s in layer["storePaths"]) or layer["createdBy"][:60],
            ]
            for layer in plat["layers"]
        ]
        click.echo(table(rows, ["LAYER", "SIZE", "CONTENT"]))
    if data["artifacts"]:
        click.echo("")
        rows = [
            [a["subject"][7:19], a["artifactType"], a["digest"], str(a.get("size", "?"))]
            for a in data["artifacts"]
        ]
        click.echo(table(rows, ["SUBJECT", "ARTIFACT", "DIGEST", "SIZE"]))


def _attached(ref: source.ImageRef, tls_verify: bool | None, authfile: str | None) -> list:
    """What is attached to the image (OCI 1.1 referrers): SBOMs, provenance."""
    if ref.transport == "docker-archive":
        return []
    from ..sbom.artifacts import referrers

    found, _ = referrers(ref, tls_verify=tls_verify, authfile=authfile)
    keys = ("subject", "artifactType", "mediaType", "digest", "size", "annotations")
    return [{k: a[k] for k in keys if k in a} for a in found]


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
