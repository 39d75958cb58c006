"""`dynix build` with real Nix on fixture flakes: results, progress read from Nix's real
structured log, aarch64-linux under qemu emulation, and the error when nothing can build it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import NIX_CONFIG, nix, one_line_error
from dynix import platforms
from dynix.progress import BuildLog, Display
from flakes import ARM64_BUSYBOX, write_flake
from httpcache import HttpCache


@pytest.fixture
def flake(tmp_path: Path, busybox: Path) -> Path:
    return write_flake(tmp_path / "flake", busybox=busybox)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "xdg").mkdir()
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def internal_json_log(*args: str) -> tuple[subprocess.CompletedProcess, BuildLog]:
    """Run `nix ARGS --log-format internal-json -v` and read its stderr with dynix's parser."""
    proc = nix(*args, "--log-format", "internal-json", "-v", check=False)
    log = BuildLog()
    log.feed_all(proc.stderr)
    return proc, log


def test_build_prints_store_paths_on_stdout(dynix, flake, env):
    proc = dynix("build", f"{flake}#c", f"{flake}#a", env=env)
    assert proc.returncode == 0, proc.stderr
    paths = proc.stdout.splitlines()
    assert sorted(p.rsplit("-", 1)[-1] for p in paths) == ["a", "c"]  # in Nix's order
    assert all(Path(p).is_dir() for p in paths)
    assert "building chain-b" in proc.stderr and "built 3/3" in proc.stderr


def test_build_json_maps_each_installable_to_its_outputs(dynix, flake, env):
    a = json.loads(nix("build", "--no-link", "--json", f"{flake}#a").stdout)[0]["outputs"]["out"]
    proc = dynix("build", "--json", f"{flake}#c", f"{flake}#b", a, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert list(result) == [f"{flake}#c", f"{flake}#b", a]
    assert result[a] == {"drvPath": None, "outputs": {"out": a}}  # a store path, as given
    for entry in (result[f"{flake}#c"], result[f"{flake}#b"]):
        assert entry["drvPath"].endswith(".drv")
        assert Path(entry["outputs"]["out"]).is_dir()
    refs = Path(result[f"{flake}#c"]["outputs"]["out"], "refs").read_text().split()
    assert result[f"{flake}#b"]["outputs"]["out"] in refs


def test_build_defaults_to_the_flake_in_this_folder(dynix, flake, env):
    proc = dynix("build", cwd=flake, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("-chain-c")


def test_build_logs_stream_with_print_build_logs(dynix, flake, env):
    proc = dynix("build", "-L", f"{flake}#a", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "chain-a> building a" in proc.stderr and "chain-a> line 2" in proc.stderr


def test_progress_state_from_a_real_build_log(flake):
    proc, log = internal_json_log("build", "--no-link", "--json", f"{flake}#c")
    assert proc.returncode == 0, proc.stderr
    state = log.state
    assert state.builds == (3, 3, 0, 0)  # done, expected, running, failed
    assert [p.rsplit("-", 1)[-1] for p in state.built] == ["a.drv", "b.drv", "c.drv"]
    assert state.running_builds == [] and state.current_build is None
    a_drv = state.built[0]
    assert state.log_tail(a_drv) == ["building a", "line 1", "line 2"]
    assert state.errors == []
    assert state.summary()["builds"] == {"done": 3, "expected": 3, "failed": 0}


def test_progress_state_of_a_failed_build_from_a_real_log(flake):
    proc, log = internal_json_log("build", "--no-link", f"{flake}#fails")
    assert proc.returncode == 1
    state = log.state
    assert state.builds[3] == 1  # one failed
    assert state.log_tail() == ["about to fail", "last words"]
    assert any("failed with exit code 3" in e for e in state.errors)


def test_progress_counts_downloaded_bytes_from_a_real_substitution(tmp_path, flake):
    key = nix("key", "generate-secret", "--key-name", "t-1").stdout.strip()
    (tmp_path / "k").write_text(key)
    public = nix("key", "convert-secret-to-public", input=key).stdout.strip()
    big = json.loads(nix("build", "--no-link", "--json", f"{flake}#big").stdout)[0]
    out = big["outputs"]["out"]
    with HttpCache(tmp_path / "cache") as cache:
        nix("store", "sign", "--key-file", str(tmp_path / "k"), out)
        nix("copy", "--to", cache.url, out)
        store = tmp_path / "store"
        proc, log = internal_json_log(
            "copy", "--from", cache.url, "--store", str(store), out,
            "--option", "trusted-public-keys", public,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    state = log.state
    assert state.copies[:2] == (1, 1)
    nar_xz = next((tmp_path / "cache" / "nar").iterdir()).stat().st_size
    assert state.bytes_downloaded == nar_xz > 2_000_000  # 2 MiB of random bytes, xz-compressed


def test_build_substitutes_from_a_configured_cache_and_shows_bytes(dynix, tmp_path, flake, env):
    big = json.loads(nix("build", "--no-link", "--json", f"{flake}#big").stdout)[0]
    out = big["outputs"]["out"]
    with HttpCache(tmp_path / "cache") as cache:
        config = tmp_path / "dynix.toml"
        dynix("cache", "--config", config, "add", "web", cache.url, env=env)
        proc = dynix("cache", "--config", config, "keygen", "web", "--out", tmp_path / "k", env=env)
        assert proc.returncode == 0, proc.stderr
        proc = dynix("cache", "push", out, "--to", "web", "--config", config, env=env)
        assert proc.returncode == 0, proc.stderr
        nix("store", "delete", out)
        assert not Path(out).exists()
        proc = dynix("build", "--config", config, f"{flake}#big", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == out and Path(out, "blob").stat().st_size == 2 * 1024 * 1024
    assert f"fetching big from {cache.url}" in proc.stderr
    assert "fetched 1/1, 2.0 MiB" in proc.stderr


def test_build_failure_is_one_line_error_after_the_build_log(dynix, flake, env):
    proc = dynix("build", f"{flake}#fails", env=env)
    error = one_line_error(proc)
    assert "nix build (exit 1)" in error and "-fails.drv' failed with exit code 3" in error
    assert "  last words" in proc.stderr
    assert "@nix" not in proc.stderr


def test_evaluation_error_is_one_line(dynix, flake, env):
    error = one_line_error(dynix("build", f"{flake}#nosuch", env=env))
    assert "does not provide attribute" in error


@pytest.mark.skipif(
    not platforms.binfmt_entry("aarch64-linux") or not ARM64_BUSYBOX.is_file(),
    reason="needs qemu-aarch64 binfmt and the arm64 busybox (scripts/setup-debian sets both up)",
)
def test_build_aarch64_under_qemu_emulation(dynix, flake, env):
    proc = dynix("build", "--json", f"{flake}#packages.aarch64-linux.default", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "building for aarch64-linux by emulation (binfmt qemu-aarch64)" in proc.stderr
    out = json.loads(proc.stdout)[f"{flake}#packages.aarch64-linux.default"]["outputs"]["out"]
    assert Path(out, "arch").read_text().strip() == "aarch64"
    drv = json.loads(nix("show-derivation", out).stdout)
    assert next(iter(drv.values()))["system"] == "aarch64-linux"


def test_no_aarch64_builder_is_a_clear_error_before_nix_builds(dynix, flake, env):
    # Nix told not to offer aarch64-linux (a real setting), and no remote builder.
    no_emulation = NIX_CONFIG.replace("extra-platforms = aarch64-linux", "extra-platforms =")
    env = {**env, "NIX_CONFIG": no_emulation + "\nbuilders ="}
    for args in (
        ("--system", "aarch64-linux", str(flake)),
        (f"{flake}#packages.aarch64-linux.default",),
    ):
        proc = dynix("build", *args, env=env)
        error = one_line_error(proc)
        assert error.startswith(
            "Error: cannot build for aarch64-linux on this x86_64-linux machine"
        )
        assert "extra-platforms lacks aarch64-linux" in error or "no remote builder" in error
        assert "building" not in proc.stderr  # Nix never started a build


def test_a_remote_builder_for_aarch64_passes_the_check_and_reaches_nix(dynix, flake, env):
    no_emulation = NIX_CONFIG.replace("extra-platforms = aarch64-linux", "extra-platforms =")
    env = {**env, "NIX_CONFIG": no_emulation}
    builders = "ssh-ng://builder.invalid aarch64-linux"
    proc = dynix(
        "build", "--builders", builders, f"{flake}#packages.aarch64-linux.default", env=env
    )
    error = one_line_error(proc)
    assert "by remote (ssh-ng://builder.invalid)" in proc.stderr
    assert "nix build (exit 1)" in error  # Nix itself tried, and could not reach the builder


def test_parse_builders_reads_nix_machines_lines(tmp_path):
    machines = tmp_path / "machines"
    machines.write_text("# builders\nssh://arm1 aarch64-linux /k 8 1 big-parallel\n")
    spec = f"ssh-ng://gb200 aarch64-linux,x86_64-linux - 4; @{machines}\nssh://x86"
    assert [b.to_json() for b in platforms.parse_builders(spec)] == [
        {"uri": "ssh-ng://gb200", "systems": ["aarch64-linux", "x86_64-linux"], "maxJobs": 4},
        {"uri": "ssh://arm1", "systems": ["aarch64-linux"], "maxJobs": 8},
        {"uri": "ssh://x86", "systems": [], "maxJobs": 1},
    ]


def test_systems_named_by_installables():
    assert platforms.systems_of([".#packages.aarch64-linux.vllm", ".#default"], None) == [
        "aarch64-linux"
    ]
    assert platforms.systems_of(["."], "x86_64-linux") == ["x86_64-linux"]
    assert platforms.systems_of(["nixpkgs#hello"], None) == []


def test_display_on_a_terminal_redraws_one_status_line(flake):
    import io

    proc = nix("build", "--no-link", f"{flake}#c", "--log-format", "internal-json", "-v")
    stream = io.StringIO()
    display = Display(BuildLog(), stream=stream, tty=True, interval=0)
    for line in proc.stderr.splitlines():
        display(line)
    display.finish()
    text = stream.getvalue()
    assert "\r\x1b[Kbuilt 0/3 [chain-a]" in text and text.endswith("built 3/3\n")
