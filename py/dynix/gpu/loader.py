"""Running the probe (`dynix.gpu.probe`) as a program built by Nix would load libraries.

A Nix-built program's loader never reads the host's `/etc/ld.so.cache`. `ld.so --inhibit-cache
PROGRAM` makes the host's own loader behave the same way, so a host Python shows what the
stack's processes would find: only what their library path offers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from .. import process
from ..errors import DynixError
from . import elf

PY_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the dynix package


def interpreter(program: str) -> str:
    """The dynamic loader named by `program`'s PT_INTERP, or "" (a script, a static program)."""
    info = elf.read(os.path.realpath(program))
    return info.interpreter if info and os.path.isfile(info.interpreter) else ""


def probe_argv(*, inhibit_cache: bool = True, python: str = sys.executable) -> list[str]:
    argv = [python, "-m", "dynix.gpu.probe"]
    loader = interpreter(python) if inhibit_cache else ""
    return [loader, "--inhibit-cache", *argv] if loader else argv


def probe(
    library_path: str | None, *, inhibit_cache: bool = True, timeout: float = 60
) -> dict[str, Any]:
    """What NVML and the CUDA driver answer when loaded by bare name with `library_path` (None:
    no library path at all), the host's loader cache ignored unless `inhibit_cache` is False."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    if library_path is not None:
        env["LD_LIBRARY_PATH"] = library_path
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PY_ROOT, env.get("PYTHONPATH")]))
    argv = probe_argv(inhibit_cache=inhibit_cache)
    result = process.run(argv, env=env, check=False, timeout=timeout)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise DynixError(f"the driver probe failed: {tail[0]}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise DynixError(f"the driver probe printed no JSON: {result.stdout[:200]!r}") from exc
