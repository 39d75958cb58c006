"""Results on stdout: JSON for `--json`, plain lines otherwise."""

from __future__ import annotations

import json
import sys
from typing import Any

from .log import redact


def emit_json(data: Any) -> None:
    sys.stdout.write(redact(json.dumps(data, indent=2, sort_keys=False)) + "\n")


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain, left-aligned text table (passwords in URLs redacted)."""
    rows = [[redact(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)
