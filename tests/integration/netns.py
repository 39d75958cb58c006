"""Hosts for the multi-node tests and benchmarks: network namespaces on a bridge of their own,
each with one private address, made by `Network` and removed, with every process in them, when
it closes. Nothing is routed out of them.

Needs root and iproute2's `ip`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

GET = (
    "import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], text=True, capture_output=True, check=check)


@dataclass
class Host:
    name: str
    ns: str
    address: str
    link: str  # its end of the veth pair on the bridge
    state_dir: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def pids(self) -> list[int]:
        return [int(p) for p in ip("netns", "pids", self.ns, check=False).stdout.split()]

    def run(self, *argv: str, timeout: float = 30, check: bool = True) -> str:
        """Run `argv` on this host; its stdout."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv],
            text=True, capture_output=True, timeout=timeout, env=self.env,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} on {self.name}: {result.returncode}\n"
                                 f"{result.stderr[-2000:]}")  # fmt: skip
        return result.stdout

    def get_json(self, url: str) -> dict:
        """GET `url` from this host; its JSON."""
        return json.loads(self.run(sys.executable, "-c", GET, url))

    def popen(self, *argv: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv], env=self.env, text=True, **kwargs
        )

    def serve(self, *args: str) -> subprocess.Popen:
        """`dynix serve ARGS --state-dir STATE` on this host, in a session of its own."""
        env = dict(self.env)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "dynix", "serve", *args,
                 "--state-dir", str(self.state_dir)],
                env=env, stdout=subprocess.DEVNULL, stderr=err, text=True,
                start_new_session=True,
            )  # fmt: skip
        return self.proc

    def state(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ready(self) -> bool:
        """Whether this run of `dynix serve` says ready (a restarted host's old state does not
        count)."""
        assert self.proc is not None
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
            state = self.state()
            return state["pid"] == self.proc.pid and state["status"] == "ready"
        return False

    def kill(self, timeout: float = 10) -> None:
        """SIGKILL every process on this host: the machine is gone."""
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: processes {pids} survive SIGKILL")
            time.sleep(0.05)
        if self.proc is not None:
            self.proc.wait(timeout)

    def set_link(self, up: bool) -> None:
        """Cut this host off the network, or put it back."""
        ip("link", "set", self.link, "up" if up else "down")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM its `dynix serve`; its exit code (None if it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def etcdctl(host: Host, *args: str, check: bool = True) -> str:
    """`etcdctl` on `host`, against the etcd member listening on its address."""
    return host.run("etcdctl", "--endpoints", f"http://{host.address}:2379",
                    "--command-timeout", "5s", *args, check=check)  # fmt: skip


def member_names(host: Host) -> list[str]:
    """The names of the etcd cluster's members, asked on `host`."""
    data = json.loads(etcdctl(host, "member", "list", "-w", "json"))
    return sorted(m["name"] for m in data["members"])


def wait_ready(hosts: list[Host], timeout: float = 90) -> float:
    """Wait until every host says ready; the seconds it took."""
    t0 = time.monotonic()
    waiting = list(hosts)
    while waiting and time.monotonic() < t0 + timeout:
        for host in list(waiting):
            assert host.proc is not None
            if host.proc.poll() is not None:
                raise AssertionError(
                    f"{host.name} exited {host.proc.returncode}:\n{host.log_text()[-3000:]}"
                )
            if host.ready():
                waiting.remove(host)
        time.sleep(0.1)
    if waiting:
        logs = "\n".join(f"--- {h.name}\n{h.log_text()[-2500:]}" for h in waiting)
        raise AssertionError(f"not ready within {timeout} s:\n{logs}")
    return time.monotonic() - t0


@contextlib.contextmanager
def network(
    subnet: str, hosts: dict[str, int], folder: Path, env: dict[str, str]
) -> Iterator[dict[str, Host]]:
    """Hosts NAME -> SUBNET.N/24 on one new bridge; all removed at the end, whatever happened."""
    suffix = secrets.token_hex(3)
    bridge = f"dxb{suffix}"
    made: dict[str, Host] = {}
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("link", "set", bridge, "up")
        for i, (name, number) in enumerate(hosts.items(), 1):
            ns, outside, inside = f"dynix-{suffix}-{name}", f"dxv{suffix}{i}", f"dxp{suffix}{i}"
            address = f"{subnet}.{number}"
            made[name] = Host(name, ns, address, outside, folder / name, folder / f"{name}.log",
                              env=dict(env))  # fmt: skip
            ip("netns", "add", ns)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", ns)
            ip("link", "set", outside, "master", bridge)
            ip("link", "set", outside, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
            ip("-n", ns, "link", "set", inside, "up")
        yield made
    finally:
        for host in made.values():
            for pid in host.pids():  # only what the caller started runs in its namespaces
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            ip("netns", "del", host.ns, check=False)
            ip("link", "del", host.link, check=False)
        ip("link", "del", bridge, check=False)
