"""A fake NVIDIA driver: real ELF shared libraries with the driver's names, built with `cc`.

They export what dynix's probe and vLLM's platform detection call (`nvmlInit_v2`,
`nvmlDeviceGetCount_v2`, `cuInit`, `cuDeviceGetCount`, ...), answering one GPU, so that the
loader (`ldconfig`, `dlopen`, `ld.so --inhibit-cache`) treats them as it treats a host's driver.
`libcuda.so.1` needs `libnvidia-gpucomp.so.VERSION`, as real drivers chain their own libraries.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

VERSION = "570.86.15"
MULTIARCH = f"/usr/lib/{platform.machine()}-linux-gnu"

NVML_C = r"""
#include <string.h>
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned *count) { *count = 1; return 0; }
int nvmlSystemGetDriverVersion(char *out, unsigned size) {
  strncpy(out, "%(version)s", size); return 0; }
const char *nvmlErrorString(int rc) { return rc ? "Unknown Error" : "Success"; }
"""
CUDA_C = r"""
int gpucomp_ready(void);
int cuInit(unsigned flags) { return gpucomp_ready() ? 0 : 999; }
int cuDriverGetVersion(int *v) { *v = 12080; return 0; }
int cuDeviceGetCount(int *count) { *count = 1; return 0; }
int cuGetErrorName(int rc, const char **name) {
  *name = rc ? "CUDA_ERROR_UNKNOWN" : "CUDA_SUCCESS"; return 0; }
"""
GPUCOMP_C = "int gpucomp_ready(void) { return 1; }\n"
PLAIN_C = "int nvidia_fake(void) { return 0; }\n"


def cc() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


def _build(source: str, out: Path, soname: str, *extra: str) -> None:
    src = out.with_suffix(out.suffix + ".c")
    src.write_text(source)
    subprocess.run(
        [cc() or "cc", "-shared", "-fPIC", "-o", str(out), str(src),
         f"-Wl,-soname,{soname}", *extra],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    src.unlink()


def install(folder: Path, version: str = VERSION, *, debugger: bool = True) -> Path:
    """The driver's libraries in `folder` as a distribution installs them: the versioned file,
    and the soname (and development name) as symlinks to it."""
    folder.mkdir(parents=True, exist_ok=True)

    def lib(stem: str, soname: str, source: str, *extra: str) -> None:
        real = folder / f"{stem}.so.{version}"
        _build(source, real, soname, *extra)
        if soname != real.name:
            os.symlink(real.name, folder / soname)

    lib("libnvidia-gpucomp", f"libnvidia-gpucomp.so.{version}", GPUCOMP_C)
    lib("libnvidia-ml", "libnvidia-ml.so.1", NVML_C % {"version": version})
    lib("libcuda", "libcuda.so.1", CUDA_C, f"-L{folder}", f"-l:libnvidia-gpucomp.so.{version}")
    os.symlink("libcuda.so.1", folder / "libcuda.so")
    lib("libnvidia-ptxjitcompiler", "libnvidia-ptxjitcompiler.so.1", PLAIN_C)
    lib("libnvidia-nvvm", "libnvidia-nvvm.so.4", PLAIN_C)
    if debugger:
        lib("libcudadebugger", "libcudadebugger.so.1", PLAIN_C)
    # Something of the host's own beside the driver, which dynix must not link.
    _build(PLAIN_C, folder / "libunrelated.so.1", "libunrelated.so.1")
    return folder


def write_ld_so_conf(root: Path, folders: list[str]) -> None:
    """/etc/ld.so.conf including ld.so.conf.d/*.conf, one file naming `folders` (host paths)."""
    conf_d = root / "etc" / "ld.so.conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    (root / "etc" / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (conf_d / "nvidia.conf").write_text("# the driver\n" + "\n".join(folders) + "\n")


def build_ld_so_cache(root: Path, folders: list[str]) -> None:
    """The root's /etc/ld.so.cache, made by the real `ldconfig` from `folders` (host paths)."""
    conf = root / "ldconfig-input.conf"
    conf.write_text("\n".join(str(root) + f for f in folders) + "\n")
    ldconfig = next(p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig") if
                    shutil.which(p))  # fmt: skip
    (root / "etc").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ldconfig, "-X", "-C", str(root / "etc" / "ld.so.cache"), "-f", str(conf)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    conf.unlink()


def write_nvidia_smi(bin_dir: Path, gpus: list[tuple[str, str, str, str]]) -> Path:
    """A stand-in `nvidia-smi` answering `-L` and `--query-gpu=...` for `gpus` (name, memory,
    driver, compute capability), as the real one prints them."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    listing = "\n".join(f"GPU {i}: {g[0]} (UUID: GPU-{i:08d})" for i, g in enumerate(gpus))
    query = "\n".join(", ".join(g) for g in gpus)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-L" ]; then cat <<"E"\n{listing}\nE\nexit 0; fi\n'
        f'cat <<"E"\n{query}\nE\n'
    )
    smi.chmod(0o755)
    return smi


def host(tmp: Path, layout: dict[str, str] | None = None, *, cache: bool = True) -> Path:
    """A fake host root: the driver installed in each folder of `layout` (host path -> version),
    the loader cache built from them when `cache`."""
    root = tmp / "host"
    layout = layout or {MULTIARCH: VERSION}
    for folder, version in layout.items():
        install(root / folder.lstrip("/"), version)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if cache:
        build_ld_so_cache(root, list(layout))
    return root


LOADERS = {"x86_64": "/lib64/ld-linux-x86-64.so.2", "aarch64": "/lib/ld-linux-aarch64.so.1"}


# Folders the host's loader searches even with --inhibit-cache (its built-in system folders).
SYSTEM_DIRS = (
    f"/lib/{platform.machine()}-linux-gnu",
    f"/usr/lib/{platform.machine()}-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)


def in_system_dirs(name: str) -> str | None:
    """Where the host's loader finds `name` without its cache (some container runtimes link the
    driver into /lib and /usr/lib), or None."""
    for folder in SYSTEM_DIRS:
        if os.path.lexists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def probe(library_path: str | None, *, inhibit_cache: bool = True) -> dict:
    """`python -m dynix.gpu.probe` run by the host's loader with `--inhibit-cache` (the host's
    loader cache ignored, as Nix's glibc does), `library_path` its only library path."""
    import json
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["PYTHONPATH"] = str(repo / "py")
    if library_path is not None:
        env["LD_LIBRARY_PATH"] = library_path
    argv = [sys.executable, "-m", "dynix.gpu.probe"]
    if inhibit_cache:
        argv = [LOADERS[platform.machine()], "--inhibit-cache", *argv]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)
