"""`dynix status`: what `dynix serve` runs, from its state file."""

from __future__ import annotations

from pathlib import Path

import click

from .. import log
from ..errors import DynixError
from ..output import emit_json, table
from ..serve import config as stack_config
from ..serve import placement, procs, state


@click.command()
@click.option("--state-dir", type=click.Path(path_type=Path), help="The stack's state dir.")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def status(state_dir: Path | None, as_json: bool) -> None:
    """Show the serving stack: components, PIDs, ports, health."""
    folder = state_dir or stack_config.default_state_dir()
    data = state.read(folder)
    if data is None:
        raise DynixError(f"no stack has run from {folder} (no {state.STATE_FILE})")
    running = state.held(folder) or state.owner_alive(data)
    if not running and data.get("status") not in ("stopped", "failed"):
        data["status"] = "gone"  # dynix serve was killed without cleaning up
    data["running"] = running
    live = state.live_pids(data)
    table_now = procs.snapshot() if running or live else {}
    for component in data.get("components", []):
        pid = component.get("pid")
        component["alive"] = isinstance(pid, int) and (
            pid in live or (running and procs.alive(pid))
        )
        for name, service in (component.get("services") or {}).items():
            service["pids"] = [p for p in service.get("pids", []) if p in live or running]
            planned = (component.get("gpus") or {}).get(name)
            service["gpus"] = _service_gpus(service, planned, table_now)
    if not running and live:
        log.warn(
            f"dynix serve (pid {data.get('pid')}) is gone but {len(live)} processes of its stack "
            f"still run (pids {', '.join(map(str, sorted(live)[:8]))}); "
            f"`dynix serve --state-dir {folder}` stops them before it starts"
        )
    if as_json:
        emit_json(data)
        return
    click.echo(
        f"stack: {data.get('status')}  role: {data.get('role')}  graph: {data.get('graph')}  "
        f"model: {data.get('model')}"
    )
    if data.get("frontend"):
        click.echo(f"frontend: {data['frontend']}")
    here = data.get("services_here")
    if isinstance(here, list) and here:
        click.echo(f"services here: {', '.join(map(str, here))}")
    rows = []
    for component in data.get("components", []):
        ports = ", ".join(f"{k} {v}" for k, v in component.get("ports", {}).items())
        health = component.get("health", "") if component["alive"] else "not running"
        rows.append(
            [component["name"], str(component.get("pid") or "-"), health,
             str(component.get("restarts", 0)), ports, ""]
        )  # fmt: skip
        for name, service in (component.get("services") or {}).items():
            pids = ",".join(str(p) for p in service.get("pids", [])) or "-"
            health = "running" if service.get("pids") else "down"
            restarts = str(service.get("restarts", 0))
            rows.append([f"  {name}", pids, health, restarts, "", _shown_gpus(service["gpus"])])
    click.echo(table(rows, ["COMPONENT", "PID", "HEALTH", "RESTARTS", "PORTS", "GPUS"]))


def _service_gpus(service: dict, planned: list | None, now: dict) -> list[list[int]]:
    """The GPU indices of each of a service's processes: read from the running workers'
    command lines, else as planned when the stack started."""
    seen = []
    for pid in service.get("pids", []):
        info = now.get(pid)
        got = placement.from_argv(info.argv) if info else None
        if got is not None:
            seen.append(list(got))
    return seen or [list(w) for w in planned or []]


def _shown_gpus(gpus: list[list[int]]) -> str:
    return " ".join(",".join(map(str, worker)) or "all" for worker in gpus)
