"""`dynix sbom`: CycloneDX and SPDX documents of real closures, checked with the formats' own
libraries (cyclonedx-python-lib's JSON schema validation, spdx-tools' validator) and against
what `nix path-info -r` says of the same closure."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.model.bom import Bom
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from sbom_fixtures import GREETING_PATCH, Checkout, write_checkout
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from conftest import PLANTER, nix, one_line_error, plant_link
from conftest import test_env as dynix_env


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory, busybox: Path) -> Checkout:
    return write_checkout(tmp_path_factory.mktemp("sbom") / "checkout", busybox)


def sbom(dynix, checkout: Checkout, *args: str, env: dict[str, str] | None = None) -> bytes:
    out = checkout.path.parent / "out.json"
    proc = dynix("sbom", *args, "-o", out, cwd=checkout.path, env=env)
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


def closure(installable: str, store: str | None = None) -> dict[str, dict]:
    """`nix path-info -r --json`: path -> its entry."""
    args = ["--store", store] if store else []
    out = nix("path-info", "--json", "-r", *args, installable).stdout
    return {e["path"]: e for e in json.loads(out)}


def nar_hex(entry: dict) -> str:
    out = nix("hash", "to-base16", entry["narHash"]).stdout.strip()
    return out


def by_name(components: list[dict], name: str) -> dict:
    [found] = [c for c in components if c["name"] == name and "/nix/store/" in c["bom-ref"]]
    return found


def test_cyclonedx_validates_and_is_the_closure_with_its_pins_and_patches(dynix, checkout):
    raw = sbom(dynix, checkout, checkout.ref())
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(raw.decode()) is None
    Bom.from_json(json.loads(raw))  # the library reads it back as a BOM
    doc = json.loads(raw)
    expected = closure(checkout.ref())
    components = doc["components"]
    stored = {c["bom-ref"]: c for c in components if c["bom-ref"].startswith("/nix/store/")}
    assert set(stored) == set(expected)
    for path, entry in expected.items():
        assert stored[path]["hashes"] == [{"alg": "SHA-256", "content": nar_hex(entry)}]
    graph = {d["ref"]: set(d["dependsOn"]) for d in doc["dependencies"] if d["ref"] in stored}
    assert graph == {p: set(e["references"]) - {p} for p, e in expected.items()}

    licences = {c["name"]: c.get("licenses") for c in stored.values()}
    assert licences["tool"] == [
        {"license": {"id": "Apache-2.0"}},
        {"license": {"id": "BSD-3-Clause"}},
    ]
    assert licences["app"] == [
        {"license": {"id": "MIT"}},
        {"license": {"name": "NVIDIA Proprietary"}},
    ]

    greet = by_name(components, "greet")["pedigree"]
    [source] = greet["ancestors"]
    assert source["purl"] == "pkg:pypi/greet@1.0"
    assert source["hashes"][0]["content"] == hashlib.sha256(b"hello\n").hexdigest()
    serial = doc["serialNumber"].removeprefix("urn:uuid:")
    assert [p["diff"]["url"] for p in greet["patches"]] == [
        f"urn:cdx:{serial}/1#patch%3Apatches%2Fgreet%2F0001-greeting.patch",
        f"urn:cdx:{serial}/1#pin%3Agreet-extra",
    ]
    refs = {c["bom-ref"]: c for c in components}
    patch = refs["patch:patches/greet/0001-greeting.patch"]
    assert patch["hashes"][0] == {
        "alg": "SHA-256",
        "content": hashlib.sha256(GREETING_PATCH.encode()).hexdigest(),
    }
    assert PackageURL.from_string(refs["pin:greet-extra"]["purl"]).type == "generic"
    tool = by_name(components, "tool")["pedigree"]
    assert [a["purl"] for a in tool["ancestors"]] == ["pkg:github/example/tool@v2.0"]
    assert "patches" not in tool
    [base] = by_name(components, "app")["pedigree"]["ancestors"]
    purl = PackageURL.from_string(base["purl"])
    assert (purl.type, purl.name, purl.version) == (
        "oci",
        "base",
        f"sha256:{checkout.hashes['digest']}",
    )
    assert purl.qualifiers["repository_url"] == "registry.example.org/library/base"
    assert "busybox" not in {c["name"] for c in components if "pedigree" in c}
    assert not any("unused" in ref for ref in refs)


def test_spdx_validates_and_is_the_closure_with_its_pins_and_patches(dynix, checkout):
    out = checkout.path.parent / "doc.spdx.json"
    out.write_bytes(sbom(dynix, checkout, checkout.ref(), "--format", "spdx"))
    assert validate_full_spdx_document(parse_file(str(out))) == []
    doc = json.loads(out.read_bytes())
    expected = closure(checkout.ref())
    ids = {}
    for pkg in doc["packages"]:
        if pkg["SPDXID"].startswith("SPDXRef-nix-"):
            path = pkg["comment"].split()[3].rstrip(";")
            ids[pkg["SPDXID"]] = path
            assert pkg["checksums"] == [
                {"algorithm": "SHA256", "checksumValue": nar_hex(expected[path])}
            ]
    assert set(ids.values()) == set(expected)
    rels = doc["relationships"]
    depends = {
        (ids[r["spdxElementId"]], ids[r["relatedSpdxElement"]])
        for r in rels
        if r["relationshipType"] == "DEPENDS_ON"
    }
    assert depends == {(p, r) for p, e in expected.items() for r in e["references"] if r != p}
    named = {v: k for k, v in ids.items()}
    greet = named[next(p for p in expected if p.endswith("-greet-1.0"))]
    assert {
        r["relatedSpdxElement"]
        for r in rels
        if r["spdxElementId"] == greet and r["relationshipType"] == "GENERATED_FROM"
    } == {"SPDXRef-pin-greet"}
    patches = [
        (r["spdxElementId"], r["comment"])
        for r in rels
        if r["relationshipType"] == "PATCH_APPLIED" and r["relatedSpdxElement"] == greet
    ]
    assert patches == [
        ("SPDXRef-patch-patches-greet-0001-greeting.patch", "patch 1 of 2"),
        ("SPDXRef-pin-greet-extra", "patch 2 of 2"),
    ]


def test_same_closure_same_bytes_in_another_store_too(dynix, checkout, tmp_path):
    first = sbom(dynix, checkout, checkout.ref(), "--format", "spdx")
    assert sbom(dynix, checkout, checkout.ref(), "--format", "spdx") == first
    to_stdout = dynix("sbom", checkout.ref(), "--format", "spdx", "-o", "-", cwd=checkout.path)
    assert to_stdout.returncode == 0 and to_stdout.stdout.encode() == first
    assert not (checkout.path / "-").exists()
    store = str(tmp_path / "store")
    other = sbom(dynix, checkout, checkout.ref(), "--format", "spdx", "--store", store)
    assert other == first
    assert set(closure(checkout.ref(), store)) == set(closure(checkout.ref()))
    relative = os.path.relpath(store, checkout.path)  # a folder named as users type it
    cdx = sbom(dynix, checkout, checkout.ref(), "--store", relative)
    assert cdx == sbom(dynix, checkout, checkout.ref())
    later = sbom(dynix, checkout, checkout.ref(), env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert json.loads(later)["metadata"]["timestamp"] == "2023-11-14T22:13:20Z"
    assert later.replace(b"2023-11-14T22:13:20Z", b"1970-01-01T00:00:00Z") == cdx


def test_bad_input_says_one_line_and_leaves_nothing(dynix, checkout, tmp_path):
    out = tmp_path / "sbom.json"
    for args in (
        [checkout.ref(), "--format", "swid"],
        [checkout.ref("broken")],
        [checkout.ref(), "--created", "yesterday"],
        [checkout.ref(), "--created", "2025-05-01"],
    ):
        proc = dynix("sbom", *args, "-o", out, cwd=checkout.path)
        one_line_error(proc)
        assert list(tmp_path.iterdir()) == []
    proc = dynix("sbom", checkout.ref(), "--store", "flake.nix", "-o", out, cwd=checkout.path)
    assert proc.returncode == 2 and "is a file" in proc.stderr  # a usage error
    assert list(tmp_path.iterdir()) == []
    proc = dynix(
        "sbom", checkout.ref(), "-o", tmp_path / "no" / "such" / "dir.json", cwd=checkout.path
    )
    assert "cannot write" in one_line_error(proc)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    proc = dynix("sbom", checkout.ref(), "-o", folder, cwd=checkout.path)
    assert "cannot write" in one_line_error(proc)
    assert [p.name for p in tmp_path.iterdir()] == ["a-folder"]
    assert list(folder.iterdir()) == []
    # a pins file that is named or found but cannot be read is an error, and is left as it is
    bad = folder / "pkgs" / "pins.toml"
    bad.parent.mkdir()
    bad.write_text("[vllm\n")
    for env, cwd in (({"DYNIX_PINS": str(bad)}, checkout.path), (None, folder)):
        proc = dynix("sbom", checkout.ref(), "-o", out, cwd=cwd, env=env)
        assert f"{bad}:1:" in one_line_error(proc)
    proc = dynix("sbom", checkout.ref(), "-o", out, env={"DYNIX_PINS": str(tmp_path / "none")})
    assert "cannot read pins file" in one_line_error(proc)
    assert bad.read_text() == "[vllm\n" and not out.exists()


def test_an_unwritable_output_is_refused_before_the_build(dynix, checkout, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    # the installable does not build: the output's error comes first, so nothing was built
    for out, said in (
        (folder, "it is a folder"),
        (tmp_path / "no" / "such.json", f"there is no folder {tmp_path / 'no'}"),
    ):
        proc = dynix("sbom", checkout.ref("broken"), "-o", out, cwd=checkout.path)
        assert said in one_line_error(proc)
        assert "nix build" not in proc.stderr


def test_devices_pipes_and_open_files_are_written_into_never_replaced(dynix, checkout, tmp_path):
    whole = sbom(dynix, checkout, checkout.ref())
    # a FIFO: its reader gets the document, and it stays a FIFO
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        proc = dynix("sbom", checkout.ref(), "-o", fifo, cwd=checkout.path, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert reader.communicate(timeout=30)[0] == whole
    finally:
        reader.kill()  # a FIFO replaced by a file would leave it waiting
        reader.wait()
    # /dev/stdout is the file the caller opened, written at its offset: appended here
    log = tmp_path / "log"
    log.write_bytes(b"before\n")
    with open(log, "ab") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "dynix", "sbom", checkout.ref(), "-o", "/dev/stdout"],
            cwd=checkout.path,
            env=dynix_env(),
            stdout=sink,
            stderr=subprocess.PIPE,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert log.read_bytes() == b"before\n" + whole
    # /dev/fd/N, as a shell's `-o >(command)` passes it: a pipe the caller holds
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe:
        done = subprocess.run(
            [sys.executable, "-m", "dynix", "sbom", checkout.ref(), "-o", f"/dev/fd/{write_end}"],
            cwd=checkout.path,
            env=dynix_env(),
            pass_fds=[write_end],
            capture_output=True,
            check=False,
        )
        os.close(write_end)
        assert done.returncode == 0, done.stderr
        assert pipe.read() == whole
    # a device (a node of /dev/full's, made here so that a bug cannot replace the real one):
    # full, it is one line; it stays the device
    full = tmp_path / "full"
    try:
        os.mknod(full, stat.S_IFCHR | 0o600, os.makedev(1, 7))
        os.close(os.open(full, os.O_WRONLY))
    except OSError as exc:
        pytest.skip(f"cannot make and open a device node here: {exc.strerror}")
    proc = dynix("sbom", checkout.ref(), "-o", full, cwd=checkout.path)
    assert "No space left on device" in one_line_error(proc)
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_links_are_followed_unless_another_user_planted_them(dynix, checkout, tmp_path):
    mine = tmp_path / "mine.json"
    link = tmp_path / "link.json"
    link.symlink_to(mine)
    proc = dynix("sbom", checkout.ref(), "-o", link, cwd=checkout.path)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and mine.read_bytes() == sbom(dynix, checkout, checkout.ref())
    precious = tmp_path / "precious"
    precious.write_text("keep\n")
    shared = tmp_path / "shared"
    planted = plant_link(shared, "out.json", precious)
    plant_link(shared, "dir", tmp_path)
    for out in (planted, shared / "dir" / "new.json"):
        proc = dynix("sbom", checkout.ref(), "-o", out, cwd=checkout.path)
        assert f"another user (uid {PLANTER})" in one_line_error(proc)
    proc = dynix(
        "image",
        "build",
        checkout.ref(),
        "-o",
        f"oci:{shared / 'dir' / 'layout'}",
        cwd=checkout.path,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert f"another user (uid {PLANTER})" in one_line_error(proc)
    assert precious.read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "link.json",
        "mine.json",
        "precious",
        "shared",
    ]


def test_provenance_is_an_slsa_statement_of_the_flake_pins_and_patches(dynix, checkout):
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    raw = sbom(dynix, checkout, checkout.ref(), "--provenance")
    doc = json.loads(raw)
    pb = json_format.ParseDict(doc, statement_pb2.Statement())  # strict: no unknown fields
    Statement.copy_from_pb(pb).validate()
    json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    [root] = [p for p in closure(checkout.ref()) if p.endswith("-app-3.0")]
    entry = closure(root)[root]
    assert doc["subject"] == [{"name": root, "digest": {"sha256": nar_hex(entry)}}]
    build = doc["predicate"]["buildDefinition"]
    meta = json.loads(nix("flake", "metadata", "--json", f"path:{checkout.path}").stdout)
    assert build["externalParameters"] == {
        "flake": {"narHash": meta["locked"]["narHash"]},
        "installables": [checkout.ref()],
        "system": "x86_64-linux",
    }
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    locked = meta["locks"]["nodes"]["nixpkgs"]["locked"]
    assert deps["nixpkgs"]["digest"]["gitCommit"] == checkout.nixpkgs_rev
    assert deps["nixpkgs"]["annotations"]["narHash"] == locked["narHash"]
    assert set(deps) == {
        "nixpkgs",
        "pin:greet",
        "pin:greet-extra",
        "pin:tool",
        "pin:base:x86_64-linux",
        "patch:patches/greet/0001-greeting.patch",
    }
    assert deps["pin:tool"]["uri"] == "pkg:github/example/tool@v2.0"
    assert deps["pin:greet"]["digest"] == {"sha256": hashlib.sha256(b"hello\n").hexdigest()}
    assert deps["patch:patches/greet/0001-greeting.patch"]["digest"] == {
        "sha256": hashlib.sha256(GREETING_PATCH.encode()).hexdigest()
    }
    version = nix("--version").stdout.split()[-1]
    assert doc["predicate"]["runDetails"]["builder"]["version"]["nix"] == version


def test_signed_provenance_verifies_with_securesystemslib(dynix, checkout, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    signed = sbom(dynix, checkout, checkout.ref(), "--provenance", "--signing-key", pem)
    assert sbom(dynix, checkout, checkout.ref(), "--provenance", "--signing-key", pem) == signed
    envelope = json.loads(signed)
    public = SSlibKey.from_crypto(key.public_key(), keyid=envelope["signatures"][0]["keyid"])
    verified = Envelope.from_dict(envelope).verify([public], 1)
    assert public.keyid in verified
    unsigned = json.loads(sbom(dynix, checkout, checkout.ref(), "--provenance"))
    assert json.loads(base64.b64decode(envelope["payload"])) == unsigned

    # A Nix signing key (the kind binary caches are signed with) signs as it is.
    secret = nix("key", "generate-secret", "--key-name", "builder-1").stdout.strip()
    (tmp_path / "nix.key").write_text(secret)
    envelope = json.loads(
        sbom(dynix, checkout, checkout.ref(), "--provenance", "--signing-key", tmp_path / "nix.key")
    )
    public_text = nix("key", "convert-secret-to-public", input=secret).stdout.strip()
    raw_public = base64.b64decode(public_text.split(":", 1)[1])
    nix_key = SSlibKey("builder-1", "ed25519", "ed25519", {"public": raw_public.hex()})
    assert envelope["signatures"][0]["keyid"] == "builder-1"
    Envelope.from_dict(envelope).verify([nix_key], 1)


def test_a_key_that_cannot_sign_is_refused_before_the_build(dynix, checkout, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    key = ["--provenance", "--signing-key", bad]
    layout = ["-o", f"oci:{tmp_path / 'image'}", "--sbom"]
    # the installable does not build: the key's error comes first, so nothing was built
    for args in (["sbom", *key], ["image", "build", *layout, *key]):
        proc = dynix(*args, checkout.ref("broken"), cwd=checkout.path, env=env)
        assert "neither a PEM Ed25519 key nor a Nix secret key" in one_line_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.key"]


@pytest.fixture
def nix_calls(monkeypatch):
    """Run dynix's Nix calls in this process, with the tests' Nix configuration, recording
    each one's subcommand, start and end."""
    import time

    import conftest
    from dynix import process

    for key, value in conftest.test_env().items():
        monkeypatch.setenv(key, value)
    for key in ("DYNIX_PINS", "DYNIX_PATCHES"):
        monkeypatch.delenv(key, raising=False)
    subcommands = ("build", "eval", "path-info", "show-derivation", "flake", "--version")
    calls: list[tuple[str, float, float]] = []
    real = process.run

    def run(argv, **kwargs):
        start = time.monotonic()
        try:
            return real(argv, **kwargs)
        finally:
            name = next((a for a in argv if a in subcommands), argv[0])
            calls.append((name, start, time.monotonic()))

    monkeypatch.setattr(process, "run", run)
    return calls


def render(checkout: Checkout, store: str | None = None) -> bytes:
    from dynix.sbom import closure, documents, pedigree

    pins, patches_root = pedigree.load_project(None)  # the checkout's, as the CLI finds them
    found = closure.read([checkout.ref()], store=store, pins=pins, patches_root=patches_root)
    return b"".join(documents.render(found, "cyclonedx", created="1970-01-01T00:00:00Z"))


def test_evaluation_and_closure_run_beside_the_build_once_the_store_is_set_up(
    dynix, checkout, tmp_path, nix_calls, monkeypatch
):
    monkeypatch.chdir(checkout.path)
    expected = sbom(dynix, checkout, checkout.ref())
    assert render(checkout) == expected
    spans = {name: (start, end) for name, start, end in nix_calls}
    assert {"build", "eval", "path-info", "show-derivation"} <= set(spans)
    # the evaluation and the closure started before the build ended, and no second path-info
    assert spans["eval"][0] < spans["build"][1] and spans["path-info"][0] < spans["build"][1]
    assert [n for n, *_ in nix_calls].count("path-info") == 1

    # A store that does not exist yet: Nix sets it up in the build, before anything beside it.
    nix_calls.clear()
    store = str(tmp_path / "store")
    assert render(checkout, store) == expected
    spans = {name: (start, end) for name, start, end in nix_calls}
    assert spans["eval"][0] >= spans["build"][1]
    # path-info ran once, after the build (nothing was tried beside it)
    assert [n for n, *_ in nix_calls].count("path-info") == 1
    assert spans["path-info"][0] >= spans["build"][1]


def test_a_licence_walk_that_fails_beside_the_build_runs_again(
    dynix, checkout, nix_calls, monkeypatch, capsys
):
    """The document does not depend on whether the walk beside the build got through."""
    import threading

    from dynix import nix as dynix_nix

    monkeypatch.chdir(checkout.path)
    expected = sbom(dynix, checkout, checkout.ref())
    real = dynix_nix.eval_json
    failed = []

    def eval_json(**kwargs):
        if threading.current_thread() is not threading.main_thread() and not failed:
            failed.append(kwargs["installable"])
            raise dynix_nix.NixError(["nix", "eval"], 1, "error: tripped over", what="nix eval")
        return real(**kwargs)

    monkeypatch.setattr(dynix_nix, "eval_json", eval_json)
    assert render(checkout) == expected
    assert failed == [checkout.ref()]
    assert "not recorded" not in capsys.readouterr().err


def test_a_store_derivation_is_its_outputs_closure_without_a_licence_walk(
    dynix, checkout, tmp_path
):
    drv = nix("path-info", "--derivation", checkout.ref()).stdout.split()[0]
    assert drv.endswith(".drv")
    out = tmp_path / "drv.json"
    proc = dynix("sbom", drv, "--no-licences", "-o", out, cwd=checkout.path)
    assert proc.returncode == 0, proc.stderr
    link = tmp_path / "result.drv"
    link.symlink_to(drv)
    proc = dynix("sbom", link, "-o", tmp_path / "link.json", cwd=checkout.path)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    as_drv = json.loads(out.read_bytes())
    expected = closure(checkout.ref())
    refs = {c["bom-ref"] for c in as_drv["components"] if c["bom-ref"].startswith("/nix/store/")}
    assert refs == set(expected)
    assert json.loads((tmp_path / "link.json").read_bytes())["components"] == as_drv["components"]
