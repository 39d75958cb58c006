"""The SBOM formats dynix writes, and the one byte form each document is written in."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import nix
from ..errors import DynixError
from ..oci.config import default_created, parse_created
from . import cyclonedx, provenance, spdx
from .closure import Closure

FORMATS = {
    "cyclonedx": (cyclonedx.document, cyclonedx.MEDIA_TYPE),
    "spdx": (spdx.document, spdx.MEDIA_TYPE),
}


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise DynixError(f"unknown SBOM format {name!r} (formats: {', '.join(FORMATS)})")
    return name


def media_type(name: str) -> str:
    return FORMATS[check_format(name)][1]


def timestamp(created: str | None) -> str:
    """`--created` (RFC 3339, as for images), else `$SOURCE_DATE_EPOCH`, else the epoch; in UTC,
    to the second, as both formats want it."""
    when = parse_created(created or default_created())
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
EXPANDED_DEPTH = 2  # objects this deep are written a member a line; deeper ones on one line


def _layout(value: Any, depth: int) -> Iterator[bytes]:
    pad = "  " * (depth + 1)
    if isinstance(value, dict) and value and depth < EXPANDED_DEPTH:
        yield b"{"
        for i, (key, item) in enumerate(value.items()):
            yield f"{',' if i else ''}\n{pad}{_COMPACT.encode(key)}: ".encode()
            yield from _layout(item, depth + 1)
        yield f"\n{pad[:-2]}}}".encode()
    elif isinstance(value, list | Iterator) and depth < EXPANDED_DEPTH:
        count = 0
        for item in value:  # a list, or the entries as they are made
            yield f"{',' if count else '['}\n{pad}{_COMPACT.encode(item)}".encode()
            count += 1
        yield f"\n{pad[:-2]}]".encode() if count else b"[]"
    else:
        yield _COMPACT.encode(value).encode()


CHUNK = 1 << 16


def to_chunks(doc: Any) -> Iterator[bytes]:
    """The one byte form of a document, in pieces of about `CHUNK` bytes as it is made: keys
    in the order written, UTF-8, one final newline; the top two levels of objects a member a
    line and each entry of a list a line of its own (a component, a dependency, a
    relationship), written compactly. Same document, same bytes.

    The standard library's C encoder writes every line (an indented dump is written by its
    pure-Python one, several times slower on a thousand components). A list may be given as an
    iterator: its entries are then written as they are made, and a document written from the
    pieces is never held whole, as objects or as bytes."""
    pending: list[bytes] = []
    held = 0
    for piece in _layout(doc, 0):
        pending.append(piece)
        held += len(piece)
        if held >= CHUNK:
            yield b"".join(pending)
            pending, held = [], 0
    pending.append(b"\n")
    yield b"".join(pending)


def to_bytes(doc: Any) -> bytes:
    """The document's bytes (`to_chunks`), whole."""
    return b"".join(to_chunks(doc))


def render(closure: Closure, fmt: str, *, created: str) -> Iterator[bytes]:
    """The SBOM of `closure` in format `fmt`, in pieces as it is made (`to_chunks`)."""
    from .. import __version__

    make = FORMATS[check_format(fmt)][0]
    return to_chunks(make(closure, created=created, tool_version=__version__))


def flake_of(closure: Closure, store: str | None) -> dict[str, Any] | None:
    """`nix flake metadata` of the flake the first flake installable names, if any."""
    root = os.path.abspath(store) if store else ""
    for item in closure.installables:
        if not nix.store_path_of(item, store_root=root):
            return nix.flake_metadata(item.split("#", 1)[0] or ".", store=store)
    return None


def render_provenance(
    closure: Closure,
    *,
    store: str | None,
    subjects: list[dict[str, Any]] | None = None,
    key: Path | None = None,
) -> tuple[bytes, str]:
    """The provenance statement of `closure` (a DSSE envelope when signed with `key`), and its
    media type."""
    from .. import __version__

    doc = provenance.statement(
        closure,
        subjects=subjects,
        flake=flake_of(closure, store),
        nix_version=nix.version(),
        tool_version=__version__,
    )
    if key is None:
        return to_bytes(doc), provenance.MEDIA_TYPE
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return to_bytes(provenance.sign(payload, key)), provenance.DSSE_MEDIA_TYPE
