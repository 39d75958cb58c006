"""`dynix cache` with real Nix: signed pushes to file:// and http:// caches, pulls into a separate
store that trust one key only, status before and after, and the config file it edits."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from conftest import nix, one_line_error
from flakes import layered, wide, write_flake
from httpcache import HttpCache


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose per-user config folder is a temporary one."""
    (tmp_path / "xdg").mkdir()
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}


@pytest.fixture
def flake(tmp_path: Path, busybox: Path) -> Path:
    return write_flake(tmp_path / "flake", busybox=busybox)


@pytest.fixture
def http_cache(tmp_path: Path):
    with HttpCache(tmp_path / "http-cache") as served:
        yield served


def secret_key(folder: Path, name: str) -> tuple[Path, str]:
    """A real key pair made by Nix: the secret key file (0600) and the public key."""
    secret = nix("key", "generate-secret", "--key-name", name).stdout.strip()
    path = folder / f"{name}.sec"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    public = nix("key", "convert-secret-to-public", input=secret).stdout.strip()
    return path, public


def build(installable: str) -> str:
    out = json.loads(nix("build", "--no-link", "--json", installable).stdout)
    return out[0]["outputs"]["out"]


class Setup:
    def __init__(self, dynix, tmp_path: Path, env: dict[str, str]) -> None:
        self.run_dynix, self.tmp, self.env = dynix, tmp_path, env
        self.config = tmp_path / "dynix.toml"

    def __call__(self, *args: str, **kwargs):
        return self.run_dynix(*args, env=self.env, cwd=self.tmp, **kwargs)

    def ok(self, *args: str) -> str:
        proc = self(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


@pytest.fixture
def dx(dynix, tmp_path: Path, home: dict[str, str]) -> Setup:
    """`dynix` run in a temporary folder, its config there as ./dynix.toml."""
    setup = Setup(dynix, tmp_path, home)
    setup.config.write_text("# dynix settings for this test\n")
    return setup


# -- config: add, list, remove, keygen, use ---------------------------------------------------
def test_add_list_remove_keep_comments_and_other_tables(dx):
    dx.config.write_text(
        "# my settings\n[serve]  # written by another command\nmodel = 'x'  # keep me\n"
    )
    _, public = secret_key(dx.tmp, "team-1")
    dx.ok("cache", "add", "team", "file:///srv/cache", "--public-key", public)
    dx.ok("cache", "add", "pub", "cachix:dynamo-public")
    listed = json.loads(dx.ok("cache", "list", "--json"))
    assert [(c["name"], c["kind"], c["url"]) for c in listed] == [
        ("team", "file", "file:///srv/cache"),
        ("pub", "cachix", "https://dynamo-public.cachix.org"),
    ]
    assert listed[0]["publicKey"] == public
    text = dx.config.read_text()
    assert "# my settings" in text and "model = 'x'  # keep me" in text
    dx.ok("cache", "remove", "pub")
    assert [c["name"] for c in json.loads(dx.ok("cache", "list", "--json"))] == ["team"]
    assert "[serve]  # written by another command" in dx.config.read_text()


def test_config_falls_back_to_the_per_user_file(dynix, tmp_path, home):
    proc = dynix("cache", "add", "c", "file:///srv/c", env=home, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "url = " in (tmp_path / "xdg" / "dynix" / "config.toml").read_text()


def test_keygen_writes_a_private_secret_key_and_records_the_public_key(dx):
    dx.ok("cache", "add", "local", f"file://{dx.tmp}/cache")
    out = dx.tmp / "keys" / "local.sec"
    public = dx.ok("cache", "keygen", "local", "--out", str(out)).strip()
    assert public.startswith("local-1:")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    secret = out.read_text().strip()
    assert nix("key", "convert-secret-to-public", input=secret).stdout.strip() == public
    entry = json.loads(dx.ok("cache", "list", "--json"))[0]
    assert entry["publicKey"] == public and entry["secretKeyFile"] == str(out)
    before = out.read_bytes()
    error = one_line_error(dx("cache", "keygen", "local", "--replace", "--out", str(out)))
    assert "never overwrites" in error
    assert out.read_bytes() == before


def test_use_prints_nix_conf_lines_and_appends_them_once(dx):
    _, public = secret_key(dx.tmp, "team-1")
    dx.ok("cache", "add", "team", "http://cache.example:8080", "--public-key", public)
    lines = dx.ok("cache", "use", "team").splitlines()
    assert lines == [
        "extra-substituters = http://cache.example:8080",
        f"extra-trusted-public-keys = {public}",
    ]
    conf = dx.tmp / "xdg" / "nix" / "nix.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("max-jobs = 4\n")
    dx.ok("cache", "use", "team", "--write-nix-conf")
    dx.ok("cache", "use", "team", "--write-nix-conf")
    assert conf.read_text() == "max-jobs = 4\n\n" + "\n".join(lines) + "\n"
    other = dx.tmp / "other.conf"
    dx.ok("cache", "use", "team", "--write-nix-conf", str(other))
    assert other.read_text() == "\n".join(lines) + "\n"


# -- push, pull, status: file:// and http:// ------------------------------------------------
@pytest.mark.parametrize("kind", ["file", "http"])
def test_push_signed_then_pull_into_a_separate_store(dx, flake, http_cache, kind):
    url = f"file://{dx.tmp}/file-cache" if kind == "file" else http_cache.url
    key, public = secret_key(dx.tmp, "team-1")
    dx.ok("cache", "add", "team", url, "--secret-key-file", str(key))
    assert json.loads(dx.ok("cache", "list", "--json"))[0]["publicKey"] == public

    first = json.loads(dx.ok("cache", "push", f"{flake}#c", "--to", "team", "--json"))
    assert first["alreadyPresent"]["paths"] == 0
    assert first["uploaded"]["paths"] == 3  # chain-a, chain-b, chain-c
    assert first["uploaded"]["narBytes"] > 0
    again = json.loads(dx.ok("cache", "push", f"{flake}#c", "--to", "team", "--json"))
    assert again["alreadyPresent"] == first["uploaded"]
    assert again["uploaded"] == {"paths": 0, "narBytes": 0}

    info = json.loads(
        nix("path-info", "--json", "--store", url, "--sigs", build(f"{flake}#c")).stdout
    )
    assert any(sig.startswith("team-1:") for sig in info[0]["signatures"])

    store = dx.tmp / "other-store"
    out = dx.ok("cache", "pull", f"{flake}#c", "--from", "team", "--store", str(store))
    c = build(f"{flake}#c")
    assert out.splitlines() == [c]
    pulled = nix("path-info", "--store", str(store), "--recursive", c).stdout.split()
    assert sorted(p.rsplit("-", 1)[-1] for p in pulled) == ["a", "b", "c"]


def test_a_cache_login_reaches_nix_in_a_netrc_file_never_in_its_argv(dx, flake, tmp_path):
    """A cache behind a Basic login, added with `user:password@` in its URL: push, status,
    pull and `dynix build --cache` work, and no Nix process is given the password in its argv
    (which every user can read): a `nix` first on PATH records each argv."""
    real = shutil.which("nix")
    shims = tmp_path / "shims"
    shims.mkdir()
    argvs = tmp_path / "argv.log"
    (shims / "nix").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argvs}\nexec {real} "$@"\n')
    (shims / "nix").chmod(0o755)
    dx.env = {**dx.env, "PATH": f"{shims}:{os.environ['PATH']}"}
    password = "pw-in-no-argv-8812"
    with HttpCache(tmp_path / "locked", login=f"ci:{password}") as locked:
        url = locked.url.replace("http://", f"http://ci:{password}@")
        key, _ = secret_key(dx.tmp, "team-1")
        dx.ok("cache", "add", "team", url, "--secret-key-file", str(key))
        assert stat.S_IMODE(dx.config.stat().st_mode) == 0o600  # it holds a password now
        pushed = json.loads(dx.ok("cache", "push", f"{flake}#c", "--to", "team", "--json"))
        assert pushed["uploaded"]["paths"] == 3
        status = json.loads(dx.ok("cache", "status", f"{flake}#c", "--json"))
        assert status["caches"]["team"]["missing"] == []
        store = tmp_path / "other-store"
        c = build(f"{flake}#c")
        assert (
            dx.ok("cache", "pull", f"{flake}#c", "--from", "team", "--store", str(store))
            == c + "\n"
        )
        assert dx.ok("build", f"{flake}#c", "--cache", "team").strip() == c
        lines = dx.ok("cache", "use", "team")
        assert password not in lines and f"extra-substituters = {locked.url}" in lines
    logged = argvs.read_text()
    assert "copy" in logged and "netrc-file" in logged
    assert password not in logged
    assert not list(Path(tempfile.gettempdir()).glob("dynix-netrc.*"))  # removed after each call


def test_pull_refuses_paths_signed_with_another_key(dx, flake):
    url = f"file://{dx.tmp}/cache"
    key, _ = secret_key(dx.tmp, "team-1")
    _, wrong = secret_key(dx.tmp, "impostor-1")
    dx.ok("cache", "add", "team", url, "--secret-key-file", str(key))
    dx.ok("cache", "push", f"{flake}#b", "--to", "team")
    dx.ok("cache", "add", "same-place", url, "--public-key", wrong)
    store = dx.tmp / "other-store"
    error = one_line_error(
        dx("cache", "pull", f"{flake}#b", "--from", "same-place", "--store", store)
    )
    assert "refused /nix/store/" in error and "not signed by its key impostor-1" in error
    assert not (store / "nix" / "store" / Path(build(f"{flake}#b")).name).exists()


def test_pull_refuses_unsigned_paths(dx, flake):
    url = f"file://{dx.tmp}/cache"
    a = build(f"{flake}#a")  # input-addressed: only a signature vouches for it
    nix("copy", "--to", url, a)  # plain copy, no key: the cache holds it unsigned
    _, public = secret_key(dx.tmp, "team-1")
    dx.ok("cache", "add", "team", url, "--public-key", public)
    error = one_line_error(dx("cache", "pull", a, "--from", "team", "--store", dx.tmp / "s"))
    assert f"refused {a} from cache 'team': not signed by its key team-1" in error


def test_status_before_and_after_push(dx, flake, http_cache):
    key, _ = secret_key(dx.tmp, "team-1")
    dx.ok("cache", "add", "files", f"file://{dx.tmp}/cache", "--secret-key-file", str(key))
    dx.ok("cache", "add", "web", http_cache.url, "--secret-key-file", str(key))
    c = build(f"{flake}#c")
    before = json.loads(dx.ok("cache", "status", f"{flake}#c", "--json"))
    assert len(before["paths"]) == 3 and before["notLocal"] == []
    for name in ("files", "web"):
        assert before["caches"][name]["held"] == []
        assert sorted(before["caches"][name]["missing"]) == sorted(before["paths"])
    dx.ok("cache", "push", f"{flake}#b", "--to", "web")
    dx.ok("cache", "push", c, "--to", "files")
    after = json.loads(dx.ok("cache", "status", f"{flake}#c", "--json"))
    assert sorted(after["caches"]["files"]["held"]) == sorted(before["paths"])
    web = after["caches"]["web"]
    assert web["missing"] == [c]
    assert web["heldBytes"] > 0 and web["missingBytes"] > 0
    table = dx.ok("cache", "status", c)
    assert "files  3/3 paths" in table and "web    2/3 paths" in table


def test_status_handles_a_thousand_path_closure_in_one_query_per_cache(dx, tmp_path, busybox):
    flake = write_flake(tmp_path / "wide", wide(1000), busybox=busybox)
    key, _ = secret_key(dx.tmp, "team-1")
    dx.ok("cache", "add", "files", f"file://{dx.tmp}/cache", "--secret-key-file", str(key))
    pushed = json.loads(dx.ok("cache", "push", f"{flake}#part", "--to", "files", "--json"))
    assert pushed["uploaded"]["paths"] == 901  # 900 files and the part's root
    unbuilt = json.loads(dx.ok("cache", "status", str(flake), "--json"))
    assert unbuilt["paths"] == unbuilt["notLocal"] and len(unbuilt["paths"]) == 1  # not built
    build(str(flake))
    proc = dx("--debug", "cache", "status", str(flake), "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert len(status["paths"]) == 1001
    assert len(status["caches"]["files"]["held"]) == 900
    queries = [line for line in proc.stderr.splitlines() if "--store file://" in line]
    assert len(queries) == 1
    second = json.loads(dx.ok("cache", "push", str(flake), "--to", "files", "--json"))
    assert second["alreadyPresent"]["paths"] == 900 and second["uploaded"]["paths"] == 101


@pytest.mark.parametrize("kind", ["file", "http"])
def test_parallel_push_uploads_each_path_after_its_references(
    dx, tmp_path, busybox, http_cache, kind
):
    # three layers of three 512 KiB paths, each referring to the whole layer below, and a root:
    # Nix refuses a path whose references the cache lacks, so a wrong order fails the push
    flake = write_flake(tmp_path / "layered", layered(3, 3, kib=512), busybox=busybox)
    root = build(str(flake))
    url = f"file://{dx.tmp}/cache" if kind == "file" else http_cache.url
    key, _ = secret_key(dx.tmp, "team-1")
    dx.ok("cache", "add", "team", url, "--secret-key-file", str(key))
    proc = dx("--debug", "cache", "push", root, "--to", "team", "--jobs", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["uploaded"]["paths"] == 10
    copies = [line for line in proc.stderr.splitlines() if " copy --to " in line]
    assert len(copies) == 10  # each layer as three copies at once, then the root
    assert sum(root in line for line in copies) == 1 and root in copies[-1]
    progress = [line for line in proc.stderr.splitlines() if " paths uploaded (" in line]
    assert len(progress) == 10 and progress[-1].startswith("team: 10 of 10 paths uploaded (")

    store = dx.tmp / "other-store"
    dx.ok("cache", "pull", root, "--from", "team", "--store", str(store))
    pulled = nix("path-info", "--store", str(store), "--recursive", root).stdout.split()
    assert len(pulled) == 10


def test_a_failed_upload_stops_the_push_and_leaves_the_cache_consistent(dx, tmp_path, busybox):
    flake = write_flake(tmp_path / "layered", layered(3, 2, kib=512), busybox=busybox)
    root = build(str(flake))
    closure = nix("path-info", "--recursive", root).stdout.split()
    bad = next(p for p in closure if p.endswith("-layer0-1"))
    key, _ = secret_key(dx.tmp, "team-1")
    with HttpCache(tmp_path / "served") as served:
        dx.ok("cache", "add", "web", served.url, "--secret-key-file", str(key))
        served.refused.add(Path(bad).name.split("-")[0] + ".narinfo")
        error = one_line_error(dx("cache", "push", root, "--to", "web", "--jobs", "3"))
        assert "copying to web" in error and "403" in error
        held = {p for p in closure if (served.root / (Path(p).name[:32] + ".narinfo")).exists()}
        # the rest of that layer was let finish; nothing above it was started
        assert sorted(Path(p).name[33:] for p in held) == ["layer0-0", "layer0-2"]
        served.refused.clear()
        report = json.loads(dx.ok("cache", "push", root, "--to", "web", "--json"))
    assert report["alreadyPresent"]["paths"] == 2 and report["uploaded"]["paths"] == 5


def test_push_with_one_job_is_a_single_copy(dx, tmp_path, busybox):
    flake = write_flake(tmp_path / "layered", layered(3, 2, kib=512), busybox=busybox)
    key, _ = secret_key(dx.tmp, "team-1")
    dx.ok("cache", "add", "team", f"file://{dx.tmp}/cache", "--secret-key-file", str(key))
    proc = dx("--debug", "cache", "push", str(flake), "--to", "team", "-j", "1")
    assert proc.returncode == 0, proc.stderr
    assert sum(" copy --to " in line for line in proc.stderr.splitlines()) == 1
    assert "0 paths (0 B) already there, 7 uploaded" in proc.stdout
    refused = dx("cache", "push", str(flake), "--to", "team", "--jobs", "0")
    assert refused.returncode == 2 and "--jobs" in refused.stderr  # a usage error


# -- secrets stay secret --------------------------------------------------------------------
def test_secret_key_never_appears_in_output_or_debug_logs(dx, flake):
    dx.ok("cache", "add", "local", f"file://{dx.tmp}/cache")
    dx.ok("cache", "keygen", "local", "--out", str(dx.tmp / "k.sec"))
    secret = (dx.tmp / "k.sec").read_text().strip().partition(":")[2]
    seen = ""
    for args in (
        ("--debug", "cache", "push", f"{flake}#a", "--to", "local"),
        ("--debug", "cache", "list"),
        ("--debug", "cache", "list", "--json"),
        ("--debug", "cache", "use", "local"),
        ("--debug", "cache", "status", f"{flake}#a"),
    ):
        proc = dx(*args)
        assert proc.returncode == 0, proc.stderr
        seen += proc.stdout + proc.stderr
    assert f"secret-key={dx.tmp / 'k.sec'}" in seen  # the key is passed by path
    assert secret not in seen and secret[:20] not in seen


# -- cachix: the command lines dynix builds (no cachix program or service runs here) ----------
def test_cachix_push_argv_and_environment(tmp_path):
    from dynix import cache as caches
    from dynix.config import Cache, normalise_url

    assert normalise_url("cachix:dynamo") == ("https://dynamo.cachix.org", "dynamo")
    assert normalise_url("https://dynamo.cachix.org") == ("https://dynamo.cachix.org", "dynamo")
    key, public = secret_key(tmp_path, "dynamo.cachix.org-1")
    cache = Cache("dyn", "https://dynamo.cachix.org", public, str(key), "dynamo")
    assert caches.cachix_push_argv(cache, ["/nix/store/x"]) == ["cachix", "push", "dynamo"]
    argv = caches.cachix_push_argv(cache, ["/nix/store/x"], jobs=4)
    assert argv == ["cachix", "push", "--jobs", "4", "dynamo"]
    env = caches.cachix_env(cache, {"CACHIX_AUTH_TOKEN": "t", "HOME": str(tmp_path)})
    assert env == {"CACHIX_SIGNING_KEY": key.read_text().strip().partition(":")[2]}
    with pytest.raises(Exception, match="needs CACHIX_AUTH_TOKEN"):
        caches.cachix_env(cache, {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})


def test_cachix_push_without_token_is_a_one_line_error(dx, flake):
    dx.env["CACHIX_AUTH_TOKEN"] = ""  # cachix's own config is not there either (XDG_CONFIG_HOME)
    dx.ok("cache", "add", "pub", "cachix:dynamo-public")
    error = one_line_error(dx("cache", "push", f"{flake}#a", "--to", "pub"))
    assert "needs CACHIX_AUTH_TOKEN" in error


# -- bad input: one line, config untouched --------------------------------------------------
def test_unknown_cache_name(dx, flake):
    dx.ok("cache", "add", "team", "file:///srv/cache")
    before = dx.config.read_bytes()
    for args in (
        ("push", f"{flake}#a", "--to", "nope"),
        ("pull", "x", "--from", "nope"),
        ("remove", "nope"),
        ("use", "nope"),
        ("keygen", "nope"),
    ):
        error = one_line_error(dx("cache", *args))
        assert "no cache named 'nope'" in error and "(caches: team)" in error
    assert dx.config.read_bytes() == before


def test_missing_and_world_readable_secret_key_files(dx, flake):
    key, _ = secret_key(dx.tmp, "team-1")
    before = dx.config.read_bytes()
    error = one_line_error(dx("cache", "add", "t", "file:///c", "--secret-key-file", "nokey.sec"))
    assert "secret key file" in error and "does not exist" in error
    key.chmod(0o644)
    error = one_line_error(dx("cache", "add", "t", "file:///c", "--secret-key-file", str(key)))
    assert f"is readable by other users (mode 0644): chmod 600 {key}" in error
    assert dx.config.read_bytes() == before
    key.chmod(0o600)
    dx.ok("cache", "add", "t", f"file://{dx.tmp}/c", "--secret-key-file", str(key))
    key.chmod(0o604)
    before = dx.config.read_bytes()
    error = one_line_error(dx("cache", "push", f"{flake}#a", "--to", "t"))
    assert "is readable by other users (mode 0604)" in error
    key.unlink()
    error = one_line_error(dx("cache", "push", f"{flake}#a", "--to", "t"))
    assert "does not exist" in error
    assert dx.config.read_bytes() == before
    assert not (dx.tmp / "c").exists()  # nothing was pushed


def test_bad_urls_and_keys(dx):
    before = dx.config.read_bytes()
    for url, expected in (
        ("ftp://host/cache", "bad cache URL 'ftp://host/cache'"),
        ("file://relative/path", "a file:// URL needs an absolute path"),
        ("http:///nohost", "no host"),
        ("/srv/cache", "bad cache URL '/srv/cache'"),
        ("cachix:Bad_Name", "bad cachix cache name"),
    ):
        assert expected in one_line_error(dx("cache", "add", "c", url))
    error = one_line_error(dx("cache", "add", "c", "file:///c", "--public-key", "nonsense"))
    assert "not a Nix public key 'nonsense'" in error
    assert "bad cache name" in one_line_error(dx("cache", "add", "no spaces", "file:///c"))
    assert dx.config.read_bytes() == before


def test_config_with_a_toml_syntax_error(dx):
    dx.config.write_text("[caches.team]\nurl = 'file:///c'\npublic-key = = 'x'\n")
    before = dx.config.read_bytes()
    for args in (("list",), ("add", "x", "file:///x"), ("remove", "team")):
        error = one_line_error(dx("cache", *args))
        assert error.startswith("Error: dynix.toml:3:1")  # line 3, the column of the second '='
        assert error.endswith(("Invalid value", "Unexpected character"))
    assert dx.config.read_bytes() == before


def test_config_with_an_invalid_cache_entry_names_its_line(dx):
    dx.config.write_text("# caches\n\n[caches.team]\nurl = 'ftp://x'\n")
    error = one_line_error(dx("cache", "list"))
    assert error.startswith("Error: dynix.toml:4: cache 'team': bad cache URL")
    dx.config.write_text("[caches.team]\npublic-key = 'k'\n")
    assert "cache 'team' has no url" in one_line_error(dx("cache", "list"))


def test_adding_an_existing_name_is_refused(dx):
    dx.ok("cache", "add", "team", "file:///a")
    before = dx.config.read_bytes()
    error = one_line_error(dx("cache", "add", "team", "file:///b"))
    assert "already in" in error and "dynix cache remove team first" in error
    assert dx.config.read_bytes() == before
