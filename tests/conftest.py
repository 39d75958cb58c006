"""Shared test helpers: run the real `dynix` CLI, with a Nix configured for this machine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PINS = REPO / "pkgs" / "pins.toml"
PATCHES = REPO / "patches"

# Nix as the tests use it: flakes on, no binary cache or registry to reach, aarch64 through
# emulation where binfmt is set up.
NIX_CONFIG = "\n".join(
    [
        "experimental-features = nix-command flakes",
        "substituters =",
        "flake-registry =",
        "narinfo-cache-negative-ttl = 0",
        "tarball-ttl = 0",
        "extra-platforms = aarch64-linux",
        "sandbox = true",
    ]
)


def test_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "py"), env.get("PYTHONPATH")]))
    env["NIX_CONFIG"] = NIX_CONFIG
    env.pop("DYNIX_PINS", None)
    env.pop("DYNIX_PATCHES", None)
    env.update(extra or {})
    return env


Dynix = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def dynix() -> Dynix:
    """Run `dynix ARGS…` as users do (a separate process) and return the finished process."""

    def run(
        *args: str,
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dynix", *map(str, args)],
            cwd=cwd,
            env=test_env(env),
            input=input,
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    return run


def nix(
    *args: str, check: bool = True, env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Plain `nix …` with the tests' configuration (and `env` on top)."""
    return subprocess.run(
        ["nix", *args], env=test_env(env), text=True, capture_output=True, check=check, **kwargs
    )


@pytest.fixture(scope="session")
def busybox() -> Path:
    path = shutil.which("busybox")
    if not path:
        pytest.fail("busybox-static is not installed (.ci/run installs it)")
    return Path(path)


PLANTER = 54321  # the uid of the "other user" whose links tests plant


def plant_link(shared: Path, name: str, target: Path) -> Path:
    """A link `shared/name` -> `target` that another user (uid `PLANTER`) made in `shared`, a
    sticky, world-writable folder like /tmp (made here). Skips where that cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("planting another user's link needs root (to chown it)")
    shared.mkdir(exist_ok=True)
    shared.chmod(0o1777)
    link = shared / name
    link.symlink_to(target)
    os.lchown(link, PLANTER, PLANTER)
    return link


def require_programs(*programs: str) -> None:
    """Fail (not skip) when a program the test set-up installs is not on PATH."""
    for program in programs:
        if not shutil.which(program):
            pytest.fail(f"{program} is not installed (the test set-up installs it)")


def live_processes() -> Iterator[tuple[int, list[str], str]]:
    """Every process but zombies: its pid, the fields of its `stat` after the command name
    (state, ppid, pgrp, session, …) and its command line (NULs as spaces)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields and fields[0] != "Z":
            yield int(entry.name), fields, cmdline.decode(errors="replace")


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Assert the process failed with exactly one `Error: …` line on stderr; return it."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and symlink under `root`: relative path -> (sha256 or link target, mode)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("-> " + os.readlink(path), 0)
        elif path.is_file():
            found[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return found


@pytest.fixture(scope="session")
def vllm_sdist(tmp_path_factory) -> Path:
    """The vLLM sdist of pins.toml, downloaded once per session with Nix, checked against its
    pinned hash and unpacked. Returns the source tree: copy it before changing anything."""
    import tomlkit

    pin = tomlkit.parse(PINS.read_text())["vllm"]
    proc = nix("store", "prefetch-file", "--json", str(pin["url"]), check=False, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"could not download the vLLM sdist: {proc.stderr.strip()}")
    fetched = json.loads(proc.stdout)
    assert fetched["hash"] == pin["hash"], "the vLLM sdist does not match its pinned hash"
    dest = tmp_path_factory.mktemp("vllm-sdist")
    with tarfile.open(fetched["storePath"]) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(dest, filter="data")
        else:  # Python before 3.10.12
            archive.extractall(dest)
    [tree] = dest.iterdir()
    return tree
