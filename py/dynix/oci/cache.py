"""Finished layer blobs, kept by what they contain: store paths never change.

A layer is known by a key made of its store paths with their NAR hashes (so a path rebuilt
with different bytes is a new key) and its compression. `<root>/keys/<key>.json` records the
blob's digests; the blob itself is `<root>/blobs/sha256/<hex>`, read-only, copied (or cloned)
into the images that use it, never shared with them. Both are written under a temporary name
and renamed into place, so an interrupted build never leaves a half-written entry; a temporary
file is named after its writer's PID and locked while written, so one a killed writer left is
removed by the next build.

A blob is filed with a fixed modification time (`STAMP`): a blob changed in place since then
has another time (or size) and is hashed again before it is used, and dropped when its bytes no
longer match its digest. `verify` hashes every blob that is reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .. import log
from ..errors import DynixError
from ..files import pid_alive, try_lock
from . import compress, spec
from .layers import Blob

VERSION = 1
STALE = 6 * 3600  # seconds after which a temporary file is surely abandoned
STAMP = 1_000_000_000  # the modification time (ns) of every filed blob: 1 s, as in the store


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dynix" / "layers"


def layer_key(paths: Sequence[tuple[str, str]], compression: str, level: int) -> str:
    """The cache key of a layer: its (store path, NAR hash) pairs and how it is compressed."""
    how = [compression, compress.identity(compression), level]
    text = json.dumps([VERSION, *how, sorted(paths)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class BlobStore:
    """A folder of content-addressed blobs, optionally with keys naming the layers among them."""

    def __init__(self, root: Path, *, clean: bool = True, verify: bool = False) -> None:
        self.root = root
        self.verify = verify
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
        """The blob filed under `key`, if it is there and intact; a changed one is dropped."""
        entry = self.keys / f"{key}.json"
        try:
            data = json.loads(entry.read_text())
            blob = Blob(data["digest"], data["diffId"], int(data["size"]), data["mediaType"])
        except (OSError, ValueError, KeyError, TypeError, DynixError):
            return None
        if self.intact(blob.digest, blob.size):
            return blob
        with contextlib.suppress(OSError):
            entry.unlink()
        return None

    def intact(self, digest: str, size: int) -> bool:
        """Whether the blob `digest` is here with its bytes unchanged. Cheap when it carries
        the time it was filed with (and `verify` is off); otherwise it is hashed, and removed
        when it no longer matches (so it is written again)."""
        path = self.path(digest)
        try:
            st = path.stat()
        except OSError:
            return False
        if size >= 0 and st.st_size != size:
            return self._drop(path, "its size changed")
        if st.st_mtime_ns == STAMP and not self.verify:
            return True
        h = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    h.update(chunk)
        except OSError:
            return False
        if f"sha256:{h.hexdigest()}" != digest:
            return self._drop(path, "its bytes no longer match its digest")
        with contextlib.suppress(OSError):
            os.utime(path, ns=(STAMP, STAMP))
        return True

    @staticmethod
    def _drop(path: Path, why: str) -> bool:
        log.warn(f"layer cache: {path.name[:12]} dropped ({why}); it is written again")
        with contextlib.suppress(OSError):
            path.unlink()
        return False

    @contextlib.contextmanager
    def _temp(self, prefix: str) -> Iterator[tuple[BinaryIO, Path]]:
        """A new file in `tmp`, locked while it is written, removed again unless the block
        files it away (`_file`)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=f"{prefix}{os.getpid()}.", suffix=".tmp")
        path = Path(name)
        fcntl.flock(fd, fcntl.LOCK_EX)
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
            os.utime(tmp, ns=(STAMP, STAMP))
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

        Another build may be writing into the same cache: a file is taken for dead when its
        writer's PID no longer runs and nothing holds its lock, or when it is untouched for
        `older_than` seconds.
        """
        now = time.time()
        for leftover in self.tmp.glob("*.tmp"):
            with contextlib.suppress(OSError):
                pid = leftover.name.split(".")[1]
                dead = not (pid.isdigit() and pid_alive(int(pid))) and _unlocked(leftover)
                if dead or now - leftover.stat().st_mtime >= older_than:
                    leftover.unlink()


def _unlocked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return try_lock(fd)
    finally:
        os.close(fd)
