"""The image config: environment, entrypoint, labels and history, merged over a base image."""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import log
from ..errors import DynixError
from ..pins import PinsFile, default_path

EPOCH = "1970-01-01T00:00:00Z"
# What the NVIDIA container runtime looks for to expose GPUs; a base image's own values win.
GPU_ENV = (("NVIDIA_VISIBLE_DEVICES", "all"), ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"))
_VERSION = re.compile(r"-(\d[^-]*(?:-.*)?)$")


@dataclass
class Settings:
    """What the user asked for; None means: keep the base image's (or leave unset)."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[tuple[str, str]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    created: str = EPOCH


def default_created() -> str:
    """`$SOURCE_DATE_EPOCH` as an RFC 3339 timestamp when set, else the epoch."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return EPOCH
    try:
        when = datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    except (ValueError, OverflowError, OSError) as exc:
        raise DynixError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds") from exc
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_created(value: str) -> datetime.datetime:
    """`--created` (RFC 3339) as a time with its zone, else an error."""
    when = None
    if _RFC3339.match(value):
        with contextlib.suppress(ValueError):  # a month 13, a 30 February
            when = datetime.datetime.fromisoformat(
                re.sub(r"[Zz]$", "+00:00", value.replace(" ", "T"))
            )
    if when is None:
        raise DynixError(
            f"--created {value!r}: expected an RFC 3339 time such as 2025-05-01T12:00:00Z"
        )
    return when


def check_created(value: str) -> str:
    """`--created` as given (what an image config holds), once it is an RFC 3339 time."""
    parse_created(value)
    return value


def store_name(path: str) -> str:
    """`/nix/store/<hash>-hello-2.12` -> `hello-2.12`."""
    return path.rstrip("/").rsplit("/", 1)[-1].split("-", 1)[-1]


def split_name(path: str) -> tuple[str, str]:
    """Package name and version of a store path, the way Nix's parseDrvName splits them."""
    name = store_name(path)
    for i, char in enumerate(name):
        if char == "-" and i + 1 < len(name) and name[i + 1].isdigit():
            return name[:i], name[i + 1 :]
    return name, ""


def pins_label() -> str | None:
    """A compact JSON summary of pkgs/pins.toml when run inside a checkout, else None."""
    try:
        pins = PinsFile.read(default_path())
    except DynixError as exc:
        if "no pins file found" not in str(exc):
            log.warn(f"pins not recorded in the image labels: {exc}")
        return None
    summary = {}
    for pin in pins.pins.values():
        entry = {"version": pin.version} if pin.version else {}
        if "rev" in pin.data:
            entry["rev"] = pin.data["rev"]
        if "hash" in pin.data:
            entry["hash"] = pin.data["hash"]
        summary[pin.name] = entry
    return json.dumps(summary, sort_keys=True, separators=(",", ":"))


def flake_labels(metadata: dict[str, Any]) -> dict[str, str]:
    """Labels naming the flake an image was built from, without anything machine-specific.

    A local checkout's URL names a folder of one machine, so only a remote source URL is kept;
    the revision and the NAR hash of the flake's source identify it anywhere.
    """
    labels = {}
    locked = metadata.get("locked", {})
    if rev := metadata.get("revision") or locked.get("rev"):
        labels["org.opencontainers.image.revision"] = rev
    if nar_hash := locked.get("narHash"):
        labels["dynix.flake.narHash"] = nar_hash
    url = metadata.get("originalUrl", "")
    if url and not url.startswith(("path:", "git+file:", "file:", "/", ".")):
        labels["org.opencontainers.image.source"] = url
    return labels


def _env_dict(entries: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        env[key] = value
    return env


def compose(
    *,
    platform: dict[str, str],
    base: dict[str, Any] | None,
    settings: Settings,
    bin_dirs: Sequence[str],
    labels: dict[str, str],
    diff_ids: Sequence[str],
    layer_paths: Sequence[Sequence[str]],
) -> dict[str, Any]:
    """The image config for one platform: base config (if any) with our layers and settings."""
    base = copy.deepcopy(base or {})
    inner: dict[str, Any] = dict(base.get("config") or {})
    env = _env_dict(inner.get("Env") or [])
    ours = ":".join(dict.fromkeys(bin_dirs))
    if ours:
        env["PATH"] = ours + (f":{env['PATH']}" if env.get("PATH") else "")
    for key, value in GPU_ENV:
        env.setdefault(key, value)
    for key, value in settings.env:
        env[key] = value
    inner["Env"] = [f"{k}={v}" for k, v in env.items()]
    if settings.entrypoint is not None:
        inner["Entrypoint"] = settings.entrypoint or None
        inner["Cmd"] = settings.cmd or None
    elif settings.cmd is not None:
        inner["Cmd"] = settings.cmd or None
    inner["Labels"] = {
        **(inner.get("Labels") or {}),
        "org.opencontainers.image.created": settings.created,
        **labels,
        **settings.labels,
    }
    inner = {k: v for k, v in inner.items() if v is not None}
    history = list(base.get("history") or [])
    history += [
        {"created": settings.created, "created_by": "nix store paths: " + " ".join(paths)}
        for paths in layer_paths
    ]
    rootfs = {"type": "layers", "diff_ids": list((base.get("rootfs") or {}).get("diff_ids", []))}
    rootfs["diff_ids"] += list(diff_ids)
    config = {k: v for k, v in base.items() if k not in ("config", "history", "rootfs")}
    config.update(platform)
    config.update(
        {"created": settings.created, "config": inner, "rootfs": rootfs, "history": history}
    )
    return config


def store_paths_of(history_entry: dict[str, Any]) -> list[str]:
    """The store paths a dynix layer's history entry names."""
    text = history_entry.get("created_by", "")
    return re.findall(r"/nix/store/[^\s:]+", text) if "nix store paths:" in text else []
