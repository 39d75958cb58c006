"""Bad input to `dynix image`: one-line errors, and nothing left behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from image_fixtures import *  # noqa: F403  (fixtures: flake, flake_v2, cache_env)
from image_fixtures import leftovers

import conftest
from conftest import one_line_error


@contextlib.contextmanager
def tmpfs(where: Path, *options: str):
    """A small tmpfs mounted for the test (we run as root), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    opts = ",".join(("size=1m", *options))
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.fail(f"mount -t tmpfs failed (tests run as root): {proc.stderr.decode()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_unknown_installable(dynix, flake, cache_env, tmp_path):
    proc = dynix(
        "image", "build", flake.ref("nope"), "-o", f"oci:{tmp_path / 'img'}", env=cache_env
    )
    assert "does not provide attribute" in one_line_error(proc)
    assert not (tmp_path / "img").exists() and leftovers(tmp_path) == []


def test_read_only_output(dynix, flake, cache_env, tmp_path):
    with tmpfs(tmp_path / "ro", "ro") as ro:
        proc = dynix("image", "build", flake.ref(), "-o", f"oci:{ro / 'img'}", env=cache_env)
        assert "Read-only file system" in one_line_error(proc)
        assert list(ro.iterdir()) == []


@pytest.mark.parametrize("use_cache", [False, True], ids=["no-cache", "cache-elsewhere"])
def test_full_disk_leaves_nothing_behind(dynix, flake, cache_env, tmp_path, use_cache):
    with tmpfs(tmp_path / "small") as small:
        args = [] if use_cache else ["--no-cache"]
        proc = dynix(
            "image",
            "build",
            flake.ref(),
            *args,
            "--compress",
            "none",
            "-o",
            f"oci:{small / 'img'}",
            env=cache_env,
        )
        assert "No space left on device" in one_line_error(proc)
        assert list(small.iterdir()) == []


def test_full_disk_for_the_cache_leaves_no_partial_entry(dynix, flake, tmp_path):
    with tmpfs(tmp_path / "small") as small:
        proc = dynix(
            "image",
            "build",
            flake.ref(),
            "--cache-dir",
            str(small / "cache"),
            "--compress",
            "none",
            "-o",
            f"oci:{tmp_path / 'img'}",
        )
        assert "No space left on device" in one_line_error(proc)
        assert list((small / "cache" / "tmp").iterdir()) == []
        for key in (small / "cache" / "keys").iterdir():  # layers that did fit are complete
            entry = json.loads(key.read_text())
            blob = small / "cache" / "blobs" / "sha256" / entry["digest"][7:]
            assert blob.stat().st_size == entry["size"]
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "img").exists()


@pytest.fixture
def good_base(dynix, flake, cache_env, tmp_path) -> Path:
    base = tmp_path / "base"
    proc = dynix("image", "build", flake.ref("busybox"), "-o", f"oci:{base}", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    return base


def _manifest(layout: Path) -> dict:
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    return json.loads((layout / "blobs/sha256" / digest[7:]).read_text())


def test_corrupt_base_layer(dynix, flake, good_base, cache_env, tmp_path):
    layer = good_base / "blobs/sha256" / _manifest(good_base)["layers"][0]["digest"][7:]
    data = layer.read_bytes()
    layer.unlink()
    layer.write_bytes(data[:100])
    proc = dynix(
        "image",
        "build",
        flake.ref("lib"),
        "--base",
        f"oci:{good_base}",
        "-o",
        f"oci:{tmp_path / 'img'}",
        env=cache_env,
    )
    assert "corrupt" in one_line_error(proc)
    assert not (tmp_path / "img").exists() and leftovers(tmp_path) == []


def test_corrupt_base_config(dynix, flake, good_base, cache_env, tmp_path):
    config = good_base / "blobs/sha256" / _manifest(good_base)["config"]["digest"][7:]
    config.write_text(config.read_text().replace("amd64", "arm64"))
    proc = dynix(
        "image",
        "build",
        flake.ref("lib"),
        "--base",
        f"oci:{good_base}",
        "-o",
        f"oci:{tmp_path / 'img'}",
        env=cache_env,
    )
    assert "does not match its digest" in one_line_error(proc)


def test_base_that_is_not_an_image(dynix, flake, cache_env, tmp_path):
    (tmp_path / "junk.tar").write_text("not a tar")
    (tmp_path / "layout").mkdir()
    (tmp_path / "layout" / "index.json").write_text("{")
    for base, message in (
        (f"docker-archive:{tmp_path / 'junk.tar'}", "cannot read docker archive"),
        (f"oci:{tmp_path / 'layout'}", "not valid JSON"),
        (f"oci:{tmp_path / 'missing'}", "no OCI layout there"),
        (f"tarball:{tmp_path}", "unknown image location"),
    ):
        proc = dynix(
            "image",
            "build",
            flake.ref(),
            "--base",
            base,
            "-o",
            f"oci:{tmp_path / 'img'}",
            env=cache_env,
        )
        assert message in one_line_error(proc), base
    assert not (tmp_path / "img").exists()


def test_bad_arguments(dynix, flake, cache_env, tmp_path):
    (tmp_path / "file").write_text("")
    cases = [
        (["-o", f"dir:{tmp_path}/x"], "unknown image location"),
        (["-o", f"oci:{tmp_path / 'file'}"], "is not a folder"),
        (["--system", "mips-plan9", "-o", f"oci:{tmp_path}/x"], "no OCI platform"),
        (["--env", "NOVALUE", "-o", f"oci:{tmp_path}/x"], "expected KEY=VALUE"),
        (["--level", "12", "-o", f"oci:{tmp_path}/x"], "gzip levels go from 0 to 3"),
        (
            [
                "--system",
                "x86_64-linux",
                "--system",
                "aarch64-linux",
                "-o",
                f"docker-archive:{tmp_path}/x.tar",
            ],
            "one platform",
        ),
    ]
    for args, message in cases:
        proc = dynix("image", "build", flake.ref(), *args, env=cache_env)
        assert message in one_line_error(proc), args
    proc = dynix(
        "image",
        "build",
        "/nix/store/00000000000000000000000000000000-gone",
        "-o",
        f"oci:{tmp_path}/x",
        env=cache_env,
    )
    error = one_line_error(proc)
    assert error == "Error: /nix/store/00000000000000000000000000000000-gone is not in the store"


@pytest.mark.slow
def test_ctrl_c_leaves_nothing_behind(flake, cache_env, tmp_path):
    flake.build("big")
    cache = tmp_path / "xdg-cache"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dynix",
            "image",
            "build",
            flake.ref("big"),
            "--compress",
            "zstd",
            "--level",
            "19",
            "-o",
            f"oci:{tmp_path / 'img'}",
        ],
        env=conftest.test_env(cache_env),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, as a terminal's foreground job has
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "to write" in line:
            break
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the parent and its layer writers
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, rest
    assert "Aborted." in rest and "Traceback" not in rest
    assert not (tmp_path / "img").exists()
    assert leftovers(tmp_path) == []
    assert list((cache / "dynix/layers/tmp").iterdir()) == []
    # a layer finished before the interruption may stay cached, whole: its bytes match its name
    # and its key names it
    blobs = cache / "dynix/layers/blobs/sha256"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    for key in (cache / "dynix/layers/keys").iterdir():
        named = json.loads(key.read_text())
        assert (blobs / named["digest"].removeprefix("sha256:")).is_file(), named
