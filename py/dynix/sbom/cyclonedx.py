"""A closure as a CycloneDX 1.6 JSON document (https://cyclonedx.org/docs/1.6/json/).

- every store path of the runtime closure is a component (`bom-ref` = the store path) with its
  NAR hash, its licences where Nix's `meta` has them, and properties `nix:store_path`,
  `nix:nar_hash`, `nix:nar_size`; `dependencies` is the reference graph (self-references left
  out);
- every pinned upstream source the build used is a component of its own (`bom-ref`
  `pin:NAME`, `scope` excluded: it is not in the runtime closure) with its purl and hash;
- a package built from a pin names it in `pedigree.ancestors`, and its patches, in the order
  applied, in `pedigree.patches`; each patch's `diff.url` is a BOM-Link to the component holding
  its hashes (a CycloneDX patch has no hash of its own): a `file` component for a patch of
  `patches/`, the pin's component for a `pin:NAME` entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from ..nix import PathInfo
from ..oci.config import split_name
from .closure import Closure, Licence
from .pedigree import Patch, Source, nar_hash_hex

MEDIA_TYPE = "application/vnd.cyclonedx+json"
ALGORITHMS = {"sha1": "SHA-1", "sha256": "SHA-256", "sha512": "SHA-512"}
CLOSURE_REF = "closure"


def licence_entries(licences: list[Licence]) -> list[dict[str, Any]]:
    entries = []
    for lic in licences:
        if lic.spdx_id:
            entries.append({"license": {"id": lic.spdx_id}})
        elif lic.name:
            entries.append({"license": {"name": lic.name}})
    return entries


def _props(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs]


def source_component(source: Source, *, with_ref: bool) -> dict[str, Any]:
    comp: dict[str, Any] = {"type": "library"}
    if with_ref:
        comp["bom-ref"] = source.ref
    comp["name"] = source.name
    if source.version:
        comp["version"] = source.version
    if with_ref:
        comp["scope"] = "excluded"
    comp["hashes"] = [{"alg": ALGORITHMS[source.algorithm], "content": source.hex}]
    comp["purl"] = source.purl
    comp["externalReferences"] = [{"type": "distribution", "url": source.url}]
    if with_ref:
        mode = "nar" if source.recursive else "flat"
        pairs = [
            ("nix:hash_mode", mode),
            ("nix:sri", source.sri),
            ("nix:store_path", source.store_path),
        ]
        if source.system:
            pairs.append(("nix:system", source.system))
        comp["properties"] = _props(pairs)
    return comp


def patch_component(patch: Patch) -> dict[str, Any]:
    comp: dict[str, Any] = {"type": "file", "bom-ref": patch.ref, "name": patch.label}
    comp["scope"] = "excluded"
    hashes = [{"alg": "SHA-256", "content": patch.sha256}]
    if patch.sha1:
        hashes.append({"alg": "SHA-1", "content": patch.sha1})
    comp["hashes"] = hashes
    pairs = [("nix:store_path", patch.store_path)]
    if patch.file:
        pairs.insert(0, ("dynix:patch_file", patch.file))
    comp["properties"] = _props(pairs)
    return comp


def _path_component(
    info: PathInfo, closure: Closure, roots: set[str], bom_link: Callable[[str], str]
) -> dict[str, Any]:
    name, version = split_name(info.path)
    comp: dict[str, Any] = {
        "type": "application" if info.path in roots else "library",
        "bom-ref": info.path,
        "name": name,
    }
    if version:
        comp["version"] = version
    algo, hexdigest = nar_hash_hex(info.nar_hash)
    comp["hashes"] = [{"alg": ALGORITHMS[algo], "content": hexdigest}]
    if entries := licence_entries(closure.licences.get(info.path, [])):
        comp["licenses"] = entries
    if pedigree := closure.pedigree.get(info.path):
        ped: dict[str, Any] = {}
        if pedigree.sources:
            ped["ancestors"] = [source_component(s, with_ref=False) for s in pedigree.sources]
        if pedigree.patches:
            ped["patches"] = [
                {"type": "unofficial", "diff": {"url": bom_link(p.ref)}} for p in pedigree.patches
            ]
        comp["pedigree"] = ped
    comp["properties"] = _props(
        [
            ("nix:nar_hash", info.nar_hash),
            ("nix:nar_size", str(info.nar_size)),
            ("nix:store_path", info.path),
        ]
    )
    return comp


def document(closure: Closure, *, created: str, tool_version: str) -> dict[str, Any]:
    """The document; its components and dependencies are made as they are written."""
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:dynix:sbom:{closure.identity()}")

    def bom_link(ref: str) -> str:
        return f"urn:cdx:{serial}/1#{quote(ref, safe='')}"

    roots = set(closure.roots)
    patches = closure.project_patches()  # a component each

    def components() -> Iterator[dict[str, Any]]:
        for info in closure.paths:
            yield _path_component(info, closure, roots, bom_link)
        for source in closure.sources:
            yield source_component(source, with_ref=True)
        for ref in sorted(patches):
            yield patch_component(patches[ref])

    def dependencies() -> Iterator[dict[str, Any]]:
        yield {"ref": CLOSURE_REF, "dependsOn": list(closure.roots)}
        for info in closure.paths:
            yield {"ref": info.path, "dependsOn": sorted(set(info.references) - {info.path})}

    first_name, first_version = split_name(closure.roots[0])
    top: dict[str, Any] = {"type": "application", "bom-ref": CLOSURE_REF, "name": first_name}
    if first_version:
        top["version"] = first_version
    top["properties"] = _props(
        [("nix:installable", i) for i in closure.installables] + [("nix:system", closure.system)]
    )
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {
                "components": [{"type": "application", "name": "dynix", "version": tool_version}]
            },
            "component": top,
        },
        "components": components(),
        "dependencies": dependencies(),
    }
