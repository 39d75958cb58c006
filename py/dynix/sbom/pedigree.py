"""Which pinned upstream sources and which patches each package of a closure was built from.

Nothing here is written into the recipes: Nix already records it. A pin's source is fetched
by a fixed-output derivation whose recorded output hash is the pin's hash, so a derivation
that takes such an output as an input is built from that pin. Its `patches` lists the patch
files applied; each is matched by content to a file of `patches/<package>/` or, for a
`pin:NAME` entry, to the pin whose hash it has.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .. import log
from ..errors import DynixError
from ..nix import Derivation
from ..patches import default_dir, packages, read_series
from ..pins import PinsFile
from ..pins import Source as PinSource


@dataclass(frozen=True)
class Source:
    """A pinned upstream source that the closure's build used."""

    pin: str
    kind: str
    name: str
    version: str
    purl: str
    url: str
    algorithm: str  # "sha256" or "sha512"
    hex: str
    sri: str
    recursive: bool  # the hash is of the unpacked tree (NAR), not of the file
    store_path: str
    system: str | None = None

    @property
    def ref(self) -> str:
        return f"pin:{self.pin}" + (f":{self.system}" if self.system else "")


@dataclass(frozen=True)
class Patch:
    """One patch a package was built with, in the order applied."""

    label: str  # "0001-fix.patch", or "pin:NAME"
    file: str | None  # where the project keeps it: "patches/vllm/0001-fix.patch"
    store_path: str
    sha256: str  # hex, of the file's bytes
    sha1: str | None = None
    source: Source | None = None

    @property
    def ref(self) -> str:
        """A pinned patch is its pin's source component; a project's patch a file of its own."""
        return self.source.ref if self.source else f"patch:{self.file or self.label}"


@dataclass
class Pedigree:
    sources: list[Source] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)


def sri_to_hex(sri: str) -> tuple[str, str]:
    """`sha256-…=` -> ("sha256", hex)."""
    algo, _, b64 = sri.partition("-")
    try:
        return algo, base64.b64decode(b64, validate=True).hex()
    except ValueError as exc:
        raise DynixError(f"not an SRI hash: {sri!r}") from exc


def hex_to_sri(algo: str, hexdigest: str) -> str:
    return f"{algo}-{base64.b64encode(bytes.fromhex(hexdigest)).decode()}"


def nar_hash_hex(nar_hash: str) -> tuple[str, str]:
    """A NAR hash as `nix path-info --json` prints it (SRI) as (algo, hex)."""
    return sri_to_hex(nar_hash)


def purl(pin_kind: str, data: Mapping[str, object], version: str, src: PinSource) -> str:
    """The package URL of a pinned source (https://github.com/package-url/purl-spec)."""
    if pin_kind == "pypi":
        name = str(data["pname"]).lower().replace("_", "-").replace(".", "-")
        return f"pkg:pypi/{quote(name)}@{quote(version)}"
    if pin_kind == "github":
        ref = data.get("tag") or data.get("rev")
        owner, repo = str(data["owner"]).lower(), str(data["repo"]).lower()
        return f"pkg:github/{quote(owner)}/{quote(repo)}@{quote(str(ref), safe='')}"
    if pin_kind == "oci":
        image = str(data["image"])
        name = image.rsplit("/", 1)[-1].lower()
        qualifiers = f"arch={src.arch}&repository_url={quote(image, safe='/')}"
        qualifiers += f"&tag={quote(str(data['tag']), safe='')}"
        return f"pkg:oci/{quote(name)}@{quote(src.digest or '', safe='')}?{qualifiers}"
    name = src.url.rstrip("/").rsplit("/", 1)[-1] or src.pin
    at = f"@{quote(version, safe='')}" if version else ""
    return f"pkg:generic/{quote(name, safe='')}{at}?download_url={quote(src.url, safe='')}"


def pinned_sources(pins: PinsFile | None) -> dict[str, tuple[str, PinSource, str]]:
    """Every resolved pin source by the hex of its hash: (kind, source, purl)."""
    found: dict[str, tuple[str, PinSource, str]] = {}
    for pin in pins.pins.values() if pins else []:
        for src in pin.sources():
            if not src.resolved or src.digest == "unresolved":
                continue
            _, hexdigest = sri_to_hex(src.hash)
            found[hexdigest] = (pin.kind, src, purl(pin.kind, pin.data, pin.version, src))
    return found


def project_patches(root: Path | None) -> dict[str, str]:
    """Every patch file of the project's series, by the sha256 of its bytes: its path."""
    found: dict[str, str] = {}
    if root is None:
        return found
    for package in packages(root):
        for entry in read_series(root, package):
            if entry.path is not None:
                digest = hashlib.sha256(entry.path.read_bytes()).hexdigest()
                found.setdefault(digest, f"patches/{package}/{entry.path.name}")
    return found


def load_project(pins_path: Path | None) -> tuple[PinsFile | None, Path | None]:
    """The pins file and the patches folder of the checkout, where there is one. Only the
    absence of any pins file is passed over: one that is named (`--pins`, `$DYNIX_PINS`) or
    found but cannot be read is an error, not an SBOM without its sources."""
    from ..pins import default_path

    pins: PinsFile | None = None
    try:
        path = pins_path or default_path()
    except DynixError:  # no checkout here, and none named
        log.info("no pins recorded: no pins file here (run in a checkout, or give --pins)")
    else:
        pins = PinsFile.read(path)
    try:
        patches_root: Path | None = default_dir()
    except DynixError:
        patches_root = None
    return pins, patches_root


class Linker:
    """Links the derivations of a closure to pins and patches."""

    def __init__(
        self,
        pins: PinsFile | None,
        patches_root: Path | None,
        inputs: Mapping[str, Derivation],
        root: str,
    ) -> None:
        self.by_hash = pinned_sources(pins)
        self.versions = {p.name: p.version for p in pins.pins.values()} if pins else {}
        self.project = project_patches(patches_root)
        self.root = root
        self.outputs_of = {path: list(d.outputs.values()) for path, d in inputs.items()}
        # fixed-output path -> (algo, hex, recursive)
        self.fixed: dict[str, tuple[str, str, bool]] = {}
        for drv in inputs.values():
            for name, (algo, hexdigest) in drv.output_hashes.items():
                self.fixed[drv.outputs[name]] = (algo, hexdigest, drv.recursive)
        self.used: dict[str, Source] = {}

    def _source(self, path: str) -> Source | None:
        fixed = self.fixed.get(path)
        if fixed is None or fixed[1] not in self.by_hash:
            return None
        algo, hexdigest, recursive = fixed
        kind, pin_src, package_url = self.by_hash[hexdigest]
        source = Source(
            pin=pin_src.pin,
            kind=kind,
            name=pin_src.pin,
            version=self.versions.get(pin_src.pin, ""),
            purl=package_url,
            url=_locator(pin_src),
            algorithm=algo,
            hex=hexdigest,
            sri=pin_src.hash,
            recursive=recursive,
            store_path=path,
            system=pin_src.system,
        )
        return self.used.setdefault(source.ref, source)

    def _patch(self, path: str) -> Patch:
        source = self._source(path)
        sha1 = None
        try:
            data = Path(self.root + path).read_bytes()
            sha256, sha1 = hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest()
        except OSError as exc:
            if source is None or source.algorithm != "sha256" or source.recursive:
                raise DynixError(f"cannot read patch {path}: {exc.strerror}") from exc
            sha256 = source.hex
        if source is not None:
            return Patch(f"pin:{source.pin}", None, path, sha256, sha1, source)
        file = self.project.get(sha256)
        label = file.rsplit("/", 1)[-1] if file else path.split("-", 1)[-1]
        return Patch(label, file, path, sha256, sha1)

    def pedigree(self, drv: Derivation) -> Pedigree:
        patch_paths = drv.env.get("patches", "").split()
        found = Pedigree(patches=[self._patch(p) for p in patch_paths])
        patched = set(patch_paths)
        inputs = [
            out for d in drv.input_drvs for out in self.outputs_of.get(d, []) if out not in patched
        ]
        for path in sorted(set(inputs)):
            if (source := self._source(path)) is not None:
                found.sources.append(source)
        return found


def _locator(src: PinSource) -> str:
    """Where a source is fetched from; an image by its digest, not its tag."""
    if src.digest and src.url.startswith("docker://"):
        return f"{src.url.rsplit(':', 1)[0]}@{src.digest}"
    return src.url


def link(
    derivers: Mapping[str, Derivation], runtime: Iterable[str], linker: Linker
) -> dict[str, Pedigree]:
    """The pedigree of every runtime path whose derivation took a pinned source or patches."""
    runtime = set(runtime)
    found: dict[str, Pedigree] = {}
    for drv in derivers.values():
        pedigree = linker.pedigree(drv)
        if not pedigree.sources and not pedigree.patches:
            continue
        for out in drv.outputs.values():
            if out in runtime:
                found[out] = pedigree
    return found
