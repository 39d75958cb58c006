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


def _tls_args(flag: str, verify: bool | None) -> list[str]:
    return [] if verify is None else [f"--{flag}={'true' if verify else 'false'}"]


def copy(
    src: str,
    dest: str,
    *,
    all_platforms: bool = True,
    src_tls_verify: bool | None = None,
    dest_tls_verify: bool | None = None,
    authfile: str | None = None,
    digestfile: str | None = None,
    override_arch: str | None = None,
) -> list[str]:
    """`skopeo copy` (by default `--all`: every platform of an index); returns its progress lines.

    Credentials only ever come from an auth file, never from argv. skopeo itself asks the
    destination for each blob first and skips those it already has.
    """
    args = ["copy"]
    if all_platforms:
        args.append("--all")
    if override_arch:
        args += ["--override-os", "linux", "--override-arch", override_arch]
    args += _tls_args("src-tls-verify", src_tls_verify)
    args += _tls_args("dest-tls-verify", dest_tls_verify)
    if authfile:
        args += ["--authfile", authfile]
    if digestfile:
        args += ["--digestfile", digestfile]
    out = _skopeo([*args, src, dest], what=f"skopeo copy to {dest}").stdout
    return [line for line in out.splitlines() if line.strip()]


def inspect_raw(
    reference: str,
    *,
    config: bool = False,
    tls_verify: bool | None = None,
    authfile: str | None = None,
) -> bytes:
    """The manifest (or index, or with `config` the image config) of `reference`, as stored."""
    args = ["inspect", "--raw"]
    if config:
        args.append("--config")
    args += _tls_args("tls-verify", tls_verify)
    if authfile:
        args += ["--authfile", authfile]
    return _skopeo([*args, reference], what=f"skopeo inspect {reference}").stdout.encode()
