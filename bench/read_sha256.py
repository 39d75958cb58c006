#!/usr/bin/env python3
"""The limit for a layer writer: read every file of the given store paths and sha256 the bytes.

python bench/read_sha256.py PATHS.json
"""

from __future__ import annotations

import hashlib
import json
import os
import sys


def main() -> None:
    with open(sys.argv[1]) as handle:
        paths = json.load(handle)
    digest = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total = 0
    for top in sorted(paths):
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(folder, name)
                if os.path.islink(full):
                    continue
                with open(full, "rb", buffering=0) as handle:
                    while n := handle.readinto(buf):
                        digest.update(view[:n])
                        total += n
    print(total, digest.hexdigest())


if __name__ == "__main__":
    main()
