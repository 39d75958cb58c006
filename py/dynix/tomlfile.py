"""TOML files that users edit (pins, configs): errors name the file and the line.

`parse` keeps comments and layout (tomlkit) for files dynix edits; `read` gives plain data for
files it only reads, with the standard library's faster parser where there is one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .errors import DynixError

if TYPE_CHECKING:
    from tomlkit.toml_document import TOMLDocument

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]

_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def parse(text: str, source: str) -> TOMLDocument:
    """Parse `text` with tomlkit (comments and layout kept); a syntax error becomes
    `source:LINE:COL: message`."""
    import tomlkit
    import tomlkit.exceptions

    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        message = str(exc).split(" at line ")[0]
        raise DynixError(f"{source}:{exc.line}:{exc.col}: {message}") from exc
    except tomlkit.exceptions.TOMLKitError as exc:  # a key defined twice, …: no line given
        read(text, source)  # the standard library's parser names the line
        raise DynixError(f"{source}: {exc}") from exc


def read(text: str, source: str) -> dict[str, Any]:
    """The data in `text` as plain dicts and lists (comments dropped); a syntax error becomes
    `source:LINE:COL: message`, as with `parse`."""
    if tomllib is None:
        return parse(text, source).unwrap()  # pragma: no cover (Python 3.10)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _AT.search(str(exc))
        line, col = found.groups() if found else ("1", "1")
        raise DynixError(f"{source}:{line}:{col}: {_AT.sub('', str(exc))}") from exc


def line_of(text: str, header: str, key: str | None = None) -> int:
    """The line of the table `[header]` (dotted, e.g. `caches.team`), or of `key` in it or in
    its sub-tables; 1 when it is not found."""
    lines = text.splitlines()
    parts = [re.escape(p) + r"\"?" for p in header.split(".")]
    pattern = re.compile(r"^\s*\[\s*\"?" + r"\s*\.\s*\"?".join(parts) + r"\s*[\].]")
    start = next((i for i, line in enumerate(lines) if pattern.match(line)), None)
    if start is None:
        return 1
    if key:
        item = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for i in range(start + 1, len(lines)):
            stripped = lines[i].lstrip()
            if stripped.startswith("[") and not pattern.match(lines[i]):
                break
            if item.match(lines[i]):
                return i + 1
    return start + 1
