"""The patch series in `patches/<package>/series`: which patches apply to a package, in order.

A series file names one entry per line: a patch file in the package's folder, or `pin:NAME` for a
file pinned in the pins file (such as Dynamo's own patch to vLLM). `#` starts a comment and blank
lines are skipped. `patches/default.nix` reads the same files for Nix, with the same grammar.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DynixError

SERIES = "series"
_LINE = re.compile(r"\s*([^\s#]*)\s*(#.*)?")
_PIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_FILE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class Entry:
    """One line of a series: a patch file of this project, or a pinned upstream file."""

    name: str  # the file's name without `.patch`, or the pin's name
    line: int
    path: Path | None = None
    pin: str | None = None

    @property
    def label(self) -> str:
        """How users name the entry: the file name, or `pin:NAME`."""
        return f"pin:{self.pin}" if self.pin else self.path.name if self.path else self.name


def default_dir(start: Path | None = None) -> Path:
    """`$DYNIX_PATCHES`; else `patches/` of the nearest dynix checkout at or above `start` (the
    current folder); else the copy dynix was built with (`$DYNIX_DATA_DIR/patches`, set by the
    Nix package). Found the way `pins.default_path` finds the pins file."""
    if env := os.environ.get("DYNIX_PATCHES"):
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "patches").is_dir() and (folder / "pkgs" / "pins.toml").is_file():
            return folder / "patches"
    if data := os.environ.get("DYNIX_DATA_DIR"):
        candidate = Path(data) / "patches"
        if candidate.is_dir():
            return candidate
    raise DynixError("no patches folder found: run inside a dynix checkout, or set DYNIX_PATCHES")


def packages(root: Path) -> list[str]:
    """The packages that have a series under `root`."""
    if not root.is_dir():
        raise DynixError(f"patches folder {root} does not exist")
    return sorted(p.name for p in root.iterdir() if (p / SERIES).is_file())


def read_series(root: Path, package: str) -> list[Entry]:
    """The entries of `root/package/series`, in order; checks that every patch file exists."""
    folder = root / package
    series = folder / SERIES
    if not _FILE_NAME.fullmatch(package) or not series.is_file():
        known = ", ".join(packages(root)) or "none"
        raise DynixError(f"no patch series for '{package}' in {root} (series: {known})")
    try:
        text = series.read_text(encoding="utf-8")
    except OSError as exc:
        raise DynixError(f"cannot read {series}: {exc.strerror}") from exc
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{series}:{number}"
        match = _LINE.fullmatch(line)
        if match is None:
            raise DynixError(f"{where}: expected one patch file name or pin:NAME, got {line!r}")
        word = match.group(1)
        if not word:
            continue
        if word.startswith("pin:"):
            pin = word[len("pin:") :]
            if not _PIN_NAME.fullmatch(pin):
                raise DynixError(f"{where}: 'pin:' must be followed by the name of a pin")
            entries.append(Entry(name=pin, line=number, pin=pin))
            continue
        if not _FILE_NAME.fullmatch(word) or word in (".", ".."):
            raise DynixError(f"{where}: {word!r} is not a file name in {folder}")
        path = folder / word
        if not path.is_file():
            raise DynixError(f"{where}: no patch file '{word}' in {folder}")
        entries.append(Entry(name=word.removesuffix(".patch"), line=number, path=path))
    return entries
