"""Starting and stopping real `dynix serve` stacks for the tests: free ports, a config file,
readiness from the state file, and a stop that leaves nothing behind."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conftest import live_processes, test_env

PORT_KEYS = (
    "port",
    "nats-port",
    "nats-monitor-port",
    "etcd-port",
    "etcd-peer-port",
    "circus-port",
    "circus-pubsub-port",
)


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (bound together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def stack_ports() -> dict[str, int]:
    """A free port for each of the stack's ports, by its key in the config."""
    return dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)), strict=True))


def port_free(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def write_config(path: Path, state_dir: Path, ports: dict[str, int], **serve: object) -> Path:
    lines = ["[serve]", f'state-dir = "{state_dir}"', f"port = {ports['port']}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in serve.items()]
    lines += ["[serve.control-plane]"]
    lines += [f"{k} = {ports[k]}" for k in PORT_KEYS[1:5]]
    lines += ["[serve.supervise]", "backoff = 0.2"]
    lines += [f"{k} = {ports[k]}" for k in PORT_KEYS[5:]]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Stack:
    proc: subprocess.Popen
    state_dir: Path
    stderr: Path
    ports: dict[str, int]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}/v1"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['etcd-port']}"

    def state(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def component(self, name: str) -> dict:
        return next(c for c in self.state()["components"] if c["name"] == name)

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


def start(args: list[str], state_dir: Path, ports: dict[str, int], log: Path) -> Stack:
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dynix", "serve", *args],
            env=test_env(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    return Stack(proc, state_dir, log, ports)


def wait_ready(stack: Stack, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.proc.poll() is not None:
            raise AssertionError(
                f"dynix serve exited {stack.proc.returncode}:\n{stack.log()[-3000:]}"
            )
        try:
            if stack.state()["status"] == "ready":
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready within {timeout} s:\n{stack.log()[-3000:]}")


def recorded_groups(state: dict) -> set[int]:
    groups = set()
    for component in state["components"]:
        groups.update(component.get("pgids") or [])
        if component.get("pid"):
            groups.add(component["pid"])
    return groups


def live_members(groups: set[int]) -> list[str]:
    """Processes (not zombies) in any of `groups`, as "pid argv"."""
    return [
        f"{pid} {argv[:120]}" for pid, fields, argv in live_processes() if int(fields[2]) in groups
    ]


def stop(stack: Stack, timeout: float = 15) -> int:
    """SIGTERM `dynix serve`; kill what it started if it does not stop in time."""
    if stack.proc.poll() is None:
        groups = set()
        with contextlib.suppress(Exception):
            groups = recorded_groups(stack.state())
        stack.proc.send_signal(signal.SIGTERM)
        try:
            stack.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for group in groups | {stack.proc.pid}:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
            stack.proc.wait(5)
    return stack.proc.returncode


def ask(client, prompt: str, stream: bool = False) -> tuple[str, str]:
    """(content, system_fingerprint) of one chat completion."""
    messages = [{"role": "system", "content": "be an echo"}, {"role": "user", "content": prompt}]
    if not stream:
        answer = client.chat.completions.create(model="echo", messages=messages)
        return answer.choices[0].message.content, answer.system_fingerprint
    parts, fingerprint = [], ""
    for chunk in client.chat.completions.create(model="echo", messages=messages, stream=True):
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        fingerprint = chunk.system_fingerprint or fingerprint
    return "".join(parts), fingerprint


def etcd_keys(url: str, prefix: str) -> list[str]:
    body = {
        "key": base64.b64encode(prefix.encode()).decode(),
        "range_end": base64.b64encode(prefix[:-1].encode() + bytes([ord(prefix[-1]) + 1])).decode(),
        "keys_only": True,
    }
    request = urllib.request.Request(f"{url}/v3/kv/range", json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        data = json.load(response)
    return [base64.b64decode(kv["key"]).decode() for kv in data.get("kvs", [])]
