"""The flake's outputs that need no nixpkgs, evaluated with real Nix.

nixpkgs, GitHub and CUDA cannot be reached where these tests run, so the packages themselves are
not built here; what is evaluated is everything that does not need nixpkgs: the `lib` output
(versions, systems, pins, patch series) through the real flake, and tests/nix/pure.nix, which
`nix flake check` runs too.
"""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO, nix


@pytest.fixture(scope="module")
def flake(tmp_path_factory):
    """A copy of the checkout as a `path:` flake (a git flake would see only committed files)."""
    dest = tmp_path_factory.mktemp("flake") / "dynix"
    shutil.copytree(
        REPO, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", ".*_cache", "*.egg-info")
    )
    return f"path:{dest}"


def flake_eval(flake: str, attr: str, apply: str | None = None):
    args = ["eval", "--json", f"{flake}#{attr}"]
    if apply:
        args += ["--apply", apply]
    return json.loads(nix(*args).stdout)


def test_pure_nix_tests_pass():
    proc = nix("eval", "--json", "--impure", "--expr", f"import {REPO}/tests/nix/pure.nix {{ }}")
    result = json.loads(proc.stdout)
    assert result["failures"] == []
    assert result["count"] >= 10


def test_lib_evaluates_without_fetching_nixpkgs(flake):
    # nixpkgs is not reachable here: this only works if `lib` never touches it.
    versions = flake_eval(flake, "lib.versions")
    assert versions["vllm"] == "0.8.4"
    assert versions["dynamo"] == "0.2.0"
    assert versions["nats-server"] == "2.10.24"
    assert versions["etcd"] == "3.5.18"


def test_flake_offers_both_systems(flake):
    assert flake_eval(flake, "lib.systems") == ["aarch64-linux", "x86_64-linux"]
    platforms = flake_eval(flake, "lib.platforms")
    assert platforms["aarch64-linux"]["cudaTarget"] == "sbsa-linux"
    assert platforms["x86_64-linux"]["ociArch"] == "amd64"


@pytest.mark.parametrize("system", ["aarch64-linux", "x86_64-linux"])
def test_flake_pins_per_system(flake, system):
    fetchers = flake_eval(
        flake,
        "lib.pins",
        f'p: builtins.mapAttrs (n: v: v.fetcher) (p.forSystem "{system}")',
    )
    assert fetchers["vllm"] == "fetchurl"
    assert fetchers["dynamo"] == "fetchFromGitHub"
    assert fetchers["ngc-pytorch"] == "dockerTools.pullImage"


def test_flake_patch_series(flake):
    series = flake_eval(
        flake,
        "lib.patches",
        'p: map (e: e.pin or e.name) (p.series "vllm")',
    )
    assert series[0] == "dynamo-vllm-patch"
    assert series[1:] == [
        "0001-requirements-cuda-unpin-numba",
        "0002-use-existing-torch",
        "0003-platforms-look-up-vllm-distribution",
        "0004-pynvml-find-the-nixos-driver-link",
        "0005-setup-pass-nix-cmake-flags",
    ]


def test_flake_lock_pins_nixos_25_05():
    lock = json.loads((REPO / "flake.lock").read_text())
    assert lock["nodes"]["root"]["inputs"] == {"nixpkgs": "nixpkgs"}
    node = lock["nodes"]["nixpkgs"]
    assert node["original"]["ref"] == "nixos-25.05"
    assert node["locked"]["rev"] == "7c43f080a7f28b2774f3b3f43234ca11661bf334"
    assert node["locked"]["narHash"] == "sha256-rqc2RKYTxP3tbjA+PB3VMRQNnjesrT0pEofXQTrMsS8="


def test_package_recipes_take_their_sources_from_pins():
    """No recipe fetches by itself: sources come from `fetchPin`, hashes from pins.toml. The one
    exception, dynamo-runtime's fetchgit of the Cargo lock's git crates, repeats what
    importCargoLock does with the pinned build hashes, and takes its hashes from there."""
    allowed = {("pkgs/dynamo-runtime/package.nix", "fetchgit {")}
    for recipe in sorted((REPO / "pkgs").glob("*/*.nix")):
        text = recipe.read_text()
        for fetcher in ("fetchurl {", "fetchFromGitHub {", "fetchgit {", "pullImage {"):
            if (str(recipe.relative_to(REPO)), fetcher) in allowed:
                assert "sha256 = hash;" in text and ") pin.buildHashes;" in text
                continue
            assert fetcher not in text, f"{recipe.relative_to(REPO)} calls {fetcher}"
        assert "sha256-" not in text, f"{recipe.relative_to(REPO)} carries a hash of its own"


def test_every_offered_binary_cache_comes_with_its_own_key():
    proc = nix("eval", "--json", "--impure", "--expr", f"(import {REPO}/flake.nix).nixConfig")
    config = json.loads(proc.stdout)
    hosts = [url.removeprefix("https://") for url in config["extra-substituters"]]
    key_names = [key.split(":")[0] for key in config["extra-trusted-public-keys"]]
    assert hosts[0] == "nix-community.cachix.org"
    assert key_names == [f"{host}-1" for host in hosts]
