"""Names and small helpers from the OCI image spec, and how Nix systems map onto platforms."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import DynixError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER + "+gzip"
LAYER_ZSTD = LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
REF_NAME = "org.opencontainers.image.ref.name"

MANIFEST_TYPES = (MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (INDEX, DOCKER_LIST)

# Nix system -> (GOARCH as OCI names it, variant)
_ARCHES = {
    "x86_64": ("amd64", None),
    "aarch64": ("arm64", None),
    "i686": ("386", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "riscv64": ("riscv64", None),
    "powerpc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
}


def platform(system: str) -> dict[str, str]:
    """The OCI platform of a Nix system: `aarch64-linux` -> {os: linux, architecture: arm64}."""
    cpu, _, os_name = system.partition("-")
    if cpu not in _ARCHES or not os_name:
        known = ", ".join(f"{c}-linux" for c in _ARCHES)
        raise DynixError(f"no OCI platform for Nix system {system!r} (known: {known})")
    arch, variant = _ARCHES[cpu]
    result = {"architecture": arch, "os": os_name}
    if variant:
        result["variant"] = variant
    return result


def canonical_json(obj: Any) -> bytes:
    """The one byte form dynix writes JSON blobs in: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data), **extra}


def hex_of(digest: str) -> str:
    """The hex part of `sha256:…`, refusing anything that is not a sha256 digest."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise DynixError(f"not a sha256 digest: {digest!r}")
    return hexpart


def layer_compression(media_type: str) -> str:
    if media_type.endswith("gzip"):
        return "gzip"
    if media_type.endswith("zstd"):
        return "zstd"
    return "none"


def sniff_compression(head: bytes) -> str:
    """What a layer blob is compressed with, from its first bytes."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def layer_media_type(compression: str) -> str:
    return {"gzip": LAYER_GZIP, "zstd": LAYER_ZSTD, "none": LAYER}[compression]
