"""The state file (`state.json` in the state dir) that `dynix status` reads."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .. import log
from ..errors import DynixError
from ..files import read_text, try_lock, write_text_atomic
from . import procs

STATE_FILE = "state.json"
LOGS = "logs"
NOT_FOLLOWED = "dynix does not follow links it did not make in its state folder; remove it"


def path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def write(state_dir: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path(state_dir), json.dumps(data, indent=2) + "\n", follow=False)


def prepare(state_dir: Path) -> None:
    """Make the state folder and its `logs/`; a link planted there is refused, not followed."""
    logs = state_dir / LOGS
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        if logs.is_symlink():
            raise DynixError(f"{logs} is a symbolic link: {NOT_FOLLOWED}")
        logs.mkdir(exist_ok=True)
        probe = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        os.close(probe)
        if not os.access(state_dir, os.W_OK) or not os.access(logs, os.W_OK):
            raise PermissionError(13, "Permission denied", str(state_dir))
    except OSError as exc:
        raise DynixError(f"cannot use state folder {state_dir}: {exc.strerror or exc}") from exc


def make_folder(folder: Path) -> None:
    """A folder of the state dir; a link planted in its place is refused, not followed."""
    if folder.is_symlink():
        raise DynixError(f"{folder} is a symbolic link: {NOT_FOLLOWED}")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise DynixError(f"cannot make {folder}: {exc.strerror or exc}") from exc


def write_file(state_dir: Path, name: str, text: str) -> None:
    """Write `name` (a path inside the state dir) whole, refusing links there."""
    target = state_dir / name
    if target.parent != state_dir:
        make_folder(target.parent)
    write_text_atomic(target, text, follow=False)


def open_log(state_dir: Path, name: str) -> IO[str]:
    """`logs/NAME.log`, opened to append; a link there (or a `logs` that is one) is refused."""
    where = state_dir / LOGS / f"{name}.log"
    try:
        folder = os.open(state_dir / LOGS, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fd = os.open(
                f"{name}.log",
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=folder,
            )
        finally:
            os.close(folder)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise DynixError(f"{where} is a symbolic link: {NOT_FOLLOWED}") from exc
        raise DynixError(f"cannot write {where}: {exc.strerror or exc}") from exc
    return os.fdopen(fd, "a", encoding="utf-8")


def read(state_dir: Path) -> dict[str, Any] | None:
    if path(state_dir).is_symlink():
        raise DynixError(f"{path(state_dir)} is a symbolic link: {NOT_FOLLOWED}")
    try:
        text = read_text(path(state_dir))
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DynixError(f"{path(state_dir)} is not valid JSON: {exc}") from exc
    if not _well_formed(data):
        raise DynixError(
            f"{path(state_dir)} is not a state file dynix wrote (remove it if no stack runs)"
        )
    return data


def _well_formed(data: Any) -> bool:
    """The shape `dynix status` and the supervisor rely on."""
    if not isinstance(data, dict) or not isinstance(data.get("components", []), list):
        return False
    if not isinstance(data.get("pid", 0), int | None):
        return False
    for component in data.get("components", []):
        if not isinstance(component, dict) or not isinstance(component.get("name", ""), str):
            return False
        if not isinstance(component.get("pid"), int | None):
            return False
        if not isinstance(component.get("ports", {}), dict):
            return False
        if not isinstance(component.get("argv", []), list):
            return False
        services = component.get("services") or {}
        if not isinstance(services, dict) or not all(
            isinstance(s, dict) and isinstance(s.get("pids", []), list) for s in services.values()
        ):
            return False
    return True


def owner_alive(data: dict[str, Any]) -> bool:
    """Whether the `dynix serve` that wrote `data` still runs."""
    pid = data.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not procs.alive(pid):
        return False
    info = procs.snapshot().get(pid)
    return info is not None and any("dynix" in arg for arg in info.argv)


@contextlib.contextmanager
def claim(state_dir: Path) -> Iterator[bool]:
    """Hold the state folder for one stack: a lock on the folder, kept while the stack runs
    (the kernel drops it when dynix ends, even by SIGKILL). Yields whether the folder was made
    now. A second `dynix serve` on the same folder is refused at once."""
    fresh = not state_dir.exists()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise DynixError(f"cannot use state folder {state_dir}: {exc.strerror or exc}") from exc
    try:
        if not try_lock(fd):
            data = _read_quietly(state_dir)
            owner = f" (dynix pid {data['pid']})" if data and data.get("pid") else ""
            raise DynixError(
                f"a stack is already running from {state_dir}{owner}; "
                "stop it first or pass another --state-dir"
            )
        yield fresh
    finally:
        os.close(fd)


def unclaim(state_dir: Path) -> None:
    """Remove a state folder `claim` made, when nothing was written into it."""
    with contextlib.suppress(OSError):
        state_dir.rmdir()


def held(state_dir: Path) -> bool:
    """Whether a `dynix serve` holds `state_dir` now."""
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return not try_lock(fd)
    finally:
        os.close(fd)


def _read_quietly(state_dir: Path) -> dict[str, Any] | None:
    try:
        return read(state_dir)
    except DynixError:
        return None


def live_pids(data: dict[str, Any]) -> set[int]:
    """The recorded processes of the stack in `data` that still run (whether or not the dynix
    that started them does)."""
    found = {p.pid for p in leftovers(data)}
    return found | {p.pid for p in procs.marked(str(data.get("stack_id") or ""))}


def check_not_running(state_dir: Path, grace: float = 3.0) -> None:
    """With the folder claimed: stop what an earlier, killed stack left running (they carry
    its mark); refuse when unmarked processes it recorded still run."""
    data = read(state_dir)
    if data and data.get("status") not in ("stopped", "failed") and owner_alive(data):
        raise DynixError(
            f"a stack is already running from {state_dir} (dynix pid {data['pid']}); "
            "stop it first or pass another --state-dir"
        )
    if data and not owner_alive(data):
        stack_id = str(data.get("stack_id") or "")
        if procs.marked(stack_id):
            pids = ", ".join(str(p.pid) for p in procs.marked(stack_id)[:8])
            log.info(
                f"dynix: the stack that ran from {state_dir} (dynix pid {data.get('pid')}) was "
                f"killed; stopping what it left running (pids {pids})"
            )
            procs.stop_marked(stack_id, grace)
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
