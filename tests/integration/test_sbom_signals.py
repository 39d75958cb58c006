"""`dynix sbom` stopped while its Nix calls run (the build, and the evaluation and path-info
beside it) leaves no process and no file, whichever signal reaches it or its group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import conftest
from flakes import write_flake

MARK = f"sbom-signal-{uuid.uuid4().hex[:8]}"
SLOW = f"""{{
  packages.x86_64-linux.default = mk {{
    name = "slow";
    script = "echo {MARK}; sleep 120; mkdir $out";
  }};
}}"""


@pytest.fixture(scope="module")
def slow_flake(tmp_path_factory: pytest.TempPathFactory, busybox: Path) -> Path:
    return write_flake(tmp_path_factory.mktemp("sbom-slow") / "flake", SLOW, busybox=busybox)


def in_session(session: int) -> list[str]:
    """The command lines of the live processes of `session`."""
    return [cmd for _, fields, cmd in conftest.live_processes() if int(fields[3]) == session]


def builders() -> list[str]:
    """Builders of the slow derivation still running anywhere (they run in sessions of their
    own, under Nix)."""
    return [cmd for *_, cmd in conftest.live_processes() if MARK in cmd and "sleep" in cmd]


@pytest.mark.parametrize("to_group", [False, True], ids=["process", "group"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_the_build_leaves_nothing(slow_flake, tmp_path, sig, to_group):
    out = tmp_path / "sbom.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynix", "sbom", f"path:{slow_flake}#default", "-o", out],
        cwd=tmp_path,
        env=conftest.test_env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not builders():  # the build has started
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, in_session(proc.pid)
        time.sleep(0.1)
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 128 + sig, rest
    assert "Traceback" not in rest
    deadline = time.monotonic() + 10
    while (in_session(proc.pid) or builders()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert in_session(proc.pid) == [] and builders() == []
    assert list(tmp_path.iterdir()) == []
