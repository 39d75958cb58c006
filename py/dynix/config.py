"""The user's dynix configuration: a TOML file edited with tomlkit so comments survive.

Where it is: `--config PATH`, else `./dynix.toml`, else `$XDG_CONFIG_HOME/dynix/config.toml`
(`~/.config/dynix/config.toml`). dynix reads the tables it knows and leaves every other table
(`[serve]`, …) as it found it:

    [caches.team]                              # a binary cache: any Nix store URL
    url = "s3://team-cache?region=eu-west-1"
    public-key = "team-1:…"                    # trusted when substituting from it
    secret-key-file = "~/.config/dynix/team.sec"  # for `dynix cache push`

    [caches.public]                            # a cachix cache
    url = "https://public.cachix.org"
    cachix = "public"
    public-key = "public.cachix.org-1:…"

    [build]
    builders = "ssh-ng://gb200-01 aarch64-linux"   # remote builders for `dynix build`
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse, urlsplit

from .errors import DynixError
from .files import read_text, write_text_atomic
from .tomlfile import line_of, parse, read

if TYPE_CHECKING:
    from tomlkit.toml_document import TOMLDocument

SCHEMES = ("file", "http", "https", "s3", "ssh", "ssh-ng")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CACHIX_HOST = re.compile(r"^([a-z0-9][a-z0-9-]*)\.cachix\.org$")
CACHE_KEYS = ("url", "public-key", "secret-key-file", "cachix")


def default_path() -> Path:
    """`./dynix.toml` when there is one, else the per-user file (which may not exist yet)."""
    local = Path("dynix.toml")
    if local.is_file():
        return local
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dynix" / "config.toml"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise DynixError(f"bad cache name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def parse_key(key: str, *, secret: bool = False) -> tuple[str, bytes]:
    """`NAME:base64` → (NAME, raw bytes); ed25519: 32 bytes public, 64 bytes secret."""
    what = "secret" if secret else "public"
    size = 64 if secret else 32
    name, sep, data = key.strip().partition(":")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raw = b""
    if not sep or not name or len(raw) != size:
        shown = "" if secret else f" {key.strip()!r}"
        raise DynixError(f"not a Nix {what} key{shown}: expected NAME:BASE64 ({size} bytes)")
    return name, raw


def public_from_secret(secret_key: str) -> str:
    """The public key of a Nix ed25519 secret key (its last 32 bytes), without calling Nix."""
    name, raw = parse_key(secret_key, secret=True)
    return f"{name}:{base64.b64encode(raw[32:]).decode()}"


def normalise_url(url: str) -> tuple[str, str | None]:
    """A cache URL as Nix takes it, and its cachix name when it is a cachix cache.

    `cachix:NAME` and `https://NAME.cachix.org` are cachix caches; otherwise any Nix store URL
    with a scheme of `SCHEMES`.
    """
    if url.startswith("cachix:"):
        name = url.removeprefix("cachix:")
        if not re.match(r"^[a-z0-9][a-z0-9-]*$", name):
            raise DynixError(f"bad cachix cache name in {url!r}")
        return f"https://{name}.cachix.org", name
    parsed = urlparse(url)
    if parsed.scheme not in SCHEMES:
        schemes = ", ".join(f"{s}://" for s in SCHEMES)
        raise DynixError(f"bad cache URL {url!r}: expected cachix:NAME or one of {schemes}")
    if parsed.scheme == "file":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise DynixError(f"bad cache URL {url!r}: a file:// URL needs an absolute path")
    elif not parsed.netloc:
        raise DynixError(f"bad cache URL {url!r}: no host")
    match = _CACHIX_HOST.match(parsed.netloc) if parsed.scheme == "https" else None
    if match and parsed.path in ("", "/"):
        return f"https://{match.group(1)}.cachix.org", match.group(1)
    return url, None


@dataclass(frozen=True)
class Cache:
    name: str
    url: str
    public_key: str | None = None
    secret_key_file: str | None = None
    cachix: str | None = None

    @property
    def kind(self) -> str:
        return "cachix" if self.cachix else urlparse(self.url).scheme

    def secret_key_path(self) -> Path | None:
        return Path(self.secret_key_file).expanduser() if self.secret_key_file else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "kind": self.kind,
            "cachix": self.cachix,
            "publicKey": self.public_key,
            "secretKeyFile": self.secret_key_file,
        }


class Config:
    """The parsed configuration file; `save` writes it back with its comments.

    Reading takes the plain data (`data`); the comment-keeping document (`doc`) is parsed only
    when something is edited.
    """

    def __init__(self, path: Path, text: str, data: dict[str, Any], exists: bool) -> None:
        self.path = path
        self.text = text
        self.data = data
        self.exists = exists
        self._doc: TOMLDocument | None = None
        self.caches = self._read_caches()
        self.builders = self._read_builders()

    @property
    def doc(self) -> TOMLDocument:
        if self._doc is None:
            self._doc = parse(self.text, str(self.path))
        return self._doc

    @classmethod
    def load(cls, path: str | Path | None = None) -> Config:
        path = Path(path) if path is not None else default_path()
        try:
            text, exists = read_text(path, "config"), True
        except FileNotFoundError:
            text, exists = "", False
        return cls(path, text, read(text, str(path)), exists)

    # -- reading and validation ---------------------------------------------------------
    def fail(self, header: str, key: str | None, message: str) -> DynixError:
        return DynixError(f"{self.path}:{line_of(self.text, header, key)}: {message}")

    def _read_caches(self) -> dict[str, Cache]:
        table = self.data.get("caches", {})
        if not isinstance(table, dict):
            raise self.fail("caches", None, "'caches' must be a table of [caches.NAME] tables")
        caches = {}
        for name, entry in table.items():
            header = f"caches.{name}"
            if not isinstance(entry, dict):
                raise self.fail(header, None, f"cache '{name}' must be a table")
            for key, value in entry.items():
                if key not in CACHE_KEYS:
                    known = ", ".join(CACHE_KEYS)
                    raise self.fail(header, key, f"cache '{name}': unknown key '{key}' ({known})")
                if not isinstance(value, str):
                    raise self.fail(header, key, f"cache '{name}': '{key}' must be a string")
            if "url" not in entry:
                raise self.fail(header, None, f"cache '{name}' has no url")
            try:
                check_name(name)
                url, cachix = normalise_url(str(entry["url"]))
                if entry.get("public-key"):
                    parse_key(str(entry["public-key"]))
            except DynixError as exc:
                key = "public-key" if "key" in str(exc) else "url"
                raise self.fail(header, key, f"cache '{name}': {exc}") from None
            caches[name] = Cache(
                name=name,
                url=url,
                public_key=_str_or_none(entry.get("public-key")),
                secret_key_file=_str_or_none(entry.get("secret-key-file")),
                cachix=_str_or_none(entry.get("cachix")) or cachix,
            )
        return caches

    def _read_builders(self) -> str:
        build = self.data.get("build", {})
        if not isinstance(build, dict):
            raise self.fail("build", None, "'build' must be a table")
        builders = build.get("builders", "")
        if isinstance(builders, list) and all(isinstance(b, str) for b in builders):
            return "; ".join(builders)
        if not isinstance(builders, str):
            raise self.fail("build", "builders", "'builders' must be a string or list of strings")
        return builders

    def cache(self, name: str) -> Cache:
        if name not in self.caches:
            known = ", ".join(self.caches) or "none configured"
            raise DynixError(f"no cache named {name!r} in {self.path} (caches: {known})")
        return self.caches[name]

    # -- editing ------------------------------------------------------------------------
    def set_cache(self, cache: Cache) -> None:
        """Add `cache`, or update the keys dynix owns in an existing entry (comments stay)."""
        import tomlkit

        if "caches" not in self.doc:
            self.doc.add("caches", tomlkit.table(is_super_table=True))
        caches = self.doc["caches"]
        entry = caches.get(cache.name)
        if entry is None:
            entry = tomlkit.table()
            caches.add(cache.name, entry)
        values = {
            "url": cache.url,
            "cachix": cache.cachix,
            "public-key": cache.public_key,
            "secret-key-file": cache.secret_key_file,
        }
        for key, value in values.items():
            if value is not None:
                entry[key] = value
            elif key in entry and key != "url":
                del entry[key]

    def remove_cache(self, name: str) -> None:
        self.cache(name)
        del self.doc["caches"][name]

    def save(self) -> None:
        """Check that the edited document reads back, then replace the file in one rename."""
        text = self.doc.as_string()
        data = read(text, str(self.path))
        checked = Config(self.path, text, data, True)  # never write what we cannot read
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a cache URL with a login makes the file a secret: readable by its owner only
        secret = any(login_host(c.url) for c in checked.caches.values())
        write_text_atomic(self.path, text, mode=0o600 if secret else None)
        self.text, self.data, self.exists = text, data, True
        self.caches = self._read_caches()


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None


def login_host(url: str) -> str | None:
    """The host of a URL that carries a user or password (`https://user:pw@host/…`), else None."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    return parts.hostname or parts.netloc.rpartition("@")[2]
