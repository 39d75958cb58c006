"""`python -m dynix.gpu.probe`: load NVML and the CUDA driver by bare name, as vLLM's pynvml
and CUDA's runtime do, and print what they answer as JSON on stdout.

It uses the standard library only, so that it runs under another loader (`ld.so
--inhibit-cache python -m dynix.gpu.probe`, which ignores the host's loader cache as programs
built by Nix do) and with the library path dynix gives the stack.
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

NVML = "libnvidia-ml.so.1"
CUDA = "libcuda.so.1"


def loaded_from(name: str) -> str:
    """The file a library loaded into this process came from (/proc/self/maps)."""
    stem = name.split(".so", 1)[0] + ".so"
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split(None, 5)[-1].strip() if line.count(" ") >= 5 else ""
                if path.startswith("/") and path.rsplit("/", 1)[-1].startswith(stem):
                    return path
    except OSError:
        pass
    return ""


def load(name: str) -> tuple[ctypes.CDLL | None, dict[str, Any]]:
    """The library loaded by bare name (the library path, then the loader's cache), and what
    to report of it."""
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        return None, {"library": name, "loaded": False, "error": str(exc)}
    return lib, {"library": name, "loaded": True, "file": loaded_from(name)}


def nvml() -> dict[str, Any]:
    lib, out = load(NVML)
    if lib is None:
        return out
    lib.nvmlErrorString.restype = ctypes.c_char_p
    rc = lib.nvmlInit_v2()
    out["init"] = rc
    if rc != 0:
        out["error"] = f"nvmlInit_v2: {lib.nvmlErrorString(rc).decode()} ({rc})"
        return out
    count = ctypes.c_uint(0)
    rc = lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
    out["devices"] = count.value if rc == 0 else None
    version = ctypes.create_string_buffer(96)
    if lib.nvmlSystemGetDriverVersion(version, ctypes.c_uint(len(version))) == 0:
        out["driver"] = version.value.decode()
    lib.nvmlShutdown()
    return out


def cuda() -> dict[str, Any]:
    lib, out = load(CUDA)
    if lib is None:
        return out
    rc = lib.cuInit(ctypes.c_uint(0))
    out["init"] = rc
    if rc != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(rc, ctypes.byref(name))
        out["error"] = f"cuInit: {(name.value or b'?').decode()} ({rc})"
        return out
    version, count = ctypes.c_int(0), ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
        out["cuda"] = f"{version.value // 1000}.{version.value % 1000 // 10}"
    rc = lib.cuDeviceGetCount(ctypes.byref(count))
    out["devices"] = count.value if rc == 0 else None
    return out


def main() -> int:
    json.dump({"nvml": nvml(), "cuda": cuda()}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
