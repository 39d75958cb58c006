"""`dynix doctor`'s checks: is this machine ready to build, share and serve the stack?

Each check gives `ok`, `warn` or `fail`, what it saw, and for anything but ok a one-line fix.
"""

from __future__ import annotations

import grp
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import nix, platforms, process
from .config import Config
from .errors import DynixError

OK, WARN, FAIL = "ok", "warn", "fail"
PROBE = "/nix/store/00000000000000000000000000000000-dynix-doctor-probe"

# CUDA 12.8 (the default CUDA of the pinned nixpkgs) needs an NVIDIA driver >= 570.26 on Linux:
# NVIDIA CUDA Toolkit Release Notes, table "CUDA Toolkit and Corresponding Driver Versions",
# row "CUDA 12.8 GA: >= 570.26" (Linux x86_64; the same driver branch serves arm64-sbsa/GB200).
CUDA = "12.8"
MIN_DRIVER = (570, 26)

# The serving stack's default ports: NATS client and monitoring, etcd client and peer, HTTP API.
PORTS = {
    4222: "nats",
    8222: "nats monitoring",
    2379: "etcd client",
    2380: "etcd peer",
    8000: "http",
}

# Nix 2.8 prints `experimental-features` as numbers (its ExperimentalFeature enum), later
# versions as names.
_FEATURES_2_8 = [
    "ca-derivations",
    "impure-derivations",
    "flakes",
    "nix-command",
    "recursive-nix",
    "no-url-literals",
    "fetch-closure",
]


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.strip().split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def feature_names(value: Sequence[Any], nix_version: str) -> list[str]:
    names = []
    for item in value:
        if isinstance(item, int) and nix_version.startswith("2.8."):
            names.append(_FEATURES_2_8[item] if item < len(_FEATURES_2_8) else str(item))
        else:
            names.append(str(item))
    return names


def check_nix() -> tuple[list[Check], dict[str, Any] | None]:
    if not process.which("nix"):
        return [Check("nix", FAIL, "nix not found on PATH", "install Nix (Debian: nix-bin)")], None
    try:
        version = nix.version()
        user_config = nix.show_config(features="nix-command")
        config = nix.show_config()
    except DynixError as exc:
        return [Check("nix", FAIL, str(exc), "check that `nix --version` works")], None
    checks = []
    if parse_version(version) >= (2, 8):
        checks.append(Check("nix", OK, f"Nix {version}"))
    else:
        checks.append(Check("nix", WARN, f"Nix {version} is older than 2.8", "upgrade Nix"))
    features = feature_names(user_config.get("experimental-features") or [], version)
    if {"nix-command", "flakes"} <= set(features):
        checks.append(Check("experimental features", OK, " ".join(features)))
    else:
        checks.append(
            Check(
                "experimental features",
                WARN,
                f"nix.conf enables: {' '.join(features) or 'none'} (dynix enables flakes itself)",
                "for plain `nix`: experimental-features = nix-command flakes in nix.conf",
            )
        )
    subs = config.get("substituters") or []
    keys = config.get("trusted-public-keys") or []
    checks.append(
        Check(
            "substituters",
            OK if subs else WARN,
            f"{' '.join(subs) or 'none'}; {len(keys)} trusted keys",
            "" if subs else "everything is built locally: add a cache (dynix cache add/use)",
        )
    )
    extra = " ".join(config.get("extra-platforms") or []) or "none"
    checks.append(Check("system", OK, f"{config.get('system')}, extra-platforms: {extra}"))
    return checks, config


NIX_STATE_DIR = "/nix/var/nix"
BUILD_USERS_FIX = (
    "apt install nix-setup-systemd (it creates the nixbld build users), "
    "or set `build-users-group =` in /etc/nix/nix.conf to build as root"
)


def _uses_daemon(config: dict[str, Any], state_dir: str = NIX_STATE_DIR) -> bool:
    """Whether this user's Nix talks to a daemon. For `store = auto` Nix takes the local store
    when its state folder is writable, else the daemon if its socket is there."""
    store = str(config.get("store") or "auto")
    if store == "auto":
        socket_path = os.environ.get(
            "NIX_DAEMON_SOCKET_PATH", os.path.join(state_dir, "daemon-socket", "socket")
        )
        return not os.access(state_dir, os.R_OK | os.W_OK) and os.path.exists(socket_path)
    return store == "daemon" or store.startswith("unix://")


def _build_users_problem(group_name: str) -> str:
    """Why root's local store cannot build as `build-users-group`, or "" when it can."""
    if not group_name:
        return ""
    try:
        group = grp.getgrnam(group_name)
    except KeyError:
        return f"the group '{group_name}' named by build-users-group does not exist"
    if not group.gr_mem:
        return f"the group '{group_name}' named by build-users-group has no members"
    return ""


def check_can_build(config: dict[str, Any], *, timeout: float = 30) -> Check:
    """Can Nix build here? Root's local store needs its build users; a daemon must answer; then a
    real build of a derivation new to the store (about 0.1 s) proves it."""
    name = "nix can build"
    daemon = _uses_daemon(config)
    if daemon:
        try:
            nix.ping_store("daemon", timeout=timeout)
        except DynixError as exc:
            detail = getattr(exc, "tail", "") or str(exc)
            fix = "start the Nix daemon (systemctl start nix-daemon), or build as root"
            return Check(name, FAIL, f"the Nix daemon does not answer: {detail}", fix)
    elif os.geteuid() == 0:
        problem = _build_users_problem(str(config.get("build-users-group") or ""))
        if problem:
            return Check(name, FAIL, problem, BUILD_USERS_FIX)
    started = time.monotonic()
    try:
        nix.probe_build(str(config.get("system") or nix.current_system()), timeout=timeout)
    except DynixError as exc:
        detail = (getattr(exc, "tail", "") or str(exc)).strip().splitlines()
        why = detail[-1] if detail else str(exc)
        return Check(name, FAIL, f"a test build failed: {why}", "see `nix build` of any package")
    if daemon:
        how = "through the daemon"
    elif os.geteuid() == 0 and config.get("build-users-group"):
        how = f"as the {config['build-users-group']} users"
    else:
        how = "as this user"
    return Check(name, OK, f"a test build {how} took {time.monotonic() - started:.2f} s")


def check_binfmt() -> Check:
    entry = platforms.binfmt_entry("aarch64-linux")
    if entry:
        return Check("binfmt aarch64", OK, f"{entry} enabled")
    return Check(
        "binfmt aarch64",
        WARN,
        "no enabled qemu-aarch64 entry in /proc/sys/fs/binfmt_misc",
        "apt install qemu-user-static binfmt-support; update-binfmts --enable qemu-aarch64",
    )


def check_targets(config: dict[str, Any], builders: Sequence[platforms.Builder]) -> list[Check]:
    checks = []
    for system in ("aarch64-linux", "x86_64-linux"):
        try:
            way = platforms.route(system, config, builders)
        except DynixError as exc:
            why, _, fix = str(exc).partition("; ")
            checks.append(Check(f"build {system}", WARN, why, fix))
            continue
        detail = way.how + (f" ({way.detail})" if way.detail else "")
        checks.append(Check(f"build {system}", OK, detail))
    return checks


def check_builders(builders: Sequence[platforms.Builder], timeout: float) -> list[Check]:
    checks = []
    for builder in builders:
        name = f"builder {builder.uri}"
        try:
            nix.ping_store(builder.uri, timeout=timeout)
        except DynixError as exc:
            detail = getattr(exc, "tail", "") or str(exc)
            fix = "check `ssh HOST nix-store --version` works for this user (keys, known_hosts)"
            checks.append(Check(name, FAIL, f"does not answer: {detail}", fix))
            continue
        checks.append(Check(name, OK, f"answers ({', '.join(builder.systems) or 'any system'})"))
    return checks


def check_caches(cfg: Config, timeout: float) -> list[Check]:
    checks = []
    for cache in cfg.caches.values():
        name = f"cache {cache.name}"
        if not cache.public_key:
            fix = f"dynix cache remove {cache.name}, then add it with --public-key"
            checks.append(Check(name, WARN, f"{cache.url} has no public key", fix))
            continue
        if cache.url.startswith("file://"):
            folder = Path(urlparse(cache.url).path)
            if not (folder / "nix-cache-info").is_file():
                fix = f"dynix cache push INSTALLABLE --to {cache.name} creates it"
                checks.append(Check(name, WARN, f"{folder} holds no binary cache yet", fix))
                continue
        else:
            try:
                # `nix store ping` trusts Nix's memory of a binary cache; asking for a path
                # does reach the server.
                nix.query_paths(cache.url, [PROBE], options={"download-attempts": "1"})
            except DynixError as exc:
                detail = getattr(exc, "tail", "") or str(exc)
                checks.append(
                    Check(name, WARN, f"{cache.url} does not answer: {detail}", "check the URL")
                )
                continue
        checks.append(Check(name, OK, f"{cache.url} answers"))
    return checks


def check_programs() -> list[Check]:
    checks = []
    for program, package in (("nats-server", "nats-server"), ("etcd", "etcd-server")):
        path = process.which(program)
        if path:
            checks.append(Check(program, OK, path))
        else:
            checks.append(Check(program, WARN, "not on PATH", f"apt install {package}"))
    return checks


def port_free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(ports: dict[int, str] | None = None) -> list[Check]:
    checks = []
    for port, what in (ports or PORTS).items():
        if port_free(port):
            checks.append(Check(f"port {port}", OK, f"free ({what})"))
        else:
            checks.append(
                Check(
                    f"port {port}",
                    WARN,
                    f"in use: {what} of the stack cannot listen there",
                    f"stop what listens on {port} (ss -ltnp 'sport = :{port}')",
                )
            )
    return checks


def run_all(cfg: Config, *, timeout: float = 15) -> list[Check]:
    checks, config = check_nix()
    if config is not None:
        checks.append(check_can_build(config, timeout=timeout))
    checks.append(check_binfmt())
    if config is not None:
        spec = "; ".join(filter(None, [cfg.builders, str(config.get("builders") or "")]))
        builders = platforms.parse_builders(spec)
        checks += check_targets(config, builders)
        checks += check_builders(builders, timeout)
        checks += check_caches(cfg, timeout)
    from .gpu import checks as gpu_checks  # it builds on this module's Check

    checks += gpu_checks.run()
    checks += check_programs()
    checks += check_ports()
    return checks
