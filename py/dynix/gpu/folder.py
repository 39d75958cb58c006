"""The private driver folder: the host's driver libraries, and only them, linked by the names
programs load them by, for the library path of the processes dynix starts.

It lives under `$XDG_CACHE_HOME/dynix/driver/` (`~/.cache/dynix/driver/`): it is a cache, made
again whenever it is missing or wrong. Its name is the driver's version, the machine, and a
short hash of what it links (`570.86.15-x86_64-3f2a…`), so that a driver upgrade, or the same
version installed elsewhere, gets a folder of its own.

It is made in a temporary folder beside it and renamed into place, so two `dynix serve` at once
both end with the same complete folder. A folder found at that name is used only when it is a
real folder of this user's, writable by no one else, holding exactly the expected links; anything
else there (a planted symlink, a file, stale links) is moved aside and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import stat
import tempfile
from pathlib import Path

from ..errors import DynixError
from . import driver as drivers

# Beside libcuda.so.1: the development name, which Triton links its launcher stubs against
# (`-lcuda` with `-L $TRITON_LIBCUDA_PATH`).
ALIASES = {"libcuda.so.1": ("libcuda.so",)}


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "dynix" / "driver"


def links(driver: drivers.Driver) -> dict[str, str]:
    """Each name in the folder and the host file it points to."""
    out: dict[str, str] = {}
    for library in driver.libraries:
        out[library.name] = library.target
        for alias in ALIASES.get(library.name, ()):
            out.setdefault(alias, library.target)
    return dict(sorted(out.items()))


def key(driver: drivers.Driver) -> str:
    digest = hashlib.sha256(json.dumps(links(driver), sort_keys=True).encode()).hexdigest()
    return f"{driver.version or 'unknown'}-{platform.machine()}-{digest[:12]}"


def _private_dir(path: Path) -> None:
    """Create `path` (mode 0700) if needed; refuse one that is a symlink or not this user's."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(path)
    except OSError as exc:
        raise DynixError(f"cannot create {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise DynixError(f"{path} is not a folder (a symlink?): remove it and run again")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise DynixError(
            f"{path} is not this user's own folder, or others may write to it: "
            f"remove it (or `chmod go-w {path}`) and run again"
        )


def matches(path: Path, expected: dict[str, str]) -> bool:
    """Whether `path` is this user's real folder holding exactly `expected`'s links."""
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False
        if info.st_mode & 0o022:
            return False
        names = sorted(os.listdir(path))
        if names != sorted(expected):
            return False
        for name in names:
            entry = path / name
            if not entry.is_symlink() or os.readlink(entry) != expected[name]:
                return False
            if not os.path.isfile(expected[name]):
                return False
    except OSError:
        return False
    return True


def ensure(driver: drivers.Driver, base: Path | None = None) -> Path:
    """The driver folder for `driver`, made (atomically) when it is missing or not as expected."""
    if driver.missing:
        raise DynixError(f"cannot make a driver folder: {', '.join(driver.missing)} not found")
    base = cache_root() if base is None else base
    _private_dir(base.parent)
    _private_dir(base)
    expected = links(driver)
    final = base / key(driver)
    if matches(final, expected):
        return final
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=base))
        for name, target in expected.items():
            os.symlink(target, tmp / name)
        os.chmod(tmp, 0o755)
    except OSError as exc:
        raise DynixError(f"cannot write the driver folder in {base}: {exc.strerror}") from exc
    try:
        _install(tmp, final, expected)
    finally:
        _remove(tmp)
    return final


def _install(tmp: Path, final: Path, expected: dict[str, str]) -> None:
    for _ in range(3):
        try:
            os.rename(tmp, final)
            return
        except OSError:
            pass  # something is at `final`: another dynix's folder, or a wrong one
        if matches(final, expected):
            return
        aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".stale", dir=final.parent))
        try:
            os.rename(final, aside / "old")
        except FileNotFoundError:
            pass  # removed in the meantime: try again
        except OSError as exc:
            raise DynixError(f"cannot replace {final}: {exc.strerror}") from exc
        finally:
            _remove(aside)
    raise DynixError(f"{final} keeps changing under dynix: is another program writing there?")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def library_path(folder: Path, base: Path | None = None) -> str:
    """The library path for the stack: NixOS's driver link first where it exists, then the
    driver folder. Nothing else of the host's: its glibc and libraries are not the stack's."""
    nixos = drivers.under(drivers.root() if base is None else base, drivers.NIXOS_DRIVER_LIB)
    parts = [nixos] if os.path.isdir(nixos) else []
    return ":".join([*parts, str(folder)])
