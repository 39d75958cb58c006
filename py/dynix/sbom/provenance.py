"""Provenance: an in-toto statement (v1) with an SLSA provenance v1 predicate, optionally signed.

- subject: the image manifest(s) by digest, or the store paths of the roots by NAR hash;
- buildDefinition.externalParameters: the flake (its revision and NAR hash, its URL when it
  is not a folder of this machine), the installables and the system;
- buildDefinition.resolvedDependencies: every locked input of the flake (nixpkgs: its
  revision and NAR hash), every pinned source the build used (purl, download location, hash)
  and every patch applied (hash);
- runDetails.builder: Nix and dynix with their versions.

No time is recorded: the same build gives the same statement. Signing wraps the statement in
a DSSE envelope (https://github.com/secure-systems-lab/dsse) signed with Ed25519, through
PyCA's `cryptography` (the `sign` extra): Ed25519 signatures are deterministic, so a signed
statement is as reproducible as an unsigned one, and a Nix signing key (`nix key
generate-secret`, the key binary caches are signed with) can sign it as it is.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DynixError
from .closure import Closure
from .pedigree import nar_hash_hex, sri_to_hex

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:dynix:nix-flake-build:v1"
BUILDER_ID = "urn:dynix:builder:nix"
MEDIA_TYPE = "application/vnd.in-toto+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"


def _input_uri(locked: dict[str, Any]) -> str | None:
    kind = locked.get("type")
    rev = locked.get("rev")
    if kind in ("github", "gitlab", "sourcehut") and rev:
        return f"{kind}:{locked.get('owner')}/{locked.get('repo')}/{rev}"
    url = locked.get("url", "")
    if kind in ("git", "tarball", "file") and url and not url.startswith("file:"):
        return f"git+{url}" if kind == "git" else url
    return None


def flake_inputs(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The locked inputs of a flake (`nix flake metadata --json`) as resource descriptors."""
    nodes = (metadata.get("locks") or {}).get("nodes") or {}
    root = (metadata.get("locks") or {}).get("root", "root")
    found = []
    for name in sorted(nodes):
        locked = nodes[name].get("locked")
        if name == root or not locked:
            continue
        desc: dict[str, Any] = {"name": name}
        if uri := _input_uri(locked):
            desc["uri"] = uri
        digest = {}
        if rev := locked.get("rev"):
            digest["gitCommit"] = rev
        if nar := locked.get("narHash"):
            algo, hexdigest = sri_to_hex(nar)
            digest.setdefault(algo, hexdigest)
        desc["digest"] = digest
        desc["annotations"] = {"narHash": locked.get("narHash", ""), "type": locked.get("type", "")}
        found.append(desc)
    return found


def flake_parameters(metadata: dict[str, Any]) -> dict[str, Any]:
    locked = metadata.get("locked") or {}
    flake: dict[str, Any] = {}
    url = metadata.get("originalUrl", "")
    if url and not url.startswith(("path:", "git+file:", "file:", "/", ".")):
        flake["uri"] = url
    if rev := metadata.get("revision") or locked.get("rev"):
        flake["revision"] = rev
    if nar := locked.get("narHash"):
        flake["narHash"] = nar
    return flake


def statement(
    closure: Closure,
    *,
    subjects: Sequence[dict[str, Any]] | None,
    flake: dict[str, Any] | None,
    nix_version: str,
    tool_version: str,
) -> dict[str, Any]:
    """The statement for `closure`; `subjects` default to its roots (by NAR hash)."""
    if subjects is None:
        hashes = {i.path: i.nar_hash for i in closure.paths}
        subjects = []
        for path in closure.roots:
            algo, hexdigest = nar_hash_hex(hashes[path])
            subjects.append({"name": path, "digest": {algo: hexdigest}})
    external: dict[str, Any] = {}
    if flake:
        external["flake"] = flake_parameters(flake)
    external["installables"] = list(closure.installables)
    external["system"] = closure.system
    deps = flake_inputs(flake) if flake else []
    for source in closure.sources:
        deps.append(
            {
                "name": source.ref,
                "uri": source.purl,
                "digest": {source.algorithm: source.hex},
                "downloadLocation": source.url,
                "annotations": {
                    "hash": source.sri,
                    "hashOf": "unpacked tree (NAR)" if source.recursive else "file",
                },
            }
        )
    patches = {p.ref: p for ped in closure.pedigree.values() for p in ped.patches if not p.source}
    for ref in sorted(patches):
        patch = patches[ref]
        desc: dict[str, Any] = {"name": ref, "digest": {"sha256": patch.sha256}}
        if patch.file:
            desc["annotations"] = {"file": patch.file}
        deps.append(desc)
    return {
        "_type": STATEMENT_TYPE,
        "subject": list(subjects),
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"nix": nix_version, "dynix": tool_version},
                }
            },
        },
    }


# -- signing ---------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def load_key(path: Path) -> tuple[Any, str]:
    """An Ed25519 private key and its key id, from a PEM (PKCS#8) file or a Nix secret key
    file (`NAME:base64`, as `nix key generate-secret` writes it; its id is NAME)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError as exc:
        raise DynixError(
            "signing needs the `cryptography` package (pip install 'dynix[sign]')"
        ) from exc
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DynixError(f"cannot read signing key {path}: {exc.strerror}") from exc
    if raw.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError) as exc:
            raise DynixError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise DynixError(f"{path}: only Ed25519 keys sign provenance")
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return key, "sha256:" + hashlib.sha256(public).hexdigest()
    name, sep, b64 = raw.decode(errors="replace").strip().partition(":")
    try:
        secret = base64.b64decode(b64, validate=True)
    except ValueError:
        secret = b""
    if not sep or not name or len(secret) != 64:
        raise DynixError(f"{path}: neither a PEM Ed25519 key nor a Nix secret key (NAME:base64)")
    return Ed25519PrivateKey.from_private_bytes(secret[:32]), name


def sign(payload: bytes, key_path: Path) -> dict[str, Any]:
    """A DSSE envelope of an in-toto statement, signed with the key in `key_path`."""
    key, keyid = load_key(key_path)
    signature = key.sign(pae(MEDIA_TYPE, payload))
    return {
        "payloadType": MEDIA_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(signature).decode()}],
    }
