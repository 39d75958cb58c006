"""The pins file (`pkgs/pins.toml`): every upstream source that flake.lock does not cover.

`PinsFile.load` reads it for editing with tomlkit, so comments, order and formatting survive;
`PinsFile.read` only reads it (the standard library's faster parser). Both validate it the way
`pkgs/pins.nix` reads it. Fetching and hashing is Nix's job
(`dynix.nix`); this module only knows what each pin points at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .errors import DynixError
from .files import read_text, write_text_atomic
from .log import redact
from .tomlfile import line_of, parse, read

if TYPE_CHECKING:
    from tomlkit.toml_document import TOMLDocument

UNRESOLVED = "unresolved"
KINDS = ("pypi", "github", "url", "oci")
REQUIRED = {
    "pypi": ("pname", "version", "url", "hash"),
    "github": ("owner", "repo", "hash"),  # and a rev, or a tag
    "url": ("url", "hash"),
    "oci": ("image", "tag", "systems"),
}
_SRI = re.compile(r"^(sha256-[A-Za-z0-9+/]{43}=|sha512-[A-Za-z0-9+/]{86}==)$")
_OCI_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REV = re.compile(r"^[0-9a-f]{40}$")


def is_sri(value: str) -> bool:
    return bool(_SRI.match(value))


def check_url(value: str) -> str:
    """A source URL Nix can fetch (http, https, ftp or file, with a host or an absolute path)."""
    parsed = urlparse(value)
    ok = parsed.scheme in ("http", "https", "ftp") and bool(parsed.netloc)
    ok = ok or (parsed.scheme == "file" and parsed.path.startswith("/"))
    if not ok or any(c.isspace() for c in value):
        raise DynixError(f"not a URL Nix can fetch: {value!r} (expected https://HOST/PATH)")
    if parsed.username is not None or parsed.password is not None:
        raise DynixError(
            f"not a URL to pin: {redact(value)} carries credentials, which would be committed "
            "with the pins file and written into world-readable store derivations; give them "
            "to Nix in a netrc file (netrc-file in nix.conf)"
        )
    return value


def check_word(what: str, value: str) -> str:
    """A version, revision or tag: one word, without spaces or control characters."""
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise DynixError(f"{what} must be one word, without spaces: {value!r}")
    return value


@dataclass(frozen=True)
class Source:
    """One fixed-output download a pin stands for, and the hash recorded for it."""

    pin: str
    label: str  # "vllm", or "ngc-pytorch (aarch64-linux)"
    url: str
    unpack: bool
    hash: str
    system: str | None = None
    digest: str | None = None  # oci only
    arch: str | None = None  # oci only: the platform's architecture, as registries name it

    @property
    def resolved(self) -> bool:
        return self.hash != UNRESOLVED


@dataclass(frozen=True)
class Pin:
    name: str
    kind: str
    version: str
    data: dict[str, Any]
    build_hashes: dict[str, str] = field(default_factory=dict)

    @property
    def alternative_of(self) -> str | None:
        return self.data.get("alternative-of")

    @property
    def ref(self) -> str:
        """What a github pin fetches: its commit, or its tag where no commit is recorded."""
        return self.data.get("rev") or self.data["tag"]

    def sources(self) -> list[Source]:
        d = self.data
        if self.kind in ("pypi", "url"):
            return [Source(self.name, self.name, d["url"], False, d["hash"])]
        if self.kind == "github":
            url = f"https://github.com/{d['owner']}/{d['repo']}/archive/{self.ref}.tar.gz"
            return [Source(self.name, self.name, url, True, d["hash"])]
        return [
            Source(
                self.name,
                f"{self.name} ({system})",
                f"docker://{d['image']}:{d['tag']}",
                False,
                entry.get("hash", UNRESOLVED),
                system=system,
                digest=entry.get("digest", UNRESOLVED),
                arch=entry["arch"],
            )
            for system, entry in d["systems"].items()
        ]

    def origin(self) -> str:
        d = self.data
        if self.kind == "github":
            return f"github:{d['owner']}/{d['repo']}@{self.ref}"
        if self.kind == "oci":
            return f"{d['image']}:{d['tag']}"
        return d["url"]

    def unresolved(self) -> list[str]:
        """Which of this pin's hashes (and digests) are still unresolved."""
        missing = []
        for src in self.sources():
            if src.digest == UNRESOLVED:
                missing.append(f"digest ({src.system})")
            if not src.resolved:
                missing.append(f"hash ({src.system})" if src.system else "hash")
        missing += [f"build hash {k}" for k, v in self.build_hashes.items() if v == UNRESOLVED]
        return missing

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "origin": self.origin(),
            "alternativeOf": self.alternative_of,
            "sources": [
                {"label": s.label, "url": s.url, "unpack": s.unpack, "hash": s.hash}
                | ({"system": s.system, "digest": s.digest} if s.system else {})
                for s in self.sources()
            ],
            "buildHashes": dict(self.build_hashes),
            "unresolved": self.unresolved(),
            "data": self.data,
        }


def default_path(start: Path | None = None) -> Path:
    """`$DYNIX_PINS`; else `pkgs/pins.toml` in this folder or the nearest one above it (a
    checkout); else the copy dynix was built with (`$DYNIX_DATA_DIR/pins.toml`, set by the Nix
    package)."""
    if env := os.environ.get("DYNIX_PINS"):
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pkgs" / "pins.toml"
        if candidate.is_file():
            return candidate
    if data := os.environ.get("DYNIX_DATA_DIR"):
        candidate = Path(data) / "pins.toml"
        if candidate.is_file():
            return candidate
    raise DynixError(
        "no pins file found: run inside a dynix checkout, or pass --file / set DYNIX_PINS"
    )


class PinsFile:
    """The parsed pins file; edits keep the document's comments and layout."""

    def __init__(self, path: Path, text: str, doc: TOMLDocument | dict[str, Any]) -> None:
        self.path = path
        self.text = text
        self.doc = doc
        self.pins = {name: self._validate(name) for name in doc}

    @staticmethod
    def _text(path: Path) -> str:
        try:
            return read_text(path, "pins file")
        except FileNotFoundError:
            raise DynixError(f"cannot read pins file {path}: no such file") from None

    @classmethod
    def load(cls, path: str | Path) -> PinsFile:
        """The file, to edit and `save`."""
        path = Path(path)
        text = cls._text(path)
        return cls(path, text, parse(text, str(path)))

    @classmethod
    def read(cls, path: str | Path) -> PinsFile:
        """The file, only to read (faster: no layout kept); `save` refuses."""
        path = Path(path)
        text = cls._text(path)
        return cls(path, text, read(text, str(path)))

    # -- validation ---------------------------------------------------------------------
    def _fail(self, name: str, key: str | None, message: str) -> DynixError:
        line = line_of(self.text, name, key)
        return DynixError(f"{self.path}:{line}: pin '{name}': {message}")

    def _validate(self, name: str) -> Pin:
        table = self.doc[name]
        if not isinstance(table, dict):
            raise self._fail(name, None, "must be a table ([name] with kind, hash, ...)")
        data = table.unwrap() if hasattr(table, "unwrap") else dict(table)
        kind = data.get("kind")
        if kind not in KINDS:
            raise self._fail(name, "kind", f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        for key in REQUIRED[kind]:
            if key not in data:
                raise self._fail(name, None, f"missing '{key}' (kind {kind})")
        for key, value in data.items():
            if key in ("systems", "build-hashes"):
                continue
            if not isinstance(value, str):
                raise self._fail(name, key, f"'{key}' must be a string")
        if kind == "github":
            if "rev" not in data and "tag" not in data:
                raise self._fail(name, None, "missing 'rev' (or 'tag') (kind github)")
            if "rev" in data and not _REV.match(data["rev"]):
                raise self._fail(name, "rev", "rev must be a full 40-character commit hash")
        if "url" in data:
            try:
                check_url(data["url"])
            except DynixError as exc:
                raise self._fail(name, "url", str(exc)) from None
        if "hash" in data:
            self._check_hash(name, "hash", data["hash"])
        build_hashes = data.get("build-hashes", {})
        if not isinstance(build_hashes, dict):
            raise self._fail(name, "build-hashes", "build-hashes must be a table")
        for key, value in build_hashes.items():
            self._check_hash(name, key, value)
        if kind == "oci":
            systems = data["systems"]
            if not isinstance(systems, dict) or not systems:
                raise self._fail(name, None, "systems must be a table of per-system images")
            for system, entry in systems.items():
                for key in ("arch", "digest", "hash"):
                    if not isinstance(entry, dict) or not isinstance(entry.get(key), str):
                        raise self._fail(name, None, f"systems.{system} needs a string '{key}'")
                if entry["digest"] != UNRESOLVED and not _OCI_DIGEST.match(entry["digest"]):
                    raise self._fail(name, "digest", f"bad digest for {system}: {entry['digest']}")
                self._check_hash(name, "hash", entry["hash"])
        alt = data.get("alternative-of")
        if alt is not None and alt not in self.doc:
            raise self._fail(name, "alternative-of", f"alternative-of names no pin: {alt!r}")
        version = data.get("version") or data.get("tag", "")
        return Pin(name, kind, version, data, dict(build_hashes))

    def _check_hash(self, name: str, key: str, value: object) -> None:
        if value != UNRESOLVED and not (isinstance(value, str) and is_sri(value)):
            raise self._fail(
                name, key, f"'{key}' must be an SRI hash (sha256-...=) or \"{UNRESOLVED}\""
            )

    # -- selection ----------------------------------------------------------------------
    def select(self, names: Iterable[str]) -> list[Pin]:
        names = list(names)
        unknown = [n for n in names if n not in self.pins]
        if unknown:
            known = ", ".join(self.pins)
            raise DynixError(f"no pin named {', '.join(unknown)} (pins: {known})")
        return [self.pins[n] for n in names] if names else list(self.pins.values())

    # -- editing ------------------------------------------------------------------------
    def table(self, name: str) -> Any:
        return self.doc[name]

    def save(self) -> None:
        """Re-validate the edited document and replace the file in one rename."""
        import tomlkit

        if not isinstance(self.doc, tomlkit.TOMLDocument):
            raise TypeError("a pins file opened with PinsFile.read cannot be saved")
        text = tomlkit.dumps(self.doc)
        PinsFile(self.path, text, tomlkit.parse(text))  # never write what we could not read
        write_text_atomic(self.path, text)
        self.text = text
        self.pins = {name: self._validate(name) for name in self.doc}
