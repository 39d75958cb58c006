"""Layer compression on every core, with the same bytes whatever the number of cores.

gzip: the tar stream is cut into blocks of a fixed size (`GZIP_BLOCK`). Each block is deflated
on its own, with the 32 KiB before it as its dictionary, and ends on a byte boundary (a sync
flush), so blocks are compressed by several threads at once and simply follow one another in
one gzip member; an empty final block, the CRC-32 and the length close it. This is how pigz
compresses in parallel. The deflater is ISA-L's (python-isal), several times faster than zlib
at a somewhat larger output; it releases the GIL while it works. The bytes depend on the
input, the level, the block size and the ISA-L version only, never on the thread count.

zstd: zstandard's multi-threaded mode, always with at least one worker thread: libzstd gives
the same frame for any number of workers from one up (and another one with none).

`identity()` names the compressor and version; the layer cache keys its entries with it, so a
new compressor never reuses layers an old one wrote.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import DynixError

GZIP_BLOCK = 1 << 20
_WINDOW = 32 << 10
# gzip header: deflate, no flags, mtime 0, no extra flags, made on Unix (what zlib writes there)
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
# An empty final deflate block with fixed codes (BFINAL 1, BTYPE 01, end-of-block).
_FINAL_BLOCK = b"\x03\x00"
GZIP_LEVELS = range(0, 4)  # ISA-L's
ZSTD_LEVELS = range(1, 23)


def threads() -> int:
    """The cores this process may run on (what `taskset` allows), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _isal() -> Any:
    try:
        from isal import isal_zlib
    except ImportError as exc:
        raise DynixError(
            "gzip layers need the Python package isal (python-isal): pip install isal"
        ) from exc
    return isal_zlib


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise DynixError(
            "--compress zstd needs the Python package zstandard (pip install zstandard)"
        ) from exc
    return zstandard


def identity(compression: str) -> str:
    """Which implementation and version writes `compression`: part of the layer cache's key."""
    if compression == "gzip":
        import isal

        return f"gzip isa-l {isal.ISAL_VERSION} python-isal {isal.__version__} block {GZIP_BLOCK}"
    if compression == "zstd":
        zstandard = _zstandard()
        libzstd = ".".join(map(str, zstandard.ZSTD_VERSION))
        return f"zstd {libzstd} zstandard {zstandard.__version__}"
    return compression


def _deflate(isal_zlib: Any, block: bytes, dictionary: bytes, level: int) -> bytes:
    args = [level, isal_zlib.DEFLATED, -15, isal_zlib.DEF_MEM_LEVEL, isal_zlib.Z_DEFAULT_STRATEGY]
    if dictionary:
        args.append(dictionary)
    deflater = isal_zlib.compressobj(*args)
    return deflater.compress(block) + deflater.flush(isal_zlib.Z_SYNC_FLUSH)


class ParallelGzip:
    """A gzip compressor with the `compress(data) -> bytes` / `flush() -> bytes` shape of
    zlib's, deflating blocks in `workers` threads (one: in the caller's thread)."""

    def __init__(self, level: int, workers: int) -> None:
        self._z = _isal()
        self._level = level
        self._workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self._workers) if self._workers > 1 else None
        self._pending: deque[Future[bytes] | bytes] = deque()
        self._buf = bytearray()
        self._tail = b""
        self._crc = 0
        self._size = 0
        self._started = False

    def _submit(self, block: bytes) -> None:
        self._crc = self._z.crc32(block, self._crc)
        self._size += len(block)
        dictionary, self._tail = self._tail, block[-_WINDOW:]
        if self._pool is None:
            self._pending.append(_deflate(self._z, block, dictionary, self._level))
        else:
            self._pending.append(
                self._pool.submit(_deflate, self._z, block, dictionary, self._level)
            )

    def _take(self, final: bool) -> list[bytes]:
        """Compressed blocks in order: those done, all of them when `final`, and enough to keep
        at most two blocks per thread in flight (memory stays flat)."""
        out = []
        while self._pending:
            head = self._pending[0]
            if isinstance(head, Future) and not (
                final or head.done() or len(self._pending) > 2 * self._workers
            ):
                break
            self._pending.popleft()
            out.append(head.result() if isinstance(head, Future) else head)
        return out

    def compress(self, data: bytes | memoryview) -> bytes:
        out = [] if self._started else [_GZIP_HEADER]
        self._started = True
        self._buf += data
        while len(self._buf) >= GZIP_BLOCK:
            self._submit(bytes(self._buf[:GZIP_BLOCK]))
            del self._buf[:GZIP_BLOCK]
        out += self._take(final=False)
        return b"".join(out)

    def flush(self) -> bytes:
        out = [] if self._started else [_GZIP_HEADER]
        self._started = True
        if self._buf:
            self._submit(bytes(self._buf))
            self._buf.clear()
        out += self._take(final=True)
        out += [_FINAL_BLOCK, struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)]
        self.close()
        return b"".join(out)

    def close(self) -> None:
        """Stop the threads; blocks not yet compressed are dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()


class _Zstd:
    def __init__(self, level: int, workers: int) -> None:
        zstandard = _zstandard()
        self._c = zstandard.ZstdCompressor(level=level, threads=max(1, workers)).compressobj()

    def compress(self, data: bytes | memoryview) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush()

    def close(self) -> None:
        pass


def compressor(compression: str, level: int, workers: int | None = None) -> Any:
    """A compressor for `compression` ("gzip", "zstd"); None for "none"."""
    workers = threads() if workers is None else workers
    if compression == "gzip":
        return ParallelGzip(level, workers)
    if compression == "zstd":
        return _Zstd(level, workers)
    return None
