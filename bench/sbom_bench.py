"""Benchmark: `dynix sbom` of a closure beside `nix path-info -r --json` of the same closure.

    python3 bench/sbom_bench.py [--runs N] [--paths 250 1000]

For each size, a fixture flake whose root refers to PATHS small store paths (tests/flakes.py
`wide`: made at evaluation, plus a tenth built by derivations, so show-derivation has
something to read). Both commands take the same flake installable, so both evaluate it;
alternating A and B in each round:
  A = `dynix sbom INSTALLABLE > FILE` (CycloneDX: build no-op, path-info -r, show-derivation
      of the derivations and their inputs, one licence evaluation),
  B = `nix path-info -r --json INSTALLABLE > FILE`.
  C = `dynix --version`: the start-up of the Python CLI alone, which A pays and B does not.
  D = the floor of A's design, one command after the other in one shell: C, then B, then
      `nix show-derivation` of the closure's derivers (taken from B's answer once, before
      the timed runs), which A cannot ask for before it has B's answer. No build, no
      licences, no document: what A cannot avoid, so a goal stated against B alone can be
      read against it.
Whole-process wall times (start-up included), min / median / max, and the peak resident
memory of each process (ru_maxrss of the command and what it waited for, as wait4 reports it).
Python runs with its bytecode cached (in a folder of the run), as an installed dynix has it;
one run of each command before the timed ones fills that cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from flakes import wide, write_flake  # noqa: E402

NIX_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\nflake-registry ="


def timed(argv: list[str], env: dict[str, str], out: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run."""
    start = time.monotonic()
    with open(out, "wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{argv[0]} failed: exit {proc.returncode}")
    return time.monotonic() - start, usage.ru_maxrss


def summary(values: list[float]) -> str:
    return f"{min(values):6.2f} {statistics.median(values):6.2f} {max(values):6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--paths", type=int, nargs="+", default=[250, 1000])
    args = parser.parse_args()
    busybox = Path(
        subprocess.run(["which", "busybox"], capture_output=True, text=True).stdout.strip()
    )
    env = dict(os.environ, NIX_CONFIG=NIX_CONFIG)
    env["PYTHONPATH"] = str(REPO / "py")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    print(f"{'paths':>6} {'command':<16} {'min':>6} {'median':>6} {'max':>6}  peak RSS (MiB)")
    with tempfile.TemporaryDirectory(prefix="dynix-sbom-bench.") as tmp:
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        for count in args.paths:
            flake = write_flake(Path(tmp) / f"wide{count}", wide(count, new_kib=1), busybox=busybox)
            installable = f"path:{flake}#default"
            subprocess.run(["nix", "build", "--no-link", installable], env=env, check=True)
            closure = subprocess.run(
                ["nix", "path-info", "-r", "--json", installable],
                env=env,
                check=True,
                capture_output=True,
            ).stdout
            derivers = sorted({i["deriver"] for i in json.loads(closure) if i.get("deriver")})
            commands = {
                "dynix sbom": [sys.executable, "-m", "dynix", "sbom", installable],
                "nix path-info": ["nix", "path-info", "-r", "--json", installable],
                "dynix --version": [sys.executable, "-m", "dynix", "--version"],
                "floor C,B,drv": [
                    "sh",
                    "-c",
                    '"$@" --version >/dev/null && nix path-info -r --json "$0" >/dev/null'
                    " && exec nix show-derivation $DERIVERS",
                    installable,
                    sys.executable,
                    "-m",
                    "dynix",
                ],
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            peaks: dict[str, int] = dict.fromkeys(commands, 0)
            env["DERIVERS"] = " ".join(derivers)
            for argv in commands.values():
                timed(argv, env, Path(tmp) / "out.json")
            for _ in range(args.runs):
                for name, argv in commands.items():
                    seconds, rss = timed(argv, env, Path(tmp) / "out.json")
                    times[name].append(seconds)
                    peaks[name] = max(peaks[name], rss)
            for name in commands:
                print(f"{count:>6} {name:<16} {summary(times[name])}  {peaks[name] / 1024:.0f}")
            median = {name: statistics.median(values) for name, values in times.items()}
            a, b, floor = (median[k] for k in ("dynix sbom", "nix path-info", "floor C,B,drv"))
            print(
                f"{count:>6} ratio A/B (median) {a / b:.2f}x;"
                f" floor D/B {floor / b:.2f}x; A/D {a / floor:.2f}x"
            )


if __name__ == "__main__":
    main()
