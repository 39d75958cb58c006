"""Finished layer blobs, kept by what they contain: store paths never change.

A layer is known by a key made of its store paths with their NAR hashes (so a path rebuilt
with different bytes is a new key) and its compression. `<root>/keys/<key>.json` records the
blob's digests; the blob itself is `<root>/blobs/sha256/<hex>`, read-only, shared by hard link
with the images that use it. Both are written under a temporary name and renamed into place, so
an interrupted build never leaves a half-written entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import DynixError
from . import spec
from .layers import Blob

VERSION = 1
STALE = 6 * 3600  # seconds after which a temporary file is surely abandoned


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dynix" / "layers"


def layer_key(paths: Sequence[tuple[str, str]], compression: str, level: int) -> str:
    """The cache key of a layer: its (store path, NAR hash) pairs and how it is compressed."""
    text = json.dumps([VERSION, compression, level, sorted(paths)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class BlobStore:
    """A folder of content-addressed blobs, optionally with keys naming the layers among them."""

    def __init__(self, root: Path, *, clean: bool = True) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.keys = root / "keys"
        self.tmp = root / "tmp"
        try:
            for folder in (self.blobs, self.keys, self.tmp):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DynixError(f"cannot use layer cache {root}: {exc.strerror}") from exc
        if clean:
            self.clean_temp(older_than=STALE)

    def path(self, digest: str) -> Path:
        return self.blobs / spec.hex_of(digest)

    def lookup(self, key: str) -> Blob | None:
        try:
            data = json.loads((self.keys / f"{key}.json").read_text())
            blob = Blob(data["digest"], data["diffId"], int(data["size"]), data["mediaType"])
            if self.path(blob.digest).stat().st_size == blob.size:
                return blob
        except (OSError, ValueError, KeyError, TypeError, DynixError):
            pass
        return None

    @contextlib.contextmanager
    def _temp(self, prefix: str) -> Iterator[tuple[BinaryIO, Path]]:
        """A new file in `tmp`, removed again unless the block files it away (`_file`)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=prefix, suffix=".tmp")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
                yield handle, path
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise

    @staticmethod
    def _file(tmp: Path, target: Path, mode: int | None = None) -> None:
        """Move a finished temporary file to `target` in one rename (removing it on failure)."""
        try:
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def write(self, key: str | None, produce: Callable[[BinaryIO], Blob]) -> Blob:
        """Write a blob through `produce`, file it under its digest (and `key`), return it.
        A failure (a full disk, an interruption) leaves no file behind in `tmp`."""
        try:
            with self._temp("layer.") as (handle, tmp):
                blob = produce(handle)
            self._file(tmp, self.path(blob.digest), 0o444)
            if key is not None:
                with self._temp("key.") as (out, tmp):
                    out.write(json.dumps(blob.to_json()).encode())
                self._file(tmp, self.keys / f"{key}.json")
        except OSError as exc:
            raise DynixError(f"cannot write to {self.root}: {exc.strerror or exc}") from exc
        return blob

    def clean_temp(self, older_than: float = 0) -> None:
        """Remove what killed writers left (an interrupted one removes its own).

        Another build may be writing into the same cache: only files untouched for
        `older_than` seconds are taken for dead.
        """
        now = time.time()
        for leftover in self.tmp.glob("*.tmp"):
            with contextlib.suppress(OSError):
                if now - leftover.stat().st_mtime >= older_than:
                    leftover.unlink()
