"""The one place dynix starts other programs.

`run` waits for a command and returns its output; `spawn` starts a long-running one (a service
of the serving stack) in its own session so that it and its children can be stopped together.
Commands are argv lists, never shell strings; with `--debug` each one is logged on stderr.

Stopping: `stop_on_signals` turns SIGTERM, SIGHUP and SIGQUIT into `Terminated` (a
`KeyboardInterrupt`, as SIGINT is), so every `finally` runs whichever way dynix is stopped. A
command being waited for is then asked to stop (SIGINT, as Ctrl-C would), and killed if it does
not within `STOP_GRACE` seconds; `stop_all` does the same for the commands other threads wait
for, so none outlives dynix.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import log
from .errors import CommandError, DynixError

STOP_GRACE = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


class Terminated(KeyboardInterrupt):
    """dynix was sent SIGTERM, SIGHUP or SIGQUIT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def stop_on_signals() -> None:
    """Make SIGTERM, SIGHUP and SIGQUIT raise `Terminated` in the main thread."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_terminated)


def _stop(proc: subprocess.Popen) -> None:
    """Ask `proc` to stop as Ctrl-C would, then kill it if it is still there after a grace."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
        except BaseException:  # interrupted again: no more waiting
            proc.kill()
            raise
        finally:
            proc.wait()


def stop_all() -> None:
    """Stop every command still running (those other threads wait for)."""
    with _children_lock:
        running = list(_children)
    for proc in running:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _tracked(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    with _children_lock:
        _children.add(proc)
    try:
        yield proc
    except BaseException:
        _stop(proc)
        raise
    finally:
        with _children_lock:
            _children.discard(proc)


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


def _start(
    argv: list[str], cwd: str | Path | None, env: Mapping[str, str] | None, **popen: Any
) -> subprocess.Popen:
    """`argv` started as text (its stdout captured unless `popen` says otherwise); a missing
    program is one line."""
    _log_command(argv, cwd)
    popen.setdefault("stdout", subprocess.PIPE)
    try:
        return subprocess.Popen(argv, cwd=cwd, env=env, text=True, **popen)
    except FileNotFoundError as exc:
        raise DynixError(f"{argv[0]}: program not found on PATH") from exc


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
    child = _start(
        argv,
        cwd,
        _environ(env, extra_env),
        stderr=None if stderr_to_terminal else subprocess.PIPE,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
    )
    with _tracked(child):
        try:
            stdout, stderr = child.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            child.kill()
            child.communicate()
            raise DynixError(f"{shlex.join(argv)} did not finish within {timeout:g} s") from exc
    result = Result(argv, child.returncode, stdout or "", stderr or "")
    if check and child.returncode != 0:
        raise error(argv, child.returncode, result.stderr, what=what)
    return result


def stream(
    argv: Sequence[str],
    on_stderr_line: Callable[[str], None],
    *,
    check: bool = True,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    error: type[CommandError] = CommandError,
    what: str = "",
    error_text: Callable[[], str] | None = None,
    keep_lines: int = 200,
) -> Result:
    """Run `argv` to completion, handing each line of its stderr to `on_stderr_line` as it comes.

    For long-running commands whose stderr carries progress (Nix's `--log-format internal-json`).
    stdout is captured whole and returned; of stderr the last `keep_lines` lines are kept. On a
    non-zero exit with `check`, `error` is raised; its stderr text is `error_text()` when given
    (the caller's plain-text reading of a structured log), else the kept lines.
    """
    argv = [str(a) for a in argv]
    proc = _start(
        argv,
        cwd,
        _environ(env, extra_env),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        errors="replace",
        bufsize=1,
    )
    chunks: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    tail: deque[str] = deque(maxlen=keep_lines)
    try:
        with _tracked(proc):
            for line in proc.stderr:
                line = line.rstrip("\n")
                tail.append(line)
                on_stderr_line(line)
            proc.wait()
    finally:
        reader.join()
        proc.stdout.close()
        proc.stderr.close()
    result = Result(argv, proc.returncode, "".join(chunks), "\n".join(tail))
    if check and proc.returncode != 0:
        text = error_text() if error_text else result.stderr
        raise error(argv, proc.returncode, text or result.stderr, what=what)
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
    return _start(
        [str(a) for a in argv],
        cwd,
        _environ(env, extra_env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def default_jobs() -> int:
    """How many processes dynix runs at once for one task unless told (layer writers, `nix copy`
    uploads): one per core, up to 8."""
    return max(1, min(os.cpu_count() or 1, 8))


def which(program: str, path: str | None = None) -> str | None:
    """Where `program` is on PATH (or on `path`), or None."""
    return shutil.which(program, path=path)
