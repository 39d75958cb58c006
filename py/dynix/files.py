"""Writing files so that a failure never leaves a half-written result behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import DynixError


@contextlib.contextmanager
def atomic_path(target: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `target`, renamed over it when the block ends without error.

    Works for files and folders. On any error (or Ctrl-C) the temporary path is removed and
    `target` is untouched.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=parent))
    except OSError as exc:
        raise DynixError(f"cannot write to {parent}: {exc.strerror}") from exc
    tmp.rmdir()  # callers create a file or a folder at this name
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink() and tmp.is_dir():
            # Swap folders: move the old one aside first, since rename cannot replace a folder.
            old = tmp.with_name(tmp.name + ".old")
            os.rename(target, old)
            os.rename(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_text_atomic(target: str | Path, text: str, *, mode: int | None = None) -> None:
    """Replace `target` with `text` in one rename; keeps its permissions unless `mode` is set."""
    target = Path(target)
    if mode is None:
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    try:
        with atomic_path(target) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
    except OSError as exc:
        raise DynixError(f"cannot write {target}: {exc.strerror or exc}") from exc
