"""What a closure holds, as Nix reports it: the facts both SBOM formats are written from.

Calls (all through `dynix.nix`): `nix build --json` for installables not already store paths;
`nix path-info --json -r` for the runtime closure; `nix show-derivation` of the closure's
derivations and of their direct inputs (to link pins and patches, see `pedigree`); and, for
flake installables, one `nix eval --json` that collects `meta.license` of the package and of
every package its derivation takes as input.

The evaluation and a first `nix path-info -r` of the installables themselves run beside the
build (after it, on a store Nix has yet to set up). When the installables are built already
(the usual case: an SBOM follows a build), that first answer is the closure, once it is checked
to be exactly the closure of the roots the build names; otherwise path-info runs again on the
roots.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from .. import log, nix, process
from ..errors import DynixError
from ..nix import PathInfo
from ..pins import PinsFile
from .pedigree import Linker, Patch, Pedigree, Source, link

# One evaluation for every licence Nix's `meta` records along the installable's inputs: a walk
# over each derivation's attributes (`drvAttrs`) that are derivations, keyed by `drvPath`.
# What fails to evaluate (throws, broken packages) is left out rather than failing the walk.
LICENCE_WALK = """pkg:
let
  isDrv = x: builtins.isAttrs x && (x.type or null) == "derivation";
  safe = f: x: let r = builtins.tryEval (f x); in if r.success then r.value else [ ];
  drvsIn = v: if isDrv v then [ v ] else if builtins.isList v then builtins.filter isDrv v else [ ];
  str = x: let r = builtins.tryEval x; in
    if r.success && builtins.isString r.value then r.value else null;
  key = p: str p.drvPath;
  item = p: { key = key p; inherit p; };
  inputs = p: builtins.concatLists (map (safe drvsIn) (builtins.attrValues (p.drvAttrs or { })));
  all = builtins.genericClosure {
    startSet = [ (item pkg) ];
    operator = i: builtins.filter (j: j.key != null) (map item (safe inputs i.p));
  };
  one = l: if builtins.isString l then { spdxId = null; name = l; }
    else { spdxId = str (l.spdxId or null); name = str (l.fullName or l.shortName or null); };
  licences = p: let l = p.meta.license or null; in
    map one (if builtins.isList l then l else if l == null then [ ] else [ l ]);
  outs = p: map builtins.unsafeDiscardStringContext
    (builtins.filter (o: o != null) (map (o: str (p.${o} or p).outPath) (p.outputs or [ "out" ])));
  entries = i: let r = builtins.tryEval (builtins.deepSeq (licences i.p) (licences i.p)); in
    if r.success && r.value != [ ] then map (o: { name = o; value = r.value; }) (outs i.p) else [ ];
in builtins.listToAttrs (builtins.concatMap entries all)
"""


@dataclass(frozen=True)
class Licence:
    spdx_id: str | None
    name: str | None


@dataclass
class Closure:
    """A runtime closure with what is known of each path."""

    installables: list[str]
    system: str
    roots: list[str]
    paths: list[PathInfo]
    licences: dict[str, list[Licence]] = field(default_factory=dict)
    pedigree: dict[str, Pedigree] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    missing_derivations: int = 0

    def identity(self) -> str:
        """A digest naming this closure (its roots and their NAR hashes): documents that
        describe the same closure get the same serial number and namespace."""
        h = hashlib.sha256()
        hashes = {i.path: i.nar_hash for i in self.paths}
        for path in self.roots:
            h.update(f"{path} {hashes.get(path, '')}\n".encode())
        return h.hexdigest()

    def project_patches(self) -> dict[str, Patch]:
        """The patches applied that are files of their own (not a pin's), by reference, in
        path order; a reference two packages share is the later one's."""
        found: dict[str, Patch] = {}
        for info in self.paths:
            pedigree = self.pedigree.get(info.path)
            found.update((p.ref, p) for p in (pedigree.patches if pedigree else []) if not p.source)
        return found


T = TypeVar("T")


class _Beside(Generic[T]):
    """A call run in a thread of its own, beside the caller's; `result()` waits for it and
    raises what it raised."""

    def __init__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None

        def target() -> None:
            try:
                self._value = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller by result()
                self._error = exc

        self._thread = threading.Thread(target=target, name="nix", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> T:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def _licence_walks(
    installables: Sequence[str], *, system: str | None, store: str | None
) -> dict[str, Any]:
    """The licence walk of each installable; a failed one is its error."""
    walks: dict[str, Any] = {}
    for item in installables:
        try:
            walks[item] = nix.eval_json(
                installable=item, apply=LICENCE_WALK, system=system, store=store
            )
        except DynixError as exc:
            walks[item] = exc
    return walks


def _licences(
    asked: _Beside[dict[str, Any]], *, system: str | None, store: str | None
) -> dict[str, list[Licence]]:
    """Every licence found, by output path. A walk that failed beside the build runs once more
    now that the build is done, so that the document does not depend on what the calls beside
    each other may have done to one another; if it fails again, its licences are left out, with
    a warning."""
    walks = asked.result()
    retry = [item for item, walk in walks.items() if isinstance(walk, DynixError)]
    walks.update(_licence_walks(retry, system=system, store=store))
    found: dict[str, list[Licence]] = {}
    for item, walk in walks.items():
        if isinstance(walk, DynixError):
            log.warn(f"licences of {item} not recorded: {walk}")
            continue
        for path, entries in sorted(walk.items()):
            if path not in found:
                found[path] = [Licence(e.get("spdxId"), e.get("name")) for e in entries]
    return found


def read(
    installables: Sequence[str],
    *,
    system: str | None = None,
    store: str | None = None,
    pins: PinsFile | None = None,
    patches_root: Path | None = None,
    licences: bool = True,
) -> Closure:
    """Build (where needed) and describe the runtime closure of `installables`."""
    if not installables:
        raise DynixError("no installable given")
    root = os.path.abspath(store) if store else ""
    evaluated = [i for i in installables if not nix.store_path_of(i, store_root=root)]
    # licences are read from flake packages' meta: a store derivation has none
    flakes = [i for i in evaluated if not nix.is_derivation(i, store_root=root)]
    walked = flakes if licences else []
    # Beside the build: the licence evaluation, which needs only the flake installables, and
    # the closure of the installables as they stand, which is the answer when they are built.
    # Not on a store that is not set up yet: Nix 2.8 processes that set one up together fail
    # ("creating symlink … gcroots/profiles … File exists"), so there the build goes first.
    asked: _Beside[dict[str, Any]] | None = None
    early: _Beside[list[PathInfo] | None] | None = None
    if set_up(root):
        asked = _Beside(_licence_walks, walked, system=system, store=store)
        # (path-info of a store derivation would be the derivation's closure, not its outputs')
        if evaluated and flakes == evaluated:
            early = _Beside(_closure_if_built, installables, system, store)
    try:
        roots = nix.roots(installables, system=system, store=store)
        asked = asked or _Beside(_licence_walks, walked, system=system, store=store)
        infos = early.result() if early else None
        if infos is None or not closes(infos, roots):
            infos = infos_of(roots, store)
        return _describe(installables, roots, infos, asked, system, store, root, pins, patches_root)
    except BaseException:
        process.stop_all()  # the calls beside, if they are still running
        raise
    finally:
        for call in (asked, early):
            if call:
                call.wait()


def set_up(root: str) -> bool:
    """Whether the store rooted at `root` ("" for the system's) has been set up by Nix (its
    database schema is written last)."""
    return not root or os.path.exists(os.path.join(root, "nix/var/nix/db/schema"))


def infos_of(paths: Sequence[str], store: str | None, system: str | None = None) -> list[PathInfo]:
    """`nix path-info -r` of store paths (or installables), in path order."""
    infos = nix.path_info(paths, recursive=True, store=store, system=system)
    return sorted(infos, key=lambda i: i.path)


def _closure_if_built(
    installables: Sequence[str], system: str | None, store: str | None
) -> list[PathInfo] | None:
    try:
        return infos_of(installables, store, system)
    except DynixError:  # not built yet, or what the build reports
        return None


def closes(infos: Sequence[PathInfo], roots: Sequence[str]) -> bool:
    """Whether `infos` is exactly the closure of `roots`: each root among them, and each of
    them reached from a root through references (nothing more, were the installables to name
    other paths between two evaluations)."""
    by_path = {i.path: i for i in infos}
    if any(r not in by_path for r in roots):
        return False
    seen = set(roots)
    todo = list(roots)
    while todo:
        for ref in by_path[todo.pop()].references:
            if ref not in seen:
                if ref not in by_path:
                    return False
                seen.add(ref)
                todo.append(ref)
    return len(seen) == len(by_path)


def _describe(
    installables: Sequence[str],
    roots: list[str],
    infos: list[PathInfo],
    asked: _Beside[dict[str, Any]],
    system: str | None,
    store: str | None,
    root: str,
    pins: PinsFile | None,
    patches_root: Path | None,
) -> Closure:
    runtime = {i.path for i in infos}
    derivers = sorted({i.deriver for i in infos if i.deriver and i.deriver.endswith(".drv")})
    present = [d for d in derivers if os.path.exists(root + d)]
    if len(present) < len(derivers):
        log.info(
            f"{len(derivers) - len(present)} derivations are not in the store (paths copied "
            "without them): their sources and patches are not recorded"
        )
    drvs = nix.show_derivations(present, store=store) if present else {}
    inputs = sorted({d for drv in drvs.values() for d in drv.input_drvs} - set(drvs))
    input_drvs = {**drvs, **(nix.show_derivations(inputs, store=store) if inputs else {})}
    linker = Linker(pins, patches_root, input_drvs, root)
    pedigree = link(drvs, runtime, linker)
    licences = _licences(asked, system=system, store=store)
    if not system:
        first = next((drvs.get(i.deriver) for i in infos if i.path == roots[0] and i.deriver), None)
        system = first.env.get("system") if first else None
        system = system or nix.current_system()
    found = {path: entries for path, entries in licences.items() if path in runtime}
    return Closure(
        installables=list(installables),
        system=system,
        roots=roots,
        paths=infos,
        licences=found,
        pedigree=pedigree,
        sources=sorted(linker.used.values(), key=lambda s: s.ref),
        missing_derivations=len(derivers) - len(present),
    )
