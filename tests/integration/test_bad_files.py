"""Files dynix reads that are broken, folders it cannot write, links planted where it writes:
one line each (no traceback), and nothing written outside its folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from serve_stack import stack_ports, write_config
from test_image_errors import tmpfs

import conftest
from conftest import PINS, one_line_error


def test_broken_toml_files_are_one_line_errors(dynix, tmp_path):
    pins = tmp_path / "pins.toml"
    pins.write_text(PINS.read_text() + '\n[vllm]\nkind = "pypi"\n')
    error = one_line_error(dynix("pins", "--file", pins, "show"))
    assert str(pins) in error and "vllm" in error

    bad = b'[caches.team]\nurl = "file:///srv/caf\xe9"\n'
    for args in (
        ["pins", "--file", tmp_path / "p.toml", "show"],
        ["cache", "list", "--config", tmp_path / "c.toml"],
        ["serve", "--dry-run", "--config", tmp_path / "s.toml"],
        ["serve", "init", tmp_path / "i.toml", "--set", "serve.port=9000"],
    ):
        target = args[args.index("--file") + 1] if "--file" in args else None
        target = target or (args[args.index("--config") + 1] if "--config" in args else args[2])
        target.write_bytes(bad)
        error = one_line_error(dynix(*args))
        assert f"{target}:2: not UTF-8 text (byte 0xe9" in error
        assert target.read_bytes() == bad


def test_malformed_state_file_is_a_one_line_error(dynix, tmp_path):
    for text in ('{"components": "x"}', "[1, 2]", '{"components": [{"pid": "7"}]}', "{"):
        (tmp_path / "state.json").write_text(text)
        error = one_line_error(dynix("status", "--state-dir", tmp_path))
        assert "state.json" in error


def test_read_only_state_folder_is_a_one_line_error(dynix, tmp_path):
    ports = stack_ports()
    with tmpfs(tmp_path / "ro", "ro") as ro:
        config = write_config(tmp_path / "dynix.toml", ro / "state", ports)
        proc = dynix("serve", "--config", config, "--role", "control-plane", timeout=60)
        assert "Read-only file system" in one_line_error(proc)


def test_full_disk_under_keygen_leaves_no_key_file(dynix, tmp_path):
    config = tmp_path / "c.toml"
    proc = dynix("cache", "add", "team", f"file://{tmp_path}/cache", "--config", config)
    assert proc.returncode == 0, proc.stderr
    with tmpfs(tmp_path / "small", "size=64k") as small:
        (small / "filler").write_bytes(b"x" * (64 * 1024))
        key = small / "team.sec"
        args = ("cache", "keygen", "team", "--out", key, "--config", config)
        assert "No space left on device" in one_line_error(dynix(*args))
        assert sorted(os.listdir(small)) == ["filler"]
        (small / "filler").unlink()
        proc = dynix(*args)
        assert proc.returncode == 0, proc.stderr
        assert key.read_text().startswith("team-1:") and key.stat().st_mode & 0o777 == 0o600


def test_links_planted_in_the_state_folder_are_not_followed(tmp_path):
    outside = tmp_path / "precious"
    outside.write_text("keep me\n")
    state_dir = tmp_path / "state"
    (state_dir / "logs").mkdir(parents=True)
    (state_dir / "logs" / "nats.log").symlink_to(outside)
    (state_dir / "state.json").symlink_to(outside)
    config = write_config(tmp_path / "dynix.toml", state_dir, stack_ports())
    argv = [sys.executable, "-m", "dynix", "serve", "--config", config, "--role", "control-plane"]

    def serve() -> str:
        proc = subprocess.run(
            argv, env=conftest.test_env(), capture_output=True, text=True, timeout=60
        )
        return one_line_error(proc)

    assert "state.json is a symbolic link" in serve()
    (state_dir / "state.json").unlink()
    assert "nats.log is a symbolic link" in serve()
    assert outside.read_text() == "keep me\n"
    assert json.loads((state_dir / "state.json").read_text())["status"] == "failed"
