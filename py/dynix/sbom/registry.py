"""The little of the OCI distribution API that artifacts need and skopeo does not do.

skopeo copies images; it cannot push a manifest by digest, rewrites the indexes it copies
(dropping `artifactType`) and does not know the referrers API. This client pushes artifact
manifests and their blobs, asks the referrers API (`GET /v2/<repo>/referrers/<digest>`,
distribution-spec 1.1) and, for registries without it, keeps the referrers tag
(`sha256-<hex>`: an index of the artifacts whose subject is that digest) up to date.

Credentials come from an auth file (containers-auth.json, as skopeo reads it), never argv;
Basic and Bearer (token) authentication are handled. They go to the registry's own host only:
a blob read that the registry redirects to object storage (S3, a CDN: most hosted registries
do) follows the redirect without them, as storage signs its own URLs and refuses a second
credential.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import DynixError
from ..oci import spec


def _credentials(host: str, authfile: str | None) -> str | None:
    """`user:password` base64 for `host`, from the auth file (or containers' default one)."""
    candidates = [authfile] if authfile else []
    if not authfile:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime:
            candidates.append(os.path.join(runtime, "containers", "auth.json"))
        candidates.append(str(Path.home() / ".docker" / "config.json"))
    for path in candidates:
        try:
            auths = json.loads(Path(path).read_text()).get("auths", {})
        except (OSError, ValueError):
            if authfile:
                raise DynixError(f"--authfile {authfile}: cannot read it") from None
            continue
        for key, entry in auths.items():
            if key.removeprefix("https://").removeprefix("http://").split("/")[0] == host:
                return entry.get("auth")
    return None


class _OwnHostOnly(urllib.request.HTTPRedirectHandler):
    """Redirects followed without the credentials when they lead to another host (urllib
    would send them on)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != req.host:
            new.remove_header("Authorization")
        return new


class Client:
    def __init__(
        self,
        host: str,
        repo: str,
        *,
        tls_verify: bool | None,
        authfile: str | None,
        push: bool = False,
    ) -> None:
        self.host, self.repo = host, repo
        self.verify = tls_verify is not False
        self.basic = _credentials(host, authfile)
        self.auth: str | None = None
        self.scheme = "https"
        # a token for what the client does: a reader with pull access only still reads
        self.actions = "pull,push" if push else "pull"
        context = None if self.verify else ssl._create_unverified_context()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _OwnHostOnly
        )

    def _open(self, req: urllib.request.Request) -> Any:
        return self._opener.open(req, timeout=60)

    def _token(self, challenge: str) -> str | None:
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            return f"Basic {self.basic}" if self.basic else None
        fields = dict(
            part.split("=", 1) for part in params.replace('"', "").split(",") if "=" in part
        )
        query = {"service": fields.get("service", "")}
        query["scope"] = f"repository:{self.repo}:{self.actions}"
        url = f"{fields.get('realm', '')}?{urllib.parse.urlencode(query)}"
        req = urllib.request.Request(url)
        if self.basic:
            req.add_header("Authorization", f"Basic {self.basic}")
        try:
            with self._open(req) as resp:
                data = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise DynixError(f"{self.host}: could not get a token: {exc}") from exc
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise DynixError(f"{self.host}: the token service gave no token")
        return f"Bearer {token}"

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        url: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request; tried again over http where TLS is off and fails, and once more with
        credentials after a 401. Returns status, headers, body (a 404 is an answer, other
        errors raise)."""
        asked_auth = False
        while True:  # at most three tries: once more over http, once more with credentials
            target = url or f"{self.scheme}://{self.host}{path}"
            req = urllib.request.Request(target, data=data, method=method)
            for key, value in (headers or {}).items():
                req.add_header(key, value)
            if self.auth and urllib.parse.urlsplit(target).netloc == self.host:
                req.add_header("Authorization", self.auth)
            try:
                with self._open(req) as resp:
                    return resp.status, dict(resp.headers.items()), resp.read()
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and not asked_auth:
                    asked_auth = True
                    self.auth = self._token(exc.headers.get("WWW-Authenticate", ""))
                    if self.auth:
                        continue
                if exc.code == 401:
                    said = "refused the credentials" if self.basic else "wants credentials"
                    raise DynixError(f"{method} {path}: {self.host} {said} (--authfile)") from exc
                if exc.code == 404:
                    return 404, dict(exc.headers.items()), b""
                detail = exc.read()[:200].decode(errors="replace")
                raise DynixError(f"{method} {target}: HTTP {exc.code} {detail}".strip()) from exc
            except (urllib.error.URLError, OSError) as exc:
                if self.scheme == "https" and not self.verify and url is None:
                    self.scheme = "http"  # as skopeo does with --tls-verify=false
                    continue
                raise DynixError(f"{self.host} unreachable: {exc}") from exc

    # -- the API ----------------------------------------------------------------------------
    def _v2(self, kind: str, ref: str) -> str:
        return f"/v2/{self.repo}/{kind}/{ref}"

    def put_blob(self, digest: str, data: bytes) -> None:
        status, _, _ = self.request("HEAD", self._v2("blobs", digest))
        if status == 200:
            return
        _, headers, _ = self.request("POST", f"/v2/{self.repo}/blobs/uploads/")
        location = headers.get("Location", "")
        if location.startswith("/"):
            location = f"{self.scheme}://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        self.request(
            "PUT",
            "",
            url=f"{location}{sep}digest={urllib.parse.quote(digest)}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def get_blob(self, digest: str) -> bytes:
        status, _, body = self.request("GET", self._v2("blobs", digest))
        if status == 404 or spec.sha256_digest(body) != digest:
            raise DynixError(f"{self.host}/{self.repo}: blob {digest} missing or corrupt")
        return body

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> dict[str, str]:
        _, headers, _ = self.request(
            "PUT", self._v2("manifests", ref), data=data, headers={"Content-Type": media_type}
        )
        return headers

    def get_manifest(self, ref: str) -> bytes | None:
        accept = ", ".join([spec.MANIFEST, spec.INDEX, *spec.MANIFEST_TYPES, *spec.INDEX_TYPES])
        status, _, body = self.request(
            "GET", self._v2("manifests", ref), headers={"Accept": accept}
        )
        return None if status == 404 else body

    def referrers(self, digest: str) -> list[dict[str, Any]]:
        """The descriptors of the artifacts whose subject is `digest`: from the referrers API,
        else from the referrers tag."""
        status, _, body = self.request(
            "GET", f"/v2/{self.repo}/referrers/{digest}", headers={"Accept": spec.INDEX}
        )
        if status != 200:
            body = self.get_manifest(tag_of(digest)) or b'{"manifests": []}'
        try:
            return list(json.loads(body).get("manifests", []))
        except (ValueError, AttributeError) as exc:
            raise DynixError(f"{self.host}/{self.repo}: bad referrers index for {digest}") from exc


def tag_of(digest: str) -> str:
    """The referrers tag of a digest: `sha256:abc…` -> `sha256-abc…`."""
    return digest.replace(":", "-")


def split_reference(path: str) -> tuple[str, str, str]:
    """`host/repo:tag` or `host/repo@sha256:…` -> (host, repo, tag or digest)."""
    host, _, rest = path.partition("/")
    if not rest or ("." not in host and ":" not in host and host != "localhost"):
        host, rest = "docker.io", path
    if "@" in rest:
        repo, _, ref = rest.partition("@")
    else:
        repo, _, ref = rest.partition(":")
    return host, repo, ref or "latest"


def push_artifacts(
    client: Client, artifacts: list[tuple[dict[str, Any], bytes, dict[str, bytes]]]
) -> None:
    """Push artifact manifests (descriptor, manifest bytes, blobs by digest) by digest, then
    add them to the referrers tag of their subject unless the registry indexed them."""
    pending: dict[str, list[dict[str, Any]]] = {}
    for desc, raw, blobs in artifacts:
        for digest, data in sorted(blobs.items()):
            client.put_blob(digest, data)
        headers = client.put_manifest(desc["digest"], raw, spec.MANIFEST)
        subject = json.loads(raw)["subject"]["digest"]
        if not any(k.lower() == "oci-subject" for k in headers):
            pending.setdefault(subject, []).append(desc)
    for subject, descs in sorted(pending.items()):
        existing = client.get_manifest(tag_of(subject))
        index = json.loads(existing) if existing else {"schemaVersion": 2, "manifests": []}
        index["mediaType"] = spec.INDEX
        have = {m.get("digest") for m in index.get("manifests", [])}
        index["manifests"] = list(index.get("manifests", [])) + [
            d for d in descs if d["digest"] not in have
        ]
        client.put_manifest(tag_of(subject), spec.canonical_json(index), spec.INDEX)
