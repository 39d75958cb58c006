"""`dynix doctor` on this machine: real Nix, binfmt, caches, builders, services and ports."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from conftest import nix
from dynix import platforms


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "xdg").mkdir()
    (tmp_path / "none.toml").write_text("# no caches\n")
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def checks_of(proc) -> dict[str, dict]:
    data = json.loads(proc.stdout)
    assert data["ok"] == (proc.returncode == 0)
    return {c["name"]: c for c in data["checks"]}


def test_doctor_reports_this_machine(dynix, tmp_path, env):
    proc = dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env)
    checks = checks_of(proc)
    version = nix("--version").stdout.split()[-1]
    assert checks["nix"] == {"name": "nix", "status": "ok", "detail": f"Nix {version}", "fix": ""}
    assert checks["experimental features"]["status"] == "ok"  # the tests' NIX_CONFIG sets them
    assert "extra-platforms: aarch64-linux" in checks["system"]["detail"]
    assert checks["build x86_64-linux"]["detail"] == "native"
    if platforms.binfmt_entry("aarch64-linux"):
        assert checks["binfmt aarch64"]["status"] == "ok"
        assert checks["build aarch64-linux"]["detail"] == "emulation (binfmt qemu-aarch64)"
    for program in ("nats-server", "etcd"):
        assert checks[program]["status"] in ("ok", "warn")
    for port in (4222, 8222, 2379, 2380, 8000):
        assert checks[f"port {port}"]["status"] in ("ok", "warn")
    for check in checks.values():
        assert check["status"] in ("ok", "warn", "fail")
        assert check["status"] == "ok" or check["fix"], check


def test_doctor_table_has_one_line_per_check(dynix, tmp_path, env):
    proc = dynix("doctor", "--config", tmp_path / "none.toml", env=env)
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "DETAIL", "FIX"]
    assert any(line.startswith("OK    nix ") for line in lines)


def test_doctor_without_emulation_warns_how_to_build_aarch64(dynix, tmp_path, env):
    env["NIX_CONFIG"] = "experimental-features = nix-command\nextra-platforms =\nbuilders ="
    checks = checks_of(dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env))
    arm = checks["build aarch64-linux"]
    assert arm["status"] == "warn"
    assert (
        "--builders 'ssh-ng://HOST aarch64-linux'" in arm["fix"] or "extra-platforms" in arm["fix"]
    )
    features = checks["experimental features"]
    assert features["status"] == "warn" and "nix-command flakes" in features["fix"]


def test_doctor_fails_when_a_configured_builder_does_not_answer(dynix, tmp_path, env):
    config = tmp_path / "dynix.toml"
    config.write_text('[build]\nbuilders = "ssh-ng://builder.invalid aarch64-linux"\n')
    proc = dynix("doctor", "--json", "--timeout", "20", "--config", config, env=env)
    assert proc.returncode == 1
    check = checks_of(proc)["builder ssh-ng://builder.invalid"]
    assert check["status"] == "fail" and check["detail"].startswith("does not answer")
    assert "ssh" in check["fix"]


def test_doctor_checks_configured_caches(dynix, tmp_path, env):
    public = nix("key", "convert-secret-to-public", input=nix(
        "key", "generate-secret", "--key-name", "c-1").stdout).stdout.strip()  # fmt: skip
    (tmp_path / "cache").mkdir()
    nix("copy", "--to", f"file://{tmp_path}/cache", nix("eval", "--raw", "--expr",
        'builtins.toFile "x" "x"').stdout)  # fmt: skip
    config = tmp_path / "dynix.toml"
    config.write_text(
        f'[caches.here]\nurl = "file://{tmp_path}/cache"\npublic-key = "{public}"\n'
        f'[caches.gone]\nurl = "http://127.0.0.1:9"\npublic-key = "{public}"\n'
        '[caches.nokey]\nurl = "file:///nonexistent"\n'
    )
    checks = checks_of(dynix("doctor", "--json", "--config", config, env=env))
    assert checks["cache here"]["status"] == "ok"
    assert checks["cache gone"]["status"] == "warn"
    assert "does not answer" in checks["cache gone"]["detail"]
    assert checks["cache nokey"]["status"] == "warn"
    assert not Path("/nonexistent").exists()


def test_doctor_warns_about_a_port_in_use(dynix, tmp_path, env):
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", 8222))
            sock.listen()
        except OSError:
            pass  # already taken by something else: the check must say so all the same
        checks = checks_of(dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env))
    assert checks["port 8222"]["status"] == "warn"
    assert "ss -ltnp" in checks["port 8222"]["fix"]


# No GPU or NVIDIA driver can run here: a stand-in `nvidia-smi` prints what the real one prints
# for `--query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader`.
@pytest.mark.parametrize(
    "driver,status",
    [("570.26", "ok"), ("575.51.03", "ok"), ("565.57.01", "fail"), ("570.9", "fail")],
)
def test_doctor_gpu_driver_against_cuda_12_8_with_a_stand_in_nvidia_smi(
    dynix, tmp_path, env, driver, status
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    line = f"NVIDIA GB200, 189471 MiB, {driver}, 10.0"
    smi.write_text(f"#!/bin/sh\necho '{line}'\necho '{line}'\n")
    smi.chmod(0o755)
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    proc = dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env)
    gpu = checks_of(proc)["gpu"]
    assert gpu["status"] == status
    assert gpu["detail"].startswith(f"2 x NVIDIA GB200 (189471 MiB), driver {driver}")
    if status == "fail":
        assert proc.returncode == 1
        assert gpu["fix"] == "upgrade the NVIDIA driver to >= 570.26"


def test_doctor_without_nvidia_smi_warns(dynix, tmp_path, env):
    checks = checks_of(dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env))
    if not Path("/usr/bin/nvidia-smi").exists():
        assert checks["gpu"]["status"] == "warn"


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="root's local store: needs root")


def nix_conf(extra: str) -> str:
    from conftest import NIX_CONFIG

    return NIX_CONFIG + "\n" + extra


@root_only
def test_doctor_builds_a_derivation_to_show_nix_can_build(dynix, tmp_path, env):
    def probes() -> set[Path]:
        return set(Path("/nix/store").glob("*-dynix-doctor-probe*"))

    before = probes()
    checks = checks_of(dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env))
    built = checks["nix can build"]
    assert built["status"] == "ok", built
    assert built["detail"].startswith("a test build as the nixbld users took ")
    assert probes() == before  # the probe's output and derivation are deleted again


@root_only
@pytest.mark.parametrize(
    ("group", "why"),
    [
        (
            "dynix-no-such-group",
            "the group 'dynix-no-such-group' named by build-users-group does not exist",
        ),
        ("nogroup", "the group 'nogroup' named by build-users-group has no members"),
    ],
)
def test_doctor_fails_root_without_build_users(dynix, tmp_path, env, group, why):
    env["NIX_CONFIG"] = nix_conf(f"build-users-group = {group}")
    proc = dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env)
    assert proc.returncode == 1
    built = checks_of(proc)["nix can build"]
    assert built["status"] == "fail"
    assert built["detail"] == why
    assert "nix-setup-systemd" in built["fix"] and "\n" not in built["fix"]
    # and Nix itself agrees: a build in that configuration fails
    probe = nix(
        "build",
        "--no-link",
        "--option",
        "substituters",
        "",
        "--expr",
        'derivation { name = "x"; system = "x86_64-linux"; builder = "builtin:buildenv"; '
        f'manifest = "/dev/null"; derivations = ""; nonce = "{tmp_path}"; }}',
        check=False,
        env={"NIX_CONFIG": env["NIX_CONFIG"]},
    )
    assert probe.returncode != 0


def test_doctor_fails_when_the_daemon_does_not_answer(dynix, tmp_path, env):
    env["NIX_CONFIG"] = nix_conf("store = daemon")
    env["NIX_DAEMON_SOCKET_PATH"] = str(tmp_path / "no-daemon" / "socket")
    proc = dynix("doctor", "--json", "--config", tmp_path / "none.toml", env=env)
    assert proc.returncode == 1
    built = checks_of(proc)["nix can build"]
    assert built["status"] == "fail"
    assert built["detail"].startswith("the Nix daemon does not answer: ")
    assert "no-daemon/socket" in built["detail"]
    assert built["fix"].startswith("start the Nix daemon")
