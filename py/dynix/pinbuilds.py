"""Recording the hashes of pins that only a build establishes, by building what uses them.

The flake names, for every hash of the pins file, the fixed-output derivation that uses it:
`legacyPackages.<system>.pinFetches.<pin>.hash` (a source, or this system's image) and
`….build-hashes.<key>` (a Go vendor tree, the git crates of a Cargo lock). An unresolved hash
is a fake one there, so building it fails with Nix's `specified: … got: …`; the value got is
recorded. Fixed outputs can depend on each other (a vendor tree on its source): what failed only
because something it needs had a fake hash is built again once that is recorded, until every
hash asked for is recorded or fails for another reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import log, nix
from .pinning import LockChange, lock_image_digest
from .pins import UNRESOLVED, PinsFile

# `pinFetches`, reduced to what a build needs: each fixed output's derivation and output path.
_SUMMARY = """fetches: builtins.mapAttrs (_: p:
  let paths = d: { drv = d.drvPath; out = d.outPath; };
  in { hash = paths p.hash; }
    // (if p ? build-hashes then { build-hashes = builtins.mapAttrs (_: paths) p.build-hashes; }
        else { })) fetches"""


@dataclass(frozen=True)
class Target:
    """One hash of the pins file and the fixed-output derivation that uses it."""

    pin: str
    key: tuple[str, ...]  # where the hash is in the pin's table: ("build-hashes", "server")
    drv: str
    out: str

    @property
    def label(self) -> str:
        return f"{self.pin}: {'.'.join(self.key)}"


@dataclass(frozen=True)
class Failure:
    label: str
    reason: str


def targets(pins: PinsFile, flake: str, system: str) -> list[Target]:
    """Every hash of `pins` that the flake builds on `system`, with its derivation."""
    fetches: dict[str, Any] = nix.eval_json(
        installable=f"{flake}#legacyPackages.{system}.pinFetches", apply=_SUMMARY
    )
    found = []
    for name, entry in fetches.items():
        if name not in pins.pins:
            continue  # the flake reads another pins file; its extra pins are not ours to record
        image = pins.pins[name].kind == "oci"
        hash_key = ("systems", system, "hash") if image else ("hash",)
        found.append(Target(name, hash_key, entry["hash"]["drv"], entry["hash"]["out"]))
        for key, paths in entry.get("build-hashes", {}).items():
            found.append(Target(name, ("build-hashes", key), paths["drv"], paths["out"]))
    return found


def _value(pins: PinsFile, target: Target) -> Any:
    value: Any = pins.table(target.pin)
    for part in target.key:
        value = value.get(part) if hasattr(value, "get") else None
    return value


def _record(pins: PinsFile, target: Target, new: str) -> LockChange:
    table = pins.table(target.pin)
    for part in target.key[:-1]:
        table = table[part]
    old = str(table[target.key[-1]])
    table[target.key[-1]] = new
    return LockChange(target.pin, ".".join(target.key), old, new)


def lock_by_build(
    pins: PinsFile, names: Iterable[str], *, flake: str, systems: list[str]
) -> tuple[list[LockChange], list[Failure]]:
    """Build the fixed outputs of unresolved hashes (of every hash, for the pins named), record
    the hashes Nix reports, and repeat while that lets more of them build.

    Image digests come first (no build establishes them: the registry is asked, as `lock` does).
    The pins file is saved after each round that recorded something; what could not be
    recorded is returned with the reason Nix gave.
    """
    named = {pin.name for pin in pins.select(names)} if names else set()
    wanted_pins = named or set(pins.pins)
    changes: list[LockChange] = []
    failures: dict[str, Failure] = {}

    for pin in pins.pins.values():
        if pin.kind != "oci" or pin.name not in wanted_pins:
            continue
        for source in pin.sources():
            if source.system not in systems:
                continue
            change, problem = lock_image_digest(pin.name, source, pins)
            if change:
                changes.append(change)
            if problem:
                reason = f"{problem.status}: {problem.detail}"
                failures[source.label] = Failure(source.label, reason)
    if changes:
        pins.save()

    settled: set[str] = set()
    while True:
        wanted = [
            t
            for system in systems
            for t in targets(pins, flake, system)
            if t.label not in settled
            and (t.pin in named or (not named and _value(pins, t) == UNRESOLVED))
        ]
        if not wanted:
            break
        log.info(f"building {len(wanted)} fixed output(s): {', '.join(t.label for t in wanted)}")
        result = nix.realise(sorted({t.drv for t in wanted}))
        got = {m.drv_path: m for m in nix.hash_mismatches(result.stderr)}
        missing = set(nix.missing_paths("auto", [t.out for t in wanted]))
        recorded = False
        for t in wanted:
            if t.drv in got:
                changes.append(_record(pins, t, got[t.drv].got))
                settled.add(t.label)
                failures.pop(t.label, None)
                recorded = True
            elif t.out not in missing:
                settled.add(t.label)
                failures.pop(t.label, None)
            else:
                reason = nix.failure_of(result.stderr, t.drv) or "it did not build"
                failures[t.label] = Failure(t.label, reason)
        theirs = {t.drv for t in wanted}
        for m in got.values():
            if m.drv_path not in theirs:
                label = m.drv_path.split("-", 1)[-1].removesuffix(".drv")
                failures[f"{label} (no pin)"] = Failure(
                    f"{label} (no pin)",
                    f"hash mismatch in {m.drv_path}, whose hash no pin records "
                    f"(specified {m.specified}, got {m.got})",
                )
        if not recorded:
            break
        pins.save()
    return changes, list(failures.values())
