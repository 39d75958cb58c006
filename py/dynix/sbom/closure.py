"""What a closure holds, as Nix reports it: the facts both SBOM formats are written from.

Calls (all through `dynix.nix`): `nix build --json` for installables not already store paths;
one `nix path-info --json -r` for the runtime closure; `nix show-derivation` of the closure's
derivations and of their direct inputs (to link pins and patches, see `pedigree`); and, for
flake installables, one `nix eval --json` that collects `meta.license` of the package and of
every package its derivation takes as input.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import log, nix
from ..errors import DynixError
from ..nix import PathInfo
from ..pins import PinsFile
from .pedigree import Linker, Pedigree, Source, link

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


def resolve_roots(
    installables: Sequence[str], *, system: str | None, store: str | None
) -> tuple[list[str], dict[str, str]]:
    """The store paths the installables name (building what needs it), in order, and for each
    flake installable the first of its outputs."""
    root = os.path.abspath(store) if store else ""
    direct = {i: nix.store_path_of(i, store_root=root) for i in installables}
    for item, path in direct.items():
        if path and not os.path.exists(root + path):
            raise DynixError(f"{item}: {path} is not in the store")
    to_build = [i for i in installables if not direct[i]]
    built = iter(nix.build(to_build, store=store, system=system) if to_build else [])
    roots: list[str] = []
    flake_outputs: dict[str, str] = {}
    for item in installables:
        if path := direct[item]:
            roots.append(path)
            continue
        outputs = next(built).outputs
        paths = [outputs[k] for k in sorted(outputs)]
        flake_outputs[item] = paths[0]
        roots += paths
    return list(dict.fromkeys(roots)), flake_outputs


def _licences(
    installables: Sequence[str], *, system: str | None, store: str | None
) -> dict[str, list[Licence]]:
    found: dict[str, list[Licence]] = {}
    for item in installables:
        try:
            data = nix.eval_json(installable=item, apply=LICENCE_WALK, system=system, store=store)
        except DynixError as exc:
            log.warn(f"licences of {item} not recorded: {exc}")
            continue
        for path, entries in sorted(data.items()):
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
    roots, flake_outputs = resolve_roots(installables, system=system, store=store)
    # The licence evaluation needs nothing below: it runs beside the other Nix calls.
    helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nix-eval")
    asked = helper.submit(
        _licences, list(flake_outputs) if licences else [], system=system, store=store
    )
    try:
        return _describe(
            installables,
            roots,
            infos_of(roots, store),
            asked,
            system,
            store,
            root,
            pins,
            patches_root,
        )
    finally:
        helper.shutdown(wait=True)


def infos_of(roots: Sequence[str], store: str | None) -> list[PathInfo]:
    return sorted(nix.path_info(roots, recursive=True, store=store), key=lambda i: i.path)


def _describe(
    installables: Sequence[str],
    roots: list[str],
    infos: list[PathInfo],
    asked: Future[dict[str, list[Licence]]],
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
    if not system:
        first = next((drvs.get(i.deriver) for i in infos if i.path == roots[0] and i.deriver), None)
        system = first.env.get("system") if first else None
        system = system or nix.current_system()
    found = {path: entries for path, entries in asked.result().items() if path in runtime}
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
