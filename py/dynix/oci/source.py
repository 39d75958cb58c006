"""Reading existing images: OCI layout folders, docker archives, and registries (via skopeo).

Used for `--base` and for `dynix image inspect`. JSON blobs (indexes, manifests, configs) are
checked against their digests whenever they are read; layer blobs are checked for size here
and for digest whenever their bytes are copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .. import skopeo
from ..errors import DynixError
from . import spec
from .cache import BlobStore

TRANSPORTS = ("oci", "docker-archive", "docker")


@dataclass(frozen=True)
class ImageRef:
    transport: str
    path: str
    ref: str | None = None

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.path}"
        return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")


def parse_ref(text: str) -> ImageRef:
    """`oci:DIR[:REF]`, `docker-archive:FILE[:NAME:TAG]` or `docker://HOST/REPO[:TAG|@DIGEST]`."""
    if text.startswith("docker://"):
        rest = text[len("docker://") :]
        if not rest:
            raise DynixError(f"no image named in {text!r}")
        return ImageRef("docker", rest)
    transport, sep, rest = text.partition(":")
    if not sep or transport not in ("oci", "docker-archive") or not rest:
        raise DynixError(
            f"unknown image location {text!r}: use oci:DIR, docker-archive:FILE or docker://REF"
        )
    path, ref = rest, None
    if transport == "oci" and ":" in rest or transport == "docker-archive" and ":" in rest:
        path, ref = rest.split(":", 1)
    return ImageRef(transport, path, ref or None)


@dataclass
class Image:
    """One platform's image: its manifest (OCI field names), config and their digests."""

    platform: dict[str, str]
    manifest_digest: str
    manifest: dict[str, Any]
    config_digest: str
    config: dict[str, Any]

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers", []))

    @property
    def system_name(self) -> str:
        p = self.platform
        return "/".join(filter(None, [p.get("os"), p.get("architecture"), p.get("variant")]))


def _parse_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DynixError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DynixError(f"{what} is not a JSON object")
    return data


def _check(raw: bytes, digest: str, what: str) -> None:
    if spec.sha256_digest(raw) != digest:
        raise DynixError(f"{what} does not match its digest {digest}: the image is corrupt")


def _platform_of(config: dict[str, Any]) -> dict[str, str]:
    p = {"architecture": config.get("architecture", ""), "os": config.get("os", "")}
    if config.get("variant"):
        p["variant"] = config["variant"]
    return p


class Source:
    """An image (or an index of images) to read from."""

    def __init__(self, ref: ImageRef) -> None:
        self.ref = ref
        self.top_digest = ""
        self.top_media_type = ""
        self.images: list[Image] = []

    def read_blob(self, digest: str, what: str) -> bytes:
        raise NotImplementedError

    def blob_file(self, digest: str, size: int) -> Path | None:
        """A file holding exactly this blob, to link or copy as it is; None when there is none."""
        return None

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[BinaryIO]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- shared ---------------------------------------------------------------------------
    def _json_blob(self, desc: dict[str, Any], what: str) -> dict[str, Any]:
        digest = desc.get("digest", "")
        spec.hex_of(digest)
        raw = self.read_blob(digest, what)
        _check(raw, digest, f"{what} in {self.ref}")
        return _parse_json(raw, f"{what} in {self.ref}")

    def _load(self, desc: dict[str, Any], raw: bytes | None = None) -> None:
        """Read the index or manifest that `desc` names, and the images below it."""
        self.top_digest = desc["digest"]
        doc = _parse_json(raw, f"manifest of {self.ref}") if raw else self._json_blob(desc, "index")
        media = doc.get("mediaType") or desc.get("mediaType", "")
        self.top_media_type = media
        if media in spec.INDEX_TYPES or "manifests" in doc:
            for entry in doc.get("manifests", []):
                plat = entry.get("platform", {})
                if plat.get("os") == "unknown":  # attestations, not images
                    continue
                self.images.append(self._image(entry, plat))
        else:
            self.images.append(self._image(desc, None, doc))
        if not self.images:
            raise DynixError(f"{self.ref} holds no image")

    def _image(
        self, desc: dict[str, Any], plat: dict[str, str] | None, manifest: dict | None = None
    ) -> Image:
        manifest = manifest or self._json_blob(desc, "manifest")
        cdesc = manifest.get("config")
        if not isinstance(cdesc, dict) or not isinstance(manifest.get("layers"), list):
            raise DynixError(f"manifest {desc.get('digest')} in {self.ref} has no config/layers")
        config = self._json_blob(cdesc, "config")
        return Image(
            plat or _platform_of(config), desc["digest"], manifest, cdesc["digest"], config
        )

    def image_for(self, platform: dict[str, str]) -> Image:
        want = (platform["os"], platform["architecture"])
        for image in self.images:
            if (image.platform.get("os"), image.platform.get("architecture")) == want:
                return image
        have = ", ".join(i.system_name for i in self.images)
        raise DynixError(f"{self.ref} has no {want[0]}/{want[1]} image (it has: {have})")

    def copy_blob(self, desc: dict[str, Any], store: BlobStore) -> Path:
        """This blob as a file: its own when it has one, else copied (and verified) into `store`."""
        digest, size = desc["digest"], int(desc.get("size", -1))
        own = self.blob_file(digest, size)
        if own is not None:
            return own
        dest = store.path(digest)
        if store.intact(digest, size):
            return dest
        from .layers import Blob

        def produce(out: BinaryIO) -> Blob:
            h, n = hashlib.sha256(), 0
            with self.open_blob(digest) as src:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
                    n += len(chunk)
            got = "sha256:" + h.hexdigest()
            if got != digest or (size >= 0 and n != size):
                raise DynixError(
                    f"blob {digest} of {self.ref} is corrupt (its bytes hash to {got})"
                )
            return Blob(digest, "", n, desc.get("mediaType", ""))

        store.write(None, produce)
        return dest


class OciDir(Source):
    def __init__(self, ref: ImageRef) -> None:
        super().__init__(ref)
        self.root = Path(ref.path)
        if not (self.root / "index.json").is_file():
            raise DynixError(f"{ref}: no OCI layout there (no index.json)")
        try:
            index = _parse_json((self.root / "index.json").read_bytes(), f"{ref}: index.json")
        except OSError as exc:
            raise DynixError(f"cannot read {self.root}/index.json: {exc.strerror}") from exc
        entries = index.get("manifests")
        if isinstance(entries, list):  # artifacts listed beside the image are not images
            entries = [e for e in entries if not (isinstance(e, dict) and e.get("artifactType"))]
        if not isinstance(entries, list) or not entries:
            raise DynixError(f"{ref}: index.json lists no image")
        if ref.ref:
            chosen = [e for e in entries if e.get("annotations", {}).get(spec.REF_NAME) == ref.ref]
            if not chosen:
                names = [e.get("annotations", {}).get(spec.REF_NAME, "(unnamed)") for e in entries]
                raise DynixError(f"{ref}: no image named {ref.ref} (names: {', '.join(names)})")
        elif len(entries) == 1:
            chosen = entries
        else:
            names = [e.get("annotations", {}).get(spec.REF_NAME, "(unnamed)") for e in entries]
            raise DynixError(
                f"{ref} holds several images; name one as oci:DIR:NAME ({', '.join(names)})"
            )
        self._load(chosen[0])

    def _path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / spec.hex_of(digest)

    def read_blob(self, digest: str, what: str) -> bytes:
        try:
            return self._path(digest).read_bytes()
        except OSError as exc:
            raise DynixError(
                f"{self.ref}: {what} {digest} is missing: the image is corrupt"
            ) from exc

    def blob_file(self, digest: str, size: int) -> Path | None:
        path = self._path(digest)
        try:
            actual = path.stat().st_size
        except OSError as exc:
            raise DynixError(f"{self.ref}: blob {digest} is missing: the image is corrupt") from exc
        if size >= 0 and actual != size:
            raise DynixError(f"{self.ref}: blob {digest} has {actual} bytes, not {size}: corrupt")
        return path

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return open(self._path(digest), "rb")


class DockerArchive(Source):
    def __init__(self, ref: ImageRef) -> None:
        super().__init__(ref)
        try:
            self.tar = tarfile.open(ref.path, "r:")  # noqa: SIM115  (open until close())
            self.members = {m.name.lstrip("./"): m for m in self.tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError) as exc:
            raise DynixError(f"cannot read docker archive {ref.path}: {exc}") from exc
        raw = self._member_bytes("manifest.json")
        try:
            entries = json.loads(raw)
            assert isinstance(entries, list) and entries
        except (ValueError, AssertionError) as exc:
            raise DynixError(f"{ref}: manifest.json is not a list of images") from exc
        if ref.ref:
            entries = [e for e in entries if ref.ref in (e.get("RepoTags") or [])]
            if not entries:
                raise DynixError(f"{ref}: no image tagged {ref.ref}")
        elif len(entries) > 1:
            raise DynixError(
                f"{ref} holds several images; name one as docker-archive:FILE:NAME:TAG"
            )
        entry = entries[0]
        self.paths: dict[str, str] = {}
        config_raw = self._member_bytes(entry["Config"])
        config = _parse_json(config_raw, f"{ref}: config")
        config_digest = spec.sha256_digest(config_raw)
        self.paths[config_digest] = entry["Config"]
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        layers = []
        for i, name in enumerate(entry.get("Layers", [])):
            layers.append(self._layer_desc(name, diff_ids[i] if i < len(diff_ids) else None))
        manifest = {
            "schemaVersion": 2,
            "mediaType": spec.MANIFEST,
            "config": {"mediaType": spec.CONFIG, "digest": config_digest, "size": len(config_raw)},
            "layers": layers,
        }
        raw_manifest = spec.canonical_json(manifest)
        digest = spec.sha256_digest(raw_manifest)
        self.top_digest, self.top_media_type = digest, spec.MANIFEST
        self.images = [Image(_platform_of(config), digest, manifest, config_digest, config)]

    def _member(self, name: str) -> tarfile.TarInfo:
        member = self.members.get(name.lstrip("./"))
        if member is None:
            raise DynixError(f"{self.ref}: {name} is missing: the archive is corrupt")
        return member

    def _member_bytes(self, name: str) -> bytes:
        handle = self.tar.extractfile(self._member(name))
        assert handle is not None
        return handle.read()

    def _layer_desc(self, name: str, diff_id: str | None) -> dict[str, Any]:
        member = self._member(name)
        handle = self.tar.extractfile(member)
        assert handle is not None
        compression = spec.sniff_compression(handle.read(4))
        parts = name.split("/")
        if len(parts) == 3 and parts[:2] == ["blobs", "sha256"]:
            digest = f"sha256:{parts[2]}"
        elif compression == "none" and diff_id:
            digest = diff_id
        else:
            handle.seek(0)
            h = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                h.update(chunk)
            digest = "sha256:" + h.hexdigest()
        self.paths[digest] = name
        return {
            "mediaType": spec.layer_media_type(compression),
            "digest": digest,
            "size": member.size,
        }

    def read_blob(self, digest: str, what: str) -> bytes:
        return self._member_bytes(self.paths[digest])

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[BinaryIO]:
        handle = self.tar.extractfile(self._member(self.paths[digest]))
        assert handle is not None
        return contextlib.closing(handle)  # type: ignore[return-value]

    def close(self) -> None:
        self.tar.close()


def _repository(path: str) -> str:
    """`host/repo:tag` or `host/repo@sha256:…` without its tag or digest."""
    if "@" in path:
        return path.split("@", 1)[0]
    head, _, last = path.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


class Registry(Source):
    """An image in a registry, read through `skopeo inspect --raw`."""

    def __init__(self, ref: ImageRef, *, tls_verify: bool | None, authfile: str | None) -> None:
        super().__init__(ref)
        self.repo = _repository(ref.path)
        self.tls_verify, self.authfile = tls_verify, authfile
        self._config_of: dict[str, str] = {}  # config digest -> the manifest that names it
        raw = self._inspect(str(ref))
        media = _parse_json(raw, f"manifest of {ref}").get("mediaType", spec.MANIFEST)
        self._load({"digest": spec.sha256_digest(raw), "mediaType": media}, raw)

    def _inspect(self, reference: str, config: bool = False) -> bytes:
        return skopeo.inspect_raw(
            reference, config=config, tls_verify=self.tls_verify, authfile=self.authfile
        )

    def read_blob(self, digest: str, what: str) -> bytes:
        if what == "config":
            return self._inspect(f"docker://{self.repo}@{self._config_of[digest]}", config=True)
        return self._inspect(f"docker://{self.repo}@{digest}")

    def _image(
        self, desc: dict[str, Any], plat: dict[str, str] | None, manifest: dict | None = None
    ) -> Image:
        manifest = manifest or self._json_blob(desc, "manifest")
        cdesc = manifest.get("config", {})
        self._config_of[cdesc.get("digest", "")] = desc["digest"]
        return super()._image(desc, plat, manifest)


def open_source(
    ref: ImageRef, *, tls_verify: bool | None = None, authfile: str | None = None
) -> Source:
    if ref.transport == "oci":
        return OciDir(ref)
    if ref.transport == "docker-archive":
        return DockerArchive(ref)
    return Registry(ref, tls_verify=tls_verify, authfile=authfile)
