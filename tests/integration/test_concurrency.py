"""Two dynix processes sharing a layer cache or a binary cache at the same moment both succeed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from image_fixtures import *  # noqa: F403  (fixtures: flake, flake_v2, cache_env)
from image_fixtures import layer_digests

import conftest
from conftest import nix
from flakes import layered, write_flake


def _together(*commands: list[str], env: dict[str, str] | None = None) -> list[tuple[int, str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dynix", *map(str, args)],
            env=conftest.test_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    return [(p.wait(120), p.communicate()[1]) for p in procs]


def test_two_image_builds_share_one_layer_cache(flake, flake_v2, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    for round_ in range(8):
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
        outs = [tmp_path / f"a{round_}", tmp_path / f"b{round_}"]
        results = _together(
            ["image", "build", flake.ref(), "--compress", "none", "-o", f"oci:{outs[0]}"],
            ["image", "build", flake_v2.ref(), "--compress", "none", "-o", f"oci:{outs[1]}"],
            env=env,
        )
        assert [code for code, _ in results] == [0, 0], results
        for out in outs:
            for digest in layer_digests(out):
                assert (out / "blobs/sha256" / digest[7:]).is_file()
        assert list((tmp_path / "cache/dynix/layers/tmp").iterdir()) == []


def test_two_pushes_to_one_file_cache(tmp_path, busybox):
    secret = nix("key", "generate-secret", "--key-name", "team-1").stdout.strip()
    key = tmp_path / "team.sec"
    key.write_text(secret + "\n")
    key.chmod(0o600)
    for round_ in range(1):
        # the same closure from both: each finds every path missing and uploads it
        flake = write_flake(tmp_path / f"f{round_}", layered(3, 2, kib=64), busybox=busybox)
        flakes = [flake, flake]
        config = tmp_path / f"c{round_}.toml"
        url = f"file://{tmp_path}/cache{round_}"
        config.write_text(f'[caches.team]\nurl = "{url}"\nsecret-key-file = "{key}"\n')
        results = _together(
            *[["cache", "push", str(f), "--to", "team", "--config", config] for f in flakes]
        )
        assert [code for code, _ in results] == [0, 0], results
        for f in flakes:
            [built] = json.loads(nix("build", "--json", "--no-link", str(f)).stdout)
            info = nix(
                "path-info", "--json", "--recursive", "--store", url, built["outputs"]["out"]
            )
            assert all(entry.get("valid", True) for entry in json.loads(info.stdout))
