"""`dynix pins lock --build` on a fixture flake, with real Nix builds.

The fixture reads its own pins file through the real pkgs/pins.nix (copied beside it), so an
unresolved hash is the fake one Nix reports on. Its fixed outputs are made by busybox from local
content: files (standing for kind-url downloads; a build sandbox sees no `file://` outside the
store), a tree (a source) and the vendor tree made from it, which can only be built once the
source's hash is known. It exposes them as the real flake does:
`legacyPackages.<system>.pinFetches`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pytest

from conftest import REPO, nix, one_line_error

WRONG = "sha256-3FvfmxK7awg9LNrikgs6yJ2f3qZQ4DpK7hEuLxlupeU="

FLAKE = """{
  outputs = { self }:
    let
      system = "x86_64-linux";
      pins = (import ./pins.nix { pinsFile = ./pkgs/pins.toml; }).forSystem system;
      bb = "${./bb}/busybox";
      nonce = "@NONCE@";
      tree = { name, hash, script, deps ? [ ] }: derivation {
        inherit name system nonce deps;
        builder = bb;
        args = [ "sh" "-c" script ];
        outputHashMode = "recursive";
        outputHashAlgo = "sha256";
        outputHash = hash;
      };
      # A file the pin's URL stands for (the sandbox sees no file:// outside the store).
      download = pin: derivation {
        inherit system;
        inherit (pin.fetch) name url;
        builder = bb;
        args = [ "sh" "-c" "echo ${pin.name} $nonce > $out" ];
        inherit nonce;
        outputHashMode = "flat";
        outputHashAlgo = "sha256";
        outputHash = pin.fetch.hash;
      };
      src = tree {
        name = "src";
        hash = pins.src.fetch.hash;
        script = "mkdir $out; echo source $nonce > $out/main";
      };
      vendor = tree {
        name = "src-vendor";
        hash = pins.src.buildHashes.vendor;
        deps = [ src ];
        script = "mkdir $out; cat $deps/main > $out/modules; echo vendored >> $out/modules";
      };
      # A hash written here, not in the pins file, and wrong.
      helper = tree {
        name = "helper";
        hash = "@WRONG@";
        script = "mkdir $out; echo helper $nonce > $out/h";
      };
    in
    {
      legacyPackages.${system}.pinFetches = {
        page.hash = download pins.page;
        kept.hash = download pins.kept;
        stale.hash = download pins.stale;
        src = {
          hash = src;
          build-hashes.vendor = vendor;
        };
      } // (if pins ? tool then {
        tool.hash = tree {
          name = "tool";
          hash = pins.tool.fetch.hash;
          deps = [ helper ];
          script = "mkdir $out; cat $deps/h > $out/t";
        };
      } else { });
      packages.${system}.default = derivation {
        inherit system nonce;
        name = "uses-the-pins";
        builder = bb;
        inputs = [ (download pins.page) src vendor ];
        args = [ "sh" "-c" "mkdir $out; for i in $inputs; do echo $i; done > $out/inputs" ];
      };
    };
}
"""

PINS = """# The fixture's pins: local content, fake hashes.

[page]
# A file, fetched from a file:// URL.
kind = "url"
url = "https://example.invalid/page.txt"
hash = "unresolved"

[src]
# A tree made by a script (it stands for a GitHub source).
kind = "github"
owner = "fixture"
repo = "src"
rev = "0000000000000000000000000000000000000000"
hash = "unresolved"

[src.build-hashes]
# The vendor tree made from the source, as a Go vendor tree is.
vendor = "unresolved"

[kept]
# Resolved and right.
kind = "url"
url = "https://example.invalid/kept.txt"
hash = "@KEPT@"

[stale]
# Resolved, but the file changed since.
kind = "url"
url = "https://example.invalid/stale.txt"
hash = "@WRONG@"
"""

TOOL = """
[tool]
# Built from something whose hash, written in the flake, is wrong.
kind = "github"
owner = "fixture"
repo = "tool"
rev = "1111111111111111111111111111111111111111"
hash = "unresolved"
"""


def sri(data: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
def fixture(tmp_path, busybox) -> Path:
    folder = tmp_path / "flake"
    (folder / "bb").mkdir(parents=True)
    (folder / "pkgs").mkdir()
    shutil.copy2(busybox, folder / "bb" / "busybox")
    shutil.copy2(REPO / "pkgs" / "pins.nix", folder / "pins.nix")
    nonce = uuid.uuid4().hex
    (folder / "nonce").write_text(nonce)
    (folder / "flake.nix").write_text(FLAKE.replace("@NONCE@", nonce).replace("@WRONG@", WRONG))
    pins = PINS.replace("@KEPT@", content(folder, "kept")).replace("@WRONG@", WRONG)
    (folder / "pkgs" / "pins.toml").write_text(pins)
    return folder


def content(folder: Path, name: str) -> str:
    """The hash of what the fixture's pin `name` downloads."""
    return sri(f"{name} {(folder / 'nonce').read_text()}\n".encode())


def lock(dynix, folder: Path, *args: str):
    pins = folder / "pkgs" / "pins.toml"
    return dynix("pins", "--file", pins, "lock", "--build", "--json", *args, timeout=300)


def test_records_every_unresolved_hash_and_the_build_then_succeeds(dynix, fixture):
    pins = fixture / "pkgs" / "pins.toml"
    before = pins.read_text()
    first = nix("build", "--no-link", f"path:{fixture}", check=False)
    assert first.returncode != 0 and "hash mismatch" in first.stderr

    proc = lock(dynix, fixture)
    assert proc.returncode == 0, proc.stderr
    changed = {(c["pin"], c["key"]): c for c in json.loads(proc.stdout)["changed"]}
    assert set(changed) == {("page", "hash"), ("src", "hash"), ("src", "build-hashes.vendor")}
    assert all(c["old"] == "unresolved" for c in changed.values())
    assert changed["page", "hash"]["new"] == content(fixture, "page")

    after = pins.read_text()
    expected = before
    for c in changed.values():
        expected = expected.replace('"unresolved"', f'"{c["new"]}"', 1)
    assert after == expected  # comments, order, the untouched pins: as they were
    assert f'hash = "{WRONG}"' in after  # a stale hash not asked for is not built

    built = nix("build", "--no-link", "--json", f"path:{fixture}", check=False)
    assert built.returncode == 0, built.stderr

    again = lock(dynix, fixture)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] == []
    assert pins.read_text() == after


def test_a_named_pin_is_built_and_its_stale_hash_replaced(dynix, fixture):
    pins = fixture / "pkgs" / "pins.toml"
    before = pins.read_text()
    proc = lock(dynix, fixture, "stale", "kept")
    assert proc.returncode == 0, proc.stderr
    right = content(fixture, "stale")
    assert json.loads(proc.stdout)["changed"] == [
        {"pin": "stale", "key": "hash", "old": WRONG, "new": right}
    ]
    assert pins.read_text() == before.replace(f'hash = "{WRONG}"', f'hash = "{right}"')


def test_a_wrong_hash_elsewhere_is_reported_and_the_rest_recorded(dynix, fixture):
    pins = fixture / "pkgs" / "pins.toml"
    pins.write_text(pins.read_text() + TOOL)
    before = pins.read_text()
    proc = lock(dynix, fixture)
    error = one_line_error(proc)
    assert "could not lock" in error and "tool: hash" in error and "helper (no pin)" in error
    assert "hash mismatch in /nix/store/" in proc.stderr and f"specified {WRONG}" in proc.stderr
    assert "tool: hash: not locked" in proc.stderr
    changed = json.loads(proc.stdout)["changed"]
    assert {(c["pin"], c["key"]) for c in changed} == {
        ("page", "hash"),
        ("src", "hash"),
        ("src", "build-hashes.vendor"),
    }
    after = pins.read_text()
    expected = before
    for c in changed:
        expected = expected.replace('"unresolved"', f'"{c["new"]}"', 1)
    assert after == expected
    assert after.endswith(TOOL)  # the pin that could not be built keeps "unresolved"


def test_without_a_flake_beside_the_pins_file_it_asks_for_one(dynix, tmp_path):
    pins = tmp_path / "pins.toml"
    pins.write_text('[a]\nkind = "url"\nurl = "file:///x"\nhash = "unresolved"\n')
    proc = dynix("pins", "--file", pins, "lock", "--build")
    assert "is not in a flake's pkgs/ folder: pass --flake" in one_line_error(proc)
    assert pins.read_text().endswith('hash = "unresolved"\n')
