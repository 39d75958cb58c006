"""`dynix pins` against the real pins file, real Nix and PyPI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import PINS, one_line_error

VLLM_HASH = "sha256-UisT3RbGx3PewMtMQupZFiPQPvlNFtuBKOziYAAX5qw="
OTHER_HASH = "sha256-3FvfmxK7awg9LNrikgs6yJ2f3qZQ4DpK7hEuLxlupeU="


@pytest.fixture
def pins_copy(tmp_path) -> Path:
    path = tmp_path / "pins.toml"
    path.write_text(PINS.read_text())
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_show_json_lists_every_pin(dynix):
    proc = dynix("pins", "--file", PINS, "show", "--json")
    assert proc.returncode == 0, proc.stderr
    pins = {p["name"]: p for p in json.loads(proc.stdout)}
    assert set(pins) >= {
        "vllm",
        "dynamo",
        "dynamo-vllm-patch",
        "nixl",
        "nixl-arm-fork",
        "nats-server",
        "etcd",
        "ngc-pytorch",
    }
    assert pins["nixl-arm-fork"]["alternativeOf"] == "nixl"
    assert pins["nixl-arm-fork"]["unresolved"] == ["hash"]
    assert pins["etcd"]["unresolved"] == [
        "build hash server",
        "build hash etcdctl",
        "build hash etcdutl",
    ]
    assert pins["vllm"]["unresolved"] == []


def test_show_finds_the_pins_file_from_a_subfolder(dynix):
    proc = dynix("pins", "show", cwd=PINS.parent.parent / "tests")
    assert proc.returncode == 0, proc.stderr
    assert "vllm" in proc.stdout


@pytest.mark.network
def test_verify_vllm_against_pypi(dynix):
    proc = dynix("pins", "--file", PINS, "verify", "vllm", "--json")
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["status"] == "ok"
    assert result["got"] == VLLM_HASH


@pytest.mark.network
def test_verify_fails_clearly_on_a_corrupted_hash(dynix, pins_copy):
    pins_copy.write_text(pins_copy.read_text().replace(VLLM_HASH, OTHER_HASH))
    proc = dynix("pins", "--file", pins_copy, "verify", "vllm")
    assert f"vllm: mismatch (pinned {OTHER_HASH}, got {VLLM_HASH})" in proc.stdout
    assert one_line_error(proc) == "Error: pins do not match their sources: vllm"


def test_unreachable_source_is_unverified_not_failed(dynix):
    # GitHub cannot be reached from the test machines; that is reported, not failed.
    proc = dynix("pins", "--file", PINS, "verify", "nats-server", "--json")
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)
    if result["status"] == "ok":
        pytest.skip("GitHub is reachable here: nothing unreachable to report")
    assert result["status"] == "unreachable"


def test_unresolved_image_digest_is_reported_without_fetching(dynix):
    proc = dynix("pins", "--file", PINS, "verify", "ngc-pytorch", "--json")
    assert proc.returncode == 0, proc.stderr
    statuses = {r["label"]: r["status"] for r in json.loads(proc.stdout)}
    assert statuses == {
        "ngc-pytorch (aarch64-linux)": "unresolved",
        "ngc-pytorch (x86_64-linux)": "unresolved",
    }


@pytest.mark.network
def test_lock_changes_only_the_hash_line(dynix, pins_copy):
    original = pins_copy.read_text()
    pins_copy.write_text(original.replace(f'hash = "{VLLM_HASH}"', 'hash = "unresolved"'))
    proc = dynix("pins", "--file", pins_copy, "lock", "vllm")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"vllm: hash unresolved -> {VLLM_HASH}"
    assert pins_copy.read_text() == original


@pytest.mark.network
def test_lock_replaces_a_stale_hash(dynix, pins_copy):
    original = pins_copy.read_text()
    pins_copy.write_text(original.replace(VLLM_HASH, OTHER_HASH))
    proc = dynix("pins", "--file", pins_copy, "lock", "vllm", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changed"] == [
        {"pin": "vllm", "key": "hash", "old": OTHER_HASH, "new": VLLM_HASH}
    ]
    assert pins_copy.read_text() == original


def test_lock_of_an_unreachable_named_pin_fails_and_leaves_the_file(dynix, pins_copy):
    before = digest(pins_copy)
    proc = dynix("pins", "--file", pins_copy, "lock", "nixl-arm-fork")
    assert "could not lock nixl-arm-fork" in one_line_error(proc)
    assert digest(pins_copy) == before


MALFORMED = {
    "syntax": ('[vllm]\nkind = "pypi"\nversion = 0.8.4.x\n', ":3:"),
    "kind": ('[vllm]\nkind = "svn"\n', ":2: pin 'vllm': kind must be one of"),
    "hash": (
        '[a]\nkind = "url"\nurl = "https://x/y"\nhash = "md5-abc"\n',
        ":4: pin 'a': 'hash' must be an SRI hash",
    ),
    "rev": (
        '[a]\nkind = "github"\nowner = "o"\nrepo = "r"\nrev = "main"\nhash = "unresolved"\n',
        ":5: pin 'a': rev must be a full 40-character commit hash",
    ),
    "missing": ('# c\n[a]\nkind = "url"\n', ":2: pin 'a': missing 'url'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("verb", [("show",), ("lock",), ("set", "vllm", "--version", "0.8.5")])
def test_malformed_pins_file_names_its_line_and_stays_untouched(dynix, tmp_path, case, verb):
    text, expected = MALFORMED[case]
    path = tmp_path / "pins.toml"
    path.write_text(text)
    proc = dynix("pins", "--file", path, *verb)
    line = one_line_error(proc)
    assert line.startswith(f"Error: {path}:"), line
    assert expected in line
    assert path.read_text() == text


@pytest.mark.network
def test_set_version_of_a_pypi_pin_finds_the_sdist_and_unresolves_the_hash(dynix, pins_copy):
    proc = dynix("pins", "--file", pins_copy, "set", "vllm", "--version", "0.8.5")
    assert proc.returncode == 0, proc.stderr
    show = json.loads(dynix("pins", "--file", pins_copy, "show", "--json").stdout)
    vllm = next(p for p in show if p["name"] == "vllm")
    assert vllm["version"] == "0.8.5"
    assert vllm["data"]["url"].startswith("https://files.pythonhosted.org/packages/")
    assert vllm["data"]["url"].endswith("/vllm-0.8.5.tar.gz")
    assert vllm["unresolved"] == ["hash"]


def test_set_rev_unresolves_source_and_build_hashes(dynix, pins_copy):
    rev = "0" * 40
    proc = dynix(
        "pins",
        "--file",
        pins_copy,
        "set",
        "nats-server",
        "--rev",
        rev,
        "--version",
        "2.10.25",
        "--tag",
        "v2.10.25",
    )
    assert proc.returncode == 0, proc.stderr
    text = pins_copy.read_text()
    block = text[text.index("[nats-server]") : text.index("[etcd]")]
    assert f'rev = "{rev}"' in block
    assert 'version = "2.10.25"' in block
    assert block.count('"unresolved"') == 2  # source hash and the vendor hash
    assert "# Go vendor tree" in block  # comments survive


def test_set_records_a_build_hash_and_checks_it(dynix, pins_copy):
    proc = dynix("pins", "--file", pins_copy, "set", "etcd", "--build-hash", f"server={OTHER_HASH}")
    assert proc.returncode == 0, proc.stderr
    assert f'server = "{OTHER_HASH}"' in pins_copy.read_text()
    before = digest(pins_copy)
    bad = dynix("pins", "--file", pins_copy, "set", "etcd", "--build-hash", "server=abc")
    assert "not an SRI hash" in one_line_error(bad)
    unknown = dynix("pins", "--file", pins_copy, "set", "etcd", "--build-hash", f"x={OTHER_HASH}")
    assert "has no build hash 'x'" in one_line_error(unknown)
    assert digest(pins_copy) == before


def test_set_image_hash_needs_a_system(dynix, pins_copy):
    proc = dynix("pins", "--file", pins_copy, "set", "ngc-pytorch", "--hash", OTHER_HASH)
    assert "name the system with --system" in one_line_error(proc)
    ok = dynix(
        "pins",
        "--file",
        pins_copy,
        "set",
        "ngc-pytorch",
        "--hash",
        OTHER_HASH,
        "--system",
        "aarch64-linux",
    )
    assert ok.returncode == 0, ok.stderr


def test_set_rejects_coordinates_of_another_kind(dynix, pins_copy):
    before = digest(pins_copy)
    proc = dynix("pins", "--file", pins_copy, "set", "vllm", "--rev", "0" * 40)
    assert "--rev is for github pins" in one_line_error(proc)
    proc = dynix("pins", "--file", pins_copy, "set", "nope", "--rev", "0" * 40)
    assert "no pin named nope" in one_line_error(proc)
    assert digest(pins_copy) == before


def test_set_refuses_credentials_in_a_url_and_values_that_are_not_one_word(dynix, pins_copy):
    before = digest(pins_copy)
    url = "https://ci:hunter2@files.pythonhosted.org/packages/vllm-0.8.5.tar.gz"
    proc = dynix("pins", "--file", pins_copy, "set", "vllm", "--url", url)
    error = one_line_error(proc)
    assert "carries credentials" in error and "netrc" in error
    assert "hunter2" not in proc.stderr
    for option, value in (("--version", "0.8.5\n[evil]"), ("--rev", "abc def")):
        proc = dynix("pins", "--file", pins_copy, "set", "dynamo", "--tag", "v1", option, value)
        assert f"{option} must be one word" in one_line_error(proc)
    assert digest(pins_copy) == before
    # a pins file that already holds such a URL is refused where it is read, naming its line
    pins_copy.write_text(PINS.read_text().replace("https://files.", "https://ci:hunter2@files.", 1))
    error = one_line_error(dynix("pins", "--file", pins_copy, "show"))
    assert f"{pins_copy}:" in error and "carries credentials" in error
    assert "hunter2" not in error


def test_set_without_anything_to_set_is_a_usage_error(dynix, pins_copy):
    proc = dynix("pins", "--file", pins_copy, "set", "vllm")
    assert proc.returncode == 2
