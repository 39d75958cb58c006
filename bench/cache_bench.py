"""Benchmark: `dynix cache push` and `dynix cache status` against plain Nix, side by side.

    python3 bench/cache_bench.py [--runs N] [--paths 1000] [--new-kib 128]

Two fixture flakes, each a closure of N paths (plus its root) with a file:// cache already
holding nine tenths of it:
- small: every path a few hundred bytes, so a push is all overhead (start-up, queries, one
  narinfo per path) and no payload;
- sized: the tenth the cache lacks is built, each path about NEW_KIB KiB of text that compresses
  about as well as programs do, so compressing and writing the uploads counts too.

Then, alternating A and B in each round so drift hits both alike:
- push: the whole closure where most paths are already in the cache;
  A = `dynix cache push ROOT --to bench` (asks the cache once, then signs and uploads the rest,
  one `nix copy` per core at once, each path after its references),
  B = `nix copy --to 'file://CACHE?secret-key=KEY' ROOT` (plain Nix doing the same job: the
  closure copied and signed with the same key).
  Before every run of either, the cache folder is reset to the same nine-tenths state and
  Nix's narinfo cache is emptied ($XDG_CACHE_HOME), so both start cold from the same place.
- status (small case): which paths of the closure the cache holds;
  A = `dynix cache status ROOT --json`,
  B = `nix path-info --store file://CACHE --json` of the closure's paths.

Whole-process wall times (start-up included), min / median / max. Needs Nix (flakes) and a static
busybox, like the tests; runs as root with the local store. `--print-commands` prints the
prepared commands for use with another timing tool instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from flakes import wide, write_flake  # noqa: E402

NIX_CONFIG = "\n".join(
    [
        "experimental-features = nix-command flakes",
        "substituters =",
        "flake-registry =",
        "sandbox = true",
    ]
)


def sh(*argv: str, env: dict[str, str], **kwargs) -> str:
    proc = subprocess.run(argv, env=env, check=True, text=True, capture_output=True, **kwargs)
    return proc.stdout


def timed(argv: list[str], env: dict[str, str], reset: list[str] | None) -> float:
    if reset:
        subprocess.run(reset, env=env, check=True)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stderr.decode()}")
    return took


def report(name: str, a: list[float], b: list[float], a_label: str, b_label: str) -> None:
    def fmt(xs: list[float]) -> str:
        return f"{min(xs):7.3f} {statistics.median(xs):7.3f} {max(xs):7.3f}"

    ratios = [x / y for x, y in zip(a, b, strict=True)]
    print(f"\n{name}  (seconds: min median max, {len(a)} runs each)")
    print(f"  A {a_label:<44} {fmt(a)}")
    print(f"  B {b_label:<44} {fmt(b)}")
    print(f"  A/B median ratio {statistics.median(ratios):.2f}")


class Case:
    """One fixture closure, its pristine nine-tenths cache and the commands timed on it."""

    def __init__(self, name: str, new_kib: int, args, work: Path, env: dict[str, str]) -> None:
        self.name = name
        folder = work / name
        busybox = Path(shutil.which("busybox") or "busybox")
        flake = write_flake(folder / "flake", wide(args.paths, new_kib), busybox=busybox)
        built = json.loads(sh("nix", "build", "--no-link", "--json", str(flake), env=env))
        self.root = built[0]["outputs"]["out"]
        self.closure = sh("nix", "path-info", "--recursive", self.root, env=env).split()
        pristine, self.cache = folder / "pristine", folder / "cache"
        key = work / "bench.sec"
        dynix = [sys.executable, "-m", "dynix"]
        for cache, folder_ in ((f"pristine-{name}", pristine), (name, self.cache)):
            add = ["cache", "add", cache, f"file://{folder_}", "--secret-key-file", str(key)]
            sh(*dynix, *add, env=env)
        sh(*dynix, "cache", "push", f"{flake}#part", "--to", f"pristine-{name}", env=env)
        held = len(list(pristine.glob("*.narinfo")))
        size = sum(
            int(line.split()[1])
            for line in sh("nix", "path-info", "--size", *self.closure, env=env).splitlines()
        )
        print(
            f"{name}: closure of {len(self.closure)} paths ({size / 2**20:.1f} MiB of NAR), "
            f"the cache holds {held} before each push",
            file=sys.stderr,
        )
        xdg_cache = env["XDG_CACHE_HOME"]
        self.reset = [
            "sh",
            "-c",
            f'rm -rf "{self.cache}" "{xdg_cache}" && cp -a "{pristine}" "{self.cache}"',
        ]
        self.push_a = [*dynix, "cache", "push", self.root, "--to", name]
        self.push_b = ["nix", "copy", "--to", f"file://{self.cache}?secret-key={key}", self.root]
        self.status_a = [*dynix, "cache", "status", self.root, "--cache", name, "--json"]
        self.status_b = ["nix", "path-info", "--store", f"file://{self.cache}", "--json"]
        self.status_b += self.closure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--new-kib", type=int, default=128)
    parser.add_argument("--print-commands", action="store_true")
    args = parser.parse_args()

    if not shutil.which("busybox"):
        raise SystemExit("needs busybox (busybox-static)")
    work = Path(tempfile.mkdtemp(prefix="dynix-cache-bench."))
    env = dict(os.environ, NIX_CONFIG=NIX_CONFIG, XDG_CONFIG_HOME=str(work / "config"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "py"), env.get("PYTHONPATH")]))
    env["XDG_CACHE_HOME"] = str(work / "xdg-cache")
    key = work / "bench.sec"
    key.write_text(sh("nix", "key", "generate-secret", "--key-name", "bench-1", env=env).strip())
    key.chmod(0o600)
    cases = [Case("small", 0, args, work, env), Case("sized", args.new_kib, args, work, env)]

    if args.print_commands:
        print("export NIX_CONFIG=" + shlex.quote(NIX_CONFIG))
        for var in ("PYTHONPATH", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
            print(f"export {var}={env[var]}")
        for case in cases:
            (work / f"{case.name}-closure.txt").write_text("\n".join(case.closure) + "\n")
            print(f"# {case.name} reset:", shlex.join(case.reset))
            print(f"# {case.name} push A:", shlex.join(case.push_a))
            print(f"# {case.name} push B:", shlex.join(case.push_b))
            print(f"# {case.name} status A:", shlex.join(case.status_a))
        return

    for case in cases:
        a, b = [], []
        for _ in range(args.runs):
            a.append(timed(case.push_a, env, case.reset))
            b.append(timed(case.push_b, env, case.reset))
        report(
            f"push ({case.name}), 9/10 of the closure already cached",
            a,
            b,
            "dynix cache push",
            "nix copy, signed",
        )

    small = cases[0]
    subprocess.run(small.reset, env=env, check=True)
    sh(*small.push_a, env=env)  # the cache now holds everything; status reads it
    a, b = [], []
    for _ in range(args.runs):
        a.append(timed(small.status_a, env, None))
        b.append(timed(small.status_b, env, None))
    report(
        f"status of {len(small.closure)} paths, file://",
        a,
        b,
        "dynix cache status",
        "nix path-info",
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
