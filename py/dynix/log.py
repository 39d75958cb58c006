"""Messages for humans: everything here goes to stderr; stdout is kept for results.

Each message is written in one call, so lines from threads (parallel uploads) never interleave.
Whatever dynix prints, here or on stdout (`dynix.output`), has passwords in URLs redacted.
"""

from __future__ import annotations

import re
import sys

_debug = False
_USERINFO = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s@'\"<>]+)@")
_LOGIN_SCHEMES = ("ssh://", "ssh-ng://")  # `user@host` names an account, not a secret


def redact(text: str) -> str:
    """`text` with the secret part of every URL's userinfo replaced by `***`: the password of
    `user:password@`, or all of it where it is alone (a token) outside ssh URLs."""

    def hide(found: re.Match[str]) -> str:
        scheme, user = found["scheme"], found["user"]
        if ":" in user:
            return f"{scheme}{user.split(':', 1)[0]}:***@"
        if scheme.lower() in _LOGIN_SCHEMES:
            return found[0]
        return f"{scheme}***@"

    return _USERINFO.sub(hide, text) if "@" in text else text


def set_debug(enabled: bool) -> None:
    global _debug
    _debug = enabled


def debug_enabled() -> bool:
    return _debug


def _write(line: str) -> None:
    sys.stderr.write(redact(line) + "\n")
    sys.stderr.flush()


def debug(message: str) -> None:
    if _debug:
        _write(f"dynix: {message}")


def info(message: str) -> None:
    _write(message)


def warn(message: str) -> None:
    _write(f"warning: {message}")
