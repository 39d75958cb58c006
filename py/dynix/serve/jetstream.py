"""The vLLM graphs' prefill queue, replicated across a clustered control plane.

Dynamo 0.2.0's decode workers hand long prompts to the prefill workers through a JetStream
stream named after the model (examples/llm `utils/nats_queue.py`: subjects `NAME.*`, at most
1 GiB and a million messages). It creates the stream when it is missing, with JetStream's
default of one replica: the queue lives on one control-plane member, and while that member is
down no prompt can be queued. Before Dynamo starts on a graph node, dynix creates the stream the
same way but with a replica on each member (up to 3), or raises the replicas of one that has
fewer; Dynamo then finds it and uses it as it is.

JetStream is asked over the NATS client protocol itself (a request to `$JS.API.STREAM.*`), so
dynix needs no NATS library.
"""

from __future__ import annotations

import json
import secrets
import socket
import urllib.parse
from typing import Any

from ..errors import DynixError

MAX_BYTES = 1073741824  # as Dynamo's NATSQueue creates it
MAX_MSGS = 1000000


def stream_name(model: str) -> str:
    """The stream Dynamo's workers use for `model`'s prefill queue."""
    return model.replace("/", "_").replace("\\", "_")


class Connection:
    """One NATS client connection that makes requests and reads their replies."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 4222), timeout=timeout
        )
        self.file = self.sock.makefile("rb")
        info = self.file.readline()
        if not info.startswith(b"INFO "):
            raise DynixError(f"{url} is not a NATS server (it said {info[:60]!r})")
        self.inbox = f"_INBOX.dynix.{secrets.token_hex(8)}"
        connect = {"verbose": False, "pedantic": False, "headers": False, "name": "dynix"}
        self.sock.sendall(
            b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
            + f"SUB {self.inbox} 1\r\nPING\r\n".encode()
        )  # fmt: skip
        self._until_pong()

    def _until_pong(self) -> None:
        while (line := self.file.readline()) != b"PONG\r\n":
            if not line:
                raise DynixError("the NATS server closed the connection")
            if line.startswith(b"-ERR"):
                raise DynixError(f"NATS: {line.decode(errors='replace').strip()}")

    def request(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = json.dumps(body).encode() if body is not None else b""
        self.sock.sendall(
            f"PUB {subject} {self.inbox} {len(payload)}\r\n".encode() + payload + b"\r\n"
        )
        while True:
            line = self.file.readline()
            if not line:
                raise DynixError("the NATS server closed the connection")
            if line == b"PING\r\n":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise DynixError(f"NATS: {line.decode(errors='replace').strip()}")
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                data = self.file.read(size + 2)[:size]
                try:
                    return json.loads(data)
                except ValueError as exc:
                    raise DynixError(f"JetStream answered {data[:100]!r}") from exc

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def ensure_replicated(nats_url: str, name: str, replicas: int) -> str:
    """Make stream `name` exist with `replicas` replicas; what was done, as a clause."""
    try:
        conn = Connection(nats_url)
    except OSError as exc:
        raise DynixError(f"JetStream at {nats_url}: {exc}") from exc
    try:
        info = conn.request(f"$JS.API.STREAM.INFO.{name}")
        error = info.get("error")
        if error and error.get("err_code") != 10059:  # 10059: stream not found
            raise DynixError(f"JetStream: {error.get('description', error)}")
        if error:
            config = {
                "name": name,
                "subjects": [f"{name}.*"],
                "max_bytes": MAX_BYTES,
                "max_msgs": MAX_MSGS,
                "storage": "file",
                "num_replicas": replicas,
            }
            done, verb = conn.request(f"$JS.API.STREAM.CREATE.{name}", config), "created"
        else:
            config = info["config"]
            if config.get("num_replicas", 1) >= replicas:
                return f"stream {name} has {config.get('num_replicas', 1)} replicas"
            config = {**config, "num_replicas": replicas}
            done, verb = conn.request(f"$JS.API.STREAM.UPDATE.{name}", config), "updated"
        if done.get("error"):
            raise DynixError(f"JetStream: {done['error'].get('description', done['error'])}")
        return f"stream {name} {verb} with {replicas} replicas"
    except OSError as exc:
        raise DynixError(f"JetStream at {nats_url}: {exc}") from exc
    finally:
        conn.close()
