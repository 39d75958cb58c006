"""`dynix image build` on fixture flakes, checked with umoci, skopeo and a chroot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from image_fixtures import *  # noqa: F403  (fixtures: flake, flake_v2, cache_env)
from image_fixtures import layer_digests, leftovers, run_in, skopeo_json, unpack

import conftest
from conftest import REPO, nix


def build(dynix, *args, env=None, cwd=None):
    proc = dynix("image", "build", *args, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_x86_64_image_unpacks_with_umoci_and_runs_in_chroot(dynix, flake, cache_env, tmp_path):
    out = tmp_path / "img"
    digest = build(
        dynix,
        flake.ref(),
        "--system",
        "x86_64-linux",
        "--entrypoint",
        "app",
        "-o",
        f"oci:{out}",
        env=cache_env,
    )
    assert digest.startswith("sha256:")
    info = skopeo_json("inspect", f"oci:{out}:latest")
    assert info["Digest"] == digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert len(info["Layers"]) == 3
    app = flake.build("app", "x86_64-linux")
    assert f"PATH={app}/bin" in info["Env"]
    assert "NVIDIA_VISIBLE_DEVICES=all" in info["Env"]
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in info["Env"]
    assert info["Labels"]["org.opencontainers.image.version"] == "2.0"
    assert info["Labels"]["org.opencontainers.image.created"] == "1970-01-01T00:00:00Z"

    rootfs = unpack(f"{out}:latest", tmp_path / "bundle")
    assert run_in(rootfs, f"{app}/bin/app") == "hello v1 from x86_64\n"
    spec = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert spec["process"]["args"] == ["app"]
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_aarch64_image_runs_in_chroot_under_emulation(dynix, flake, cache_env, tmp_path):
    out = tmp_path / "img"
    build(dynix, flake.ref(), "--system", "aarch64-linux", "-o", f"oci:{out}", env=cache_env)
    assert skopeo_json("inspect", f"oci:{out}:latest")["Architecture"] == "arm64"
    rootfs = unpack(f"{out}:latest", tmp_path / "bundle")
    app = flake.build("app", "aarch64-linux")
    assert run_in(rootfs, f"{app}/bin/app") == "hello v1 from aarch64\n"


def test_same_input_gives_same_digest_and_reuses_cached_layers(dynix, flake, cache_env, tmp_path):
    first = build(dynix, flake.ref(), "-o", f"oci:{tmp_path / 'a'}", env=cache_env)
    second = dynix("image", "build", flake.ref(), "-o", f"oci:{tmp_path / 'b'}", env=cache_env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == first
    assert "3 from the cache, 0 to write" in second.stderr
    # A fresh cache makes the same bytes: the cache only saves work.
    other = {"XDG_CACHE_HOME": str(tmp_path / "other-cache")}
    assert build(dynix, flake.ref(), "-o", f"oci:{tmp_path / 'c'}", env=other) == first
    # Blobs are copies of the cache's, never hard links: neither can change the other.
    blob = tmp_path / "b" / "blobs" / "sha256" / layer_digests(tmp_path / "b")[0].split(":")[1]
    assert blob.stat().st_nlink == 1


def test_separate_stores_give_identical_digests(dynix, flake, cache_env, tmp_path):
    runs = []
    for name, store in (("a", []), ("b", ["--store", str(tmp_path / "chroot-store")])):
        args = ["image", "build", flake.ref(), *store, "--no-cache", "-o", f"oci:{tmp_path / name}"]
        proc = dynix(*args, env=cache_env)
        assert proc.returncode == 0, proc.stderr
        runs.append(proc)
    assert any((tmp_path / "chroot-store" / "nix" / "store").glob("*-app-2.0"))
    assert runs[1].stdout == runs[0].stdout, (runs[0].stderr, runs[1].stderr)


@pytest.mark.skipif(
    not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2,
    reason="needs taskset and at least two cores to compare",
)
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_digests_do_not_depend_on_the_cores_used(flake, cache_env, tmp_path, compression):
    """Layers are compressed on as many threads as the process may use (taskset limits it):
    one core and all of them give the same image."""
    flake.build("big")
    digests = []
    for cpus in (str(min(os.sched_getaffinity(0))), ",".join(map(str, os.sched_getaffinity(0)))):
        out = tmp_path / f"img-{len(digests)}"
        argv = ["taskset", "-c", cpus, sys.executable, "-m", "dynix", "image", "build"]
        argv += [flake.ref(), flake.ref("big"), "--compress", compression, "--no-cache"]
        proc = subprocess.run(
            [*argv, "-o", f"oci:{out}"],
            env=conftest.test_env(cache_env),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        digests.append(proc.stdout.strip())
    assert digests[0] == digests[1]


def test_changing_one_package_changes_only_its_layer(dynix, flake, flake_v2, cache_env, tmp_path):
    build(dynix, flake.ref(), "-o", f"oci:{tmp_path / 'v1'}", env=cache_env)
    proc = dynix("image", "build", flake_v2.ref(), "-o", f"oci:{tmp_path / 'v2'}", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    assert "2 from the cache, 1 to write" in proc.stderr
    v1, v2 = layer_digests(tmp_path / "v1"), layer_digests(tmp_path / "v2")
    assert v1[:2] == v2[:2]  # busybox and libgreet
    assert v1[2] != v2[2]  # the app
    one = skopeo_json("inspect", "--raw", f"oci:{tmp_path / 'v1'}:latest")
    two = skopeo_json("inspect", "--raw", f"oci:{tmp_path / 'v2'}:latest")
    assert one["config"]["digest"] != two["config"]["digest"]


def test_several_systems_make_one_index_of_the_single_system_manifests(
    dynix, flake, cache_env, tmp_path
):
    index = build(
        dynix,
        flake.ref(),
        "--system",
        "x86_64-linux",
        "--system",
        "aarch64-linux",
        "-o",
        f"oci:{tmp_path / 'multi'}",
        "--tag",
        "app:1",
        env=cache_env,
    )
    raw = skopeo_json("inspect", "--raw", f"oci:{tmp_path / 'multi'}:1")
    platforms = {m["platform"]["architecture"]: m["digest"] for m in raw["manifests"]}
    assert sorted(platforms) == ["amd64", "arm64"]
    for system, arch in (("x86_64-linux", "amd64"), ("aarch64-linux", "arm64")):
        single = build(
            dynix, flake.ref(), "--system", system, "-o", f"oci:{tmp_path / arch}", env=cache_env
        )
        assert platforms[arch] == single
    inspected = json.loads(dynix("image", "inspect", "--json", f"oci:{tmp_path / 'multi'}").stdout)
    assert inspected["digest"] == index
    assert [p["platform"]["architecture"] for p in inspected["platforms"]] == ["arm64", "amd64"]


def test_docker_archive_is_read_by_skopeo_and_inspect(dynix, flake, cache_env, tmp_path):
    archive = tmp_path / "app.tar"
    build(dynix, flake.ref(), "--tag", "demo:7", "-o", f"docker-archive:{archive}", env=cache_env)
    info = skopeo_json("inspect", f"docker-archive:{archive}")
    assert len(info["Layers"]) == 3
    proc = dynix("image", "inspect", "--json", f"docker-archive:{archive}")
    assert proc.returncode == 0, proc.stderr
    layers = json.loads(proc.stdout)["platforms"][0]["layers"]
    names = [Path(p).name.split("-", 1)[1] for layer in layers for p in layer["storePaths"]]
    assert names == ["busybox-1.35", "libgreet-1.0", "app-2.0"]
    # skopeo can turn it into a layout that runs.
    import subprocess

    subprocess.run(
        ["skopeo", "copy", f"docker-archive:{archive}", f"oci:{tmp_path / 'copy'}:x"],
        check=True,
        capture_output=True,
    )
    rootfs = unpack(f"{tmp_path / 'copy'}:x", tmp_path / "bundle")
    assert "hello v1" in run_in(rootfs, f"{flake.build()}/bin/app")


def test_max_layers_merges_the_small_paths_that_change_together(dynix, flake, cache_env, tmp_path):
    out = tmp_path / "two"
    build(dynix, flake.ref(), "--max-layers", "2", "-o", f"oci:{out}", env=cache_env)
    layers = json.loads(dynix("image", "inspect", "--json", f"oci:{out}").stdout)["platforms"][0][
        "layers"
    ]
    groups = [
        sorted(Path(p).name.split("-", 1)[1] for p in layer["storePaths"]) for layer in layers
    ]
    # busybox is far bigger than the rest: alone; the two small paths share a layer.
    assert groups == [["busybox-1.35"], ["app-2.0", "libgreet-1.0"]]


def test_base_image_layers_are_kept_and_path_merged(dynix, flake, cache_env, tmp_path):
    base = tmp_path / "base"
    build(
        dynix,
        flake.ref("busybox"),
        "--env",
        "FROM_BASE=1",
        "--cmd",
        "busybox sh",
        "-o",
        f"oci:{base}",
        env=cache_env,
    )
    base_archive = tmp_path / "base.tar"
    build(
        dynix,
        flake.ref("busybox"),
        "--env",
        "FROM_BASE=1",
        "-o",
        f"docker-archive:{base_archive}",
        env=cache_env,
    )
    for spec in (f"oci:{base}", f"docker-archive:{base_archive}"):
        out = tmp_path / ("on-" + spec.split(":")[0])
        build(dynix, flake.ref("lib"), "--base", spec, "-o", f"oci:{out}", env=cache_env)
        info = skopeo_json("inspect", f"oci:{out}:latest")
        base_info = skopeo_json("inspect", f"oci:{base}:latest")
        if spec.startswith("oci"):
            assert info["Layers"][0] == base_info["Layers"][0]
        assert len(info["Layers"]) == 2  # busybox from the base, libgreet ours
        assert "FROM_BASE=1" in info["Env"]
        env = dict(e.split("=", 1) for e in info["Env"])
        assert env["PATH"] == dict(e.split("=", 1) for e in base_info["Env"])["PATH"]  # lib: no bin
        rootfs = unpack(f"{out}:latest", tmp_path / f"bundle-{spec[:3]}")
        assert (
            run_in(
                rootfs,
                f"{flake.build('busybox')}/bin/busybox",
                "cat",
                f"{flake.build('lib')}/share/greeting",
            )
            == "hello\n"
        )
    # Our bin folders come first on PATH, the base's after.
    out = tmp_path / "app-on-base"
    build(dynix, flake.ref("app"), "--base", f"oci:{base}", "-o", f"oci:{out}", env=cache_env)
    env = dict(e.split("=", 1) for e in skopeo_json("inspect", f"oci:{out}:latest")["Env"])
    assert env["PATH"] == f"{flake.build('app')}/bin:{flake.build('busybox')}/bin"
    config = skopeo_json("inspect", "--config", f"oci:{out}:latest")
    assert config["config"]["Cmd"] == ["busybox", "sh"]  # kept from the base


def test_labels_record_pins_inside_a_checkout_only(dynix, flake, cache_env, tmp_path):
    build(dynix, flake.ref(), "-o", f"oci:{tmp_path / 'in'}", env=cache_env, cwd=REPO)
    build(dynix, flake.ref(), "-o", f"oci:{tmp_path / 'out'}", env=cache_env, cwd=tmp_path)
    inside = skopeo_json("inspect", f"oci:{tmp_path / 'in'}:latest")["Labels"]
    outside = skopeo_json("inspect", f"oci:{tmp_path / 'out'}:latest")["Labels"]
    pins = json.loads(inside["dynix.pins"])
    assert pins["vllm"]["version"] == "0.8.4"
    assert "dynix.pins" not in outside
    metadata = json.loads(nix("flake", "metadata", "--json", f"path:{flake.path}").stdout)
    assert outside["dynix.flake.narHash"] == metadata["locked"]["narHash"]


def test_store_path_installables_are_taken_as_given(dynix, flake, cache_env, tmp_path):
    app = flake.build("app", "x86_64-linux")
    by_path = build(dynix, app, "-o", f"oci:{tmp_path / 'a'}", env=cache_env)
    by_flake = build(dynix, flake.ref(), "-o", f"oci:{tmp_path / 'b'}", env=cache_env)
    labels_a = skopeo_json("inspect", f"oci:{tmp_path / 'a'}:latest")["Labels"]
    assert "dynix.flake.narHash" not in labels_a  # no flake, no flake label
    assert layer_digests(tmp_path / "a") == layer_digests(tmp_path / "b")
    assert by_path != by_flake
