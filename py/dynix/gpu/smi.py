"""The GPUs `nvidia-smi` lists: index, name, memory, driver version and compute capability."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import process

FIELDS = "name,memory.total,driver_version,compute_cap"
QUERY = ["nvidia-smi", f"--query-gpu={FIELDS}", "--format=csv,noheader"]
# Drivers before 510 know no compute_cap field: their GPUs are still listed, capability unknown.
QUERY_OLD = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory: str  # as nvidia-smi prints it, e.g. "143771 MiB"
    driver: str
    capability: str  # "9.0", or "" when unknown

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "memory": self.memory,
            "driver": self.driver,
            "capability": self.capability,
        }


class SmiFailed(Exception):
    """nvidia-smi ran and failed (no driver loaded, no permission)."""


def parse(text: str) -> list[Gpu]:
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if not line.strip() or len(fields) < 3:
            continue
        capability = fields[3] if len(fields) > 3 and fields[3] not in ("[N/A]", "N/A") else ""
        gpus.append(Gpu(len(gpus), fields[0], fields[1], fields[2], capability))
    return gpus


def query(run: Callable[..., process.Result] = process.run) -> list[Gpu] | None:
    """The GPUs, or None when there is no nvidia-smi; `SmiFailed` when it fails."""
    if not process.which("nvidia-smi"):
        return None
    result = run(QUERY, check=False, timeout=60)
    if result.returncode != 0 and "compute_cap" in (result.stdout + result.stderr):
        result = run(QUERY_OLD, check=False, timeout=60)
    if result.returncode != 0:
        raise SmiFailed((result.stderr or result.stdout).strip() or f"exit {result.returncode}")
    return parse(result.stdout)
