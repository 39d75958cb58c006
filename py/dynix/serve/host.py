"""What the machine offers the stack: programs, GPUs, network interfaces and free ports.

Programs come from PATH, which `nix run .#dynix` fills from the flake's closure; outside Nix a
missing one is reported with the package that provides it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from .. import process
from ..errors import DynixError

# What provides each program, for the message when one is missing.
HOW_TO_GET = {
    "nats-server": "apt-get install nats-server, or `nix run .#dynix` (the flake provides it)",
    "etcd": "apt-get install etcd-server, or `nix run .#dynix` (the flake provides it)",
    "dynamo": "pip install ai-dynamo==0.2.0 ai-dynamo-runtime==0.2.0, or `nix run .#dynix`",
}
EXAMPLES_HINT = (
    "pass --examples DIR (Dynamo's examples/llm), set DYNIX_EXAMPLES, or run through "
    "`nix run .#dynix`, which installs them as share/dynamo/examples/llm beside `dynamo`"
)
ECHO_EXAMPLES = Path(__file__).resolve().parent / "examples"


def program(name: str) -> str:
    """The full path of `name` on PATH, or an error saying how to get it."""
    found = process.which(name)
    if not found:
        raise DynixError(f"{name} not found on PATH: {HOW_TO_GET.get(name, 'install it')}")
    return found


def circusctl(dynamo: str | None) -> str | None:
    """`circusctl` (Dynamo's process manager's client) beside `dynamo`, else on PATH."""
    if dynamo:
        for folder in {Path(dynamo).parent, Path(os.path.realpath(dynamo)).parent}:
            candidate = folder / "circusctl"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return process.which("circusctl")


def examples_dir(explicit: str, dynamo: str | None) -> Path | None:
    """Dynamo's `examples/llm`: `explicit`, `$DYNIX_EXAMPLES`, or `<prefix>/share/dynamo/...`."""
    for candidate in (explicit, os.environ.get("DYNIX_EXAMPLES", "")):
        if candidate:
            path = Path(candidate)
            if not (path / "graphs").is_dir():
                raise DynixError(f"{path} is not Dynamo's examples/llm (it has no graphs/ folder)")
            return path
    if dynamo:
        for binary in (Path(dynamo), Path(os.path.realpath(dynamo))):
            path = binary.parent.parent / "share" / "dynamo" / "examples" / "llm"
            if (path / "graphs").is_dir():
                return path
    return None


def gpu_count() -> int:
    """GPUs listed by `nvidia-smi -L`; 0 when there is no nvidia-smi or it finds none."""
    if not process.which("nvidia-smi"):
        return 0
    result = process.run(["nvidia-smi", "-L"], check=False, timeout=30)
    if result.returncode != 0:
        return 0
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))


def non_loopback_ipv4() -> list[str]:
    """The IPv4 addresses of this machine's interfaces other than loopback."""
    addresses = []
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(
                    sock.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode())
                )
            except OSError:
                continue  # no IPv4 address on this interface
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                addresses.append(address)
    return addresses


def response_address() -> str | None:
    """The address Dynamo 0.2.0's processes give other nodes to send response streams to: the
    source address of this machine's route towards 192.0.2.0 (a reserved address; how its
    `local_ip_address` crate picks one), else the first non-loopback IPv4 address. Connecting a
    UDP socket only looks the route up: nothing is sent."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
        try:
            sock.connect(("192.0.2.0", 9))
            address = sock.getsockname()[0]
            if not address.startswith("127."):
                return address
        except OSError:
            pass  # no route there
    addresses = non_loopback_ipv4()
    return addresses[0] if addresses else None


def check_response_address(advertise: str) -> None:
    """Fail unless Dynamo's processes here would give other nodes `advertise` as well."""
    found = response_address()
    if found is None or found == advertise:
        return
    raise DynixError(
        f"--advertise {advertise}: Dynamo 0.2.0's processes here would tell other nodes to send "
        f"responses to {found} (the source address of this machine's default route; it takes "
        f"no setting), not {advertise}; advertise {found}, or make {advertise} the route's "
        f"source (`ip route change default via GATEWAY src {advertise}`)"
    )


def require_non_loopback_ipv4() -> None:
    if not non_loopback_ipv4():
        raise DynixError(
            "no network interface other than loopback has an IPv4 address: Dynamo's HTTP "
            "frontend needs one (it fails with LocalIpAddressNotFound); add one, e.g. "
            "`ip link add dynix0 type dummy && ip addr add 10.254.0.1/32 dev dynix0 && "
            "ip link set dynix0 up`"
        )


@dataclass(frozen=True)
class Port:
    what: str
    host: str
    port: int


def check_ports(ports: list[Port]) -> None:
    """Fail, naming the first one, if any of `ports` cannot be bound (something has it)."""
    seen: dict[int, str] = {}
    for item in ports:
        if item.port in seen:
            raise DynixError(
                f"port {item.port} is configured twice: for {seen[item.port]} and {item.what}"
            )
        seen[item.port] = item.what
        if not 0 < item.port < 65536:
            raise DynixError(f"port {item.port} for {item.what} is not a valid port")
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((item.host, item.port))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise DynixError(
                        f"{item.host} ({item.what}) is not an address of this machine"
                    ) from exc
                raise DynixError(
                    f"port {item.port} ({item.what}) on {item.host} is taken: "
                    f"{exc.strerror or exc}; free it or configure another port"
                ) from exc


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
