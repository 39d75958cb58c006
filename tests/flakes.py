"""Tiny fixture flakes built with a static busybox, for tests and benchmarks of builds and caches.

Each flake is written to a folder outside git (so it evaluates pure), with `bb/busybox` (and
`bbarm/busybox` for aarch64-linux) beside `flake.nix`. A nonce makes its derivations new to the
store, so a test sees a first build and a first push.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

ARM64_BUSYBOX = Path(os.environ.get("DYNIX_ARM64_BUSYBOX", "/var/cache/dynix/arm64/busybox"))

_HEADER = """{
  outputs = { self }:
    let
      nonce = "%(nonce)s";
      bb = system: if system == "aarch64-linux" then "${./bbarm}/busybox" else "${./bb}/busybox";
      mk = { name, script, system ? "x86_64-linux", refs ? [ ], attrs ? { } }: derivation ({
        inherit name system nonce;
        builder = bb system;
        args = [ "sh" "-c" script ];
        refs = map toString refs;
      } // attrs);
    in %(body)s;
}
"""

# A three-derivation chain (c depends on b and a, b on a), each writing a few log lines.
CHAIN = """rec {
      a = mk {
        name = "chain-a";
        script = "echo building a; echo line 1; echo line 2; mkdir $out; echo a > $out/a";
      };
      b = mk {
        name = "chain-b"; refs = [ a ];
        script = "echo building b; mkdir $out; echo $refs > $out/refs";
      };
      c = mk {
        name = "chain-c"; refs = [ a b ];
        script = "echo building c; mkdir $out; echo $refs > $out/refs";
      };
      fails = mk { name = "fails"; script = "echo about to fail; echo last words; exit 3"; };
      big = mk { name = "big"; script = "mkdir $out; head -c 2097152 /dev/urandom > $out/blob"; };
      packages.x86_64-linux = { default = c; inherit a b c fails big; };
      packages.aarch64-linux.default = mk {
        name = "arm"; system = "aarch64-linux"; script = "mkdir $out; uname -m > $out/arch";
      };
    }"""


def wide(count: int, new_kib: int = 0) -> str:
    """A root derivation whose closure is `count` files plus the root itself:
    `packages.x86_64-linux.default`, and `.part`, a root of the first nine tenths of the files.

    The files are small texts made at evaluation (cheap). With `new_kib`, the last tenth (the
    files `.part` lacks) are built instead, each about `new_kib` KiB of text that compresses
    about as well as programs and libraries do (a hex dump of random bytes)."""
    raw = new_kib * 1024 * 16 // 47  # `od -x` writes 47 bytes for every 16 it reads
    return f"""let
        small = i: builtins.toFile "f${{toString i}}-${{nonce}}" "file ${{toString i}} ${{nonce}}";
        built = i: mk {{
          name = "f${{toString i}}";
          script = "head -c {raw} /dev/urandom | od -x > $out";
        }};
        file = i: if {new_kib} > 0 && i >= {count} * 9 / 10 then built i else small i;
        files = builtins.genList file {count};
        part = builtins.genList (i: builtins.elemAt files i) ({count} * 9 / 10);
        # the references go in a file: thousands of them overflow one environment variable
        root = name: deps: mk {{
          inherit name; refs = deps; attrs.passAsFile = [ "refs" ];
          script = "mkdir $out; tr ' ' '\\n' < $refsPath > $out/refs";
        }};
      in {{
        packages.x86_64-linux = {{ default = root "wide" files; part = root "wide-part" part; }};
      }}"""


def layered(width: int, depth: int, kib: int = 256) -> str:
    """`depth` layers of `width` derivations (each `kib` KiB of random bytes) where every
    derivation refers to all of the layer below, under one root: `packages.x86_64-linux.default`.
    A cache must take the layers bottom up: a path is refused until its references are there."""
    return f"""let
        blob = "head -c {kib * 1024} /dev/urandom > $out/blob";
        node = layer: i: below: mk {{
          name = "layer${{toString layer}}-${{toString i}}"; refs = below;
          script = "mkdir $out; echo $refs > $out/refs; ${{blob}}";
        }};
        top = done: if done == [ ] then [ ] else builtins.elemAt done (builtins.length done - 1);
        layers = builtins.foldl'
          (done: layer: done ++ [ (builtins.genList (i: node layer i (top done)) {width}) ])
          [ ] (builtins.genList (l: l) {depth});
        root = mk {{
          name = "layered"; refs = builtins.elemAt layers ({depth} - 1);
          script = "mkdir $out; echo $refs > $out/refs";
        }};
      in {{ packages.x86_64-linux.default = root; }}"""


def write_flake(
    folder: Path, body: str = CHAIN, *, busybox: Path, nonce: str | None = None
) -> Path:
    """Write a fixture flake into `folder` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bb").mkdir(exist_ok=True)
    shutil.copy2(busybox, folder / "bb" / "busybox")
    (folder / "bbarm").mkdir(exist_ok=True)
    if ARM64_BUSYBOX.is_file():
        shutil.copy2(ARM64_BUSYBOX, folder / "bbarm" / "busybox")
    else:  # evaluation still works; only an aarch64 build needs the real thing
        (folder / "bbarm" / "busybox").write_text("missing\n")
    text = _HEADER % {"nonce": nonce or uuid.uuid4().hex, "body": body}
    (folder / "flake.nix").write_text(text)
    return folder
