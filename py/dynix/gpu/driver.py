"""Where the host keeps its NVIDIA user-space driver, and which of its libraries the stack loads.

Searched in this order, the first place holding a library winning:

1. `/run/opengl-driver/lib`: NixOS's driver link (`hardware.graphics`/`hardware.nvidia`);
2. the host's loader cache, `ldconfig -p` (`/etc/ld.so.cache`), the way host programs find it;
3. the folders named in `/etc/ld.so.conf` and `/etc/ld.so.conf.d/*.conf`, for a stale cache;
4. the Debian/Ubuntu multiarch folders (`/usr/lib/x86_64-linux-gnu`, `/usr/lib/aarch64-linux-gnu`);
5. `/usr/lib64` (RHEL, SUSE, DGX OS's CUDA repositories);
6. `/usr/local/nvidia/lib64` and `/usr/local/nvidia/lib`, where the Kubernetes device plugin
   (and NVIDIA's container toolkit in some set-ups) mounts the driver.

Once `libcuda.so.1` (or `libnvidia-ml.so.1`) is found, the other libraries are looked for in the
same folder first, so that all of them come from one driver. What these libraries need of the
driver's own set (`libnvidia-*`, by `DT_NEEDED`) is taken from beside them; what they need of
the host's system (glibc, libm, ...) never is: the stack brings its own.

`DYNIX_DRIVER_ROOT` makes every path above relative to another root (a fake host in tests).
"""

from __future__ import annotations

import fnmatch
import os
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import process
from . import elf

ROOT_ENV = "DYNIX_DRIVER_ROOT"
NIXOS_DRIVER_LIB = "/run/opengl-driver/lib"
# The libraries looked for, by the names programs load them by (patterns for the NVVM library,
# whose name carries the driver's version or its own).
REQUIRED = ("libcuda.so.1", "libnvidia-ml.so.1")
OPTIONAL = ("libnvidia-ptxjitcompiler.so.1", "libnvidia-nvvm*.so.*", "libcudadebugger.so.1")
# What counts as part of the driver when another driver library needs it.
DRIVER_OWN = re.compile(r"^lib(nvidia-[A-Za-z0-9_-]+|cuda[A-Za-z0-9_-]*)\.so(\.[0-9.]+)?$")
MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
LDCONFIG_PROGRAMS = ("/sbin/ldconfig", "/usr/sbin/ldconfig")
_LDCONFIG_LINE = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)(?:\s+OS ABI:[^=]*)?\s+=>\s+(\S.*)$")
_VERSION = re.compile(r"\.so\.(\d+\.\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Place:
    folder: str
    source: str  # how dynix came to look there, for `dynix doctor`


@dataclass(frozen=True)
class Library:
    name: str  # the name programs load it by, e.g. libcuda.so.1
    path: str  # where it was found
    target: str  # the file that path resolves to
    source: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path, "target": self.target, "source": self.source}


@dataclass(frozen=True)
class Driver:
    libraries: tuple[Library, ...]
    places: tuple[Place, ...] = field(default=())

    @property
    def version(self) -> str:
        """The driver's version from its libraries' file names (libcuda.so.570.86.15)."""
        for name in REQUIRED:
            for library in self.libraries:
                if library.name == name and version_of(library.target):
                    return version_of(library.target)
        return ""

    @property
    def missing(self) -> list[str]:
        found = {library.name for library in self.libraries}
        return [name for name in REQUIRED if name not in found]

    def get(self, name: str) -> Library | None:
        return next((lib for lib in self.libraries if lib.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "missing": self.missing,
            "libraries": [library.to_json() for library in self.libraries],
            "searched": [{"folder": p.folder, "source": p.source} for p in self.places],
        }


def version_of(path: str) -> str:
    """The driver version a library's file name carries (libcuda.so.570.86.15), or ""."""
    match = _VERSION.search(path)
    return match.group(1) if match else ""


def root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or "/")


def under(base: Path, path: str) -> str:
    """`path` (absolute on the host) inside `base`, unless it already is."""
    if str(base) == "/" or path.startswith(str(base).rstrip("/") + "/"):
        return path
    return str(base) + "/" + path.lstrip("/")


def shown(base: Path, path: str) -> str:
    """`path` as the host names it (without the test root)."""
    if str(base) != "/" and path.startswith(str(base).rstrip("/") + "/"):
        return "/" + path[len(str(base).rstrip("/")) + 1 :]
    return path


def ldconfig_entries(base: Path) -> list[tuple[str, str]]:
    """(name, path) of every library in the host's loader cache, in the cache's order."""
    cache = Path(under(base, "/etc/ld.so.cache"))
    if not cache.is_file():
        return []
    program = next((p for p in LDCONFIG_PROGRAMS if os.access(p, os.X_OK)), None)
    program = program or process.which("ldconfig")
    if program is None:
        return []
    # The cache is named: an ldconfig built by Nix would read its own glibc's otherwise.
    result = process.run([program, "-p", "-C", str(cache)], check=False, timeout=30)
    if result.returncode != 0:
        return []
    entries = []
    for line in result.stdout.splitlines():
        match = _LDCONFIG_LINE.match(line)
        if match:
            entries.append((match.group(1), under(base, match.group(3).strip())))
    return entries


def ld_so_conf_folders(base: Path) -> list[Place]:
    """The folders /etc/ld.so.conf names, `include`s followed, with the file that names each."""
    places: list[Place] = []
    seen: set[str] = set()

    def read(conf: Path) -> None:
        if str(conf) in seen:
            return
        seen.add(str(conf))
        try:
            text = conf.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith("include"):
                for pattern in line.split()[1:]:
                    if not pattern.startswith("/"):
                        pattern = shown(base, str(conf.parent)) + "/" + pattern
                    for included in sorted(Path(under(base, pattern)).parent.glob(
                        Path(pattern).name
                    )):  # fmt: skip
                        read(included)
            elif line and not line.startswith("hwcap"):
                for folder in re.split(r"[\s,:=]+", line):
                    if folder.startswith("/"):
                        places.append(Place(under(base, folder), shown(base, str(conf))))

    read(Path(under(base, "/etc/ld.so.conf")))
    return places


def places(base: Path | None = None, machine: str | None = None) -> list[Place]:
    """Every folder searched, in order, with why (ldconfig's folders where its entries are)."""
    base = root() if base is None else base
    machine = machine or platform.machine()
    found = [Place(under(base, NIXOS_DRIVER_LIB), "NixOS driver link")]
    for name, path in ldconfig_entries(base):
        if _wanted(name):
            found.append(Place(str(Path(path).parent), "ldconfig -p"))
    found += ld_so_conf_folders(base)
    triple = MULTIARCH.get(machine)
    if triple:
        for folder in (f"/usr/lib/{triple}", f"/lib/{triple}"):
            found.append(Place(under(base, folder), "Debian/Ubuntu multiarch folder"))
    for folder in ("/usr/lib64", "/lib64"):
        found.append(Place(under(base, folder), folder))
    for folder in ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib"):
        found.append(Place(under(base, folder), "Kubernetes device plugin"))
    unique: dict[str, Place] = {}
    for place in found:
        unique.setdefault(os.path.normpath(place.folder), place)
    return list(unique.values())


def _wanted(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in (*REQUIRED, *OPTIONAL))


def _usable(path: Path, machine: int) -> bool:
    """A 64-bit ELF library for this host's machine (not a 32-bit or foreign copy)."""
    info = elf.read(path) if path.is_file() else None
    return info is not None and info.bits == 64 and (not machine or info.machine == machine)


def _library(name: str, path: Path, source: str) -> Library:
    return Library(name, str(path), os.path.realpath(path), source)


def discover(
    base: Path | None = None, *, search: Sequence[Place] | None = None, machine: int | None = None
) -> Driver:
    """The host's driver libraries: where each was found, and what it resolves to."""
    base = root() if base is None else base
    search = list(places(base) if search is None else search)
    machine = elf.host_machine() if machine is None else machine
    found: dict[str, Library] = {}
    anchor: Place | None = None
    for pattern in (*REQUIRED, *OPTIONAL):
        order = ([anchor] if anchor else []) + [p for p in search if p != anchor]
        for place in order:
            folder = Path(place.folder)
            if "*" in pattern:
                try:
                    names = sorted(n for n in os.listdir(folder) if fnmatch.fnmatch(n, pattern))
                except OSError:
                    continue
            else:
                names = [pattern]
            hits = [n for n in names if n not in found and _usable(folder / n, machine)]
            for name in hits:
                found[name] = _library(name, folder / name, place.source)
            if hits:
                if anchor is None and pattern in REQUIRED:
                    anchor = place
                break
    _add_needed(found, machine)
    return Driver(tuple(found.values()), tuple(search))


def _add_needed(found: dict[str, Library], machine: int) -> None:
    """Add what the found libraries need of the driver's own set, from beside them."""
    todo = list(found.values())
    while todo:
        library = todo.pop()
        info = elf.read(library.target)
        for name in info.needed if info else ():
            if name in found or not DRIVER_OWN.match(name):
                continue
            for folder in dict.fromkeys((Path(library.path).parent, Path(library.target).parent)):
                if _usable(folder / name, machine):
                    found[name] = _library(name, folder / name, f"needed by {library.name}")
                    todo.append(found[name])
                    break
