"""The state file (`state.json` in the state dir) that `dynix status` reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import DynixError
from ..files import write_text_atomic
from . import procs

STATE_FILE = "state.json"


def path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def write(state_dir: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path(state_dir), json.dumps(data, indent=2) + "\n")


def read(state_dir: Path) -> dict[str, Any] | None:
    try:
        text = path(state_dir).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DynixError(f"cannot read {path(state_dir)}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DynixError(f"{path(state_dir)} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else None


def owner_alive(data: dict[str, Any]) -> bool:
    """Whether the `dynix serve` that wrote `data` still runs."""
    pid = data.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not procs.alive(pid):
        return False
    info = procs.snapshot().get(pid)
    return info is not None and any("dynix" in arg for arg in info.argv)


def check_not_running(state_dir: Path) -> None:
    data = read(state_dir)
    if data and data.get("status") not in ("stopped", "failed") and owner_alive(data):
        raise DynixError(
            f"a stack is already running from {state_dir} (dynix pid {data['pid']}); "
            "stop it first or pass another --state-dir"
        )
    if data and not owner_alive(data):
        left = leftovers(data)
        if left:
            pids = ", ".join(str(p.pid) for p in left[:8])
            raise DynixError(
                f"processes of an earlier stack in {state_dir} are still running (pids {pids}); "
                "stop them before starting again"
            )


def leftovers(data: dict[str, Any]) -> list[procs.ProcInfo]:
    """Processes recorded in `data` that still run the program they ran then."""
    table = procs.snapshot()
    recorded: dict[int, str] = {}
    for component in data.get("components", []):
        if isinstance(component.get("pid"), int) and component.get("argv"):
            recorded[component["pid"]] = component["argv"][0]
        for service in (component.get("services") or {}).values():
            for pid in service.get("pids", []):
                recorded[pid] = "python"
    out = []
    for pid, program in recorded.items():
        info = table.get(pid)
        if info and info.state != "Z" and info.argv and pid != os.getpid():
            if program == "python":
                if procs.service_name(info):
                    out.append(info)
            elif os.path.basename(info.argv[0]) == os.path.basename(program):
                out.append(info)
    return out
