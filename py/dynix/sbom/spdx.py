"""A closure as an SPDX 2.3 JSON document (https://spdx.github.io/spdx-spec/v2.3/).

Every store path is a package (`filesAnalyzed` false; its checksum is the NAR hash, as the
package comment says); references are `DEPENDS_ON` relationships, the document `DESCRIBES`
the roots. Pinned sources are packages of their own with their download location and purl,
related to what was built from them by `GENERATED_FROM`; each patch is a package related to
the package it was applied to by `PATCH_APPLIED` (a `pin:NAME` patch is its pin's package),
the relationship's comment giving the order.
Licences Nix's `meta` names without an SPDX identifier become `LicenseRef-…` entries.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

from ..oci.config import split_name
from .closure import Closure, Licence
from .pedigree import Patch, Source, nar_hash_hex

MEDIA_TYPE = "application/spdx+json"
ALGORITHMS = {"sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}
NONE = "NOASSERTION"


def spdx_id(text: str) -> str:
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", text)


def path_id(path: str) -> str:
    return spdx_id("nix-" + path.rsplit("/", 1)[-1])


class _Licences:
    """Licence expressions, and the `LicenseRef-` entries the document must then define."""

    def __init__(self) -> None:
        self.extracted: dict[str, str] = {}

    def expression(self, licences: list[Licence]) -> str:
        terms = []
        for lic in licences:
            if lic.spdx_id:
                terms.append(lic.spdx_id)
            elif lic.name:
                ref = "LicenseRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", lic.name)
                self.extracted[ref] = lic.name
                terms.append(ref)
        terms = list(dict.fromkeys(terms))
        if not terms:
            return NONE
        return (
            terms[0]
            if len(terms) == 1
            else " AND ".join(f"({t})" if " " in t else t for t in terms)
        )

    def infos(self) -> list[dict[str, str]]:
        return [
            {
                "licenseId": ref,
                "name": name,
                "extractedText": f"The licence Nix's meta.license names: {name}",
            }
            for ref, name in sorted(self.extracted.items())
        ]


def _location(url: str) -> str:
    """A download location as SPDX takes it (an image is named by its purl instead)."""
    return url if url.startswith(("https://", "http://", "ftp://")) else NONE


def _package(spdxid: str, name: str, version: str, purpose: str) -> dict[str, Any]:
    pkg: dict[str, Any] = {"SPDXID": spdxid, "name": name}
    if version:
        pkg["versionInfo"] = version
    pkg.update(
        {
            "downloadLocation": NONE,
            "filesAnalyzed": False,
            "licenseConcluded": NONE,
            "licenseDeclared": NONE,
            "copyrightText": NONE,
            "primaryPackagePurpose": purpose,
        }
    )
    return pkg


def _source_package(source: Source) -> dict[str, Any]:
    pkg = _package(spdx_id(source.ref), source.name, source.version, "SOURCE")
    pkg["downloadLocation"] = _location(source.url)
    pkg["checksums"] = [{"algorithm": ALGORITHMS[source.algorithm], "checksumValue": source.hex}]
    pkg["externalRefs"] = [
        {
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": source.purl,
        }
    ]
    what = "of the unpacked tree (NAR)" if source.recursive else "of the file"
    pkg["comment"] = f"pin {source.pin}; the checksum is {what}, fetched as {source.store_path}"
    return pkg


def _patch_package(patch: Patch) -> dict[str, Any]:
    pkg = _package(spdx_id(patch.ref), patch.label, "", "FILE")
    checksums = [{"algorithm": "SHA256", "checksumValue": patch.sha256}]
    if patch.sha1:
        checksums.append({"algorithm": "SHA1", "checksumValue": patch.sha1})
    pkg["checksums"] = checksums
    where = f"project file {patch.file}, " if patch.file else ""
    pkg["comment"] = f"patch, {where}applied from {patch.store_path}"
    return pkg


def _rel(a: str, kind: str, b: str, comment: str | None = None) -> dict[str, str]:
    rel = {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}
    if comment:
        rel["comment"] = comment
    return rel


def document(closure: Closure, *, created: str, tool_version: str) -> dict[str, Any]:
    """The document; its packages and relationships are made as they are written."""
    licences = _Licences()
    declared = {path: licences.expression(found) for path, found in closure.licences.items()}
    roots = set(closure.roots)
    ids = {info.path: path_id(info.path) for info in closure.paths}  # each path named often
    patches = closure.project_patches()  # a package each

    def packages() -> Iterator[dict[str, Any]]:
        for info in closure.paths:
            name, version = split_name(info.path)
            kind = "APPLICATION" if info.path in roots else "LIBRARY"
            pkg = _package(ids[info.path], name, version, kind)
            algo, hexdigest = nar_hash_hex(info.nar_hash)
            pkg["checksums"] = [{"algorithm": ALGORITHMS[algo], "checksumValue": hexdigest}]
            pkg["licenseDeclared"] = declared.get(info.path, NONE)
            pkg["comment"] = (
                f"Nix store path {info.path}; the checksum is its NAR hash ({info.nar_hash}), "
                f"NAR size {info.nar_size}"
            )
            yield pkg
        for source in closure.sources:
            yield _source_package(source)
        for ref in sorted(patches):
            yield _patch_package(patches[ref])

    def relationships() -> Iterator[dict[str, str]]:
        for root in closure.roots:
            yield _rel("SPDXRef-DOCUMENT", "DESCRIBES", ids[root])
        for info in closure.paths:
            here = ids[info.path]
            for ref in sorted(set(info.references) - {info.path}):
                yield _rel(here, "DEPENDS_ON", ids[ref])
            pedigree = closure.pedigree.get(info.path)
            for source in pedigree.sources if pedigree else []:
                yield _rel(here, "GENERATED_FROM", spdx_id(source.ref))
            applied = pedigree.patches if pedigree else []
            for n, patch in enumerate(applied, start=1):
                comment = f"patch {n} of {len(applied)}"
                yield _rel(spdx_id(patch.ref), "PATCH_APPLIED", here, comment)

    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:dynix:sbom:{closure.identity()}")
    doc: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": split_name(closure.roots[0])[0],
        "documentNamespace": f"urn:uuid:{namespace}",
        "creationInfo": {
            "created": created,
            "creators": [f"Tool: dynix-{tool_version}"],
            "comment": f"Nix closure of {' '.join(closure.installables)} for {closure.system}",
        },
        "packages": packages(),
        "relationships": relationships(),
    }
    if infos := licences.infos():
        doc["hasExtractedLicensingInfos"] = infos
    return doc
