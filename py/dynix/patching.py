"""Applying a patch series to an unpacked source tree with GNU patch, all or nothing.

The series is first tried on a scratch copy of just the files its patches touch, so that later
patches see earlier ones and a failing hunk is found before the tree is touched. Only when the
whole series applies there is it applied to the tree; should that still fail, the touched files
are put back. A tree that already carries the series (or its first patches) is recognised by
reverse-applying them on a scratch copy.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import log, nix, process
from .errors import DynixError, last_meaningful_line
from .patches import Entry
from .pins import Pin

# Never ask questions (--batch), skip hunks that are already applied instead of assuming -R
# (--forward), no fuzz so that changed context fails loudly, no .orig/.rej files left behind,
# file names unquoted in messages.
_FLAGS = (
    "-p1",
    "--forward",
    "--batch",
    "--fuzz=0",
    "--no-backup-if-mismatch",
    "--reject-file=-",
    "--quoting-style=literal",
)
_HUNK = re.compile(r"@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


@dataclass(frozen=True)
class Patch:
    """A series entry resolved to a patch file on this machine."""

    entry: Entry
    file: Path
    hash: str | None = None  # pins: the hash checked against the pins file
    source: str | None = None  # pins: where the file came from (URL or a local path)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.entry.name,
            "pin": self.entry.pin,
            "file": str(self.file),
            "hash": self.hash,
            "source": self.source,
        }


@dataclass(frozen=True)
class Plan:
    """What applying a series to a tree means: which patches it already has, which it needs."""

    present: list[Patch]
    missing: list[Patch]
    files: list[str]


class PatchFailed(DynixError):
    """A patch of the series does not apply; the tree was left as it was."""


# -- resolving pins ---------------------------------------------------------------------------
def resolve_pin(entry: Entry, pin: Pin, local: Path | None) -> Patch:
    """The file a `pin:NAME` entry stands for: `local` if given, else fetched with Nix; either
    way its hash must be the pinned one."""
    if pin.kind not in ("url", "pypi"):
        raise DynixError(f"pin {pin.name} is a {pin.kind} pin, not a single patch file")
    source = pin.sources()[0]
    if not source.resolved:
        raise DynixError(
            f"pin {pin.name} has no hash yet, so its file cannot be checked; "
            f"record it with `dynix pins lock {pin.name}`"
        )
    if local is not None:
        if not local.is_file():
            raise DynixError(f"{local}: no such file (given for pin {pin.name})")
        file, origin, got = local, str(local), nix.hash_file(str(local))
    else:
        log.info(f"fetching pin {pin.name} ...")
        try:
            fetched = nix.prefetch_file(source.url)
        except nix.Unreachable as exc:
            raise DynixError(
                f"cannot fetch pin {pin.name} from {source.url} ({exc.tail or 'unreachable'}); "
                f"give the file with --upstream-patch {pin.name}=FILE"
            ) from exc
        file, origin, got = Path(fetched.store_path), source.url, fetched.hash
    if got != source.hash:
        raise DynixError(
            f"{origin} has hash {got}, but pin {pin.name} is {source.hash}: refusing to apply it"
        )
    return Patch(entry, file, hash=got, source=origin)


def resolve(
    entries: Sequence[Entry], pins: Mapping[str, Pin], local: Mapping[str, Path]
) -> list[Patch]:
    """Every entry as a local patch file; pins are fetched (or taken from `local`) and checked."""
    resolved = []
    for entry in entries:
        if entry.pin is None:
            assert entry.path is not None
            resolved.append(Patch(entry, entry.path))
            continue
        if entry.pin not in pins:
            raise DynixError(f"series entry pin:{entry.pin} names no pin in the pins file")
        resolved.append(resolve_pin(entry, pins[entry.pin], local.get(entry.pin)))
    return resolved


# -- what a patch touches ---------------------------------------------------------------------
def _header_path(header: str) -> str | None:
    name = header.split("\t", 1)[0].strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1]
    if name == "/dev/null":
        return None
    parts = PurePosixPath(name).parts
    if len(parts) < 2:  # nothing left after -p1: GNU patch will report it
        return None
    return str(PurePosixPath(*parts[1:]))


def touched_paths(text: str) -> list[str]:
    """The files a unified diff changes, as `patch -p1` names them, in order of appearance.

    Hunk bodies are skipped by their line counts, so a removed line that starts with `-- ` is
    not taken for a file header.
    """
    lines = text.splitlines()
    paths: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            for header in (line[4:], lines[i + 1][4:]):
                path = _header_path(header)
                if path is not None and path not in paths:
                    paths.append(path)
            i += 2
            continue
        hunk = _HUNK.match(line)
        i += 1
        if hunk:
            old = int(hunk.group(1) or 1)
            new = int(hunk.group(2) or 1)
            while (old > 0 or new > 0) and i < len(lines):
                tag = lines[i][:1]
                if tag == "-":
                    old -= 1
                elif tag == "+":
                    new -= 1
                elif tag != "\\":  # context (some tools drop the space of empty context lines)
                    old -= 1
                    new -= 1
                i += 1
    return paths


def _series_paths(series: Sequence[Patch]) -> list[str]:
    paths: list[str] = []
    for patch in series:
        try:
            text = patch.file.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DynixError(f"cannot read {patch.file}: {exc.strerror}") from exc
        for path in touched_paths(text):
            if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
                raise DynixError(f"{patch.entry.label} would change {path}, outside the tree")
            if path not in paths:
                paths.append(path)
    return paths


# -- running GNU patch ------------------------------------------------------------------------
def check_gnu_patch() -> None:
    first = process.run(["patch", "--version"], check=False).stdout.partition("\n")[0]
    if "GNU patch" not in first:
        raise DynixError(f"GNU patch is required, but `patch --version` says {first!r}")


def _run(patch: Patch, tree: Path, *, reverse: bool = False) -> process.Result:
    argv = ["patch", *(["--reverse"] if reverse else []), *_FLAGS]
    return process.run([*argv, "-d", str(tree), "-i", str(patch.file)], check=False)


def _strip(name: str) -> str:
    return _header_path(name) or name


def failures(output: str) -> list[tuple[str | None, str]]:
    """(file, reason) for each problem GNU patch reported, in order."""
    found: list[tuple[str | None, str]] = []
    current: str | None = None
    missing: str | None = None
    lines = output.splitlines()
    for line in lines:
        if m := re.match(r"(?:patching|checking) file (.+)", line):
            current = m.group(1)
        elif m := re.match(r"Hunk #(\d+) FAILED", line):
            found.append((current, f"hunk #{m.group(1)} does not match"))
        elif line.startswith("Reversed (or previously applied) patch detected"):
            found.append((current, "already applied"))
        elif m := re.match(r"The next patch would (create|delete) the file (.+?),?$", line):
            what = "already exists" if m.group(1) == "create" else "does not exist"
            found.append((m.group(2), what))
        elif m := re.match(r"File (.+) is not a regular file", line):
            found.append((m.group(1), "not a regular file"))
        elif line.startswith("can't find file to patch"):
            missing = ""
        elif missing is not None and line.startswith(("|--- ", "|+++ ")):
            name = _header_path(line[5:])
            missing = name or missing
        elif missing is not None and line.startswith("No file to patch"):
            found.append((missing or None, "no such file in the tree"))
            missing = None
    if not found and lines:
        found.append((current, last_meaningful_line(output).removeprefix("patch: **** ")))
    return found


def _failed(patch: Patch, result: process.Result, tree: Path) -> PatchFailed:
    problems = failures(result.stdout + "\n" + result.stderr) or [(None, "patch failed")]
    file, reason = problems[0]
    where = f"{file}: " if file else ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return PatchFailed(
        f"{patch.entry.label} does not apply to {tree}: {where}{reason}{more}; "
        f"nothing in {tree} was changed"
    )


# -- scratch copies ---------------------------------------------------------------------------
def _copy_files(source: Path, paths: Sequence[str], dest: Path) -> None:
    """Copy those of `paths` that exist under `source` to the same places under `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in paths:
        src = source / path
        if src.is_dir() and not src.is_symlink():
            raise DynixError(f"{src} is a folder, but a patch of the series changes it as a file")
        if src.is_symlink():  # GNU patch refuses symlinks: let the scratch copy show it
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            (dest / path).symlink_to(os.readlink(src))
        elif src.is_file():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / path)


def _fresh(pristine: Path, work: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(pristine, work, symlinks=True)
    return work


def _attempt(
    pristine: Path, work: Path, present: Sequence[Patch], missing: Sequence[Patch]
) -> tuple[Patch, process.Result] | None:
    """Whether the files in `pristine` carry `present` (they reverse-apply, newest first, on one
    copy) and `missing` applies to them (on another copy); returns the first failure, or None."""
    if present:
        _fresh(pristine, work)
        for patch in reversed(present):
            result = _run(patch, work, reverse=True)
            if result.returncode != 0:
                return patch, result
    _fresh(pristine, work)
    for patch in missing:
        result = _run(patch, work)
        if result.returncode != 0:
            return patch, result
    return None


def plan(tree: Path, series: Sequence[Patch]) -> Plan:
    """Find how much of `series` `tree` already has, and check the rest applies, on scratch
    copies; raises `PatchFailed` (naming patch and file) when it does not."""
    series = list(series)
    files = _series_paths(series)
    if not series:
        return Plan([], [], files)
    check_gnu_patch()
    with tempfile.TemporaryDirectory(prefix="dynix-patch-") as tmp:
        pristine, work = Path(tmp) / "pristine", Path(tmp) / "work"
        _copy_files(tree, files, pristine)
        first = _attempt(pristine, work, [], series)
        if first is None:
            return Plan([], series, files)
        # Maybe the tree has the whole series, or its first patches (say, Dynamo's own patch
        # applied by hand): try the longest such prefix first.
        for k in range(len(series), 0, -1):
            if _attempt(pristine, work, series[:k], series[k:]) is None:
                return Plan(series[:k], series[k:], files)
        raise _failed(first[0], first[1], tree)


# -- applying for real ------------------------------------------------------------------------
def apply(tree: Path, planned: Plan) -> None:
    """Apply the missing patches of `planned` to `tree`; on any failure, put the touched files
    back as they were."""
    if not planned.missing:
        return
    with tempfile.TemporaryDirectory(prefix="dynix-patch-backup-") as tmp:
        backup = Path(tmp)
        _copy_files(tree, planned.files, backup)
        existed = {p for p in planned.files if (backup / p).is_symlink() or (backup / p).is_file()}
        new_dirs = _absent_dirs(tree, planned.files)
        try:
            for patch in planned.missing:
                result = _run(patch, tree)
                if result.returncode != 0:
                    raise _failed(patch, result, tree)
        except BaseException:
            _restore(tree, backup, planned.files, existed, new_dirs)
            raise


def _absent_dirs(tree: Path, paths: Sequence[str]) -> list[Path]:
    absent = set()
    for path in paths:
        for parent in (tree / path).parents:
            if parent == tree or parent.exists():
                break
            absent.add(parent)
    return sorted(absent, key=lambda p: len(p.parts), reverse=True)


def _restore(
    tree: Path, backup: Path, paths: Sequence[str], existed: set[str], new_dirs: list[Path]
) -> None:
    for path in paths:
        target, saved = tree / path, backup / path
        if saved.is_symlink():  # GNU patch does not change symlinks
            continue
        if path in existed:
            if not (target.is_file() and filecmp.cmp(saved, target, shallow=False)):
                shutil.copy2(saved, target)
        elif target.is_file() or target.is_symlink():
            target.unlink()
    for folder in new_dirs:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
