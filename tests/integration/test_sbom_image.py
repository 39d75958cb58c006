"""SBOM and provenance attached to images: kept in the OCI layout, pushed with the image to a
real registry (distribution 2.8, which has no referrers API: the referrers tag is used), read
back by the image's digest, byte for byte."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from image_fixtures import *  # noqa: F403  (fixtures: registry)
from image_fixtures import Registry
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
