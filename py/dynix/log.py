"""Messages for humans: everything here goes to stderr; stdout is kept for results.

Each message is written in one call, so lines from threads (parallel uploads) never interleave.
"""

from __future__ import annotations

import sys

_debug = False


def set_debug(enabled: bool) -> None:
    global _debug
    _debug = enabled


def debug_enabled() -> bool:
    return _debug


def _write(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def debug(message: str) -> None:
    if _debug:
        _write(f"dynix: {message}")


def info(message: str) -> None:
    _write(message)


def warn(message: str) -> None:
    _write(f"warning: {message}")
