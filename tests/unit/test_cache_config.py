"""The user config's cache registry, cache URLs and keys, and the build-route decision: the pure
parts, without Nix."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dynix import platforms
from dynix.config import Cache, Config, normalise_url, parse_key, public_from_secret
from dynix.errors import DynixError

SEED = bytes(range(32))
PUBLIC = bytes(range(32, 64))
SECRET_KEY = "k-1:" + base64.b64encode(SEED + PUBLIC).decode()
PUBLIC_KEY = "k-1:" + base64.b64encode(PUBLIC).decode()


def test_public_key_is_the_second_half_of_the_secret_key():
    assert public_from_secret(SECRET_KEY) == PUBLIC_KEY
    assert parse_key(PUBLIC_KEY) == ("k-1", PUBLIC)


@pytest.mark.parametrize("bad", ["", "k-1", "k-1:", ":abc", "k-1:not-base64!", "k-1:AAAA"])
def test_malformed_public_keys_are_refused(bad):
    with pytest.raises(DynixError, match="not a Nix public key"):
        parse_key(bad)


def test_a_malformed_secret_key_is_never_echoed():
    with pytest.raises(DynixError) as info:
        parse_key("k-1:c2VjcmV0", secret=True)
    assert "c2VjcmV0" not in str(info.value)


@pytest.mark.parametrize(
    "url,expected",
    [
        ("cachix:dynamo", ("https://dynamo.cachix.org", "dynamo")),
        ("https://dynamo.cachix.org", ("https://dynamo.cachix.org", "dynamo")),
        ("https://dynamo.cachix.org/", ("https://dynamo.cachix.org", "dynamo")),
        ("file:///srv/cache", ("file:///srv/cache", None)),
        ("s3://bucket?region=eu-west-1", ("s3://bucket?region=eu-west-1", None)),
        ("ssh-ng://builder", ("ssh-ng://builder", None)),
        ("http://10.0.0.1:5000", ("http://10.0.0.1:5000", None)),
    ],
)
def test_cache_urls(url, expected):
    assert normalise_url(url) == expected


def test_set_and_remove_cache_keep_comments_and_unknown_tables(tmp_path: Path):
    path = tmp_path / "config.toml"
    text = "# top\n[serve]\nport = 8000  # http\n\n[caches.old]  # keep\nurl = 'file:///old'\n"
    path.write_text(text)
    cfg = Config.load(path)
    cfg.set_cache(Cache("new", "file:///new", PUBLIC_KEY, "/k.sec"))
    cfg.save()
    again = Config.load(path)
    assert list(again.caches) == ["old", "new"]
    assert again.caches["new"].public_key == PUBLIC_KEY
    assert "port = 8000  # http" in path.read_text()
    assert "[caches.old]  # keep" in path.read_text()
    again.remove_cache("new")
    again.save()
    assert path.read_text().rstrip() == text.rstrip()  # tomlkit may leave a blank line


def test_a_missing_config_file_is_empty_and_created_on_save(tmp_path: Path):
    path = tmp_path / "sub" / "config.toml"
    cfg = Config.load(path)
    assert cfg.caches == {} and not cfg.exists
    cfg.set_cache(Cache("c", "file:///c"))
    cfg.save()
    assert Config.load(path).caches["c"].url == "file:///c"


def test_builders_from_the_build_table(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[build]\nbuilders = ["ssh-ng://a aarch64-linux", "ssh://b x86_64-linux"]\n')
    assert Config.load(path).builders == "ssh-ng://a aarch64-linux; ssh://b x86_64-linux"
    path.write_text("[build]\nbuilders = 3\n")
    with pytest.raises(DynixError, match=r"c.toml:2: 'builders' must be"):
        Config.load(path)


def test_route_native_remote_emulation_and_none(tmp_path: Path):
    x86 = {"system": "x86_64-linux", "extra-platforms": ["aarch64-linux", "i686-linux"]}
    no_binfmt = tmp_path / "empty"
    no_binfmt.mkdir()
    binfmt = tmp_path / "binfmt"
    binfmt.mkdir()
    (binfmt / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-aarch64\n")
    arm_builder = platforms.parse_builders("ssh-ng://gb200 aarch64-linux")

    assert platforms.route("x86_64-linux", x86, [], binfmt_dir=no_binfmt).how == "native"
    assert platforms.route("i686-linux", x86, [], binfmt_dir=no_binfmt).how == "native"
    way = platforms.route("aarch64-linux", x86, arm_builder, binfmt_dir=no_binfmt)
    assert (way.how, way.detail) == ("remote", "ssh-ng://gb200")
    way = platforms.route("aarch64-linux", x86, [], binfmt_dir=binfmt)
    assert (way.how, way.detail) == ("emulation", "binfmt qemu-aarch64")

    with pytest.raises(DynixError, match="binfmt_misc has no enabled qemu-aarch64"):
        platforms.route("aarch64-linux", x86, [], binfmt_dir=no_binfmt)
    (binfmt / "qemu-aarch64").write_text("disabled\n")
    with pytest.raises(DynixError, match="update-binfmts --enable qemu-aarch64"):
        platforms.route("aarch64-linux", x86, [], binfmt_dir=binfmt)
    bare = {"system": "x86_64-linux", "extra-platforms": []}
    with pytest.raises(DynixError, match="no remote builder for it and no emulation"):
        platforms.route("aarch64-linux", bare, [], binfmt_dir=no_binfmt)
