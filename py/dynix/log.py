"""Messages for humans: everything here goes to stderr; stdout is kept for results."""

from __future__ import annotations

import sys

_debug = False


def set_debug(enabled: bool) -> None:
    global _debug
    _debug = enabled


def debug_enabled() -> bool:
    return _debug


def debug(message: str) -> None:
    if _debug:
        print(f"dynix: {message}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
