"""Every call dynix makes to skopeo (registries, image digests, copies)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from . import process
from .errors import CommandError, DynixError

_UNREACHABLE = (
    "no such host",
    "connection refused",
    "i/o timeout",
    "network is unreachable",
    "dial tcp",
    "TLS handshake timeout",
)


class SkopeoError(CommandError):
    """A call to skopeo failed."""


class RegistryUnreachable(SkopeoError):
    """skopeo could not reach the registry."""


def _skopeo(args: Sequence[str], *, what: str) -> process.Result:
    try:
        return process.run(["skopeo", *args], error=SkopeoError, what=what)
    except SkopeoError as exc:
        if any(phrase in exc.stderr for phrase in _UNREACHABLE):
            raise RegistryUnreachable(
                exc.argv, exc.returncode, exc.stderr, what="registry unreachable"
            ) from exc
        raise


def platform_digest(reference: str, *, os_name: str = "linux", arch: str) -> str:
    """The digest of the image `reference` (`docker://…`) for one platform."""
    out = _skopeo(
        ["inspect", "--override-os", os_name, "--override-arch", arch, reference],
        what=f"skopeo inspect {reference}",
    ).stdout
    try:
        return json.loads(out)["Digest"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise DynixError(f"skopeo inspect {reference}: no digest in its answer") from exc
