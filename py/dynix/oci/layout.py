"""Writing images: an OCI image layout folder, or a docker archive.

Both are written from a `BlobSet`: every blob the image needs, each either bytes (configs,
manifests) or a file already on disk (layers from the cache, base layers). A layout folder
gets copies of the files (clones where the file system can); a docker archive streams them
into one tar. The archive holds `manifest.json` (what `docker load` and skopeo's
`docker-archive:` read) and also `index.json`, `oci-layout` and `blobs/sha256/…`, as
`docker save` writes since Docker 25.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DynixError
from ..files import check_links
from . import spec

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
FICLONE = 0x40049409  # ioctl: share the extents of another file, copy-on-write


@dataclass
class BlobSet:
    data: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def add_json(self, media_type: str, obj: Any) -> dict[str, Any]:
        raw = spec.canonical_json(obj)
        desc = spec.descriptor(media_type, raw)
        self.data[desc["digest"]] = raw
        return desc

    def add_file(self, digest: str, path: Path) -> None:
        if digest not in self.data:
            self.files.setdefault(digest, path)

    def size(self, digest: str) -> int:
        if digest in self.data:
            return len(self.data[digest])
        return self.files[digest].stat().st_size

    def digests(self) -> list[str]:
        return sorted(set(self.data) | set(self.files))


def index_json(
    desc: dict[str, Any], ref_name: str | None, extra: Sequence[dict[str, Any]] = ()
) -> bytes:
    """The layout's index: the image, then what is attached to it (artifacts)."""
    top = dict(desc)
    if ref_name:
        top["annotations"] = {spec.REF_NAME: ref_name}
    index = {"schemaVersion": 2, "mediaType": spec.INDEX, "manifests": [top, *extra]}
    return spec.canonical_json(index)


LAYOUT_ENTRIES = {"oci-layout", "index.json", "blobs"}


def check_target(target: Path, transport: str) -> None:
    """Refuse to replace what dynix would not have written: an existing output is replaced
    only when it is an OCI image layout (or an empty folder) for `oci:`, and a tar archive (or
    an empty file) for `docker-archive:`."""
    if not target.name or target == Path(target.anchor):
        raise DynixError(f"cannot write an image to {target}: name a file or folder")
    check_links(target)
    if not os.path.lexists(target):
        return
    if target.is_symlink():
        raise DynixError(f"{target} is a symbolic link: write the image to a new path")
    if transport == "oci":
        if not target.is_dir():
            raise DynixError(f"{target} exists and is not a folder: cannot write an OCI layout")
        try:
            entries = sorted(os.listdir(target))
        except OSError as exc:
            raise DynixError(f"cannot read {target}: {exc.strerror}") from exc
        if entries and ("oci-layout" not in entries or not set(entries) <= LAYOUT_ENTRIES):
            shown = ", ".join(e for e in entries if e not in LAYOUT_ENTRIES)[:120]
            raise DynixError(
                f"{target} exists and is not an OCI image layout (it holds {shown or entries[0]}):"
                " dynix replaces only an image layout; choose a new or empty folder"
            )
        return
    if target.is_dir():
        raise DynixError(f"{target} is a folder: a docker archive is a file")
    if not target.is_file():
        raise DynixError(f"{target} exists and is not a regular file")
    if target.stat().st_size and not _is_tar(target):
        raise DynixError(
            f"{target} exists and is not a tar archive: dynix replaces only an image archive; "
            "choose a new file name"
        )


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def copy_blob_file(src: Path, dest: Path) -> None:
    """Copy a blob into an output: a copy-on-write clone where the file system can (no bytes
    copied, and neither file can change the other), else a copy in the kernel. Never a hard
    link, through which a change to an image would change the cache, and the other way round."""
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                raise
    shutil.copyfile(src, dest)


def write_layout(
    folder: Path,
    blobs: BlobSet,
    top: dict[str, Any],
    ref_name: str | None,
    extra: Sequence[dict[str, Any]] = (),
) -> None:
    """Write an OCI image layout into `folder` (which must not exist yet); `extra` are more
    index entries (artifacts whose subject is the image)."""
    target = folder / "blobs" / "sha256"
    try:
        target.mkdir(parents=True)
        (folder / "oci-layout").write_bytes(OCI_LAYOUT)
        for digest in blobs.digests():
            dest = target / spec.hex_of(digest)
            if digest in blobs.data:
                dest.write_bytes(blobs.data[digest])
            else:
                copy_blob_file(blobs.files[digest], dest)
        (folder / "index.json").write_bytes(index_json(top, ref_name, extra))
    except OSError as exc:
        raise DynixError(f"cannot write {folder}: {exc.strerror or exc}") from exc


def _member(name: str, size: int, mode: int = 0o444, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def write_docker_archive(
    path: Path,
    blobs: BlobSet,
    top: dict[str, Any],
    config_digest: str,
    layer_digests: list[str],
    repo_tags: list[str],
    ref_name: str | None,
) -> None:
    """Write a docker archive (a tar) to `path`, streaming the layer files into it."""
    manifest = [
        {
            "Config": f"blobs/sha256/{spec.hex_of(config_digest)}",
            "RepoTags": repo_tags,
            "Layers": [f"blobs/sha256/{spec.hex_of(d)}" for d in layer_digests],
        }
    ]
    extra = {
        "index.json": index_json(top, ref_name),
        "manifest.json": json.dumps(manifest, separators=(",", ":")).encode(),
        "oci-layout": OCI_LAYOUT,
    }
    written = 0
    try:
        with open(path, "xb", buffering=1 << 20) as out:

            def put(data: bytes) -> None:
                nonlocal written
                out.write(data)
                written += len(data)

            for name in ("blobs", "blobs/sha256"):
                put(_member(name, 0, 0o755, tarfile.DIRTYPE))
            for digest in blobs.digests():
                size = blobs.size(digest)
                put(_member(f"blobs/sha256/{spec.hex_of(digest)}", size))
                if digest in blobs.data:
                    put(blobs.data[digest])
                else:
                    with open(blobs.files[digest], "rb") as src:
                        copied = 0
                        while chunk := src.read(1 << 20):
                            put(chunk)
                            copied += len(chunk)
                    if copied != size:
                        raise DynixError(f"{blobs.files[digest]} changed while it was copied")
                put(bytes(-size % tarfile.BLOCKSIZE))
            for name, data in extra.items():
                put(_member(name, len(data)))
                put(data + bytes(-len(data) % tarfile.BLOCKSIZE))
            put(bytes(2 * tarfile.BLOCKSIZE))
            put(bytes(-written % tarfile.RECORDSIZE))
    except OSError as exc:
        raise DynixError(f"cannot write {path}: {exc.strerror or exc}") from exc
