"""Deterministic layer tarballs of Nix store paths, hashed while they are written.

A layer is a POSIX (pax) tar holding `nix/`, `nix/store/` and the trees of its store paths,
entries in sorted order, every mtime 1 (the store's own), owner 0:0 with no user or group
names. Identical files are stored again rather than as hard links, so a store that
deduplicates files (`auto-optimise-store`) gives the same bytes as one that does not.

Headers come from `tarfile.TarInfo.tobuf`; file contents are copied through one reusable
buffer. Nothing is held in memory beyond that buffer and one directory listing: the tar
stream is hashed (the diff_id), compressed, hashed again (the digest) and written as it goes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import DynixError
from . import compress, spec

MTIME = 1
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
CHUNK = 1 << 20
COMPRESSIONS = ("gzip", "zstd", "none")
DEFAULT_LEVELS = {"gzip": 2, "zstd": 3, "none": 0}
_PARENT_MODE = 0o755


class Stopped(Exception):
    """The build was cancelled (Ctrl-C, or another layer failed) while this layer was written."""


@dataclass(frozen=True)
class Blob:
    """A finished layer: digest and size of the bytes as stored, diff_id of the plain tar."""

    digest: str
    diff_id: str
    size: int
    media_type: str

    def to_json(self) -> dict[str, object]:
        return {
            "digest": self.digest,
            "diffId": self.diff_id,
            "size": self.size,
            "mediaType": self.media_type,
        }


LEVELS = {"gzip": compress.GZIP_LEVELS, "zstd": compress.ZSTD_LEVELS, "none": range(0, 1)}


def check_compression(compression: str, level: int | None = None) -> None:
    """Fail now, not halfway through, when a compression cannot be used here."""
    if compression not in COMPRESSIONS:
        raise DynixError(f"unknown compression {compression!r} (use {', '.join(COMPRESSIONS)})")
    levels = LEVELS[compression]
    if level is not None and level not in levels:
        if compression == "none":
            raise DynixError("--level goes with --compress gzip or zstd")
        raise DynixError(f"{compression} levels go from {levels[0]} to {levels[-1]}, not {level}")
    compress.compressor(compression, levels[-1], 1)


class HashingSink:
    """Takes the uncompressed tar stream; hashes it, compresses it, hashes and writes the result."""

    def __init__(
        self,
        out: BinaryIO,
        compression: str,
        level: int,
        *,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.out = out
        self.compression = compression
        self.tar_hash = hashlib.sha256()
        self.blob_hash = hashlib.sha256() if compression != "none" else self.tar_hash
        self.tar_size = 0
        self.blob_size = 0
        self._z = compress.compressor(compression, level)
        self._stop = stop
        self._progress = progress

    def write(self, data: bytes | memoryview) -> None:
        if self._stop is not None and self._stop.is_set():
            raise Stopped()
        self.tar_hash.update(data)
        self.tar_size += len(data)
        if self._z is None:
            self.out.write(data)
            self.blob_size += len(data)
        else:
            self._emit(self._z.compress(data))
        if self._progress is not None:
            self._progress(len(data))

    def _emit(self, data: bytes) -> None:
        if data:
            self.blob_hash.update(data)
            self.out.write(data)
            self.blob_size += len(data)

    def close(self) -> None:
        """Stop the compressor's threads (after a failure; `finish` does it otherwise)."""
        if self._z is not None:
            self._z.close()

    def finish(self) -> Blob:
        if self._z is not None:
            self._emit(self._z.flush())
        self.out.flush()
        return Blob(
            digest="sha256:" + self.blob_hash.hexdigest(),
            diff_id="sha256:" + self.tar_hash.hexdigest(),
            size=self.blob_size,
            media_type=spec.layer_media_type(self.compression),
        )


class _TarWriter:
    """Tar entries into a sink. Headers and small files are gathered in one reusable buffer
    (files are read straight into it), so the sink hashes and writes a MiB at a time; large
    files go through in CHUNK pieces."""

    def __init__(self, sink: HashingSink) -> None:
        self.sink = sink
        self.offset = 0
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        self.fill = 0

    def _flush(self) -> None:
        if self.fill:
            self.sink.write(self.view[: self.fill])
            self.fill = 0

    def _room(self, n: int) -> None:
        if self.fill + n > CHUNK:
            self._flush()

    def _put(self, data: bytes) -> None:
        self._room(len(data))
        self.view[self.fill : self.fill + len(data)] = data
        self.fill += len(data)
        self.offset += len(data)

    def _header(self, info: tarfile.TarInfo) -> None:
        info.mtime = MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def directory(self, name: str, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        self._header(info)

    def symlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.mode = 0o777
        info.linkname = target
        self._header(info)

    def file(self, name: str, real: str, st: os.stat_result) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.REGTYPE
        info.mode = stat.S_IMODE(st.st_mode)
        size = info.size = st.st_size
        self._header(info)
        padded = size + (-size % BLOCK)
        with open(real, "rb", buffering=0) as handle:
            if padded <= CHUNK // 4:
                self._room(padded)
                end = self.fill + size
                while self.fill < end:
                    n = handle.readinto(self.view[self.fill : end])
                    if not n:
                        raise DynixError(f"{real} got shorter while it was read")
                    self.fill += n
                self.view[end : end + padded - size] = bytes(padded - size)
                self.fill = end + padded - size
            else:
                self._flush()
                left = size
                while left:
                    n = handle.readinto(self.view[: min(CHUNK, left)])
                    if not n:
                        raise DynixError(f"{real} got shorter while it was read")
                    self.sink.write(self.view[:n])
                    left -= n
                if padded > size:
                    self.sink.write(bytes(padded - size))
        self.offset += padded

    def close(self) -> None:
        """Two zero blocks end the archive; zeros fill its last record, as tar does."""
        tail = 2 * BLOCK
        self._put(bytes(tail + -(self.offset + tail) % RECORD))
        self._flush()


def _walk(writer: _TarWriter, real_root: str, name_root: str) -> None:
    """Add one store path's tree: pre-order, the entries of each folder sorted by name."""
    stack = [(real_root, name_root)]
    while stack:
        real, name = stack.pop()
        try:
            st = os.lstat(real)
        except OSError as exc:
            raise DynixError(f"cannot read {real}: {exc.strerror}") from exc
        if stat.S_ISDIR(st.st_mode):
            writer.directory(name, stat.S_IMODE(st.st_mode))
            try:
                children = sorted(os.listdir(real))
            except OSError as exc:
                raise DynixError(f"cannot list {real}: {exc.strerror}") from exc
            stack.extend((f"{real}/{c}", f"{name}/{c}") for c in reversed(children))
        elif stat.S_ISLNK(st.st_mode):
            writer.symlink(name, os.readlink(real))
        elif stat.S_ISREG(st.st_mode):
            try:
                writer.file(name, real, st)
            except OSError as exc:
                raise DynixError(f"cannot read {real}: {exc.strerror}") from exc
        else:
            raise DynixError(f"{real}: not a file, folder or symlink; not a store path's content")


def write_layer(store_paths: Iterable[str], sink: HashingSink, *, root: str = "") -> Blob:
    """Write the layer of `store_paths` (`/nix/store/…`) into `sink` and return its digests.

    `root` is prefixed when reading, for stores that live elsewhere (`--store DIR`): the
    names inside the layer are always `nix/store/…`.
    """
    writer = _TarWriter(sink)
    try:
        writer.directory("nix", _PARENT_MODE)
        writer.directory("nix/store", _PARENT_MODE)
        for path in sorted(set(store_paths)):
            if not path.startswith("/nix/store/") or "/" in path[len("/nix/store/") :]:
                raise DynixError(f"not a store path: {path}")
            _walk(writer, root + path, path.lstrip("/"))
        writer.close()
        return sink.finish()
    finally:
        sink.close()


def layer_bytes(store_paths: Iterable[str], compression: str = "none", *, root: str = "") -> bytes:
    """A whole layer in memory; for small layers and tests only."""
    out = io.BytesIO()
    write_layer(store_paths, HashingSink(out, compression, DEFAULT_LEVELS[compression]), root=root)
    return out.getvalue()


def open_uncompressed(handle: BinaryIO, compression: str) -> BinaryIO:
    """A reader of the plain tar inside a layer blob."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        try:
            import zstandard
        except ImportError as exc:
            raise DynixError("reading zstd layers needs the Python package zstandard") from exc
        return zstandard.ZstdDecompressor().stream_reader(handle)  # type: ignore[return-value]
    return handle
