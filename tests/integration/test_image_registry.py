"""`dynix image push` and `inspect` against a real registry (distribution) on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from image_fixtures import *  # noqa: F403  (fixtures: flake, flake_v2, cache_env)
from image_fixtures import Registry, free_port, skopeo_json, start_registry, stop_registry

from conftest import one_line_error, tree_digest


def build(dynix, *args, env):
    proc = dynix("image", "build", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def push(dynix, src: str, dest: str) -> str:
    proc = dynix("image", "push", "--no-tls-verify", src, dest)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_multi_platform_push_pulls_back_with_the_same_digests(
    dynix, flake, registry: Registry, cache_env, tmp_path
):
    layout = tmp_path / "multi"
    index = build(
        dynix,
        flake.ref(),
        "--system",
        "x86_64-linux",
        "--system",
        "aarch64-linux",
        "-o",
        f"oci:{layout}",
        env=cache_env,
    )
    pushed = push(dynix, f"oci:{layout}", registry.url("app:multi"))
    assert pushed == f"{registry.url('app:multi')}@{index}"
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", registry.url("app:multi")],
        check=True,
        capture_output=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == index
    platforms = sorted(m["platform"]["architecture"] for m in json.loads(raw)["manifests"])
    assert platforms == ["amd64", "arm64"]
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--src-tls-verify=false",
            registry.url("app:multi"),
            f"oci:{tmp_path / 'back'}:multi",
        ],
        check=True,
        capture_output=True,
    )
    back = json.loads((tmp_path / "back" / "index.json").read_text())["manifests"][0]["digest"]
    assert back == index
    shown = dynix("image", "inspect", "--json", "--no-tls-verify", registry.url("app:multi"))
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["digest"] == index
    paths = [p for layer in data["platforms"][0]["layers"] for p in layer["storePaths"]]
    assert [Path(p).name.split("-", 1)[1] for p in paths] == [
        "busybox-1.35",
        "libgreet-1.0",
        "app-2.0",
    ]


@pytest.fixture
def fresh_registry(tmp_path: Path):
    """A registry of the test's own: nothing pushed before can be mounted from elsewhere."""
    reg, proc = start_registry(tmp_path / "own-registry")
    try:
        yield reg
    finally:
        stop_registry(proc)


def test_sibling_image_uploads_only_its_new_blobs(
    dynix, flake, flake_v2, fresh_registry: Registry, cache_env, tmp_path
):
    registry = fresh_registry
    build(dynix, flake.ref(), "-o", f"oci:{tmp_path / 'v1'}", env=cache_env)
    build(dynix, flake_v2.ref(), "-o", f"oci:{tmp_path / 'v2'}", env=cache_env)
    before = registry.blob_uploads()
    push(dynix, f"oci:{tmp_path / 'v1'}", registry.url("sibling:v1"))
    first = registry.blob_uploads() - before
    assert first == 4  # three layers and the config
    v2 = push(dynix, f"oci:{tmp_path / 'v2'}", registry.url("sibling:v2"))
    assert registry.blob_uploads() - before - first == 2  # the app layer and the config
    stored = list((registry.root / "docker/registry/v2/blobs/sha256").glob("*/*"))
    assert len(stored) == 4 + 2 + 2  # + the two manifests
    assert v2.startswith(registry.url("sibling:v2") + "@sha256:")


def test_docker_archive_pushes_too(dynix, flake, registry: Registry, cache_env, tmp_path):
    archive = tmp_path / "app.tar"
    build(dynix, flake.ref(), "-o", f"docker-archive:{archive}", env=cache_env)
    push(dynix, f"docker-archive:{archive}", registry.url("archive:1"))
    info = skopeo_json("inspect", "--tls-verify=false", registry.url("archive:1"))
    assert len(info["Layers"]) == 3


def test_push_goes_to_a_registry_only(dynix, flake, cache_env, tmp_path):
    layout = tmp_path / "img"
    build(dynix, flake.ref(), "-o", f"oci:{layout}", env=cache_env)
    before = tree_digest(layout)
    for dest in (f"oci:{layout}", f"oci:{tmp_path / 'other'}", f"docker-archive:{tmp_path / 'a'}"):
        proc = dynix("image", "push", f"oci:{layout}", dest)
        assert "push to a registry, docker://HOST/REPO:TAG" in one_line_error(proc)
    assert tree_digest(layout) == before  # not even its own index.json is touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "xdg-cache"]


def test_push_to_a_registry_that_is_not_there_is_one_line(dynix, flake, cache_env, tmp_path):
    build(dynix, flake.ref(), "-o", f"oci:{tmp_path / 'img'}", env=cache_env)
    proc = dynix(
        "image",
        "push",
        "--no-tls-verify",
        f"oci:{tmp_path / 'img'}",
        f"docker://127.0.0.1:{free_port()}/nothing:1",
    )
    assert "registry unreachable" in one_line_error(proc)


@pytest.mark.slow
def test_credentials_come_from_the_authfile_and_are_never_shown(dynix, flake, cache_env, tmp_path):
    password = "pw-that-must-not-leak-7431"
    registry, proc = start_registry(tmp_path / "auth-registry", users={"ci": password})
    try:
        layout = tmp_path / "img"
        build(dynix, flake.ref(), "-o", f"oci:{layout}", env=cache_env)
        denied = dynix("image", "push", "--no-tls-verify", f"oci:{layout}", registry.url("p:1"))
        assert "unauthorized" in one_line_error(denied).lower()
        authfile = tmp_path / "auth.json"
        token = base64.b64encode(f"ci:{password}".encode()).decode()
        authfile.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
        runs = [
            dynix(
                "image",
                "push",
                "--no-tls-verify",
                "--authfile",
                str(authfile),
                f"oci:{layout}",
                registry.url("p:1"),
            ),
            dynix(
                "image",
                "inspect",
                "--no-tls-verify",
                "--authfile",
                str(authfile),
                registry.url("p:1"),
            ),
            dynix(
                "--debug",
                "image",
                "push",
                "--no-tls-verify",
                "--authfile",
                str(authfile),
                f"oci:{layout}",
                registry.url("p:2"),
            ),
        ]
        for run in runs:
            assert run.returncode == 0, run.stderr
            assert password not in run.stdout + run.stderr
            assert token not in run.stdout + run.stderr
        assert "--authfile" in runs[2].stderr  # the logged argv names the file, nothing more
    finally:
        stop_registry(proc)


def test_base_from_a_registry_pinned_by_digest(dynix, flake, registry, cache_env, tmp_path):
    build(
        dynix,
        flake.ref("busybox"),
        "--env",
        "FROM_BASE=1",
        "-o",
        f"oci:{tmp_path / 'base'}",
        env=cache_env,
    )
    pushed = push(dynix, f"oci:{tmp_path / 'base'}", registry.url("base:1"))
    digest = pushed.rsplit("@", 1)[1]
    out = tmp_path / "img"
    proc = dynix(
        "image",
        "build",
        flake.ref("app"),
        "--no-tls-verify",
        "--base",
        registry.url(f"base@{digest}"),
        "-o",
        f"oci:{out}",
        env=cache_env,
    )
    assert proc.returncode == 0, proc.stderr
    info = skopeo_json("inspect", f"oci:{out}:latest")
    assert "FROM_BASE=1" in info["Env"]
    assert len(info["Layers"]) == 3  # busybox from the base; libgreet and app ours
    base_layers = skopeo_json("inspect", f"oci:{tmp_path / 'base'}:latest")["Layers"]
    assert info["Layers"][0] == base_layers[0]
