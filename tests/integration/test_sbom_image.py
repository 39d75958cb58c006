"""SBOM and provenance attached to images: kept in the OCI layout, pushed with the image to a
real registry (distribution 2.8, which has no referrers API: the referrers tag is used), read
back by the image's digest, byte for byte."""

from __future__ import annotations

import base64
import http.server
import json
import re
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from image_fixtures import *  # noqa: F403  (fixtures: registry)
from image_fixtures import Registry, free_port, start_registry, stop_registry
from sbom_fixtures import Checkout, write_checkout

from conftest import one_line_error


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory, busybox: Path) -> Checkout:
    return write_checkout(tmp_path_factory.mktemp("sbom-image") / "checkout", busybox)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_attached_in_the_layout_pushed_and_read_back(dynix, checkout, registry: Registry, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    layout = tmp_path / "app"
    digest = ok(
        dynix(
            "image",
            "build",
            checkout.ref(),
            "-o",
            f"oci:{layout}",
            "--sbom",
            "--provenance",
            cwd=checkout.path,
            env=env,
        )
    ).strip()
    index = json.loads((layout / "index.json").read_text())["manifests"]
    assert [m.get("artifactType") for m in index] == [
        None,
        "application/vnd.cyclonedx+json",
        "application/vnd.in-toto+json",
    ]
    # the attached SBOM is the one `dynix sbom` writes for the same installable
    direct = ok(dynix("sbom", checkout.ref(), cwd=checkout.path))
    assert ok(dynix("sbom", f"oci:{layout}")) == direct
    statement = json.loads(ok(dynix("sbom", "--provenance", f"oci:{layout}")))
    assert statement["subject"][0]["digest"] == {"sha256": digest.removeprefix("sha256:")}
    shown = json.loads(ok(dynix("image", "inspect", "--json", f"oci:{layout}")))
    assert {(a["subject"], a["artifactType"]) for a in shown["artifacts"]} == {
        (digest, "application/vnd.cyclonedx+json"),
        (digest, "application/vnd.in-toto+json"),
    }
    # skopeo still sees one image in the layout
    subprocess.run(["skopeo", "inspect", f"oci:{layout}:latest"], check=True, capture_output=True)

    pushed = ok(dynix("image", "push", "--no-tls-verify", f"oci:{layout}", registry.url("app:1")))
    assert pushed.strip() == f"{registry.url('app:1')}@{digest}"
    ok(dynix("image", "push", "--no-tls-verify", f"oci:{layout}", registry.url("app:1")))
    tag = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            registry.url(f"app:{digest.replace(':', '-')}"),
        ],
        check=True,
        capture_output=True,
    ).stdout
    listed = json.loads(tag)["manifests"]  # pushed twice, listed once
    assert sorted(m["artifactType"] for m in listed) == [
        "application/vnd.cyclonedx+json",
        "application/vnd.in-toto+json",
    ]
    by_digest = f"{registry.url('app')}@{digest}"
    assert ok(dynix("sbom", "--no-tls-verify", by_digest)) == direct
    back = ok(dynix("sbom", "--no-tls-verify", "--provenance", by_digest))
    assert back == ok(dynix("sbom", "--provenance", f"oci:{layout}"))
    remote = json.loads(ok(dynix("image", "inspect", "--json", "--no-tls-verify", by_digest)))
    assert remote["artifacts"] == shown["artifacts"]


def test_spdx_on_request_and_errors(dynix, checkout, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    layout = tmp_path / "spdx"
    ok(
        dynix(
            "image",
            "build",
            checkout.ref("greet"),
            "-o",
            f"oci:{layout}",
            "--sbom",
            "spdx",
            cwd=checkout.path,
            env=env,
        )
    )
    doc = json.loads(ok(dynix("sbom", "--format", "spdx", f"oci:{layout}")))
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert "no application/vnd.cyclonedx+json attached" in one_line_error(
        dynix("sbom", f"oci:{layout}")
    )
    for args in (["--sbom", "swid"], ["--sbom", "-o", f"docker-archive:{tmp_path / 'x.tar'}"]):
        out = ["-o", f"oci:{tmp_path / 'bad'}"] if "-o" not in args else []
        one_line_error(
            dynix("image", "build", checkout.ref("greet"), *args, *out, cwd=checkout.path, env=env)
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "spdx"]


BLOB = re.compile(r"^/v2/[^?]+/blobs/(sha256:[0-9a-f]{64})$")


class Storage(http.server.ThreadingHTTPServer):
    """Where a registry on object storage sends blob reads: on another host, serving the
    registry's blobs to signed URLs and refusing a request that carries a second credential,
    as S3 does ("Only one auth mechanism allowed")."""

    def __init__(self, registry: Registry) -> None:
        self.registry, self.asked, self.refused = registry, [], []
        super().__init__(("127.0.0.2", free_port()), StorageHandler)


class StorageHandler(http.server.BaseHTTPRequestHandler):
    server: Storage

    def do_GET(self) -> None:
        digest = self.path.split("?", 1)[0].lstrip("/")
        self.server.asked.append(digest)
        if self.headers.get("Authorization"):
            self.server.refused.append(digest)
            return self.send_error(400, "Only one auth mechanism allowed")
        hexa = digest.removeprefix("sha256:")
        data = self.server.registry.root.joinpath(
            "docker/registry/v2/blobs/sha256", hexa[:2], hexa, "data"
        ).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class Front(http.server.ThreadingHTTPServer):
    """The registry's own host: every request passed to the real registry (credentials and
    all), except blob reads, which are redirected to the storage host."""

    def __init__(self, registry: Registry, storage: Storage) -> None:
        self.registry, self.storage = registry, storage
        super().__init__(("127.0.0.1", free_port()), FrontHandler)
        self.host = f"127.0.0.1:{self.server_address[1]}"


class FrontHandler(http.server.BaseHTTPRequestHandler):
    server: Front

    def _pass(self) -> None:
        found = BLOB.match(self.path.split("?", 1)[0])
        if found and self.command == "GET":
            self.send_response(307)
            where = self.server.storage.server_address
            self.send_header("Location", f"http://{where[0]}:{where[1]}/{found[1]}?sig=s")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        req = urllib.request.Request(
            f"http://{self.server.registry.host}{self.path}", method=self.command
        )
        for key in ("Authorization", "Accept"):
            if self.headers.get(key):
                req.add_header(key, self.headers[key])
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            status, headers, body = exc.code, exc.headers, exc.read()
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "connection", "transfer-encoding", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _pass

    def log_message(self, *args) -> None:
        pass


def serving(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def test_a_blob_redirected_to_another_host_is_read_without_the_credentials(
    dynix, checkout, tmp_path
):
    password = "pw-for-the-registry-only-5521"
    registry, proc = start_registry(tmp_path / "registry", users={"ci": password})
    storage = Storage(registry)
    front = Front(registry, storage)
    servers = [serving(storage), serving(front)]
    try:
        token = base64.b64encode(f"ci:{password}".encode()).decode()
        authfile = tmp_path / "auth.json"
        authfile.write_text(
            json.dumps({"auths": {registry.host: {"auth": token}, front.host: {"auth": token}}})
        )
        auth = ["--no-tls-verify", "--authfile", str(authfile)]
        layout = tmp_path / "app"
        env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
        build = ["image", "build", checkout.ref(), "-o", f"oci:{layout}", "--sbom"]
        digest = ok(dynix(*build, cwd=checkout.path, env=env)).strip()
        ok(dynix("image", "push", *auth, f"oci:{layout}", f"docker://{registry.host}/app:1"))
        # read back through the host that redirects blob reads to storage
        back = ok(dynix("sbom", *auth, f"docker://{front.host}/app@{digest}"))
        assert back == ok(dynix("sbom", f"oci:{layout}"))
        assert storage.asked and not storage.refused
    finally:
        for server in (front, storage):
            server.shutdown()
            server.server_close()
        for thread in servers:
            thread.join()
        stop_registry(proc)
