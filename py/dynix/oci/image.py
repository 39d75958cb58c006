"""`dynix image build`: from installables to an OCI layout or a docker archive.

Per system: build the installables, read their closure from Nix, group it into layers, make
each layer (or take it from the cache), then write config and manifest; several systems give
one image index. Everything is written under a temporary name beside the output and renamed
into place at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import log, nix, process, skopeo
from ..errors import DynixError
from ..files import atomic_path, temp_name
from . import config as cfg
from . import grouping, layers, pool, spec
from .cache import BlobStore, default_root, layer_key
from .layout import BlobSet, check_target, write_docker_archive, write_layout
from .source import ImageRef, Source, open_source, parse_ref


@dataclass
class Request:
    installables: list[str]
    output: str
    systems: list[str] = field(default_factory=list)
    tag: str | None = None
    base: str | None = None
    settings: cfg.Settings = field(default_factory=cfg.Settings)
    max_layers: int = grouping.DEFAULT_MAX_LAYERS
    compression: str | None = None
    level: int | None = None
    store: str | None = None
    cache: Path | None = field(default_factory=default_root)
    jobs: int = 0
    tls_verify: bool | None = None
    authfile: str | None = None
    verify_cache: bool = False
    # documents attached as OCI artifacts (see dynix.sbom.image)
    sbom: str | None = None
    provenance: bool = False
    signing_key: Path | None = None


@dataclass
class Layer:
    key: str
    paths: list[str]
    nar_size: int
    blob: layers.Blob | None = None
    cached: bool = False


@dataclass
class Platform:
    system: str
    roots: list[str]
    layers: list[Layer]
    base: Any = None
    manifest: dict[str, Any] | None = None


def parse_output(text: str) -> ImageRef:
    ref = parse_ref(text)
    if ref.transport == "docker":
        raise DynixError("-o takes oci:DIR or docker-archive:FILE; push with `dynix image push`")
    if ref.ref:
        raise DynixError(f"-o {text}: give the name with --tag, not in the output location")
    return ref


def parse_tag(tag: str | None, roots: Sequence[str]) -> tuple[str, str]:
    if not tag:
        return cfg.split_name(roots[0])[0] if roots else "image", "latest"
    name, sep, label = tag.rpartition(":")
    if not sep or "/" in label:
        return tag, "latest"
    if not name or not label:
        raise DynixError(f"--tag {tag!r}: expected NAME:TAG")
    return name, label


def _roots(req: Request, system: str, explicit: bool, root: str) -> list[str]:
    """Build what needs building for `system`; the store paths to put in the image, in order."""
    if len(req.systems) > 1 and any(
        nix.store_path_of(i, store_root=root) for i in req.installables
    ):
        raise DynixError(
            "store paths belong to one system: with several --system, give flake installables"
        )
    return nix.roots(req.installables, system=system if explicit else None, store=req.store)


def _flake_labels(req: Request) -> dict[str, str]:
    for item in req.installables:
        if nix.store_path_of(item, store_root=req.store or ""):
            continue
        ref = item.split("#", 1)[0] or "."
        # The labels are part of the image's bytes: a passing failure (a busy Nix database
        # under load) must not give another digest, so ask again before going without them.
        for attempt in range(3):
            try:
                return cfg.flake_labels(nix.flake_metadata(ref, store=req.store))
            except DynixError as exc:
                problem = exc
                time.sleep(0.2 * (attempt + 1))
        log.warn(f"flake revision not recorded (the image digest differs without it): {problem}")
        break
    return {}


class _Progress:
    def __init__(self, total: int, count: int) -> None:
        self.total, self.count = total, count
        self.done_bytes = self.done_layers = 0
        self.start = time.monotonic()

    def layer(self, layer: Layer) -> None:
        self.done_layers += 1
        self.done_bytes += layer.nar_size
        more = f" (+{len(layer.paths) - 1} paths)" if len(layer.paths) > 1 else ""
        log.info(
            f"[{self.done_layers}/{self.count}] {_human(self.done_bytes)}/{_human(self.total)} "
            f"{cfg.store_name(layer.paths[0])}{more}"
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _make_layers(todo: list[Layer], store: BlobStore, req: Request, root: str) -> None:
    """Write the layers not found in the cache, several at once."""
    compression = req.compression or "gzip"
    level = req.level if req.level is not None else layers.DEFAULT_LEVELS[compression]
    progress = _Progress(sum(x.nar_size for x in todo), len(todo))
    by_key = {layer.key: layer for layer in todo}

    def done(job: pool.Job, blob: layers.Blob) -> None:
        layer = by_key[job.key]
        layer.blob = blob
        progress.layer(layer)

    pool.write_all(
        [pool.Job(x.key, tuple(x.paths), x.nar_size) for x in todo],
        store,
        compression=compression,
        level=level,
        root=root,
        workers=req.jobs or process.default_jobs(),
        done=done,
    )


def _open_base(req: Request, systems: list[str], scratch: Path) -> Source | None:
    if not req.base:
        return None
    ref = parse_ref(req.base)
    if ref.transport == "docker":
        if "@sha256:" not in ref.path:
            log.warn(f"base {ref} is not pinned by digest: the image will change with the tag")
        # Copy the platforms needed into a local layout once; skopeo verifies every blob.
        local = scratch / "base"
        args: dict[str, Any] = {"all_platforms": len(systems) > 1}
        if len(systems) == 1:
            args["override_arch"] = spec.platform(systems[0])["architecture"]
        log.info(f"fetching base image {ref} ...")
        skopeo.copy(
            str(ref),
            f"oci:{local}:base",
            src_tls_verify=req.tls_verify,
            authfile=req.authfile,
            **args,
        )
        ref = ImageRef("oci", str(local), "base")
    return open_source(ref)


def _base_layers(base: Any, source: Source, blobs: BlobSet, store: BlobStore) -> list[dict]:
    descs = []
    for desc in base.layers:
        media = desc.get("mediaType", spec.LAYER_GZIP)
        if media in (spec.DOCKER_LAYER_GZIP, spec.DOCKER_LAYER):
            media = spec.layer_media_type(spec.layer_compression(media))
        blobs.add_file(desc["digest"], source.copy_blob(desc, store))
        descs.append({"mediaType": media, "digest": desc["digest"], "size": int(desc["size"])})
    return descs


def build(req: Request) -> dict[str, Any]:
    """Build the image `req` describes; returns a summary (reference, digest, platforms)."""
    out = parse_output(req.output)
    if req.max_layers < 1:
        raise DynixError("--max-layers must be at least 1")
    compression = req.compression or ("none" if out.transport == "docker-archive" else "gzip")
    req.compression = compression
    layers.check_compression(compression, req.level)
    if out.transport == "docker-archive" and (req.sbom or req.provenance):
        raise DynixError("SBOMs and provenance are attached to OCI layouts: use -o oci:DIR")
    if req.sbom:
        from ..sbom.documents import check_format

        check_format(req.sbom)
    if req.signing_key:
        from ..sbom.provenance import load_key

        load_key(req.signing_key)  # a key that cannot sign is found before the build
    if out.transport == "docker-archive" and len(set(req.systems)) > 1:
        raise DynixError("a docker archive holds one platform: use -o oci:DIR for several --system")
    platforms = {s: spec.platform(s) for s in req.systems}
    root = os.path.abspath(req.store) if req.store else ""
    target = Path(os.path.abspath(out.path))
    check_target(target, out.transport)

    if req.store:
        # Nix 2.8 makes a new store's folders on first use, and two Nix processes doing that at
        # once can fail ("creating symlink … File exists"): open it once before they run.
        nix.ping_store(req.store)
    # Nix calls that do not depend on the build run beside it.
    helpers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nix")
    try:
        asks = Asks(
            host=None if req.systems else helpers.submit(nix.current_system),
            labels=helpers.submit(_flake_labels, req),
            helpers=helpers,
        )
        with atomic_path(target) as tmp:
            try:
                scratch = Path(
                    tempfile.mkdtemp(
                        prefix=temp_name(target, "scratch"), suffix=".tmp", dir=target.parent
                    )
                )
            except OSError as exc:
                raise DynixError(f"cannot write to {target.parent}: {exc.strerror}") from exc
            try:
                result, done = _build_into(req, out, tmp, scratch, platforms, asks, root)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        log.info(done)  # only once the image is in place
        return result
    finally:
        helpers.shutdown(wait=True)


@dataclass
class Asks:
    """Answers from Nix that the build needs only later."""

    host: Future[str] | None
    labels: Future[dict[str, str]]
    helpers: ThreadPoolExecutor


def _build_into(
    req: Request,
    out: ImageRef,
    tmp: Path,
    scratch: Path,
    platforms: dict[str, dict[str, str]],
    asks: Asks,
    root: str,
) -> tuple[dict[str, Any], str]:
    store = BlobStore(req.cache or scratch / "blobs", verify=req.verify_cache)
    explicit = bool(req.systems)
    # Without --system, Nix builds for this machine, whose name comes with the build.
    systems = sorted(set(req.systems)) or [""]
    base_source: Source | None = None
    plans: dict[str, Platform] = {}
    all_layers: dict[str, Layer] = {}
    for n, system in enumerate(systems):
        roots = _roots(req, system, explicit, root)
        if not system:
            assert asks.host is not None
            system = systems[n] = asks.host.result()
            platforms[system] = spec.platform(system)
        if req.base and base_source is None:
            base_source = _open_base(req, systems, scratch)
        base = base_source.image_for(platforms[system]) if base_source else None
        infos = nix.path_info(roots, recursive=True, store=req.store)
        # Paths a (dynix-made) base image already holds are not added again.
        in_base = {
            path
            for entry in ((base.config.get("history") or []) if base else [])
            for path in cfg.store_paths_of(entry)
        }
        infos = [i for i in infos if i.path not in in_base]
        nodes = [grouping.Node(i.path, i.nar_size, tuple(i.references)) for i in infos]
        hashes = {i.path: i.nar_hash for i in infos}
        sizes = {i.path: i.nar_size for i in infos}
        level = (
            req.level if req.level is not None else layers.DEFAULT_LEVELS[req.compression or "gzip"]
        )
        plan = []
        for paths in grouping.group(nodes, req.max_layers):
            key = layer_key([(p, hashes[p]) for p in paths], req.compression or "gzip", level)
            layer = all_layers.setdefault(key, Layer(key, paths, sum(sizes[p] for p in paths)))
            plan.append(layer)
        plans[system] = Platform(system, roots, plan, base)
        if base and len(base.layers) + len(plan) > 127:
            log.warn(f"{system}: {len(base.layers) + len(plan)} layers; some runtimes stop at 127")

    todo = []
    for layer in all_layers.values():
        if (blob := store.lookup(layer.key)) is not None:
            layer.blob, layer.cached = blob, True
        else:
            todo.append(layer)
    cached = len(all_layers) - len(todo)
    log.info(
        f"{len(all_layers)} layers: {cached} from the cache, {len(todo)} to write "
        f"({_human(sum(x.nar_size for x in todo))})"
    )
    labels = asks.labels.result()
    asks.helpers.shutdown(wait=True)  # no threads left when the layer writers fork
    _make_layers(todo, store, req, root)

    if pins := cfg.pins_label():
        labels["dynix.pins"] = pins
    blobs = BlobSet()
    manifests = []
    first_roots = plans[systems[0]].roots
    name, tag = parse_tag(req.tag, first_roots)
    version = cfg.split_name(first_roots[0])[1] if first_roots else ""
    for system in systems:
        plan = plans[system]
        layer_descs = _base_layers(plan.base, base_source, blobs, store) if plan.base else []
        for layer in plan.layers:
            assert layer.blob is not None
            blobs.add_file(layer.blob.digest, store.path(layer.blob.digest))
            layer_descs.append(
                {
                    "mediaType": layer.blob.media_type,
                    "digest": layer.blob.digest,
                    "size": layer.blob.size,
                }
            )
        bin_dirs = [f"{r}/bin" for r in plan.roots if os.path.isdir(f"{root}{r}/bin")]
        image_labels = dict(labels)
        if version:
            image_labels["org.opencontainers.image.version"] = version
        config = cfg.compose(
            platform=platforms[system],
            base=plan.base.config if plan.base else None,
            settings=req.settings,
            bin_dirs=bin_dirs,
            labels=image_labels,
            diff_ids=[x.blob.diff_id for x in plan.layers if x.blob],
            layer_paths=[x.paths for x in plan.layers],
        )
        config_desc = blobs.add_json(spec.CONFIG, config)
        manifest_desc = blobs.add_json(
            spec.MANIFEST,
            {
                "schemaVersion": 2,
                "mediaType": spec.MANIFEST,
                "config": config_desc,
                "layers": layer_descs,
            },
        )
        plan.manifest = {
            "config": config_desc,
            "layers": layer_descs,
            "digest": manifest_desc["digest"],
        }
        manifests.append({**manifest_desc, "platform": platforms[system]})

    if len(manifests) == 1:
        top = {k: v for k, v in manifests[0].items() if k != "platform"}
    else:
        top = blobs.add_json(
            spec.INDEX, {"schemaVersion": 2, "mediaType": spec.INDEX, "manifests": manifests}
        )
    if out.transport == "oci":
        attached = []
        if req.sbom or req.provenance:
            from ..sbom.image import attach_documents

            attached = attach_documents(req, systems, manifests, blobs, name, explicit)
        write_layout(tmp, blobs, top, tag, attached)
    else:
        only = plans[systems[0]].manifest
        assert only is not None
        write_docker_archive(
            tmp,
            blobs,
            top,
            only["config"]["digest"],
            [d["digest"] for d in only["layers"]],
            [f"{name}:{tag}"],
            tag,
        )
    if base_source:
        base_source.close()
    written = sum(x.blob.size for x in todo if x.blob)
    done = f"wrote {out} ({len(all_layers)} layers, {cached} from the cache, {_human(written)} new)"
    return {
        "reference": f"{out}:{tag}" if out.transport == "oci" else str(out),
        "digest": top["digest"],
        "mediaType": top["mediaType"],
        "tag": f"{name}:{tag}",
        "platforms": [
            {
                "system": s,
                "manifest": plans[s].manifest["digest"],  # type: ignore[index]
                "storePaths": plans[s].roots,
                "layers": [
                    {
                        "paths": x.paths,
                        "digest": x.blob.digest if x.blob else None,
                        "cached": x.cached,
                    }
                    for x in plans[s].layers
                ],
            }
            for s in systems
        ],
    }, done
