"""The error types dynix reports to users.

Every failure a user can cause or fix is a `DynixError`. The CLI catches it once and prints one
line, `Error: <message>`, exiting 1; a traceback is only shown with `--debug`.
"""

from __future__ import annotations

from collections.abc import Sequence


class DynixError(Exception):
    """A failure with a message fit for one line on the terminal."""


class CommandError(DynixError):
    """An external command failed; keeps its argv, exit code and the tail of its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, what: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.tail = last_meaningful_line(stderr)
        head = what or f"{self.argv[0]} failed"
        detail = f": {self.tail}" if self.tail else ""
        super().__init__(f"{head} (exit {returncode}){detail}")


class NixError(CommandError):
    """A call to Nix failed."""


def last_meaningful_line(text: str) -> str:
    """The last line of a command's stderr that says something (Nix ends with `error: ...`)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    return lines[-1] if lines else ""
