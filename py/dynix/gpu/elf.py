"""Just enough of ELF to tell a driver library from a stray file: class, machine, the
libraries it needs (`DT_NEEDED`), its `DT_SONAME`, and a program's interpreter (`PT_INTERP`)."""

from __future__ import annotations

import platform
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"\x7fELF"
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME = 0, 1, 5, 14
# e_machine of the systems dynix serves on.
MACHINES = {"x86_64": 62, "aarch64": 183}


@dataclass(frozen=True)
class Elf:
    bits: int
    machine: int
    needed: tuple[str, ...] = ()
    soname: str = ""
    interpreter: str = ""


def host_machine() -> int:
    """The ELF machine number of this host's libraries (0 when dynix does not know it)."""
    return MACHINES.get(platform.machine(), 0)


def read(path: str | Path) -> Elf | None:
    """The ELF facts of `path`, or None when it is not a readable ELF file."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if data[:4] != MAGIC or len(data) < 64 or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    bits = 64 if data[4] == 2 else 32
    end = "<" if data[5] == 1 else ">"
    try:
        return _parse(data, bits, end)
    except (struct.error, IndexError, ValueError):
        return None


def _parse(data: bytes, bits: int, end: str) -> Elf:
    if bits == 64:
        machine, phoff, phentsize, phnum = (
            struct.unpack_from(end + "H", data, 18)[0],
            struct.unpack_from(end + "Q", data, 32)[0],
            *struct.unpack_from(end + "HH", data, 54),
        )
        phdr = end + "IIQQQQQQ"  # type flags offset vaddr paddr filesz memsz align
    else:
        machine, phoff, phentsize, phnum = (
            struct.unpack_from(end + "H", data, 18)[0],
            struct.unpack_from(end + "I", data, 28)[0],
            *struct.unpack_from(end + "HH", data, 42),
        )
        phdr = end + "IIIIIIII"  # type offset vaddr paddr filesz memsz flags align
    loads, dynamic, interpreter = [], None, ""
    for index in range(phnum):
        fields = struct.unpack_from(phdr, data, phoff + index * phentsize)
        if bits == 64:
            kind, offset, vaddr, filesz = fields[0], fields[2], fields[3], fields[5]
        else:
            kind, offset, vaddr, filesz = fields[0], fields[1], fields[2], fields[4]
        if kind == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif kind == PT_DYNAMIC:
            dynamic = (offset, filesz)
        elif kind == PT_INTERP:
            interpreter = data[offset : offset + filesz].split(b"\0", 1)[0].decode()
    needed, soname = _dynamic(data, bits, end, dynamic, loads)
    return Elf(bits, machine, needed, soname, interpreter)


def _dynamic(data, bits, end, dynamic, loads) -> tuple[tuple[str, ...], str]:
    if dynamic is None:
        return (), ""
    entry = end + ("qQ" if bits == 64 else "iI")
    size = struct.calcsize(entry)
    offset, filesz = dynamic
    strtab, names, soname = None, [], None
    for at in range(offset, offset + filesz, size):
        tag, value = struct.unpack_from(entry, data, at)
        if tag == DT_NULL:
            break
        if tag == DT_STRTAB:
            strtab = value
        elif tag == DT_NEEDED:
            names.append(value)
        elif tag == DT_SONAME:
            soname = value
    if strtab is None:
        return (), ""
    base = next((o + strtab - v for v, o, s in loads if v <= strtab < v + s), None)
    if base is None:
        return (), ""

    def string(index: int) -> str:
        return data[base + index : data.index(b"\0", base + index)].decode()

    return tuple(string(n) for n in names), string(soname) if soname is not None else ""
