"""Can this machine build for a system? Natively, through emulation, or on a remote builder.

aarch64-linux (GB200) on an x86_64 host needs either a remote builder that lists the system
(`--builders 'ssh-ng://host aarch64-linux'`) or emulation: a binfmt_misc entry for aarch64 that
is enabled (qemu-user-static) AND Nix offering the system in `extra-platforms`. Nix alone would
only fail deep into a build; dynix says so before it starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DynixError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# binfmt_misc entry names that run a system's binaries: Debian's qemu-user-static, then NixOS's
# boot.binfmt.emulatedSystems.
BINFMT_NAMES = {
    "aarch64-linux": ("qemu-aarch64", "aarch64-linux"),
    "x86_64-linux": ("qemu-x86_64", "x86_64-linux"),
    "riscv64-linux": ("qemu-riscv64", "riscv64-linux"),
}
# Systems a CPU runs without emulation.
NATIVE = {
    "x86_64-linux": ("i686-linux", "x86_64-v1-linux", "x86_64-v2-linux", "x86_64-v3-linux"),
    "aarch64-linux": ("armv7l-linux",),
}
SYSTEMS = ("aarch64-linux", "x86_64-linux", "i686-linux", "riscv64-linux", "aarch64-darwin")
_ATTR_SYSTEM = re.compile(
    r"#(?:packages|legacyPackages|checks|devShells|apps|formatter|hydraJobs)\.([a-z0-9_-]+-[a-z]+)\b"
)


@dataclass(frozen=True)
class Builder:
    """One line of Nix's `builders` setting (see nix.conf(5), "builders")."""

    uri: str
    systems: tuple[str, ...]
    max_jobs: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "systems": list(self.systems), "maxJobs": self.max_jobs}


def parse_builders(spec: str, *, read_files: bool = True) -> list[Builder]:
    """Builders from a `builders` value: entries split by `;` or newlines, `@FILE` read."""
    builders = []
    for raw in re.split(r"[;\n]", spec or ""):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        if entry.startswith("@"):
            if read_files:
                try:
                    text = Path(entry[1:]).read_text(encoding="utf-8")
                except OSError:
                    continue
                builders += parse_builders(text, read_files=False)
            continue
        fields = entry.split()
        listed = fields[1].split(",") if len(fields) > 1 else []
        systems = tuple(s for s in listed if s and s != "-")
        jobs = int(fields[3]) if len(fields) > 3 and fields[3].isdigit() else 1
        builders.append(Builder(fields[0], systems, jobs))
    return builders


def binfmt_entry(system: str, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """The name of an enabled binfmt_misc entry that runs `system`'s binaries, or None."""
    for name in BINFMT_NAMES.get(system, ()):
        try:
            first = (binfmt_dir / name).read_text(encoding="ascii").splitlines()[:1]
        except OSError:
            continue
        if first == ["enabled"]:
            return name
    return None


def systems_of(installables: Sequence[str], system: str | None) -> list[str]:
    """The systems a build targets: `--system`, and any named in a flake attribute path."""
    found = [system] if system else []
    for arg in installables:
        found += [m for m in _ATTR_SYSTEM.findall(arg) if m in SYSTEMS]
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class Route:
    """How `system` gets built here: `native`, `emulation` or `remote` (with `detail`)."""

    system: str
    how: str
    detail: str = ""


def route(
    system: str,
    nix_config: Mapping[str, Any],
    builders: Sequence[Builder],
    *,
    binfmt_dir: Path = BINFMT_DIR,
) -> Route:
    """How this machine can build for `system`; a one-line `DynixError` when it cannot."""
    local = str(nix_config.get("system", ""))
    extra = list(nix_config.get("extra-platforms") or [])
    if system == local or system in NATIVE.get(local, ()) and system in extra:
        return Route(system, "native")
    remote = [b.uri for b in builders if system in b.systems]
    if remote:
        return Route(system, "remote", ", ".join(remote))
    entry = binfmt_entry(system, binfmt_dir)
    if entry and system in extra:
        return Route(system, "emulation", f"binfmt {entry}")
    if entry:
        why = f"binfmt {entry} is enabled but Nix's extra-platforms lacks {system}"
        fix = f"add 'extra-platforms = {system}' to nix.conf"
    elif system in extra:
        names = " or ".join(BINFMT_NAMES.get(system, (system,)))
        why = f"Nix offers {system} in extra-platforms but binfmt_misc has no enabled {names}"
        fix = f"update-binfmts --enable {BINFMT_NAMES.get(system, (system,))[0]}"
    else:
        offered = " ".join(extra) or "-"
        why = f"no remote builder for it and no emulation (extra-platforms: {offered})"
        fix = f"pass --builders 'ssh-ng://HOST {system}' or set up qemu binfmt emulation"
    raise DynixError(f"cannot build for {system} on this {local} machine: {why}; {fix}")
