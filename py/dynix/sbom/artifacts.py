"""SBOMs and provenance as OCI 1.1 artifacts attached to an image.

An artifact is an image manifest with `artifactType`, the empty config
(`application/vnd.oci.empty.v1+json`), the document as its one layer, and `subject`: the
descriptor of the image manifest it describes. In an OCI layout the artifact manifests are
listed in `index.json` beside the image (their descriptors carry `artifactType` and no
`ref.name`); in a registry they are found through the referrers API or the referrers tag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DynixError
from ..oci import spec
from ..oci.layout import BlobSet
from ..oci.source import ImageRef, open_source, parse_ref
from . import cyclonedx, provenance, spdx
from .registry import Client, push_artifacts, split_reference

EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
CREATED = "org.opencontainers.image.created"
KNOWN = {
    cyclonedx.MEDIA_TYPE: "CycloneDX SBOM",
    spdx.MEDIA_TYPE: "SPDX SBOM",
    provenance.MEDIA_TYPE: "provenance",
    provenance.DSSE_MEDIA_TYPE: "signed provenance",
}
PROVENANCE_TYPES = (provenance.MEDIA_TYPE, provenance.DSSE_MEDIA_TYPE)


def attach(
    blobs: BlobSet, subject: dict[str, Any], artifact_type: str, data: bytes, created: str
) -> dict[str, Any]:
    """Add an artifact for `subject` (a manifest descriptor) to `blobs`; its descriptor, to
    list in the layout's index."""
    empty = {**spec.descriptor(EMPTY_TYPE, EMPTY), "data": "e30="}
    blobs.data[empty["digest"]] = EMPTY
    layer = spec.descriptor(artifact_type, data)
    blobs.data[layer["digest"]] = data
    manifest = {
        "schemaVersion": 2,
        "mediaType": spec.MANIFEST,
        "artifactType": artifact_type,
        "config": empty,
        "layers": [layer],
        "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
        "annotations": {CREATED: created},
    }
    desc = blobs.add_json(spec.MANIFEST, manifest)
    return {**desc, "artifactType": artifact_type, "annotations": {CREATED: created}}


def is_artifact(entry: dict[str, Any]) -> bool:
    return bool(entry.get("artifactType"))


# -- an OCI layout ---------------------------------------------------------------------------


def _layout_artifacts(root: Path) -> list[tuple[dict[str, Any], bytes, dict[str, Any]]]:
    """(descriptor, manifest bytes, manifest) of every artifact listed in a layout's index."""
    try:
        index = json.loads((root / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise DynixError(f"{root}: cannot read index.json: {exc}") from exc
    found = []
    for entry in index.get("manifests", []):
        if not is_artifact(entry):
            continue
        raw = _blob(root, entry["digest"])
        found.append((entry, raw, json.loads(raw)))
    return found


def _blob(root: Path, digest: str) -> bytes:
    try:
        raw = (root / "blobs" / "sha256" / spec.hex_of(digest)).read_bytes()
    except OSError as exc:
        raise DynixError(f"{root}: blob {digest} is missing") from exc
    if spec.sha256_digest(raw) != digest:
        raise DynixError(f"{root}: blob {digest} is corrupt")
    return raw


def layout_referrers(root: Path, subjects: set[str]) -> list[dict[str, Any]]:
    """The artifacts of a layout whose subject is one of `subjects`."""
    return [
        {**desc, "subject": manifest["subject"]["digest"]}
        for desc, _, manifest in _layout_artifacts(root)
        if manifest.get("subject", {}).get("digest") in subjects
    ]


def push_from_layout(
    layout: str, dest: str, subjects: set[str], *, tls_verify: bool | None, authfile: str | None
) -> list[dict[str, Any]]:
    """Push the artifacts of `layout` about `subjects` to the repository of `dest`."""
    root = Path(layout)
    todo = []
    for desc, raw, manifest in _layout_artifacts(root):
        if manifest.get("subject", {}).get("digest") not in subjects:
            continue
        blobs = {
            d["digest"]: _blob(root, d["digest"]) for d in [manifest["config"], *manifest["layers"]]
        }
        todo.append((desc, raw, blobs))
    if todo:
        host, repo, _ = split_reference(dest.removeprefix("docker://"))
        client = Client(host, repo, tls_verify=tls_verify, authfile=authfile, push=True)
        push_artifacts(client, todo)
    return [d for d, _, _ in todo]


# -- reading back ------------------------------------------------------------------------------


def referrers(
    ref: ImageRef, *, tls_verify: bool | None, authfile: str | None
) -> tuple[list[dict[str, Any]], Any]:
    """Every artifact attached to the image `ref` or to one of its platforms' manifests, and
    something to fetch their layers with: the layout folder, or a registry client."""
    src = open_source(ref, tls_verify=tls_verify, authfile=authfile)
    try:
        subjects = {src.top_digest, *(img.manifest_digest for img in src.images)}
    finally:
        src.close()
    if ref.transport == "oci":
        return layout_referrers(Path(ref.path), subjects), Path(ref.path)
    if ref.transport != "docker":
        raise DynixError(f"{ref}: artifacts are kept in oci:DIR layouts and registries only")
    host, repo, _ = split_reference(ref.path)
    client = Client(host, repo, tls_verify=tls_verify, authfile=authfile)
    found = []
    for subject in sorted(subjects):
        found += [{**d, "subject": subject} for d in client.referrers(subject) if is_artifact(d)]
    return found, client


def _layer(where: Any, desc: dict[str, Any]) -> bytes:
    if isinstance(where, Path):
        manifest = json.loads(_blob(where, desc["digest"]))
        [layer] = manifest["layers"]
        return _blob(where, layer["digest"])
    raw = where.get_manifest(desc["digest"])
    if raw is None or spec.sha256_digest(raw) != desc["digest"]:
        raise DynixError(f"artifact {desc['digest']} missing or corrupt in the registry")
    [layer] = json.loads(raw)["layers"]
    return where.get_blob(layer["digest"])


def read_back(
    image: str, types: tuple[str, ...], *, tls_verify: bool | None, authfile: str | None
) -> bytes:
    """The one document of one of `types` attached to `image`."""
    found, where = referrers(parse_ref(image), tls_verify=tls_verify, authfile=authfile)
    matches = [d for d in found if d.get("artifactType") in types]
    if not matches:
        have = ", ".join(sorted({d.get("artifactType", "?") for d in found})) or "none"
        raise DynixError(f"{image}: no {' or '.join(types)} attached (attached: {have})")
    if len({d["digest"] for d in matches}) > 1:
        raise DynixError(
            f"{image}: {len(matches)} such documents (one per platform): name one platform's "
            "manifest by digest"
        )
    return _layer(where, matches[0])
