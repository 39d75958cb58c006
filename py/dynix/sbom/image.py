"""`dynix image build --sbom/--provenance`: the documents of each platform's closure, attached
to that platform's manifest as OCI artifacts in the layout being written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import log
from ..oci.layout import BlobSet
from . import closure, documents, pedigree
from .artifacts import attach


def attach_documents(
    req: Any,
    systems: Sequence[str],
    manifests: Sequence[dict[str, Any]],
    blobs: BlobSet,
    image_name: str,
    explicit: bool,
) -> list[dict[str, Any]]:
    """For each platform (a system and its manifest descriptor), the SBOM the request asks
    for and its provenance, as artifacts in `blobs`; their index entries, in order.

    The SBOM is the one `dynix sbom` writes for the same installables, system and store."""
    created = documents.timestamp(req.settings.created)
    pins, patches_root = pedigree.load_project(None)
    attached = []
    for system, manifest in zip(systems, manifests, strict=True):
        found = closure.read(
            req.installables,
            system=system if explicit else None,
            store=req.store,
            pins=pins,
            patches_root=patches_root,
        )
        if req.sbom:
            data = b"".join(documents.render(found, req.sbom, created=created))
            attached.append(attach(blobs, manifest, documents.media_type(req.sbom), data, created))
        if req.provenance:
            subject = {"name": image_name, "digest": {"sha256": manifest["digest"][7:]}}
            data, media = documents.render_provenance(
                found, store=req.store, subjects=[subject], key=req.signing_key
            )
            attached.append(attach(blobs, manifest, media, data, created))
        log.info(f"{system}: attached {', '.join(a['artifactType'] for a in attached[-2:])}")
    return attached
