#!/usr/bin/env python3
"""Baseline: one uncompressed layer per store path, each tarred twice with tarfile.add.

The first pass only hashes the tar (its digest and size must be known before it is written
out); the second writes it. This is how a streamed layered image is produced.

    python bench/tar_twice.py PATHS.json OUT_DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile


class HashOnly:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 1
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def layer(path: str, out) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path, arcname=path.lstrip("/"), filter=normalize)


def main() -> None:
    with open(sys.argv[1]) as handle:
        paths = json.load(handle)
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    for i, path in enumerate(sorted(paths)):
        first = HashOnly()
        layer(path, first)
        with open(os.path.join(out_dir, f"{i}.tar"), "wb") as handle:
            layer(path, handle)
        print(path, first.size, first.digest.hexdigest())


if __name__ == "__main__":
    main()
