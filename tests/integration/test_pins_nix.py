"""pkgs/pins.nix evaluated with real Nix and no nixpkgs: fetch arguments per system."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import PINS, REPO, nix

FAKE = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def eval_pins(expr: str, pins_file=PINS):
    code = f"let p = import {REPO}/pkgs/pins.nix {{ pinsFile = {pins_file}; }}; in {expr}"
    proc = nix("eval", "--impure", "--json", "--expr", code)
    return json.loads(proc.stdout), proc.stderr


@pytest.mark.parametrize("system", ["aarch64-linux", "x86_64-linux"])
def test_sources_become_fetcher_arguments(system):
    pins, _ = eval_pins(
        f"builtins.mapAttrs (n: v: {{ inherit (v) fetcher fetch; }}) "
        f'(removeAttrs (p.forSystem "{system}") [ "ngc-pytorch" ])'
    )
    assert pins["vllm"] == {
        "fetcher": "fetchurl",
        "fetch": {
            "url": "https://files.pythonhosted.org/packages/e6/d6/"
            "9d412cdaa92c3ab6250cef51217d37395b2aa372c6c14f90b1668adbbf63/vllm-0.8.4.tar.gz",
            "hash": "sha256-UisT3RbGx3PewMtMQupZFiPQPvlNFtuBKOziYAAX5qw=",
            "name": "vllm-0.8.4.tar.gz",
            "unpack": False,
        },
    }
    assert pins["dynamo"]["fetcher"] == "fetchFromGitHub"
    assert pins["dynamo"]["fetch"]["url"] == (
        "https://github.com/ai-dynamo/dynamo/archive/ca728f6e6b8d526a5d7773a9fc09d9320cee9d37.tar.gz"
    )
    assert pins["dynamo"]["fetch"]["unpack"] is True
    assert (
        pins["nats-server"]["fetch"]["hash"]
        == "sha256-/iKgRnoAjZX6hiUpPOXpCjY2FsX7JMpNSSCtWgcFLWQ="
    )
    assert pins["dynamo-vllm-patch"]["fetch"]["hash"] == (
        "sha256-AYjLIUBKOxW4340+dj4wqUhuTL4AtpyO34b66y02LQU="
    )


def test_github_pin_gives_fetchFromGitHub_arguments():
    args, _ = eval_pins('(p.forSystem "aarch64-linux").nixl.args')
    assert args == {
        "owner": "ai-dynamo",
        "repo": "nixl",
        "rev": "d247e88c72db75dc00e4e37aa21ed8d99e60c27d",
        "hash": "sha256-3FvfmxK7awg9LNrikgs6yJ2f3qZQ4DpK7hEuLxlupeU=",
    }


def test_build_hashes_are_exposed_and_unresolved_ones_warn():
    hashes, stderr = eval_pins('(p.forSystem "x86_64-linux").etcd.buildHashes')
    assert hashes == {"server": FAKE, "etcdctl": FAKE, "etcdutl": FAKE}
    assert "pin 'etcd' has no build hash 'server' yet" in stderr
    assert "dynix pins set etcd --build-hash server=HASH" in stderr
    vendor, _ = eval_pins('(p.forSystem "x86_64-linux").nats-server.buildHashes.vendor')
    assert vendor == "sha256-aopqwxIfLFBdy4MFjyQCUKRUORosm4oHcScET9BW3D4="


def test_unresolved_source_hash_becomes_fake_hash_with_warning(tmp_path):
    pins = tmp_path / "pins.toml"
    text = PINS.read_text().replace(
        'hash = "sha256-UisT3RbGx3PewMtMQupZFiPQPvlNFtuBKOziYAAX5qw="', 'hash = "unresolved"'
    )
    pins.write_text(text)
    got, stderr = eval_pins('(p.forSystem "aarch64-linux").vllm.args.hash', pins)
    assert got == FAKE
    assert "warning: pin 'vllm' has no hash yet" in stderr
    assert "dynix pins lock vllm" in stderr


def test_resolved_pins_evaluate_without_warnings():
    _, stderr = eval_pins('(p.forSystem "aarch64-linux").vllm.args')
    assert "warning" not in stderr


@pytest.mark.parametrize("system,arch", [("aarch64-linux", "arm64"), ("x86_64-linux", "amd64")])
def test_image_pin_is_per_system(tmp_path, system, arch):
    digest = "sha256:" + ("a" if arch == "arm64" else "b") * 64
    pins = tmp_path / "pins.toml"
    text = PINS.read_text()
    head, _, tail = text.partition(f"[ngc-pytorch.systems.{system}]")
    tail = tail.replace('digest = "unresolved"', f'digest = "{digest}"', 1)
    pins.write_text(head + f"[ngc-pytorch.systems.{system}]" + tail)
    args, stderr = eval_pins(f'(p.forSystem "{system}").ngc-pytorch.args', pins)
    assert args == {
        "imageName": "nvcr.io/nvidia/pytorch",
        "imageDigest": digest,
        "sha256": FAKE,
        "finalImageName": "nvcr.io/nvidia/pytorch",
        "finalImageTag": "25.03-py3",
        "os": "linux",
        "arch": arch,
    }
    assert f"pin 'ngc-pytorch' has no hash for {system} yet" in stderr


def test_unresolved_image_digest_stops_evaluation_with_the_command_to_run():
    code = f'(import {REPO}/pkgs/pins.nix {{ }}).forSystem "aarch64-linux"'
    proc = nix(
        "eval",
        "--impure",
        "--json",
        "--expr",
        f"({code}).ngc-pytorch.args.imageDigest",
        check=False,
    )
    assert proc.returncode != 0
    assert "dynix pins lock ngc-pytorch" in proc.stderr


def test_unknown_kind_is_reported(tmp_path):
    pins = tmp_path / "pins.toml"
    pins.write_text('[x]\nkind = "svn"\nurl = "u"\nhash = "unresolved"\n')
    code = f'(import {REPO}/pkgs/pins.nix {{ pinsFile = {pins}; }}).forSystem "x86_64-linux"'
    proc = nix("eval", "--impure", "--json", "--expr", f"({code}).x.fetcher", check=False)
    assert "pin 'x' has unknown kind 'svn'" in proc.stderr


def test_a_url_with_credentials_is_refused(tmp_path):
    pins = tmp_path / "pins.toml"
    text = PINS.read_text().replace(
        "https://files.pythonhosted.org", "https://me:tok@files.pythonhosted.org", 1
    )
    assert "me:tok@" in text
    pins.write_text(text)
    code = f'(import {REPO}/pkgs/pins.nix {{ pinsFile = {pins}; }}).forSystem "x86_64-linux"'
    proc = nix("eval", "--impure", "--json", "--expr", f"({code}).vllm.args.url", check=False)
    assert proc.returncode != 0
    assert "pin 'vllm': its URL carries credentials" in proc.stderr


def test_every_nix_file_parses():
    files = sorted(p for p in REPO.rglob("*.nix") if ".git" not in p.parts)
    assert REPO / "pkgs" / "pins.nix" in files
    for path in files:
        proc = subprocess.run(
            ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True
        )
        assert proc.returncode == 0, (path, proc.stderr)


def test_unresolved_image_digest_is_listed_not_thrown():
    """`nix flake check` evaluates every package: an unresolved digest must not stop it."""
    code = f'(import {REPO}/pkgs/pins.nix {{ }}).forSystem "x86_64-linux"'
    got = json.loads(
        nix(
            "eval",
            "--impure",
            "--json",
            "--expr",
            f"builtins.mapAttrs (_: p: {{ inherit (p) unresolved; inherit (p.fetch) name; }}) "
            f"({code})",
        ).stdout
    )
    assert got["ngc-pytorch"]["name"] == "pytorch-25.03-py3"
    [message] = got["ngc-pytorch"]["unresolved"]
    assert "pin 'ngc-pytorch' has no image digest for x86_64-linux yet" in message
    assert "dynix pins lock ngc-pytorch" in message
    assert all(p["unresolved"] == [] for n, p in got.items() if n != "ngc-pytorch")


def test_building_an_unresolved_pin_fails_with_its_message(tmp_path, busybox):
    """What fetchPin builds for such a pin (pins.nix's unresolvedBuild; the overlay passes
    nixpkgs' shell, busybox's here): evaluation succeeds, the build fails saying what to run."""
    bb = tmp_path / "bb"
    bb.mkdir()
    shutil.copy2(busybox, bb / "busybox")
    expr = (
        f"let p = import {REPO}/pkgs/pins.nix {{ }}; in "
        f'p.unresolvedBuild {{ shell = [ "${{{bb}}}/busybox" "sh" ]; system = "x86_64-linux"; }} '
        f'(p.forSystem "x86_64-linux").ngc-pytorch'
    )
    drv = nix("eval", "--impure", "--raw", "--expr", f"({expr}).drvPath").stdout
    assert drv.endswith("-pytorch-25.03-py3-unresolved.drv")
    proc = nix("build", "--no-link", "--impure", "--expr", expr, check=False)
    assert proc.returncode != 0
    assert (
        "error: pin 'ngc-pytorch' has no image digest for x86_64-linux yet; record it with "
        "`dynix pins lock ngc-pytorch`" in proc.stderr
    )
