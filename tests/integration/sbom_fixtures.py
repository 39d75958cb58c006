"""A fixture checkout for SBOM tests: a flake whose packages are built from pinned sources with
patches, like the real recipes, with its own `pkgs/pins.toml` and `patches/<pkg>/series`.

Everything builds with a static busybox. Four fixed-output derivations stand for the pins (a
PyPI sdist, a GitHub tree, a patch file and a container image); their contents are files of
the fixture, and the pins file records their hashes, which the flake reads the way
`pkgs/pins.nix` does (`builtins.fromTOML`).

    app-3.0 -> greet-1.0, tool-2.0, busybox-1.35
    greet-1.0  built from pin greet (a flat file), patched with 0001-greeting.patch, then
               pin:greet-extra;                                       -> busybox-1.35
    tool-2.0   built from pin tool (an unpacked tree), unpatched      -> busybox-1.35
    app-3.0    takes pin base (an image archive) as an input

Its one flake input, `nixpkgs`, is a local git repository (so it is locked with a revision
and a NAR hash, as nixpkgs is).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import nix

GREETING_PATCH = """\
--- a/greeting.txt
+++ b/greeting.txt
@@ -1 +1 @@
-hello
+hello, world
"""

EXTRA_PATCH = """\
--- a/greeting.txt
+++ b/greeting.txt
@@ -1 +1 @@
-hello, world
+hello, wide world
"""

FLAKE = r"""{
  inputs.nixpkgs.url = "git+file://@NIXPKGS@";
  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pins = builtins.fromTOML (builtins.readFile ./pkgs/pins.toml);
      mk = attrs: derivation ({ inherit system; builder = "${./bb}/busybox"; } // attrs);
      fixed = name: mode: hash: file: mk {
        inherit name;
        args = [ "sh" "-c" "$builder cp -r ${file} $out" ];
        outputHashMode = mode; outputHashAlgo = "sha256"; outputHash = hash;
      };
      withLicence = drv: licence: drv // { meta.license = licence; };

      greetSrc = fixed "greet-1.0.tar.gz" "flat" pins.greet.hash ./upstream/greeting.txt;
      extraPatch = fixed "greet-extra.patch" "flat" pins.greet-extra.hash ./upstream/extra.patch;
      toolSrc = fixed "source" "recursive" pins.tool.hash ./upstream/tool;
      baseImage = fixed "base-1.tar" "flat" pins.base.systems.${system}.hash ./upstream/base.tar;

      busybox = withLicence (mk {
        name = "busybox-1.35";
        args = [ "sh" "-c" "$builder mkdir -p $out/bin; $builder cp $builder $out/bin/busybox" ];
      }) { spdxId = "GPL-2.0-only"; fullName = "GNU General Public License v2.0 only"; };

      greet = withLicence (mk {
        name = "greet-1.0";
        src = greetSrc;
        patches = [ ./patches/greet/0001-greeting.patch extraPatch ];
        bb = busybox;
        args = [ "sh" "-c" ''
          set -e
          PATH=$bb/bin
          busybox mkdir -p $out/share src
          busybox cp $src src/greeting.txt; busybox chmod +w src/greeting.txt
          for p in $patches; do (cd src && busybox patch -p1 -i $p); done
          busybox cp src/greeting.txt $out/share/greeting; echo $bb > $out/share/uses
        '' ];
      }) { spdxId = "MIT"; };

      tool = withLicence (mk {
        name = "tool-2.0";
        src = toolSrc;
        bb = busybox;
        args = [ "sh" "-c" "$builder cp -r $src $out; $builder chmod +w $out; echo $bb >$out/u" ];
      }) [ { spdxId = "Apache-2.0"; } { spdxId = "BSD-3-Clause"; } ];

      app = withLicence (mk {
        name = "app-3.0";
        base = baseImage;
        deps = [ greet tool busybox ];
        args = [ "sh" "-c" "$builder mkdir $out; echo $deps > $out/deps" ];
      }) [
        { spdxId = "MIT"; }
        { shortName = "nv-proprietary"; fullName = "NVIDIA Proprietary"; free = false; }
      ];

      broken = mk { name = "broken-1"; args = [ "sh" "-c" "echo no; exit 1" ]; };
    in {
      packages.${system} = { inherit app greet tool busybox broken; default = app; };
    };
}
"""

PINS = """\
# Fixture pins: the upstream sources of the fixture packages.
[greet]
kind = "pypi"
pname = "greet"
version = "1.0"
url = "https://files.pythonhosted.org/packages/00/00/greet-1.0.tar.gz"
hash = "{greet}"

[greet-extra]
kind = "url"
version = "1.0"
url = "https://example.org/greet/extra.patch"
hash = "{extra}"

[tool]
kind = "github"
owner = "example"
repo = "tool"
tag = "v2.0"
rev = "0123456789abcdef0123456789abcdef01234567"
version = "2.0"
hash = "{tool}"

[unused]
kind = "url"
url = "https://example.org/unused.tar.gz"
hash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

[base]
kind = "oci"
image = "registry.example.org/library/base"
tag = "1"

[base.systems.x86_64-linux]
arch = "amd64"
digest = "sha256:{digest}"
hash = "{base}"
"""


def sri(data: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


@dataclass
class Checkout:
    path: Path
    hashes: dict[str, str]
    nixpkgs_rev: str

    def ref(self, attr: str = "app") -> str:
        return f"path:{self.path}#{attr}"


def fake_nixpkgs(folder: Path) -> str:
    """A git repository holding an empty flake, committed at a fixed time; its revision."""
    folder.mkdir(parents=True)
    (folder / "flake.nix").write_text("{ outputs = _: { }; }\n")
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@localhost",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@localhost",
        "GIT_AUTHOR_DATE": "2025-05-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2025-05-01T00:00:00Z",
        "HOME": str(folder),
        "PATH": "/usr/bin:/bin",
    }
    for argv in (["init", "-q"], ["add", "flake.nix"], ["commit", "-qm", "nixpkgs"]):
        subprocess.run(["git", *argv], cwd=folder, env=env, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def write_checkout(folder: Path, busybox: Path) -> Checkout:
    """Write the fixture checkout into `folder` (outside git) and return it."""
    rev = fake_nixpkgs(folder.parent / "nixpkgs")
    (folder / "bb").mkdir(parents=True)
    shutil.copy(busybox, folder / "bb" / "busybox")
    upstream = folder / "upstream"
    (upstream / "tool" / "bin").mkdir(parents=True)
    (upstream / "greeting.txt").write_text("hello\n")
    (upstream / "extra.patch").write_text(EXTRA_PATCH)
    (upstream / "tool" / "README").write_text("tool 2.0\n")
    (upstream / "tool" / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (upstream / "base.tar").write_bytes(b"not really an image archive\n" * 64)
    series = folder / "patches" / "greet"
    series.mkdir(parents=True)
    (series / "0001-greeting.patch").write_text(GREETING_PATCH)
    (series / "series").write_text(
        "# greet 1.0 (pin greet)\n0001-greeting.patch\npin:greet-extra\n"
    )
    tree = nix("hash", "path", "--type", "sha256", "--sri", str(upstream / "tool")).stdout.strip()
    hashes = {
        "greet": sri(b"hello\n"),
        "extra": sri(EXTRA_PATCH.encode()),
        "tool": tree,
        "base": sri((upstream / "base.tar").read_bytes()),
        "digest": hashlib.sha256(b"base image manifest").hexdigest(),
    }
    (folder / "pkgs").mkdir()
    (folder / "pkgs" / "pins.toml").write_text(PINS.format(**hashes))
    (folder / "flake.nix").write_text(FLAKE.replace("@NIXPKGS@", str(folder.parent / "nixpkgs")))
    return Checkout(folder, hashes, rev)
