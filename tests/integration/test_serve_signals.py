"""Every way `dynix serve` can be stopped ends every process of its stack; a killed one is
reported truthfully and cleaned up by the next; one state folder runs one stack."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serve_stack import (
    live_members,
    port_free,
    recorded_groups,
    stack_ports,
    start,
    stop,
    wait_ready,
    write_config,
)

import conftest


def _marked(stack_id: str) -> list[int]:
    """Processes of the stack, found by the mark in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if f"DYNIX_STACK={stack_id}".encode() in environ and state != "Z":
                found.append(int(entry.name))
    return found


def _gone(pids_of, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while pids_of() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not pids_of()


@pytest.fixture
def plane(tmp_path):
    """A control-plane-only stack's config (nats and etcd: quick to start)."""
    ports = stack_ports()
    return (
        write_config(tmp_path / "dynix.toml", tmp_path / "state", ports),
        tmp_path / "state",
        ports,
    )


@pytest.mark.parametrize(
    ("sig", "to_group"),
    [
        (signal.SIGHUP, False),
        (signal.SIGQUIT, False),
        (signal.SIGTERM, True),
        (signal.SIGHUP, True),
    ],
    ids=["hup", "quit", "term-group", "hup-group"],
)
def test_each_stop_signal_ends_the_control_plane(plane, tmp_path, sig, to_group):
    config, state_dir, ports = plane
    stack = start(
        ["--config", str(config), "--role", "control-plane"], state_dir, ports, tmp_path / "err"
    )
    try:
        wait_ready(stack, timeout=60)
        stack_id = stack.state()["stack_id"]
        assert len(_marked(stack_id)) >= 2
        (os.killpg if to_group else os.kill)(stack.proc.pid, sig)
        assert stack.proc.wait(30) == 0, stack.log()[-2000:]
        assert _gone(lambda: _marked(stack_id))
        assert all(port_free(p) for p in (ports["nats-port"], ports["etcd-port"]))
        assert stack.state()["status"] == "stopped"
    finally:
        stop(stack)


def test_after_sigkill_status_tells_the_truth_and_the_next_run_cleans_up(dynix, plane, tmp_path):
    config, state_dir, ports = plane
    args = ["--config", str(config), "--role", "control-plane"]
    stack = start(args, state_dir, ports, tmp_path / "err")
    try:
        wait_ready(stack, timeout=60)
        stack_id = stack.state()["stack_id"]
        os.kill(stack.proc.pid, signal.SIGKILL)
        stack.proc.wait(10)
        left = _marked(stack_id)
        assert left  # nats and etcd, in sessions of their own, outlive a killed dynix
        status = json.loads(dynix("status", "--json", "--state-dir", state_dir).stdout)
        assert status["status"] == "gone" and not status["running"]
        assert {c["name"] for c in status["components"] if c["alive"]} == {"nats", "etcd"}
        assert "still run" in dynix("status", "--state-dir", state_dir).stderr
        again = start(args, state_dir, ports, tmp_path / "err2")
        try:
            deadline = time.monotonic() + 60
            while again.state()["pid"] != again.proc.pid:  # the killed one's file, until then
                assert time.monotonic() < deadline and again.proc.poll() is None, again.log()
                time.sleep(0.05)
            wait_ready(again, timeout=60)
            assert not any(p in left for p in _marked(again.state()["stack_id"]))
            assert _gone(lambda: [p for p in left if Path(f"/proc/{p}").exists()])
            assert "stopping what it left running" in again.log()
        finally:
            assert stop(again) == 0
    finally:
        stop(stack)
        for pid in _marked(stack_id):
            os.kill(pid, signal.SIGKILL)


def test_two_serves_on_one_state_folder_one_runs(plane, tmp_path):
    config, state_dir, ports = plane
    args = [
        sys.executable,
        "-m",
        "dynix",
        "serve",
        "--config",
        str(config),
        "--role",
        "control-plane",
    ]
    for round_ in range(5):
        with contextlib.ExitStack() as files:
            logs = [files.enter_context(open(tmp_path / f"err-{round_}-{i}", "w")) for i in (0, 1)]
            procs = [
                subprocess.Popen(
                    args,
                    env=conftest.test_env(),
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                )
                for log in logs
            ]
        try:
            refused = None
            deadline = time.monotonic() + 60
            while refused is None and time.monotonic() < deadline:
                refused = next((p for p in procs if p.poll() is not None), None)
                time.sleep(0.05)
            assert refused is not None and refused.returncode == 1
            i = procs.index(refused)
            assert "already running from" in (tmp_path / f"err-{round_}-{i}").read_text()
            winner = procs[1 - i]
            deadline = time.monotonic() + 60
            state_file = state_dir / "state.json"  # the winner may not have written it yet
            while (json.loads(state_file.read_text()) if state_file.exists() else {}).get(
                "status"
            ) != "ready":
                assert winner.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            assert json.loads((state_dir / "state.json").read_text())["pid"] == winner.pid
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    assert proc.wait(30) == 0


def test_sighup_and_ctrl_c_during_start_up_end_the_whole_graph(tmp_path):
    conftest.require_programs("dynamo")
    for n, (sig, delay) in enumerate(
        [(signal.SIGHUP, None), (signal.SIGINT, 2.0), (signal.SIGINT, 3.5)]
    ):
        ports = stack_ports()
        state_dir = tmp_path / f"state-{n}"
        config = write_config(tmp_path / f"dynix-{n}.toml", state_dir, ports, graph="echo")
        stack = start(["--config", str(config)], state_dir, ports, tmp_path / f"err-{n}")
        stack_id = None
        try:
            if delay is None:
                wait_ready(stack)
            else:  # while circus starts the services
                deadline = time.monotonic() + 60
                while not (state_dir / "state.json").exists() or not any(
                    c["name"] == "graph" for c in stack.state()["components"]
                ):
                    assert time.monotonic() < deadline, stack.log()[-2000:]
                    time.sleep(0.05)
                time.sleep(delay)
            stack_id = stack.state()["stack_id"]
            groups = recorded_groups(stack.state())
            os.killpg(stack.proc.pid, sig)  # a closed terminal, or Ctrl-C: the foreground group
            assert stack.proc.wait(30) in (0, 1), stack.log()[-2000:]
            assert _marked(stack_id) == [] and live_members(groups) == []
            assert port_free(ports["port"])
        finally:
            stop(stack)
            for pid in _marked(stack_id) if stack_id else []:
                os.kill(pid, signal.SIGKILL)
