"""Edits of users' files are serialised and atomic: two dynix processes editing one file at
once both keep their change; a file reached through a link is edited where it lives."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys

import tomlkit

import conftest
from conftest import one_line_error


def _start(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dynix", *map(str, args)],
        env=conftest.test_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _race(*commands: tuple[object, ...]) -> list[subprocess.CompletedProcess]:
    procs = [_start(*args) for args in commands]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


def test_two_cache_adds_at_once_keep_both_tables(tmp_path):
    for round_ in range(12):
        config = tmp_path / f"config-{round_}.toml"
        config.write_text("# the team's caches\n")
        results = _race(
            ("cache", "add", "a", f"file://{tmp_path}/a", "--config", config),
            ("cache", "add", "b", f"file://{tmp_path}/b", "--config", config),
        )
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        doc = tomlkit.parse(config.read_text())
        assert sorted(doc["caches"]) == ["a", "b"], config.read_text()
        assert config.read_text().startswith("# the team's caches\n")


def test_two_pins_locks_at_once_keep_all_six_hashes(tmp_path):
    sources = {}
    for name in "abcdef":
        data = tmp_path / f"{name}.txt"
        data.write_text(f"source {name}\n")
        sources[name] = data
    text = "".join(
        f'[{n}]\nkind = "url"\nversion = "1"\nurl = "file://{p}"\nhash = "unresolved"\n\n'
        for n, p in sources.items()
    )
    for round_ in range(6):
        pins = tmp_path / f"pins-{round_}.toml"
        pins.write_text(text)
        results = _race(
            ("pins", "--file", pins, "lock", *"abc"), ("pins", "--file", pins, "lock", *"def")
        )
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        doc = tomlkit.parse(pins.read_text())
        for name, path in sources.items():
            digest = hashlib.sha256(path.read_bytes()).digest()
            assert doc[name]["hash"] == "sha256-" + base64.b64encode(digest).decode()


def test_files_reached_through_links_are_edited_where_they_live(dynix, tmp_path):
    real = tmp_path / "dotfiles" / "dynix.toml"
    real.parent.mkdir()
    real.write_text("# mine\n")
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    assert dynix("cache", "add", "a", f"file://{tmp_path}/a", "--config", link).returncode == 0
    assert link.is_symlink() and "[caches.a]" in real.read_text()

    stack = tmp_path / "dotfiles" / "stack.toml"
    assert dynix("serve", "init", stack).returncode == 0
    (tmp_path / "dynix-stack.toml").symlink_to(stack)
    proc = dynix("serve", "init", tmp_path / "dynix-stack.toml", "--set", "serve.port=9000")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "dynix-stack.toml").is_symlink() and "port = 9000" in stack.read_text()

    nix_conf = tmp_path / "dotfiles" / "nix.conf"
    nix_conf.write_text("sandbox = true\n")
    (tmp_path / "nix.conf").symlink_to(nix_conf)
    key = "a-1:" + "A" * 43 + "="
    dynix("cache", "remove", "a", "--config", link)
    proc = dynix("cache", "add", "a", f"file://{tmp_path}/a", "--public-key", key, "--config", link)
    assert proc.returncode == 0, proc.stderr
    proc = dynix("cache", "use", "a", "--config", link, f"--write-nix-conf={tmp_path / 'nix.conf'}")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "nix.conf").is_symlink()
    assert nix_conf.read_text().startswith("sandbox = true\n") and key in nix_conf.read_text()


def test_passwords_in_urls_are_never_printed(dynix, tmp_path):
    config = tmp_path / "c.toml"
    url = "https://alice:s3cret@cache.invalid/team"
    proc = dynix("cache", "add", "team", url, "--config", config)
    assert proc.returncode == 0, proc.stderr
    runs = [
        proc,
        dynix("cache", "list", "--config", config),
        dynix("cache", "list", "--json", "--config", config),
        dynix("--debug", "cache", "status", "/nix/store/" + "a" * 32 + "-x", "--config", config),
        dynix("doctor", "--config", config, "--timeout", "2"),
        dynix("image", "push", f"oci:{tmp_path}/none", "docker://bob:hunter2@127.0.0.1:1/x:y"),
    ]
    for run in runs:
        assert "s3cret" not in run.stdout + run.stderr and "hunter2" not in run.stdout + run.stderr
    assert "alice:***@cache.invalid" in runs[1].stdout
    assert "s3cret" in config.read_text()  # the config itself keeps it


def test_keygen_again_says_what_changes_and_needs_replace(dynix, tmp_path):
    config = tmp_path / "c.toml"
    dynix("cache", "add", "team", f"file://{tmp_path}/cache", "--config", config)
    first = dynix("cache", "keygen", "team", "--out", tmp_path / "k1.sec", "--config", config)
    assert first.returncode == 0, first.stderr
    before = config.read_text()
    args = ("cache", "keygen", "team", "--out", tmp_path / "k2.sec", "--config", config)
    error = one_line_error(dynix(*args))
    assert first.stdout.strip() in error and "--replace" in error
    assert config.read_text() == before and not (tmp_path / "k2.sec").exists()
    second = dynix(*args, "--replace")
    assert second.returncode == 0, second.stderr
    assert f"changed from {first.stdout.strip()} to {second.stdout.strip()}" in second.stderr


def test_unknown_cache_key_and_missing_config_are_errors(dynix, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[caches.team]\nurl = "file:///srv/cache"\npublic_key = "x"\n')
    assert "c.toml:3: cache 'team': unknown key 'public_key'" in one_line_error(
        dynix("cache", "list", "--config", config)
    )
    missing = tmp_path / "missing.toml"
    for args in (["doctor"], ["cache", "list"], ["build", "."]):
        assert "not found" in one_line_error(dynix(*args, "--config", missing))
    assert not missing.exists()


def test_pins_set_refuses_a_bad_url_and_keeps_the_hash(dynix, tmp_path):
    pins = tmp_path / "pins.toml"
    pins.write_bytes(conftest.PINS.read_bytes())
    before = pins.read_text()
    error = one_line_error(
        dynix("pins", "--file", pins, "set", "dynamo-vllm-patch", "--url", "not a url")
    )
    assert "not a URL" in error and pins.read_text() == before
