#!/usr/bin/env python3
"""Benchmark `dynix image build` on a synthetic closure shaped like a CUDA one.

Builds (with Nix, from a busybox-only flake in a temporary folder) a closure of ~2 GB: a few
large incompressible libraries and many packages of small files, all used by one app. Then, in
one run, measures side by side:

  limit        read every file of the closure and sha256 the bytes (what any layer writer must do)
  tar twice    every layer tarred twice, once to hash it and once to write it (the approach of a
               streamed layered image), uncompressed: bench/tar_twice.py
  dynix        `dynix image build --compress none|gzip|zstd`, empty layer cache, on 1 and 2
               cores (taskset), so the gain per core can be read off
  rebuild      the same after the app changed, warm layer cache

Each is a separate process; wall time and peak RSS (from wait4) are reported, median of --runs.
Peak memory is also taken on a closure a quarter the size, to show it does not grow with it.
Everything made is removed at the end, store paths included.

    PYTHONPATH=py python bench/image_build.py [--scale 1.0] [--runs 3] [--shape app|onebig]
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
      # A few large libraries (cuBLAS, cuDNN): MB MiB each, half random bytes, half a hex dump
      # of random bytes (which compresses about as well as machine code does).
      libs = n: ''
        export PATH=${bb}/bin
        mkdir -p $out/lib
        echo ${bb} > $out/deps
        for j in $(seq 1 ${toString n}); do
          { head -c $(( @MB@ * 512 * 1024 )) /dev/urandom
            head -c $(( @MB@ * 512 * 1024 * 16 / 47 )) /dev/urandom | od -x
          } > $out/lib/libbig$j.so
        done
      '';
      large = i: mk "libcudalike${toString i}-12.8" [ bb ] (libs 1);
      # All the large libraries in one path (like PyTorch or a CUDA toolkit): most of the bytes.
      allInOne = mk "libcudaall-12.8" [ bb ] (libs @LARGE@);
      smalls = map small (builtins.genList (i: i) @SMALL@);
      larges = map large (builtins.genList (i: i) @LARGE@);
      app = mk "app-@VERSION@" (smalls ++ larges) ''
        export PATH=${bb}/bin
        mkdir -p $out/bin
        echo "@VERSION@" > $out/version
        for d in $deps; do echo $d; done > $out/deps
      '';
      onebig = mk "onebig-@VERSION@" (smalls ++ [ allInOne ]) ''
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
      packages.${system} = { inherit app onebig quarter; default = app; };
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
    parser.add_argument("--cores", default="1,2", help="core counts to run on, with taskset")
    parser.add_argument(
        "--shape",
        choices=["app", "onebig"],
        default="app",
        help="app: four large paths; onebig: one path holds most bytes",
    )
    parser.add_argument("--keep", action="store_true", help="keep the store paths afterwards")
    args = parser.parse_args()
    cores = [int(c) for c in args.cores.split(",")]
    target = args.shape

    work = Path(tempfile.mkdtemp(prefix="dynix-bench."))
    made: list[str] = []
    try:
        v1 = make_flake(work / "v1", args.scale, "1.0")
        v2 = make_flake(work / "v2", args.scale, "1.1")
        print("building the synthetic closure with Nix ...", file=sys.stderr)
        t = time.monotonic()
        for ref in (f"{v1}#{target}", f"{v2}#{target}", f"{v1}#quarter"):
            nix("build", "--no-link", ref)
        paths = closure(f"{v1}#{target}")
        made = sorted({p["path"] for r in (target, "quarter") for p in closure(f"{v1}#{r}")})
        made += [p["path"] for p in closure(f"{v2}#{target}") if p["path"] not in made]
        total = sum(p["narSize"] for p in paths)
        largest = max(p["narSize"] for p in paths)
        print(
            f"built in {time.monotonic() - t:.0f} s: {len(paths)} paths, {total / 2**30:.2f} GiB",
            file=sys.stderr,
        )
        (work / "paths.json").write_text(json.dumps([p["path"] for p in paths]))

        py = sys.executable
        rows: list[tuple[str, float, int]] = []

        def on(n: int) -> list[str]:
            return ["taskset", "-c", ",".join(str(c) for c in range(n))]

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

        def reset(name: str) -> None:
            for suffix in ("", "-cache", "-out"):
                shutil.rmtree(work / f"{name}{suffix}", ignore_errors=True)

        def image(n: int, flake: str, compression: str, name: str) -> tuple[list[str], dict]:
            argv = [*on(n), py, "-m", "dynix", "image", "build", f"{flake}#{target}"]
            argv += ["--compress", compression, "-o", f"oci:{work}/{name}-out"]
            return argv, {"XDG_CACHE_HOME": str(work / f"{name}-cache")}

        limit = measure(
            "limit: read + sha256 (1 core)",
            lambda i: ([*on(1), py, str(HERE / "read_sha256.py"), str(work / "paths.json")],),
        )
        measure(
            "tar every layer twice, uncompressed (1 core)",
            lambda i: (
                [
                    *on(1),
                    py,
                    str(HERE / "tar_twice.py"),
                    str(work / "paths.json"),
                    str(work / "twice-out"),
                ],
            ),
            before=lambda i: shutil.rmtree(work / "twice-out", ignore_errors=True),
        )
        full: dict[tuple[str, int], float] = {}
        again: dict[tuple[str, int], float] = {}
        for compression in ("none", "gzip", "zstd"):
            for n in cores:
                name = f"{compression}{n}"
                full[compression, n] = measure(
                    f"dynix {compression}, {n} core(s), empty cache",
                    lambda i, n=n, c=compression, m=name: image(n, v1, c, m),
                    before=lambda i, m=name: reset(m),
                )
                shutil.rmtree(work / f"{name}-out")
                again[compression, n] = measure(
                    f"rebuild after one change, {compression}, {n} core(s)",
                    lambda i, n=n, c=compression, m=name: image(n, v2, c, m),
                    before=lambda i, m=name: shutil.rmtree(work / f"{m}-out", ignore_errors=True),
                )
        measure(
            "dynix gzip, 1/4 closure, 2 cores",
            lambda i: (
                [
                    *on(2),
                    py,
                    "-m",
                    "dynix",
                    "image",
                    "build",
                    f"{v1}#quarter",
                    "-o",
                    f"oci:{work}/q-out",
                ],
                {"XDG_CACHE_HOME": str(work / "q-cache")},
            ),
            before=lambda i: reset("q"),
            runs=1,
        )

        quarter_total = sum(p["narSize"] for p in closure(f"{v1}#quarter"))
        print()
        print(
            f"closure '{target}': {len(paths)} store paths, {total / 2**30:.2f} GiB, largest path "
            f"{largest / total:.0%} of it (1/4 closure: {quarter_total / 2**30:.2f} GiB); "
            f"{os.cpu_count()} cores; median of {args.runs} runs"
        )
        print()
        print("| what | wall s | ÷ limit | GiB/s | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|")
        for label, wall, peak in rows:
            size = quarter_total if "1/4" in label else total
            rate = f"{size / 2**30 / wall:.2f}" if "rebuild" not in label else "-"
            print(f"| {label} | {wall:.2f} | {wall / limit:.2f} | {rate} | {peak} |")
        print()
        goals = {"none": 1.3, "gzip": 4.0, "zstd": 1.5}
        for compression, goal in goals.items():
            for n in cores:
                ratio = full[compression, n] / limit
                speedup = full[compression, n] / again[compression, n]
                print(
                    f"{compression}, {n} core(s): {ratio:.2f}x the limit (goal <= {goal}x), "
                    f"rebuild {speedup:.1f}x faster (goal >= 10x)"
                )
            if len(cores) > 1:
                lo, hi = cores[0], cores[-1]
                print(
                    f"{compression}: {lo} -> {hi} cores: "
                    f"{full[compression, lo] / full[compression, hi]:.2f}x faster"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if made and not args.keep:
            subprocess.run(["nix", "store", "delete", *made], env=env(), capture_output=True)


if __name__ == "__main__":
    main()
