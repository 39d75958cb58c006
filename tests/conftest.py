"""Shared test helpers: run the real `dynix` CLI, with a Nix configured for this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PINS = REPO / "pkgs" / "pins.toml"

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


def nix(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Plain `nix …` with the tests' configuration."""
    return subprocess.run(
        ["nix", *args], env=test_env(), text=True, capture_output=True, check=check, **kwargs
    )


@pytest.fixture(scope="session")
def busybox() -> Path:
    path = shutil.which("busybox")
    if not path:
        pytest.fail("busybox-static is not installed (.ci/run installs it)")
    return Path(path)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Assert the process failed with exactly one `Error: …` line on stderr; return it."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]
