"""Checking, locking and bumping pins, with Nix's own fetchers doing the hashing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from . import log, nix, skopeo
from .errors import CommandError, DynixError
from .pins import UNRESOLVED, PinsFile, Source, check_url, check_word, is_sri

PYPI_SIMPLE = "https://pypi.org/simple"

# Statuses of a checked source. Only MISMATCH and MISSING mean the pin is wrong.
OK, MISMATCH, MISSING, UNREACHABLE, UNRESOLVED_STATUS = (
    "ok",
    "mismatch",
    "missing",
    "unreachable",
    "unresolved",
)


@dataclass(frozen=True)
class Check:
    source: Source
    status: str
    got: str | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in (MISMATCH, MISSING)

    def to_json(self) -> dict[str, object]:
        return {
            "pin": self.source.pin,
            "label": self.source.label,
            "url": self.source.url,
            "status": self.status,
            "expected": self.source.hash,
            "got": self.got,
            "detail": self.detail,
        }


def prefetch(source: Source) -> str:
    """Fetch a pin's source with Nix and return the hash Nix computes for it."""
    if source.unpack:
        return nix.prefetch_unpacked(source.url).hash
    return nix.prefetch_file(source.url).hash


def check(source: Source) -> Check:
    """Fetch `source` and compare with its recorded hash (or digest, for images)."""
    if source.system is not None:
        return _check_image(source)
    try:
        got = prefetch(source)
    except nix.Unreachable as exc:
        return Check(source, UNREACHABLE, detail=exc.tail)
    except CommandError as exc:
        return Check(source, MISSING, detail=exc.tail)
    if not source.resolved:
        return Check(source, UNRESOLVED_STATUS, got=got, detail="no hash recorded yet")
    return Check(source, OK if got == source.hash else MISMATCH, got=got)


def _check_image(source: Source) -> Check:
    # An image's content hash is that of dockerTools.pullImage's output and only a build
    # establishes it; what can be checked here is that the digest still names this tag.
    if source.digest == UNRESOLVED:
        return Check(source, UNRESOLVED_STATUS, detail="no digest recorded yet")
    try:
        got = skopeo.platform_digest(source.url, arch=source.arch)
    except skopeo.RegistryUnreachable as exc:
        return Check(source, UNREACHABLE, detail=exc.tail)
    except (CommandError, DynixError) as exc:
        return Check(source, MISSING, detail=str(exc))
    status = OK if got == source.digest else MISMATCH
    return Check(
        source, status, got=got, detail="tag now points elsewhere" if status == MISMATCH else ""
    )


@dataclass(frozen=True)
class LockChange:
    pin: str
    key: str  # "hash", or "systems.<system>.digest"
    old: str
    new: str


def lock(pins: PinsFile, names: list[str]) -> tuple[list[LockChange], list[Check]]:
    """Record the hashes Nix computes for unresolved or stale pins, then save the file once.

    Returns what changed and the sources that could not be fetched; the file is written only if
    something changed, and only after every fetch is done.
    """
    changes: list[LockChange] = []
    problems: list[Check] = []
    for pin in pins.select(names):
        for source in pin.sources():
            if source.system is not None:
                change, problem = lock_image_digest(pin.name, source, pins)
            else:
                result = check(source)
                change, problem = None, None
                if result.status in (UNREACHABLE, MISSING):
                    problem = result
                elif result.got and result.got != source.hash:
                    change = LockChange(pin.name, "hash", source.hash, result.got)
                    pins.table(pin.name)["hash"] = result.got
            if change:
                changes.append(change)
            if problem:
                problems.append(problem)
    if changes:
        pins.save()
    return changes, problems


def lock_image_digest(
    name: str, source: Source, pins: PinsFile
) -> tuple[LockChange | None, Check | None]:
    """Record the digest the registry gives an image's tag, where none is recorded; the image's
    hash then becomes unresolved (the first build reports it). The file is not saved here."""
    if source.digest != UNRESOLVED:
        return None, None  # pinned by digest: moving it is `set --tag`'s job
    try:
        got = skopeo.platform_digest(source.url, arch=source.arch)
    except (CommandError, DynixError) as exc:
        status = UNREACHABLE if isinstance(exc, skopeo.RegistryUnreachable) else MISSING
        return None, Check(source, status, detail=getattr(exc, "tail", str(exc)))
    entry = pins.table(name)["systems"][source.system]
    entry["digest"] = got
    entry["hash"] = UNRESOLVED  # the pulled image's hash is reported by the first build
    return LockChange(name, f"systems.{source.system}.digest", UNRESOLVED, got), None


def set_pin(
    pins: PinsFile,
    name: str,
    *,
    version: str | None = None,
    rev: str | None = None,
    url: str | None = None,
    tag: str | None = None,
    hash: str | None = None,
    system: str | None = None,
    build_hashes: dict[str, str] | None = None,
) -> list[str]:
    """Bump a pin's coordinates (its hashes become unresolved) or record hashes; then save.

    Returns the keys that changed.
    """
    pin = pins.select([name])[0]
    table = pins.table(name)
    moved: dict[str, str] = {}
    for what, value in (("--version", version), ("--rev", rev), ("--tag", tag)):
        if value is not None:
            check_word(what, value)
    if version is not None:
        moved["version"] = version
        if pin.kind == "pypi" and url is None:
            moved["url"] = pypi_sdist_url(pin.data["pname"], version)
    if rev is not None:
        if pin.kind != "github":
            raise DynixError(f"pin '{name}' is a {pin.kind} pin; --rev is for github pins")
        moved["rev"] = rev
    if url is not None:
        if pin.kind not in ("pypi", "url"):
            raise DynixError(f"pin '{name}' is a {pin.kind} pin; --url is for pypi and url pins")
        moved["url"] = check_url(url)
    if tag is not None:
        if pin.kind not in ("github", "oci"):
            raise DynixError(f"pin '{name}' is a {pin.kind} pin; --tag is for github and oci pins")
        moved["tag"] = tag
    tag_only = pin.kind == "github" and "rev" not in pin.data
    if (
        pin.kind == "github"
        and ("version" in moved or "tag" in moved)
        and rev is None
        and not tag_only
    ):
        raise DynixError(f"pin '{name}' is a github pin: give the commit with --rev as well")

    changed: list[str] = []
    for key, value in moved.items():
        if table.get(key) != value:
            table[key] = value
            changed.append(key)
    if changed:
        # New coordinates: every hash recorded for the old ones is now unknown.
        if pin.kind == "oci":
            for entry in table["systems"].values():
                entry["digest"] = UNRESOLVED
                entry["hash"] = UNRESOLVED
        else:
            table["hash"] = UNRESOLVED
        for key in table.get("build-hashes", {}):
            table["build-hashes"][key] = UNRESOLVED

    if hash is not None:
        _require_sri(hash)
        if pin.kind == "oci":
            if system is None or system not in table["systems"]:
                raise DynixError(
                    f"pin '{name}' is an image: name the system with --system "
                    f"({', '.join(table['systems'])})"
                )
            table["systems"][system]["hash"] = hash
        else:
            table["hash"] = hash
        changed.append("hash")
    for key, value in (build_hashes or {}).items():
        _require_sri(value)
        if key not in table.get("build-hashes", {}):
            known = ", ".join(table.get("build-hashes", {})) or "none"
            raise DynixError(f"pin '{name}' has no build hash '{key}' (it has: {known})")
        table["build-hashes"][key] = value
        changed.append(f"build-hashes.{key}")
    if changed:
        pins.save()
    return changed


def _require_sri(value: str) -> None:
    if not is_sri(value):
        raise DynixError(f"not an SRI hash: {value!r} (expected sha256-...=, as Nix prints it)")


def pypi_sdist_url(pname: str, version: str) -> str:
    """The URL of `pname`'s sdist for `version`, from PyPI's JSON simple API (PEP 691)."""
    request = urllib.request.Request(
        f"{PYPI_SIMPLE}/{pname}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    log.debug(f"GET {request.full_url}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            files = json.load(response)["files"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise DynixError(f"cannot list {pname} on PyPI: {exc}; pass --url instead") from exc
    for suffix in (".tar.gz", ".zip"):
        wanted = f"{pname}-{version}{suffix}".lower().replace("_", "-")
        for entry in files:
            if entry["filename"].lower().replace("_", "-") == wanted and not entry.get("yanked"):
                return entry["url"]
    raise DynixError(f"PyPI has no sdist of {pname} {version}")
