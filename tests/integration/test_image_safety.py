"""`dynix image build` never destroys what it did not write, and never hands out a corrupt
cached layer."""

from __future__ import annotations

import hashlib
import json
import os

from image_fixtures import *  # noqa: F403  (fixtures: flake, flake_v2, cache_env)
from image_fixtures import layer_digests, leftovers

from conftest import one_line_error, tree_digest


def _blobs_match_names(layout) -> None:
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_an_existing_folder_that_is_not_a_layout_is_left_alone(dynix, flake, cache_env, tmp_path):
    home = tmp_path / "home"
    (home / "src").mkdir(parents=True)
    (home / "notes.txt").write_text("my notes\n")
    (home / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    before = tree_digest(home)
    proc = dynix("image", "build", flake.ref(), "-o", f"oci:{home}", env=cache_env)
    assert "is not an OCI image layout" in one_line_error(proc)
    # `oci:.` from inside it: refused as well, and no "wrote" before the failure
    proc = dynix("image", "build", flake.ref(), "-o", "oci:.", cwd=home, env=cache_env)
    assert "is not an OCI image layout" in one_line_error(proc)
    assert "wrote" not in proc.stderr
    assert tree_digest(home) == before and leftovers(tmp_path) == []

    # A file that is not an archive is kept too; a folder is not a file.
    notes = home / "notes.txt"
    proc = dynix("image", "build", flake.ref(), "-o", f"docker-archive:{notes}", env=cache_env)
    assert "is not a tar archive" in one_line_error(proc)
    assert notes.read_text() == "my notes\n"
    assert tree_digest(home) == before


def test_what_dynix_wrote_is_replaced(dynix, flake, flake_v2, cache_env, tmp_path):
    out, archive, empty = tmp_path / "img", tmp_path / "img.tar", tmp_path / "empty"
    empty.mkdir()
    for ref in (flake.ref(), flake_v2.ref()):
        for target in (f"oci:{out}", f"docker-archive:{archive}", f"oci:{empty}"):
            proc = dynix("image", "build", ref, "-o", target, env=cache_env)
            assert proc.returncode == 0, proc.stderr
            assert proc.stderr.rstrip().splitlines()[-1].startswith("wrote ")
    assert sorted(os.listdir(out)) == ["blobs", "index.json", "oci-layout"]
    assert leftovers(tmp_path) == []


def test_a_cached_layer_changed_in_place_is_dropped_and_written_again(
    dynix, flake, cache_env, tmp_path
):
    first = tmp_path / "a"
    proc = dynix("image", "build", flake.ref(), "-o", f"oci:{first}", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    image_before = tree_digest(first)
    cache = tmp_path / "xdg-cache" / "dynix" / "layers" / "blobs" / "sha256"
    victim = cache / layer_digests(first)[-1][7:]
    stat = victim.stat()

    def flip() -> None:
        os.chmod(victim, 0o644)
        with open(victim, "r+b") as handle:  # same size, one byte changed, in place
            handle.seek(stat.st_size // 2)
            byte = handle.read(1)
            handle.seek(stat.st_size // 2)
            handle.write(bytes([byte[0] ^ 0xFF]))

    flip()
    assert tree_digest(first) == image_before  # the image does not share the cache's bytes
    second = tmp_path / "b"
    proc = dynix("image", "build", flake.ref(), "-o", f"oci:{second}", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    assert "dropped" in proc.stderr and "2 from the cache, 1 to write" in proc.stderr
    assert (
        proc.stdout.strip()
        == json.loads((first / "index.json").read_text())["manifests"][0]["digest"]
    )
    _blobs_match_names(second)

    # Changed again, its time put back as it was: found by --verify-cache.
    flip()
    os.utime(victim, ns=(victim.stat().st_atime_ns, 1_000_000_000))
    third = tmp_path / "c"
    args = ("image", "build", flake.ref(), "--verify-cache", "-o", f"oci:{third}")
    proc = dynix(*args, env=cache_env)
    assert proc.returncode == 0, proc.stderr
    assert "dropped" in proc.stderr
    _blobs_match_names(third)
