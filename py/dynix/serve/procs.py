"""Process trees from /proc: who descends from whom, their groups, and stopping groups.

`dynamo serve` runs its services through circus, which starts each one in a session of its
own: signalling the `dynamo serve` process group does not reach them. The supervisor therefore
records the process group of every descendant it sees and stops them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    argv: list[str]


def _stat(pid: int) -> ProcInfo | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    argv = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
    return ProcInfo(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0], argv)


def snapshot() -> dict[int, ProcInfo]:
    table = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None:
                table[info.pid] = info
    return table


def descendants(pid: int, table: dict[int, ProcInfo] | None = None) -> list[ProcInfo]:
    table = snapshot() if table is None else table
    children: dict[int, list[ProcInfo]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child.pid)
    return out


def started(pid: int) -> float | None:
    """When `pid` started, in seconds since boot (as `time.CLOCK_BOOTTIME` counts)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    info = _stat(pid)
    return info is not None and info.state != "Z"


def members(pgids: set[int], table: dict[int, ProcInfo] | None = None) -> list[ProcInfo]:
    """Live (non-zombie) processes in any of `pgids`."""
    table = snapshot() if table is None else table
    return [i for i in table.values() if i.pgid in pgids and i.state != "Z"]


def signal_groups(pgids: set[int], sig: int) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def stop_groups(pgids: set[int], grace: float, reap=None) -> list[ProcInfo]:
    """SIGTERM every group, SIGKILL what is left after `grace` seconds; returns survivors.

    `reap` is called while waiting so the caller can collect its own children's exit codes.
    """
    if not pgids:
        return []
    signal_groups(pgids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap:
            reap()
        if not members(pgids):
            return []
        time.sleep(0.05)
    signal_groups(pgids, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if reap:
            reap()
        left = members(pgids)
        if not left:
            return []
        time.sleep(0.05)
    return members(pgids)


STACK_ENV = "DYNIX_STACK"  # set for every process of a stack, inherited by what they start


def marked(stack_id: str, table: dict[int, ProcInfo] | None = None) -> list[ProcInfo]:
    """Live processes whose environment says they belong to stack `stack_id`: they are found
    even when their parent is gone (a service circus started just before it was stopped, or
    everything after `dynix serve` itself was killed)."""
    if not stack_id:
        return []
    table = snapshot() if table is None else table
    wanted = f"{STACK_ENV}={stack_id}".encode()
    found = []
    for info in table.values():
        if info.state == "Z" or info.pid == os.getpid():
            continue
        try:
            environ = (PROC / str(info.pid) / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(info)
    return found


def stop_marked(stack_id: str, grace: float, reap=None) -> list[ProcInfo]:
    """Stop every process of stack `stack_id` (by their groups, never dynix's own); returns
    those still running. A few rounds: one may be starting another as the first are stopped."""
    left: list[ProcInfo] = []
    for _ in range(3):
        found = marked(stack_id)
        if not found:
            return []
        groups = {p.pgid for p in found} - {os.getpgrp()}
        left = stop_groups(groups, grace, reap=reap)
        for info in found:
            if info.pgid == os.getpgrp():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.pid, signal.SIGKILL)
    return left or marked(stack_id)


def service_name(info: ProcInfo) -> str | None:
    """The Dynamo service a `dynamo.sdk.cli.serve_dynamo ... --service-name X` process runs."""
    argv = info.argv
    if "dynamo.sdk.cli.serve_dynamo" not in argv or "--service-name" not in argv:
        return None
    index = argv.index("--service-name") + 1
    return argv[index] if index < len(argv) else None
