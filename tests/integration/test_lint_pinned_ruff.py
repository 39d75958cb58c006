"""The flake's `checks.lint`, reproduced with the ruff the pinned nixpkgs ships.

`nix flake check` lints with nixos-25.05's ruff (0.11.x), not with the newer ruff in the test
extra (`.venv`); a rule that only the older one enforces (UP038, say) would pass here and fail
there. This test installs that ruff from PyPI into a scratch virtual environment and runs the
very command `checks.lint` runs, read from flake.nix, plus the formatter check the test command
runs, so both versions agree on the code.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import venv

import pytest

from conftest import REPO

pytestmark = [pytest.mark.network, pytest.mark.slow]

# nixos-25.05 packaged ruff 0.11 (pkgs/by-name/ru/ruff/package.nix); 0.11.13 is the last 0.11.
PINNED_RUFF = "0.11.13"


@pytest.fixture(scope="module")
def ruff(tmp_path_factory):
    env = tmp_path_factory.mktemp("ruff-pinned")
    venv.create(env, with_pip=True)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q", f"ruff=={PINNED_RUFF}"]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"could not install ruff {PINNED_RUFF} from PyPI: {proc.stderr[-2000:]}")
    return str(env / "bin" / "ruff")


def lint_command() -> list[str]:
    """The `ruff check …` line of the flake's checks.lint."""
    flake = (REPO / "flake.nix").read_text()
    block = flake[flake.index("lint = ") :]
    return shlex.split(re.search(r"^\s*(ruff check [^\n]*)$", block, re.M).group(1))


def test_lint_command_is_found_in_the_flake():
    assert lint_command()[:3] == ["ruff", "check", "--no-cache"]


def test_flake_lint_passes_with_the_pinned_ruff(ruff):
    version = subprocess.run([ruff, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[-1] == PINNED_RUFF
    proc = subprocess.run([ruff, *lint_command()[1:]], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_formatting_agrees_with_the_pinned_ruff(ruff):
    argv = [ruff, "format", "--check", "py", "tests", "bench"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
