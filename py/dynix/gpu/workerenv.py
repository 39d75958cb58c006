"""The environment of the stack's GPU processes (`dynamo serve` and the vLLM workers it starts),
in one place.

- `LD_LIBRARY_PATH`: NixOS's driver link first where it exists, then dynix's driver folder;
  nothing else of the host's (its glibc and CUDA runtime are not the stack's). It replaces any
  inherited value.
- `TRITON_LIBCUDA_PATH`: the driver folder, where Triton finds `libcuda.so` without
  `ldconfig -p`.
- `CUDA_DEVICE_ORDER=PCI_BUS_ID`: CUDA numbers devices as nvidia-smi and NVML do, the numbers
  Dynamo's allocator writes into each worker's `CUDA_VISIBLE_DEVICES`.
- `DYNIX_DRIVER_DIR`: the folder itself, for programs and people that look for it.
- What the Nix wrapper of the stack sets (`pkgs/dynamo-arm/worker-env.nix`), passed on as it is
  so that `--dry-run` shows it: `VLLM_NCCL_SO_PATH`, `VLLM_KV_CAPI_PATH`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import log
from ..errors import DynixError
from . import driver as drivers
from . import folder as folders

FROM_NIX = ("VLLM_NCCL_SO_PATH", "VLLM_KV_CAPI_PATH")
NOT_FOUND_FIX = (
    "install the NVIDIA driver's user-space libraries (Ubuntu: libnvidia-compute-<branch>), "
    "`dynix doctor` lists where dynix looked"
)


@dataclass(frozen=True)
class WorkerEnv:
    env: dict[str, str] = field(default_factory=dict)
    folder: Path | None = None
    driver: drivers.Driver | None = None
    problem: str = ""


def missing_message(driver: drivers.Driver) -> str:
    return f"no NVIDIA driver here: {' and '.join(driver.missing)} not found; {NOT_FOUND_FIX}"


def driver_env(folder: Path, base: Path | None = None) -> dict[str, str]:
    return {
        "LD_LIBRARY_PATH": folders.library_path(folder, base),
        "TRITON_LIBCUDA_PATH": str(folder),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "DYNIX_DRIVER_DIR": str(folder),
    }


def nix_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FROM_NIX if os.environ.get(name)}


def prepare(base: Path | None = None) -> WorkerEnv:
    """Find the driver, make its folder and give the environment; `problem` says what is
    missing (the environment then holds only what Nix set)."""
    driver = drivers.discover(base)
    if driver.missing:
        return WorkerEnv(nix_env(), None, driver, missing_message(driver))
    folder = folders.ensure(driver)
    return WorkerEnv({**driver_env(folder, base), **nix_env()}, folder, driver)


def for_gpu_graph(*, dry_run: bool) -> WorkerEnv:
    """The worker environment for a vLLM graph: an error without the driver, unless `dry_run`
    (then a warning, and the environment without it)."""
    prepared = prepare()
    if prepared.problem:
        if not dry_run:
            raise DynixError(prepared.problem)
        log.warn(f"dynix: {prepared.problem}")
    elif prepared.driver is not None and prepared.folder is not None:
        log.debug(
            f"dynix: NVIDIA driver {prepared.driver.version or '(version unknown)'} "
            f"linked in {prepared.folder}"
        )
    return prepared
