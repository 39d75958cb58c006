#!/usr/bin/env python3
"""Benchmark `dynix image build` on a synthetic closure shaped like a CUDA one.

Builds (with Nix, from a busybox-only flake in a temporary folder) a closure of ~2 GB: a few
large incompressible libraries and many packages of small files, all used by one app. Then, in
one run, measures side by side:

  limit        read every file of the closure and sha256 the bytes (what any layer writer must do)
  dynix none   `dynix image build --compress none`, empty layer cache
  tar twice    every layer tarred twice, once to hash it and once to write it (the approach of a
               streamed layered image), uncompressed: bench/tar_twice.py
  dynix gzip   `dynix image build` with default gzip, empty layer cache
  rebuild      `dynix image build` after the app changed, warm layer cache (none and gzip)

Each is a separate process; wall time and peak RSS (from wait4) are reported, median of --runs.
Peak memory is also taken on a closure a quarter the size, to show it does not grow with it.
Everything made is removed at the end, store paths included.

    PYTHONPATH=py python bench/image_build.py [--scale 1.0] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NIX_CONFIG = "\n".join(
    [
        "experimental-features = nix-command flakes",
        "substituters =",
        "flake-registry =",
        "sandbox = true",
    ]
)

FLAKE = """\
{
  outputs = { self }:
    let
      system = "x86_64-linux";
      mk = name: deps: script: derivation {
        inherit name system;
        builder = "${./bb}/busybox";
        args = [ "sh" "-c" script ];
        deps = deps;
      };
      bb = mk "busybox-1.35" [ ] ''
        $builder mkdir -p $out/bin
        $builder cp $builder $out/bin/busybox
      '';
      # Many small files (headers, Python sources): FILES files of 1-24 KiB each.
      small = i: mk "pysmall${toString i}-1.0" [ bb ] ''
        export PATH=${bb}/bin
        mkdir -p $out/lib/python3/site-packages/p${toString i}
        echo ${bb} > $out/deps
        n=0
        while [ $n -lt @FILES@ ]; do
          size=$(( (n * 7919 % 24) * 1024 + 1024 ))
          head -c $size /dev/urandom > $out/lib/python3/site-packages/p${toString i}/m$n.py
          n=$((n + 1))
        done
      '';
      # A few large libraries (cuBLAS, cuDNN): one incompressible file of MB MiB each.
      large = i: mk "libcudalike${toString i}-12.8" [ bb ] ''
        export PATH=${bb}/bin
        mkdir -p $out/lib
        echo ${bb} > $out/deps
        head -c $(( @MB@ * 1024 * 1024 )) /dev/urandom > $out/lib/libbig${toString i}.so
      '';
      smalls = map small (builtins.genList (i: i) @SMALL@);
      larges = map large (builtins.genList (i: i) @LARGE@);
      app = mk "app-@VERSION@" (smalls ++ larges) ''
        export PATH=${bb}/bin
        mkdir -p $out/bin
        echo "@VERSION@" > $out/version
        for d in $deps; do echo $d; done > $out/deps
      '';
      quarter = mk "quarter-1" ((builtins.genList small (@SMALL@ / 4)) ++ [ (large 0) ]) ''
        export PATH=${bb}/bin
        mkdir -p $out; for d in $deps; do echo $d; done > $out/deps
      '';
    in {
      packages.${system} = { inherit app quarter; default = app; };
    };
}
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["NIX_CONFIG"] = NIX_CONFIG
    e["PYTHONPATH"] = str(REPO / "py")
    return e


def run_measured(argv: list[str], extra_env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run argv to completion; (wall seconds, peak RSS in MiB) of that process."""
    e = env()
    e.update(extra_env or {})
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{err.decode()[-2000:]}")
    return wall, usage.ru_maxrss // 1024


def nix(*args: str) -> str:
    out = subprocess.run(["nix", *args], env=env(), check=True, capture_output=True, text=True)
    return out.stdout


def make_flake(folder: Path, scale: float, version: str) -> str:
    folder.mkdir(parents=True)
    (folder / "bb").mkdir()
    shutil.copy(shutil.which("busybox") or "/bin/busybox", folder / "bb" / "busybox")
    text = (
        FLAKE.replace("@FILES@", str(max(10, int(600 * scale))))
        .replace("@MB@", str(max(8, int(400 * scale))))
        .replace("@SMALL@", "40")
        .replace("@LARGE@", "4")
        .replace("@VERSION@", version)
    )
    (folder / "flake.nix").write_text(text)
    return f"path:{folder}"


def closure(installable: str) -> list[dict]:
    return json.loads(nix("path-info", "--json", "--recursive", installable))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 is a ~2 GB closure")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the store paths afterwards")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dynix-bench."))
    made: list[str] = []
    try:
        v1 = make_flake(work / "v1", args.scale, "1.0")
        v2 = make_flake(work / "v2", args.scale, "1.1")
        print("building the synthetic closure with Nix ...", file=sys.stderr)
        t = time.monotonic()
        for ref in (f"{v1}#app", f"{v2}#app", f"{v1}#quarter"):
            nix("build", "--no-link", ref)
        paths = closure(f"{v1}#app")
        made = sorted({p["path"] for r in ("app", "quarter") for p in closure(f"{v1}#{r}")})
        made += [p["path"] for p in closure(f"{v2}#app") if p["path"] not in made]
        total = sum(p["narSize"] for p in paths)
        print(
            f"built in {time.monotonic() - t:.0f} s: {len(paths)} paths, {total / 2**30:.2f} GiB",
            file=sys.stderr,
        )
        store_paths = [p["path"] for p in paths]
        (work / "paths.json").write_text(json.dumps(store_paths))

        py = sys.executable
        dynix = [py, "-m", "dynix", "image", "build"]
        rows: list[tuple[str, float, int]] = []

        def measure(label: str, make_argv, before=None, runs: int = args.runs) -> float:
            walls, peaks = [], []
            for i in range(runs):
                if before:
                    before(i)
                wall, peak = run_measured(*make_argv(i))
                walls.append(wall)
                peaks.append(peak)
                print(f"  {label}: {wall:.2f} s, {peak} MiB", file=sys.stderr)
            rows.append((label, statistics.median(walls), max(peaks)))
            return statistics.median(walls)

        def fresh(name: str):
            def reset(i: int) -> None:
                shutil.rmtree(work / name, ignore_errors=True)
                shutil.rmtree(work / f"{name}-cache", ignore_errors=True)
                shutil.rmtree(work / f"{name}-out", ignore_errors=True)

            return reset

        def cache_env(name: str) -> dict[str, str]:
            return {"XDG_CACHE_HOME": str(work / f"{name}-cache")}

        limit = measure(
            "limit: read + sha256",
            lambda i: ([py, str(HERE / "read_sha256.py"), str(work / "paths.json")],),
        )
        none = measure(
            "dynix, uncompressed",
            lambda i: (
                dynix + [f"{v1}#app", "--compress", "none", "-o", f"oci:{work}/none-out"],
                cache_env("none"),
            ),
            before=fresh("none"),
        )
        twice = measure(
            "tar every layer twice",
            lambda i: (
                [py, str(HERE / "tar_twice.py"), str(work / "paths.json"), str(work / "twice-out")],
            ),
            before=fresh("twice"),
        )
        gzip_full = measure(
            "dynix, gzip (default)",
            lambda i: (dynix + [f"{v1}#app", "-o", f"oci:{work}/gzip-out"], cache_env("gzip")),
            before=fresh("gzip"),
            runs=1,
        )
        gzip_rebuild = measure(
            "rebuild after one change, gzip",
            lambda i: (dynix + [f"{v2}#app", "-o", f"oci:{work}/gzip-out2"], cache_env("gzip")),
            runs=1,
        )

        def warm(i: int) -> None:
            shutil.rmtree(work / "warm-cache", ignore_errors=True)
            shutil.rmtree(work / "warm-out", ignore_errors=True)
            run_measured(
                dynix + [f"{v1}#app", "--compress", "none", "-o", f"oci:{work}/warm-out"],
                cache_env("warm"),
            )
            shutil.rmtree(work / "warm-out")

        rebuild = measure(
            "rebuild after one change",
            lambda i: (
                dynix + [f"{v2}#app", "--compress", "none", "-o", f"oci:{work}/warm-out"],
                cache_env("warm"),
            ),
            before=warm,
        )
        measure(
            "dynix, uncompressed, 1/4 closure",
            lambda i: (
                dynix + [f"{v1}#quarter", "--compress", "none", "-o", f"oci:{work}/q-out"],
                cache_env("q"),
            ),
            before=fresh("q"),
            runs=1,
        )

        quarter_total = sum(p["narSize"] for p in closure(f"{v1}#quarter"))
        print()
        print(
            f"closure: {len(paths)} store paths, {total / 2**30:.2f} GiB "
            f"(1/4 closure: {quarter_total / 2**30:.2f} GiB); "
            f"{os.cpu_count()} cores; median of {args.runs} runs where repeated"
        )
        print()
        print("| what | wall s | GiB/s | peak RSS MiB |")
        print("|---|---:|---:|---:|")
        for label, wall, peak in rows:
            size = quarter_total if "1/4" in label else total
            rate = f"{size / 2**30 / wall:.2f}" if "rebuild" not in label else "-"
            print(f"| {label} | {wall:.2f} | {rate} | {peak} |")
        print()
        print(f"dynix uncompressed / limit: {none / limit:.2f}x (goal <= 1.5x)")
        print(f"tar twice / dynix uncompressed: {twice / none:.2f}x")
        print(
            f"full / rebuild after one change: {none / rebuild:.1f}x uncompressed, "
            f"{gzip_full / gzip_rebuild:.1f}x gzip (goal >= 10x)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if made and not args.keep:
            subprocess.run(["nix", "store", "delete", *made], env=env(), capture_output=True)


if __name__ == "__main__":
    main()
