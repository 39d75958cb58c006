"""Which GPUs each Dynamo service's processes get, and which graphs fit this host's GPUs.

`dynamo serve` (Dynamo 0.2.0's `ResourceAllocator`) gives each worker of a service that asks for
`ServiceArgs.resources.gpu = N` the next N GPU indices not yet given, service by service in the
order it creates them (a graph's dependencies, from the frontend down: decode workers, then
prefill workers), and starts the worker with `CUDA_VISIBLE_DEVICES` set to them. Past the GPUs
present it hands out indices that do not exist (and only warns), so dynix refuses that before
starting. `DYN_DISABLE_AUTO_GPU_ALLOCATION` turns the allocation off: every worker sees every GPU.

A running worker's share is read back from its command line (`--worker-env` holds one
environment per worker, `--worker-id` says which is its own).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import render
from .config import GRAPHS, StackConfig

DISABLE = "DYN_DISABLE_AUTO_GPU_ALLOCATION"


@dataclass(frozen=True)
class ServiceGpus:
    service: str
    workers: tuple[tuple[int, ...], ...]  # per worker, the GPU indices it gets; () for all

    def to_json(self) -> list[list[int]]:
        return [list(w) for w in self.workers]


def place(rendered: dict[str, Any], gpus: int) -> list[ServiceGpus]:
    """The GPU indices of each worker of each GPU service, as Dynamo will assign them."""
    if DISABLE in os.environ:
        return [ServiceGpus(n.service, ((),) * n.workers) for n in render.gpu_needs(rendered)]
    free = list(range(gpus))
    beyond = gpus
    out = []
    for need in render.gpu_needs(rendered):
        workers = []
        for _ in range(need.workers):
            taken = free[: need.gpus_per_worker]
            del free[: need.gpus_per_worker]
            while len(taken) < need.gpus_per_worker:
                taken.append(beyond)
                beyond += 1
            workers.append(tuple(taken))
        out.append(ServiceGpus(need.service, tuple(workers)))
    return out


def needed(config: StackConfig, graph: str) -> int:
    rendered = render.service_config(config.override(graph=graph))
    return sum(n.total for n in render.gpu_needs(rendered))


def fitting(config: StackConfig, gpus: int) -> list[str]:
    """The graphs whose workers (as `config` sizes them) fit on `gpus` GPUs."""
    return [g for g in GRAPHS if needed(config, g) <= gpus]


def describe(placement: Sequence[ServiceGpus], gpus: int) -> list[str]:
    """One line per service: `VllmWorker: worker 1 GPU 0, worker 2 GPU 1`."""
    lines = []
    for item in placement:
        parts = []
        for number, indices in enumerate(item.workers, 1):
            if not indices:
                shown = "all GPUs (" + DISABLE + " is set)"
            else:
                shown = ("GPU " if len(indices) == 1 else "GPUs ") + ",".join(map(str, indices))
                if any(i >= gpus for i in indices):
                    shown += f" (not present: {gpus} here)"
            parts.append(f"worker {number} {shown}")
        lines.append(f"{item.service}: {', '.join(parts)}")
    return lines


def from_argv(argv: Sequence[str]) -> tuple[int, ...] | None:
    """The GPU indices a running `serve_dynamo` worker got, from its command line; None when it
    got no share (no GPUs asked for, or the allocation is off)."""
    try:
        envs = json.loads(argv[argv.index("--worker-env") + 1])
        worker = int(argv[argv.index("--worker-id") + 1])
        visible = str(envs[worker - 1].get("CUDA_VISIBLE_DEVICES", ""))
    except (ValueError, IndexError, TypeError, AttributeError, json.JSONDecodeError):
        return None
    try:
        return tuple(int(i) for i in visible.split(",") if i.strip())
    except ValueError:
        return None
