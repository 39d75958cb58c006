"""Deterministic layer tarballs, checked by reading them back with tarfile and gzip."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from dynix.errors import DynixError
from dynix.oci import layers

NAME = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-demo-1.0"


def fake_store(root: Path, *, hardlink: bool = False) -> None:
    """A store path under `root` with files, a long name, a symlink and an empty folder."""
    top = root / NAME.lstrip("/")
    (top / "bin").mkdir(parents=True)
    (top / "share" / ("x" * 150)).mkdir(parents=True)
    (top / "empty").mkdir()
    (top / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(top / "bin" / "tool", 0o555)
    (top / "share" / "data").write_bytes(bytes(range(256)) * 12)
    if hardlink:
        os.link(top / "share" / "data", top / "share" / "data-again")
    else:
        (top / "share" / "data-again").write_bytes((top / "share" / "data").read_bytes())
    (top / "share" / ("x" * 150) / "zé.txt").write_text("unicode name")
    os.symlink("bin/tool", top / "link")
    for folder, dirs, files in os.walk(top):  # the same modes whatever the umask
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o755)
        for name in files:
            full = os.path.join(folder, name)
            if name != "tool" and not os.path.islink(full):
                os.chmod(full, 0o444)
    os.chmod(top, 0o755)


def test_layer_entries_are_sorted_owned_by_root_and_timeless(tmp_path):
    fake_store(tmp_path)
    data = layers.layer_bytes([NAME], root=str(tmp_path))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        tool = tar.extractfile(f"{NAME[1:]}/bin/tool").read()
    top = NAME[1:]
    assert [m.name for m in members] == [
        "nix",
        "nix/store",
        top,
        f"{top}/bin",
        f"{top}/bin/tool",
        f"{top}/empty",
        f"{top}/link",
        f"{top}/share",
        f"{top}/share/data",
        f"{top}/share/data-again",
        f"{top}/share/{'x' * 150}",
        f"{top}/share/{'x' * 150}/zé.txt",
    ]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (1, 0, 0, "", "")
        assert not m.islnk()
    by_name = {m.name: m for m in members}
    assert by_name[f"{top}/bin/tool"].mode == 0o555
    assert by_name[f"{top}/link"].linkname == "bin/tool"
    assert tool == b"#!/bin/sh\necho hi\n"


def test_hard_links_in_the_store_do_not_change_the_layer(tmp_path):
    fake_store(tmp_path / "plain")
    fake_store(tmp_path / "linked", hardlink=True)
    plain = layers.layer_bytes([NAME], root=str(tmp_path / "plain"))
    linked = layers.layer_bytes([NAME], root=str(tmp_path / "linked"))
    assert plain == linked


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_digests_are_those_of_the_bytes_written(tmp_path, compression):
    if compression == "zstd":
        pytest.importorskip("zstandard")
    fake_store(tmp_path)
    level = layers.DEFAULT_LEVELS[compression]
    out = io.BytesIO()
    blob = layers.write_layer(
        [NAME], layers.HashingSink(out, compression, level), root=str(tmp_path)
    )
    data = out.getvalue()
    assert blob.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert blob.size == len(data)
    plain = layers.open_uncompressed(io.BytesIO(data), compression).read()
    assert blob.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert len(plain) % tarfile.RECORDSIZE == 0
    again = io.BytesIO()
    layers.write_layer([NAME], layers.HashingSink(again, compression, level), root=str(tmp_path))
    assert again.getvalue() == data


def test_gzip_header_has_no_time_and_no_name(tmp_path):
    fake_store(tmp_path)
    data = layers.layer_bytes([NAME], "gzip", root=str(tmp_path))
    assert data[:4] == b"\x1f\x8b\x08\x00"  # deflate, no FNAME flag
    assert data[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert gzip.decompress(data)[:3] == b"nix"


def test_only_store_paths_are_accepted(tmp_path):
    with pytest.raises(DynixError, match="not a store path"):
        layers.layer_bytes(["/etc/passwd"])
    with pytest.raises(DynixError, match="cannot read"):
        layers.layer_bytes([f"/nix/store/{'0' * 32}-absent"], root=str(tmp_path))


def test_unknown_compression_is_refused():
    with pytest.raises(DynixError, match="unknown compression"):
        layers.check_compression("lz4")


def test_layer_bytes_are_pinned(tmp_path):
    """The exact bytes of a known tree. tarfile's headers are the same from Python 3.9.18 to
    3.13 (3.8 and older wrote device numbers into every header); should a Python change them,
    image digests would change with it, and this test says so."""
    fake_store(tmp_path)
    plain = layers.layer_bytes([NAME], root=str(tmp_path))
    assert hashlib.sha256(plain).hexdigest() == (
        "6cb40aa4dcbfca133ce8f092eb8b982f71aa284254eee30d5aaa1342b2b1cf3c"
    )
