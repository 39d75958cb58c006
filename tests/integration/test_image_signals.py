"""Every way `dynix image build` can be stopped leaves no process and no temporary file: each
signal to the process or its group, and SIGKILL, after which the next build cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from image_fixtures import *  # noqa: F403  (fixtures: flake, flake_v2, cache_env)
from image_fixtures import leftovers

import conftest


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dynix", *args],
        env=conftest.test_env(env),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(proc: subprocess.Popen, text: str) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if text in line:
            return
    raise AssertionError(f"dynix ended before {text!r}")


def _descendants(pid: int) -> list[int]:
    """Processes that run with `pid`'s session (what dynix started stays in it)."""
    return [p for p, fields, _ in conftest.live_processes() if int(fields[3]) == pid]


def _nothing_left(tmp_path: Path, cache: Path, session: int) -> None:
    deadline = time.monotonic() + 5
    while _descendants(session) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _descendants(session) == []
    assert not (tmp_path / "img").exists() and leftovers(tmp_path) == []
    assert list((cache / "dynix/layers/tmp").iterdir()) == []


@pytest.mark.parametrize("to_group", [False, True], ids=["process", "group"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGINT])
def test_a_signal_while_layers_are_written_leaves_nothing(
    flake, cache_env, tmp_path, sig, to_group
):
    flake.build("big")
    args = ["image", "build", flake.ref("big"), "--compress", "zstd", "--level", "19"]
    proc = _start([*args, "-o", f"oci:{tmp_path / 'img'}"], cache_env)
    _wait_for(proc, "to write")
    time.sleep(0.3)
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + sig, rest
    assert "Traceback" not in rest
    _nothing_left(tmp_path, tmp_path / "xdg-cache", proc.pid)


def test_sigkill_leaves_what_the_next_build_removes(flake, cache_env, tmp_path):
    flake.build("big")
    args = ["image", "build", flake.ref("big"), "--compress", "zstd", "--level", "19"]
    proc = _start([*args, "-o", f"oci:{tmp_path / 'img'}"], cache_env)
    _wait_for(proc, "to write")
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 5  # the layer writers die with it
    while _descendants(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _descendants(proc.pid) == []
    assert leftovers(tmp_path)  # a killed process cannot clean up ...
    again = _start(["image", "build", flake.ref("lib"), "-o", f"oci:{tmp_path / 'img'}"], cache_env)
    assert again.wait(timeout=120) == 0, again.stderr.read()
    assert leftovers(tmp_path) == []  # ... the next build does
    assert list((tmp_path / "xdg-cache/dynix/layers/tmp").iterdir()) == []


SLOW_FLAKE = """\
{
  outputs = { self }: {
    packages.x86_64-linux.slow = derivation {
      name = "slow-@NONCE@";
      system = "x86_64-linux";
      builder = "${./bb}/busybox";
      args = [ "sh" "-c" "echo building; $builder sleep 60; $builder mkdir $out" ];
    };
  };
}
"""


@pytest.mark.parametrize("command", ["build", "image"])
def test_sigterm_to_dynix_alone_stops_the_nix_build_it_runs(busybox, tmp_path, command):
    flake = tmp_path / "slow"
    (flake / "bb").mkdir(parents=True)
    (flake / "bb" / "busybox").write_bytes(busybox.read_bytes())
    (flake / "bb" / "busybox").chmod(0o755)
    (flake / "flake.nix").write_text(SLOW_FLAKE.replace("@NONCE@", os.urandom(6).hex()))
    ref = f"path:{flake}#slow"
    args = ["build", "-L", ref] if command == "build" else ["image", "build", ref]
    if command == "image":
        args += ["-o", f"oci:{tmp_path / 'img'}"]
    proc = _start(args, {"XDG_CACHE_HOME": str(tmp_path / "xdg-cache")})
    deadline = time.monotonic() + 60
    while not _sleepers():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)  # to dynix alone, not its group
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM, rest
    deadline = time.monotonic() + 10
    while (_descendants(proc.pid) or _sleepers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _descendants(proc.pid) == [] and _sleepers() == []
    assert leftovers(tmp_path) == []


def _sleepers() -> list[int]:
    """The builders of the slow derivation (Nix runs them in a session of their own)."""
    found = []
    for pid in _all_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[-3:-1] == [b"sleep", b"60"]:
            found.append(pid)
    return found


def _all_pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
