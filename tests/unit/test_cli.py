"""The command tree as users meet it: help everywhere, version, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

import conftest
from dynix.cli import group
from dynix.commands import COMMANDS


def walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), (*path, name))


ALL = list(walk(group))


@pytest.mark.parametrize("path,command", ALL, ids=[" ".join(p) or "dynix" for p, _ in ALL])
def test_every_command_has_help_text(path, command):
    assert (command.help or "").strip(), f"dynix {' '.join(path)} has no help text"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"dynix {' '.join(path)} {param.opts[0]} has no help"


def test_help_runs_for_every_command(dynix):
    for path, _ in ALL:
        proc = dynix(*path, "--help")
        assert proc.returncode == 0, (path, proc.stderr)
        assert "Usage: dynix" in proc.stdout


def test_version(dynix):
    """The version printed is pyproject.toml's (which Nix reads too) and the installed one."""
    from importlib.metadata import version

    import tomlkit

    project = tomlkit.parse((conftest.REPO / "pyproject.toml").read_text())["project"]
    proc = dynix("--version")
    assert proc.returncode == 0
    assert proc.stdout == f"dynix, version {project['version']}\n"
    assert version("dynix") == project["version"]


def test_commands_returning_data_offer_json():
    data_commands = {("pins", "show"), ("pins", "verify"), ("pins", "lock")}
    for path, command in ALL:
        if path in data_commands:
            assert any("--json" in p.opts for p in command.params), path


def test_usage_error_exits_2(dynix):
    proc = dynix("pins", "show", "--no-such-flag")
    assert proc.returncode == 2
    assert "No such option" in proc.stderr


def test_error_is_one_line_without_traceback(dynix, tmp_path):
    proc = dynix("pins", "--file", tmp_path / "missing.toml", "show")
    line = proc.stderr.strip()
    assert proc.returncode == 1
    assert line.startswith("Error: cannot read pins file")
    assert "\n" not in line


def test_debug_shows_the_traceback(dynix, tmp_path):
    proc = dynix("--debug", "pins", "--file", tmp_path / "missing.toml", "show")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_summary_dynix_help_lists_is_the_commands_own(name):
    command = group.get_command(click.Context(group), name)
    assert COMMANDS[name][1] == command.get_short_help_str(limit=1000)


def test_top_level_help_imports_no_command_module():
    code = (
        "import sys\n"
        "from dynix.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('dynix.commands.')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=conftest.test_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Commands:" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "[]"
