"""A graph node's local way to etcd: a TCP forwarder from 127.0.0.1 to whichever member answers.

    python -m dynix.serve.forward 127.0.0.1:23790 http://10.0.0.1:2379,http://10.0.0.2:2379 [FIRST]

Dynamo 0.2.0's etcd client, given several members, sends its first request to any of them and
fails to start when that one is down; given a member that goes away, its processes exit. Given
this forwarder instead, a process that starts (or restarts) always reaches a member that answers.
Each connection goes to the member that answered last (at first the FIRST-th, counted from 0:
nodes start on different members, so that losing one touches only some of them), else the next
one that accepts within a second. A connection's member going silent (its host gone, its link
down) is noticed within a few seconds (TCP keepalive and user timeout) and the connection
closed, as if the member had died.

etcd's own `grpc-proxy` would keep connections across a member's loss, but Dynamo 0.2.0's
watches fail through it ("channel closed"), so bytes are forwarded as they are.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time
import urllib.parse

CONNECT_TIMEOUT = 1.0
MOVED = "now forwarding to"  # said when the member answering before does not any more
DROPPED = re.compile(r"dropped its connections at ([0-9.]+)")  # ... and when it cut them
CHUNK = 65536


def _address(text: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(text if "//" in text else f"tcp://{text}")
    if not parts.hostname or not parts.port:
        raise ValueError(f"not HOST:PORT or a URL with a port: {text!r}")
    return parts.hostname, parts.port


def _keepalive(sock: socket.socket) -> None:
    """Notice a peer that went silent within about five seconds."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3),
                          ("TCP_USER_TIMEOUT", 5000)):  # fmt: skip
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class Forwarder:
    def __init__(self, targets: list[tuple[str, int]], first: int = 0) -> None:
        self.targets = targets
        self.preferred = first % len(targets)
        # When each member last closed a connection first (seconds since boot, as
        # CLOCK_BOOTTIME and /proc's process start times count).
        self.dropped: dict[int, float] = {}

    def _say(self, text: str) -> None:
        print(f"etcd-proxy: {text}", file=sys.stderr, flush=True)

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        count = len(self.targets)
        for step in range(count):
            index = (self.preferred + step) % count
            host, port = self.targets[index]
            try:
                streams = await asyncio.wait_for(
                    asyncio.open_connection(host, port), CONNECT_TIMEOUT
                )
            except (OSError, asyncio.TimeoutError) as exc:
                self._say(f"{host}:{port} does not answer ({exc or 'timed out'})")
                continue
            if index != self.preferred:
                old_host, old_port = self.targets[self.preferred]
                when = self.dropped.get(self.preferred)
                dropped = (
                    f"; {old_host}:{old_port} dropped its connections at {when:.6f}"
                    if when is not None
                    else ""
                )
                self._say(f"{MOVED} {host}:{port}{dropped}")
                self.preferred = index
            return (index, *streams)
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            self._say("no member answers: closing the connection")
            writer.close()
            return
        index, up_reader, up_writer = upstream
        sock = up_writer.get_extra_info("socket")
        if sock is not None:
            _keepalive(sock)
        ended: list[str] = []  # the sides whose streams ended, the first first

        def end(side: str) -> None:
            if not ended and side == "member":  # the member cut it, not the client
                self.dropped[index] = time.clock_gettime(time.CLOCK_BOOTTIME)
            ended.append(side)

        await asyncio.gather(
            self._pipe(reader, up_writer, "client", end),
            self._pipe(up_reader, writer, "member", end),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, side: str, end
    ) -> None:
        try:
            while True:
                try:
                    data = await source.read(CHUNK)
                except OSError:
                    data = b""
                if not data:  # `side` closed (or broke) its end
                    end(side)
                    return
                sink.write(data)
                await sink.drain()
        except OSError:  # the other side broke while we wrote to it
            end("client" if side == "member" else "member")
        finally:
            sink.close()  # one side gone: the other goes too


async def serve(listen: tuple[str, int], targets: list[tuple[str, int]], first: int) -> None:
    forwarder = Forwarder(targets, first)
    server = await asyncio.start_server(forwarder.handle, listen[0], listen[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = targets[forwarder.preferred]
    forwarder._say(f"listening on {listen[0]}:{listen[1]}, forwarding to {host}:{port} (else "
                   + ", ".join(f"{h}:{p}" for h, p in targets if (h, p) != (host, port))
                   + ")")  # fmt: skip
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m dynix.serve.forward LISTEN_HOST:PORT URL[,URL...] [FIRST]",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        listen = _address(argv[0])
        targets = [_address(t) for t in argv[1].split(",") if t.strip()]
        first = int(argv[2]) if len(argv) == 3 else 0
        if not targets:
            raise ValueError("no member to forward to")
    except ValueError as exc:
        print(f"etcd-proxy: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(listen, targets, first))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
