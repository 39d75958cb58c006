"""Files dynix writes and edits: atomically, under a lock, never half-written, never through a
link it did not make.

- `atomic_path`: a temporary name beside the target, renamed over it at the end. The name
  carries the writer's PID, so what a killed writer left is recognised and removed by the next
  writer of the same target (`remove_dead_temps`).
- `locked`: an exclusive lock on a file for a whole read-modify-write cycle; the caller reads
  the file again once it holds the lock.
- `read_text`: a file's text, with unreadable and non-UTF-8 files reported in one line.
- `create_new`: a file that must not exist yet (a secret key), written whole or not at all.
- `check_output` / `write_output`: a file a command writes where the user says (`-o FILE`): a
  plain file is replaced atomically; a device or a pipe (`/dev/null`, a FIFO) is written into,
  never replaced; `/dev/stdout`, `/dev/fd/N` and the like are the process's own open files and
  are written through them; no link another user planted in a shared folder is followed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import DynixError

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]*\.tmp(\.old)?$")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def temp_name(target: Path, what: str = "") -> str:
    """The prefix of a temporary name beside `target`: `.NAME.PID.` (then mkstemp's letters)."""
    return f".{target.name}.{os.getpid()}.{what}"


def remove_dead_temps(folder: Path, name: str | None = None) -> None:
    """Remove the temporary files and folders that dead dynix processes left in `folder` (for
    the target `name`, or for any): those named by `temp_name` whose PID no longer runs."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        found = _TEMP.match(entry.name)
        if not found or (name is not None and found["name"] != name):
            continue
        if not pid_alive(int(found["pid"])):
            _remove(Path(entry.path))


def _resolved(target: str | Path) -> Path:
    """`target` as an absolute path with its folder's links resolved (`.` has a real name)."""
    path = Path(os.path.abspath(target))
    return Path(os.path.realpath(path.parent)) / path.name


@contextlib.contextmanager
def atomic_path(target: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `target`, renamed over it when the block ends without error.

    Works for files and folders. On any error (or a signal dynix turns into an exception) the
    temporary path is removed and `target` is untouched; a replaced folder is removed only once
    the new one is in place.
    """
    target = _resolved(target)
    parent = target.parent
    remove_dead_temps(parent, target.name)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_name(target), suffix=suffix + ".tmp", dir=parent))
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


def edited_path(target: str | Path) -> Path:
    """Where a file the user edits through dynix really lives: a link is followed to its file,
    so editing replaces that file and keeps the link."""
    return Path(os.path.realpath(target))


def write_text_atomic(
    target: str | Path,
    text: str | bytes | Iterable[bytes],
    *,
    mode: int | None = None,
    follow: bool = True,
) -> None:
    """Replace `target` with `text` (UTF-8 if a string; bytes, or pieces of bytes as they are
    made) in one rename; keeps its permissions unless `mode` is set.

    With `follow` (files users edit) a link is followed and the file it names is replaced;
    without (files in folders dynix owns) a link there is replaced, never written through.
    """
    target = edited_path(target) if follow else Path(target)
    if mode is None:
        try:
            st = target.stat() if follow else target.lstat()
            mode = 0o644 if stat.S_ISLNK(st.st_mode) else st.st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    try:
        with atomic_path(target) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                write_pieces(handle, text.encode() if isinstance(text, str) else text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
    except OSError as exc:
        raise DynixError(f"cannot write {target}: {exc.strerror or exc}") from exc


def create_new(target: str | Path, text: str, *, mode: int = 0o600) -> None:
    """Create `target` holding `text`; fails if it exists. Written to a temporary file first and
    linked into place, so a full disk or an interruption leaves no empty or partial file."""
    check_links(target)
    target = _resolved(target)
    remove_dead_temps(target.parent, target.name)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_name(target), suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, target)  # never replaces: fails if target appeared meanwhile
    except FileExistsError:
        raise DynixError(f"{target} exists: dynix never overwrites it") from None
    except OSError as exc:
        raise DynixError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def read_text(path: str | Path, what: str = "") -> str:
    """The text of `path`; a missing file raises FileNotFoundError, any other problem (no
    permission, a folder, bytes that are not UTF-8) a one-line `DynixError`."""
    label = f"{what} {path}" if what else str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DynixError(f"cannot read {label}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DynixError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from exc


_OWN_FD = re.compile(r"^/proc/(?:self|thread-self|\d+(?:/task/\d+)?)/fd/(?P<fd>\d+)$")


def _may_follow(link: str, st: os.stat_result, folder: str) -> None:
    """Linux's fs.protected_symlinks rule, applied whatever that is set to: a link in a sticky,
    world-writable folder (/tmp) is followed only if this user or the folder's owner owns it."""
    try:
        where = os.stat(folder)
    except OSError:
        return
    shared = where.st_mode & stat.S_ISVTX and where.st_mode & stat.S_IWOTH
    if shared and st.st_uid not in (os.geteuid(), where.st_uid):
        raise DynixError(
            f"{link} is a link another user (uid {st.st_uid}) made in the shared folder {folder}:"
            " not followed"
        )


def _walk(target: str | Path) -> tuple[str, int | None]:
    """`target` with its links followed, as far as it exists, each link checked by
    `_may_follow`; and the file descriptor of this process it names, if it names one through
    /proc (`/dev/stdout` is `/proc/self/fd/1`)."""
    parts = [p for p in Path(os.path.abspath(target)).parts if p != "/"]
    current, hops = "/", 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = os.path.dirname(current)
            continue
        path = os.path.join(current, part)
        if not parts and (own := _OWN_FD.match(path)) and _is_this_process(path):
            return path, int(own["fd"])
        try:
            st = os.lstat(path)
        except OSError:  # the rest does not exist yet: the write says what is wrong
            return os.path.join(path, *parts), None
        if not stat.S_ISLNK(st.st_mode):
            current = path
            continue
        _may_follow(path, st, current)
        hops += 1
        if hops > 40:
            raise DynixError(f"cannot write {target}: too many levels of links")
        link = os.readlink(path)
        if link.startswith("/"):
            current = "/"
        parts = [p for p in Path(link).parts if p != "/"] + parts
    return current, None


def check_links(target: str | Path) -> None:
    """Refuse a path that goes through a link another user planted in a shared folder."""
    _walk(target)


def _is_this_process(path: str) -> bool:
    pid = path.split("/")[2]
    return pid in ("self", "thread-self") or int(pid) == os.getpid()


def _output(target: str | Path) -> tuple[str, int | None, os.stat_result | None]:
    """Where an output goes (links followed), the file descriptor of this process it names if
    any, and what is there now; refuses what could not be written (see `check_output`)."""
    path, fd = _walk(target)
    if fd is not None:
        return path, fd, None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise DynixError(f"cannot write {target}: {exc.strerror}") from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise DynixError(f"cannot write {target}: it is a folder")
    if st is not None and not stat.S_ISREG(st.st_mode):
        return path, None, st  # a device, a pipe: written into
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise DynixError(f"cannot write {target}: there is no folder {folder}")
    if not os.access(folder, os.W_OK):
        raise DynixError(f"cannot write {target}: the folder {folder} is not writable")
    return path, None, st


def check_output(target: str | Path) -> None:
    """Refuse, before any work is done, an output file that could not be written: a folder, a
    file in a folder that does not exist or cannot be written, a planted link."""
    _output(target)


def write_pieces(handle: BinaryIO, data: bytes | Iterable[bytes]) -> None:
    """Write `data`, bytes or pieces of bytes as they are made, to `handle`."""
    if isinstance(data, bytes):
        handle.write(data)
    else:
        for piece in data:
            handle.write(piece)


def write_output(target: str | Path, data: bytes | Iterable[bytes]) -> None:
    """Write `data` (bytes, or pieces of bytes as they are made) where the user asked for it
    (see the module's summary)."""
    path, fd, st = _output(target)
    try:
        if fd is not None:
            with os.fdopen(os.dup(fd), "wb") as handle:  # at the offset the caller left it
                write_pieces(handle, data)
            return
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(path, "wb") as handle:  # a device or a pipe: never replaced
                write_pieces(handle, data)
            return
    except OSError as exc:
        raise DynixError(f"cannot write {target}: {exc.strerror or exc}") from exc
    write_text_atomic(path, data, follow=False)


@contextlib.contextmanager
def locked(target: str | Path, *, shared: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on `target` (a file to edit, or a folder) for the block.

    Yields the path really edited (links followed). Files are replaced by rename, so the lock
    is taken on the file that is there once the lock is held: a waiter that wakes on a file
    since replaced tries again on the new one. A file that does not exist yet is locked
    through its folder until it does.
    """
    path = edited_path(target)
    while True:
        fd = _open_for_lock(path)
        try:
            _flock(fd, path, shared)
            if path.is_dir() or _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced, created or removed meanwhile: lock what is there now
    try:
        yield path
    finally:
        os.close(fd)


def _open_for_lock(path: Path) -> int:
    for candidate in (path, path.parent):
        try:
            return os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if candidate == path:
                continue
            raise DynixError(f"cannot use {path}: {candidate} does not exist") from None
        except OSError as exc:
            raise DynixError(f"cannot lock {candidate}: {exc.strerror or exc}") from exc
    raise AssertionError("unreachable")


def _flock(fd: int, path: Path, shared: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
            return  # a file system without locks: go on unlocked rather than not at all
        raise DynixError(f"cannot lock {path}: {exc.strerror or exc}") from exc


def _same_file(fd: int, path: Path) -> bool:
    """Whether `fd` (the file, or its folder while the file did not exist) is still what
    `path` names."""
    held = os.fstat(fd)
    try:
        now = os.stat(path)
    except FileNotFoundError:
        # the folder is held: right while the file is still missing
        return os.path.samestat(held, os.stat(path.parent)) and not path.exists()
    return os.path.samestat(held, now)


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on `fd` without waiting; False when another process holds one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
