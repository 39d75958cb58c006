"""Benchmark: `dynix cache push` and `dynix cache status` against plain Nix, side by side.

    python3 bench/cache_bench.py [--runs N] [--paths 1000]

Builds a fixture flake whose closure is N small paths (plus its root) and fills a file:// cache
with nine tenths of them. Then, alternating A and B in each round so drift hits both alike:

- push: the whole closure where most paths are already in the cache;
  A = `dynix cache push ROOT --to bench` (asks the cache once, signs and uploads the rest),
  B = `nix copy --to 'file://CACHE?secret-key=KEY' ROOT` (plain Nix doing the same job: the
  closure copied and signed with the same key).
  Before every run of either, the cache folder is reset to the same nine-tenths state and
  Nix's narinfo cache is emptied ($XDG_CACHE_HOME), so both start cold from the same place.
- status: which paths of the closure the cache holds;
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--print-commands", action="store_true")
    args = parser.parse_args()

    busybox = shutil.which("busybox")
    if not busybox:
        raise SystemExit("needs busybox (busybox-static)")
    work = Path(tempfile.mkdtemp(prefix="dynix-cache-bench."))
    env = dict(os.environ, NIX_CONFIG=NIX_CONFIG, XDG_CONFIG_HOME=str(work / "config"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "py"), env.get("PYTHONPATH")]))
    env["XDG_CACHE_HOME"] = str(work / "xdg-cache")

    flake = write_flake(work / "flake", wide(args.paths), busybox=Path(busybox))
    root = json.loads(sh("nix", "build", "--no-link", "--json", str(flake), env=env))[0]
    root = root["outputs"]["out"]
    closure = sh("nix", "path-info", "--recursive", root, env=env).split()
    print(f"closure of {root}: {len(closure)} paths", file=sys.stderr)

    pristine, cache = work / "pristine", work / "cache"
    secret = sh("nix", "key", "generate-secret", "--key-name", "bench-1", env=env).strip()
    key = work / "bench.sec"
    key.write_text(secret)
    key.chmod(0o600)
    dynix = [sys.executable, "-m", "dynix"]
    sh(*dynix, "cache", "add", "pristine", f"file://{pristine}", "--secret-key-file", key, env=env)
    sh(*dynix, "cache", "add", "bench", f"file://{cache}", "--secret-key-file", str(key), env=env)
    sh(*dynix, "cache", "push", f"{flake}#part", "--to", "pristine", env=env)
    held = len(list(pristine.glob("*.narinfo")))
    print(f"cache holds {held} of {len(closure)} paths before each push", file=sys.stderr)

    reset = ["sh", "-c", f'rm -rf "{cache}" "{work}/xdg-cache" && cp -a "{pristine}" "{cache}"']
    push_a = [*dynix, "cache", "push", root, "--to", "bench"]
    push_b = ["nix", "copy", "--to", f"file://{cache}?secret-key={key}", root]
    status_a = [*dynix, "cache", "status", root, "--cache", "bench", "--json"]
    status_b = ["nix", "path-info", "--store", f"file://{cache}", "--json", *closure]
    if args.print_commands:
        (work / "closure.txt").write_text("\n".join(closure) + "\n")
        print("export NIX_CONFIG=" + shlex.quote(NIX_CONFIG))
        print(f"export PYTHONPATH={env['PYTHONPATH']}")
        print(f"export XDG_CONFIG_HOME={env['XDG_CONFIG_HOME']}")
        print(f"export XDG_CACHE_HOME={env['XDG_CACHE_HOME']}")
        print("# reset:", shlex.join(reset))
        for label, argv in (("push A", push_a), ("push B", push_b), ("status A", status_a)):
            print(f"# {label}:", shlex.join(argv))
        print(f"# status B: nix path-info --store file://{cache} --json $(cat {work}/closure.txt)")
        return

    a, b = [], []
    for _ in range(args.runs):
        a.append(timed(push_a, env, reset))
        b.append(timed(push_b, env, reset))
    report("push, 9/10 of the closure already cached", a, b, "dynix cache push", "nix copy, signed")

    subprocess.run(reset, env=env, check=True)
    sh(*push_a, env=env)  # the cache now holds everything; status reads it
    a, b = [], []
    for _ in range(args.runs):
        a.append(timed(status_a, env, None))
        b.append(timed(status_b, env, None))
    report(f"status of {len(closure)} paths, file://", a, b, "dynix cache status", "nix path-info")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
