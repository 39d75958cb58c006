"""The graph node's etcd forwarder (`python -m dynix.serve.forward`), run for real against
stand-in members on loopback: plain TCP servers that answer with their own name, one of which
goes away."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO


class Member:
    """A TCP server on 127.0.0.1 that answers each line with `NAME:line` until stopped; it
    closes its connections when stopped, as a killed etcd's kernel does."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for line in conn.makefile("rb"):
                conn.sendall(self.name.encode() + b":" + line)

    def stop(self) -> None:
        self.running = False
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept; new connections refused
        self.server.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


@pytest.fixture
def members():
    made = [Member(f"m{i}") for i in range(3)]
    yield made
    for member in made:
        member.stop()


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def forwarder(tmp_path):
    procs = []

    def start(targets: list[Member | int], first: int = 0) -> tuple[int, Path]:
        port = free_port()
        urls = ",".join(
            f"http://127.0.0.1:{t.port if isinstance(t, Member) else t}" for t in targets
        )
        log = tmp_path / f"forward-{port}.log"
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dynix.serve.forward", f"127.0.0.1:{port}", urls,
                 str(first)],
                stderr=err, env={"PYTHONPATH": str(REPO / "py")},
            )  # fmt: skip
        procs.append(proc)
        deadline = time.monotonic() + 10
        while "listening on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        return port, log

    yield start
    for proc in procs:
        proc.terminate()
        assert proc.wait(5) == 0  # SIGTERM: a clean exit


def ask(port: int, text: bytes = b"ping\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(text)
        return sock.makefile("rb").readline()


def test_each_connection_goes_to_the_first_member_named(members, forwarder):
    port, log = forwarder(members, first=1)
    assert ask(port) == b"m1:ping\n"
    assert ask(port) == b"m1:ping\n"
    assert f"forwarding to 127.0.0.1:{members[1].port} (else" in log.read_text()


def test_a_member_gone_moves_new_connections_on_and_says_when_it_dropped_them(members, forwarder):
    port, log = forwarder(members)
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    held.sendall(b"before\n")
    assert held.makefile("rb").readline() == b"m0:before\n"
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    members[0].stop()
    assert held.recv(1) == b""  # the held connection is closed too: its client notices
    held.close()
    assert ask(port) == b"m1:ping\n"  # a new connection reaches the next member
    assert ask(port) == b"m1:ping\n"  # and stays there
    text = log.read_text()
    moved = re.search(r"now forwarding to 127\.0\.0\.1:(\d+); 127\.0\.0\.1:(\d+) dropped its "
                      r"connections at ([0-9.]+)", text)  # fmt: skip
    assert moved, text
    assert (int(moved[1]), int(moved[2])) == (members[1].port, members[0].port)
    assert before - 0.001 <= float(moved[3]) <= time.clock_gettime(time.CLOCK_BOOTTIME)


def test_a_member_that_never_answered_is_skipped_without_a_drop_time(members, forwarder):
    dead = free_port()  # nothing listens there
    port, log = forwarder([dead, *members])
    assert ask(port) == b"m0:ping\n"
    text = log.read_text()
    assert f"now forwarding to 127.0.0.1:{members[0].port}\n" in text
    assert "dropped its connections" not in text


def test_no_member_answering_closes_the_connection(forwarder):
    port, log = forwarder([free_port(), free_port()])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert sock.recv(1) == b""
    assert "no member answers: closing the connection" in log.read_text()


def test_bad_arguments_get_one_line_and_exit_2(tmp_path):
    for args in (["127.0.0.1:1"], ["127.0.0.1", "http://a:1"], ["127.0.0.1:1", ""]):
        result = subprocess.run(
            [sys.executable, "-m", "dynix.serve.forward", *args],
            capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "py")},
        )  # fmt: skip
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
