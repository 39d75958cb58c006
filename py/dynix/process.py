"""The one place dynix starts other programs.

`run` waits for a command and returns its output; `spawn` starts a long-running one (a service
of the serving stack) in its own session so that it and its children can be stopped together.
Commands are argv lists, never shell strings; with `--debug` each one is logged on stderr.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import log
from .errors import CommandError, DynixError


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def _environ(env: Mapping[str, str] | None, extra_env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ if env is None else env)
    merged.update(extra_env or {})
    return merged


def _log_command(argv: Sequence[str], cwd: str | Path | None) -> None:
    where = f" (in {cwd})" if cwd else ""
    log.debug(f"$ {shlex.join(argv)}{where}")


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    stderr_to_terminal: bool = False,
    error: type[CommandError] = CommandError,
    what: str = "",
) -> Result:
    """Run `argv` to completion and capture its output.

    With `check`, a non-zero exit raises `error` (a `CommandError`) carrying argv, exit code and
    the tail of stderr. `stderr_to_terminal` lets the program's stderr through (progress) instead
    of capturing it.
    """
    argv = [str(a) for a in argv]
    _log_command(argv, cwd)
    try:
        proc = subprocess.run(
            argv,
            input=input,
            cwd=cwd,
            env=_environ(env, extra_env),
            text=True,
            stdout=subprocess.PIPE,
            stderr=None if stderr_to_terminal else subprocess.PIPE,
            stdin=None if input is not None else subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise DynixError(f"{argv[0]}: program not found on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise DynixError(f"{shlex.join(argv)} did not finish within {timeout:g} s") from exc
    result = Result(argv, proc.returncode, proc.stdout or "", proc.stderr or "")
    if check and proc.returncode != 0:
        raise error(argv, proc.returncode, result.stderr, what=what)
    return result


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    stdout: int | IO[str] | None = subprocess.PIPE,
    stderr: int | IO[str] | None = subprocess.STDOUT,
) -> subprocess.Popen[str]:
    """Start `argv` in a new session (its own process group) and return at once."""
    argv = [str(a) for a in argv]
    _log_command(argv, cwd)
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=_environ(env, extra_env),
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise DynixError(f"{argv[0]}: program not found on PATH") from exc


def which(program: str, path: str | None = None) -> str | None:
    """Where `program` is on PATH (or on `path`), or None."""
    return shutil.which(program, path=path)
