"""`dynix doctor` on a GPU host: the GPUs and their compute capability, the driver's version and
libraries (found where, linked where), and NVML and the CUDA driver API answering through the
driver folder as the stack's processes will load them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import process
from ..doctor import CUDA, FAIL, MIN_DRIVER, OK, WARN, Check, parse_version
from ..errors import DynixError
from . import driver as drivers
from . import folder as folders
from . import loader, smi
from .workerenv import NOT_FOUND_FIX

# The compute capabilities the stack's kernels are built for (pkgs/stack.nix, cuda.capabilities):
# H100/H200 and GB200/B200. The stack's wrapper sets DYNIX_CUDA_CAPABILITIES to those of the
# build it belongs to.
CAPABILITIES = ("9.0", "10.0")
CAPABILITIES_ENV = "DYNIX_CUDA_CAPABILITIES"
OVERRIDE = 'dynix-stack.overrideScope (final: prev: {{ cudaCapabilities = [ "{cap}" ]; }})'
RELOAD_FIX = "check `nvidia-smi`; after a driver upgrade reboot (the kernel module must match)"


def built_for() -> tuple[str, ...]:
    raw = os.environ.get(CAPABILITIES_ENV, "")
    listed = tuple(c for c in raw.replace(";", " ").replace(",", " ").split() if c)
    return listed or CAPABILITIES


def check_gpus(gpus: list[smi.Gpu] | None, error: str = "") -> Check:
    want = ".".join(map(str, MIN_DRIVER))
    if error:
        return Check("gpu", FAIL, f"nvidia-smi failed: {error}", "check the driver")
    if gpus is None:
        return Check(
            "gpu",
            WARN,
            "no nvidia-smi: no NVIDIA driver here (building needs none; serving does)",
            f"on GPU hosts install the NVIDIA driver >= {want}",
        )
    if not gpus:
        return Check("gpu", WARN, "nvidia-smi lists no GPU", "check the driver")
    names = sorted({f"{g.name} ({g.memory})" if g.memory else g.name for g in gpus})
    versions = sorted({g.driver for g in gpus})
    oldest = min(parse_version(v) for v in versions)
    detail = f"{len(gpus)} x {', '.join(names)}, driver {', '.join(versions)}"
    if oldest >= MIN_DRIVER:
        return Check("gpu", OK, f"{detail} (CUDA {CUDA} needs >= {want})")
    return Check(
        "gpu",
        FAIL,
        f"{detail}: CUDA {CUDA} needs driver >= {want}",
        f"upgrade the NVIDIA driver to >= {want}",
    )


def check_capability(gpus: list[smi.Gpu]) -> Check:
    wanted = built_for()
    shown = ", ".join(f"GPU {g.index} {g.capability or '?'}" for g in gpus)
    unknown = [g for g in gpus if not g.capability]
    outside = [g for g in gpus if g.capability and g.capability not in wanted]
    if outside:
        first = outside[0]
        return Check(
            "gpu capability",
            FAIL,
            f"{first.name} (GPU {first.index}) has compute capability {first.capability}; the "
            f"stack's kernels are built for {', '.join(wanted)}",
            "build for it: " + OVERRIDE.format(cap=first.capability),
        )
    if unknown:
        return Check(
            "gpu capability",
            WARN,
            f"nvidia-smi gives no compute capability ({shown}); built for {', '.join(wanted)}",
            f"upgrade the NVIDIA driver to >= {'.'.join(map(str, MIN_DRIVER))}",
        )
    return Check("gpu capability", OK, f"{shown} (the stack is built for {', '.join(wanted)})")


def check_libraries(driver: drivers.Driver, gpu_host: bool) -> Check:
    if driver.missing:
        searched = ", ".join(p.folder for p in driver.places)
        detail = f"{' and '.join(driver.missing)} not found (searched {searched})"
        return Check("driver libraries", FAIL if gpu_host else WARN, detail, NOT_FOUND_FIX)
    groups: dict[tuple[str, str], list[str]] = {}
    for library in driver.libraries:
        key = (os.path.dirname(library.path), library.source)
        groups.setdefault(key, []).append(library.name)
    where = "; ".join(f"{', '.join(names)} from {folder} ({source})"
                      for (folder, source), names in groups.items())  # fmt: skip
    versions = {drivers.version_of(lib.target) for lib in driver.libraries} - {""}
    version = driver.version or "version unknown"
    if len(versions) > 1:
        return Check(
            "driver libraries",
            WARN,
            f"libraries of several drivers ({', '.join(sorted(versions))}): {where}",
            "remove the older driver's libraries (a half-finished upgrade?)",
        )
    return Check("driver libraries", OK, f"{version}: {where}")


def _probe_check(name: str, answer: dict[str, Any], detail: str, library_path: str) -> Check:
    if answer.get("loaded") and answer.get("init") == 0:
        return Check(name, OK, detail)
    fix = RELOAD_FIX if answer.get("loaded") else f"LD_LIBRARY_PATH={library_path} lacks it"
    return Check(name, FAIL, str(answer.get("error", "not loaded")), fix)


def check_probe(probe: dict[str, Any], library_path: str) -> list[Check]:
    nvml, cuda = probe.get("nvml", {}), probe.get("cuda", {})
    nvml_ok = (
        f"nvmlInit ok through {nvml.get('file')}: {nvml.get('devices')} GPU(s), "
        f"driver {nvml.get('driver', '?')}"
    )
    cuda_ok = (
        f"cuInit ok through {cuda.get('file')}: {cuda.get('devices')} device(s), "
        f"CUDA {cuda.get('cuda', '?')} (driver API)"
    )
    return [
        _probe_check("nvml", nvml, nvml_ok, library_path),
        _probe_check("cuda driver", cuda, cuda_ok, library_path),
    ]


def run(run_command: Callable[..., process.Result] = process.run) -> list[Check]:
    """Every GPU check; on a host without nvidia-smi or driver, only what says so."""
    try:
        gpus, error = smi.query(run_command), ""
    except smi.SmiFailed as exc:
        gpus, error = [], str(exc)
    checks = [check_gpus(gpus, error)]
    if gpus:
        checks.append(check_capability(gpus))
    driver = drivers.discover()
    gpu_host = gpus is not None
    checks.append(check_libraries(driver, gpu_host))
    if driver.missing:
        return checks
    try:
        folder = folders.ensure(driver)
    except DynixError as exc:
        return [*checks, Check("driver folder", FAIL, str(exc), "see the message")]
    library_path = folders.library_path(folder)
    checks.append(Check("driver folder", OK, f"{folder} (library path: {library_path})"))
    try:
        probe = loader.probe(library_path)
    except DynixError as exc:
        return [*checks, Check("nvml", FAIL, str(exc), "run `python -m dynix.gpu.probe`")]
    return checks + check_probe(probe, library_path)
