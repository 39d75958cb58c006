"""The serving stack's configuration: the `[serve]` tables of `dynix.toml`.

The file is TOML read and written with tomlkit, so users' comments survive `dynix serve init
--set`. Every key has a default; a key dynix does not know, or a value of the wrong kind, is an
error that names its line. Command-line options override the file (`StackConfig.override`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomlkit

from ..errors import DynixError
from ..files import locked, read_text, write_text_atomic
from ..tomlfile import parse as parse_toml

GRAPHS = ("disagg", "agg", "disagg_router", "agg_router", "echo")
ROLES = ("all", "control-plane", "graph")
ROUTERS = ("round-robin", "random", "kv")
DEFAULT_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
ECHO_MODEL = "echo"
CONFIG_NAME = "dynix.toml"
LOG_LEVELS = ("error", "warn", "info", "debug", "trace")

DEFAULT_TEXT = f"""\
# The serving stack that `dynix serve` runs. Every key is optional; these are the defaults.
# Command-line options (--graph, --model, --port, ...) override what is written here.

[serve]
# Which Dynamo graph to serve: disagg, agg, disagg_router, agg_router (vLLM, need GPUs), or
# echo (GPU-free, same shape as disagg; the default on a machine without GPUs).
graph = "disagg"
model = "{DEFAULT_MODEL}"
# The name clients ask for; the model itself when empty.
served-model-name = ""
# The OpenAI-compatible HTTP frontend's port, and the address it listens on (0.0.0.0 for
# every interface). Dynamo 0.2.0's own vLLM frontend listens on 0.0.0.0 whatever this says.
port = 8000
host = "127.0.0.1"
# Where logs, the rendered Dynamo config, the control plane's data and state.json live.
# Empty: $XDG_STATE_HOME/dynix/serve (~/.local/state/dynix/serve).
state-dir = ""
# Dynamo's examples/llm folder (graphs/ and components/). Empty: $DYNIX_EXAMPLES, else the
# share/dynamo/examples/llm installed beside the `dynamo` program.
examples = ""
# DYN_LOG for Dynamo's processes: error, warn, info, debug or trace.
log-level = "info"

[serve.control-plane]
# "local" runs nats-server and etcd under the state dir; "external" joins the URLs below.
mode = "local"
# Address the local nats-server and etcd listen on; 0.0.0.0 to let other nodes join.
host = "127.0.0.1"
nats-port = 4222
nats-monitor-port = 8222
etcd-port = 2379
etcd-peer-port = 2380
# For mode = "external": etcd client URLs and NATS URLs (each comma-separated, every member's).
etcd = "http://127.0.0.1:2379"
nats = "nats://127.0.0.1:4222"
# A clustered control plane: every member's address (this one's too), and this member's
# address among them (--cluster, --advertise); its etcd and NATS listen there, not on `host`.
# NATS routes between the members on nats-cluster-port, and takes leaf nodes on nats-leaf-port.
cluster = ""
advertise = ""
nats-cluster-port = 6222
nats-leaf-port = 7422
# A graph node that joins several members (mode = "external") runs an etcd forwarder and a
# NATS leaf node on 127.0.0.1 and gives Dynamo those: Dynamo 0.2.0 takes one NATS URL, and
# its processes exit when the etcd member or NATS server they talk to goes away; the
# forwarder and the leaf move to another member. false: give Dynamo the members directly.
# (The members' nats-leaf-port must match theirs.)
local-proxy = true
local-etcd-port = 23790
local-nats-port = 14222
local-nats-monitor-port = 18222

[serve.model-config]
# Dynamo's `Common` section, shared by the services that subscribe to each key.
block-size = 64
max-model-len = 16384
kv-connector = "DynamoNixlConnector"

[serve.router]
# How the Processor picks a worker: round-robin, random, or kv (the *_router graphs).
mode = "round-robin"
min-workers = 1

[serve.decode]
workers = 1
gpus-per-worker = 1
max-num-batched-tokens = 16384

[serve.prefill]
workers = 1
gpus-per-worker = 1
max-num-batched-tokens = 16384

[serve.disagg]
remote-prefill = true
# Prefill locally unless the prompt is longer than max-local-prefill-length tokens.
conditional-disagg = true
max-local-prefill-length = 10
max-prefill-queue-size = 2

[serve.supervise]
# A component that dies is restarted after backoff seconds (doubling, at most 10 s); after
# max-restarts restarts within restart-window seconds the stack stops with an error.
max-restarts = 3
restart-window = 300
backoff = 0.5
ready-timeout = 180
# Ports of the process manager inside `dynamo serve` (circus): its control and pub/sub sockets.
circus-port = 41234
circus-pubsub-port = 52345

# Keys written as they are into a service's section of Dynamo's config, after dynix's own.
# [serve.services.VllmWorker]
# enforce-eager = true
"""


@dataclass(frozen=True)
class ControlPlane:
    mode: str = "local"
    host: str = "127.0.0.1"
    nats_port: int = 4222
    nats_monitor_port: int = 8222
    etcd_port: int = 2379
    etcd_peer_port: int = 2380
    etcd: str = "http://127.0.0.1:2379"
    nats: str = "nats://127.0.0.1:4222"  # external: one URL, or several comma-separated
    nats_cluster_port: int = 6222  # NATS routes between the members of a cluster
    nats_leaf_port: int = 7422  # a member takes leaf nodes (graph nodes' local NATS) here
    local_proxy: bool = True  # a graph node joining several members proxies them locally
    local_etcd_port: int = 23790
    local_nats_port: int = 14222
    local_nats_monitor_port: int = 18222
    advertise: str = ""  # this member's address in `cluster` (then also `host`)
    cluster: str = ""  # every member's address, comma-separated: a clustered control plane

    @property
    def members(self) -> list[str]:
        """The cluster's member addresses (empty: a control plane of one)."""
        return [m.strip() for m in self.cluster.split(",") if m.strip()]

    @property
    def etcd_urls(self) -> list[str]:
        if self.mode == "local":
            if self.members:
                return [f"http://{m}:{self.etcd_port}" for m in self.members]
            return [f"http://{_connect_host(self.host)}:{self.etcd_port}"]
        return [u.strip() for u in self.etcd.split(",") if u.strip()]

    @property
    def nats_urls(self) -> list[str]:
        if self.mode == "local":
            if self.members:
                return [f"nats://{m}:{self.nats_port}" for m in self.members]
            return [f"nats://{_connect_host(self.host)}:{self.nats_port}"]
        return [u.strip() for u in self.nats.split(",") if u.strip()]

    @property
    def local_etcd_url(self) -> str:
        """A graph node's etcd forwarder, which Dynamo is given when proxied."""
        return f"http://127.0.0.1:{self.local_etcd_port}"

    @property
    def local_nats_url(self) -> str:
        """A graph node's NATS leaf, which Dynamo is given when proxied."""
        return f"nats://127.0.0.1:{self.local_nats_port}"

    @property
    def proxied(self) -> bool:
        """Whether a graph node joining this control plane runs the local etcd proxy and NATS
        leaf: when it joins several members and is not told otherwise."""
        several = len(self.etcd_urls) > 1 or len(self.nats_urls) > 1
        return self.mode == "external" and self.local_proxy and several

    @property
    def nats_url(self) -> str:
        """The one NATS URL Dynamo's processes are given (Dynamo 0.2.0 takes one: its client
        learns the cluster's other servers from the one it reaches); this member's own URL in
        a cluster."""
        if self.mode == "local" and self.members and self.advertise:
            return f"nats://{self.advertise}:{self.nats_port}"
        urls = self.nats_urls
        return urls[0] if urls else ""


@dataclass(frozen=True)
class Workers:
    workers: int = 1
    gpus_per_worker: int = 1
    max_num_batched_tokens: int = 16384


@dataclass(frozen=True)
class Supervise:
    max_restarts: int = 3
    restart_window: float = 300.0
    backoff: float = 0.5
    ready_timeout: float = 180.0
    circus_port: int = 41234
    circus_pubsub_port: int = 52345


@dataclass(frozen=True)
class StackConfig:
    graph: str = ""  # empty: disagg with GPUs present, echo without
    model: str = ""
    served_model_name: str = ""
    port: int = 8000
    host: str = "127.0.0.1"
    state_dir: str = ""
    examples: str = ""
    log_level: str = "info"
    control_plane: ControlPlane = field(default_factory=ControlPlane)
    block_size: int = 64
    max_model_len: int = 16384
    kv_connector: str = "DynamoNixlConnector"
    router: str = "round-robin"
    min_workers: int = 1
    decode: Workers = field(default_factory=Workers)
    prefill: Workers = field(default_factory=Workers)
    remote_prefill: bool = True
    conditional_disagg: bool = True
    max_local_prefill_length: int = 10
    max_prefill_queue_size: int = 2
    supervise: Supervise = field(default_factory=Supervise)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""  # the file it came from, for messages
    # Set per node on the command line (--component, --advertise), not in the shared file:
    components: tuple[str, ...] = ()  # the graph's services run here; empty: all of them
    advertise: str = ""  # the address other nodes reach this one at

    @property
    def model_name(self) -> str:
        if self.model:
            return self.model
        return ECHO_MODEL if self.graph == "echo" else DEFAULT_MODEL

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model_name

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()

    def override(self, **changes: Any) -> StackConfig:
        """A copy with the non-None `changes` applied (command-line options)."""
        plane = {k[3:]: v for k, v in changes.items() if k.startswith("cp_") and v is not None}
        decode = changes.pop("decode_workers", None)
        prefill = changes.pop("prefill_workers", None)
        top = {k: v for k, v in changes.items() if not k.startswith("cp_") and v is not None}
        new = replace(self, **top)
        if plane:
            new = replace(new, control_plane=replace(new.control_plane, **plane))
        if decode is not None:
            new = replace(new, decode=replace(new.decode, workers=decode))
        if prefill is not None:
            new = replace(new, prefill=replace(new.prefill, workers=prefill))
        new.validate_values()
        return new

    def ports(self) -> dict[str, int]:
        """The ports this stack listens on, by their key in the file."""
        cp, sv = self.control_plane, self.supervise
        ports = {"serve.port": self.port}
        if cp.mode == "local":
            ports |= {
                "serve.control-plane.nats-port": cp.nats_port,
                "serve.control-plane.nats-monitor-port": cp.nats_monitor_port,
                "serve.control-plane.etcd-port": cp.etcd_port,
                "serve.control-plane.etcd-peer-port": cp.etcd_peer_port,
            }
            if cp.members:
                ports["serve.control-plane.nats-cluster-port"] = cp.nats_cluster_port
                ports["serve.control-plane.nats-leaf-port"] = cp.nats_leaf_port
        elif cp.proxied:
            ports |= {
                "serve.control-plane.local-etcd-port": cp.local_etcd_port,
                "serve.control-plane.local-nats-port": cp.local_nats_port,
                "serve.control-plane.local-nats-monitor-port": cp.local_nats_monitor_port,
            }
        return ports | {
            "serve.supervise.circus-port": sv.circus_port,
            "serve.supervise.circus-pubsub-port": sv.circus_pubsub_port,
        }

    def validate_values(self) -> None:
        where = f"{self.source}: " if self.source else ""
        checks = [
            (self.graph in ("", *GRAPHS), f"graph must be one of {', '.join(GRAPHS)}"),
            (self.router in ROUTERS, f"router mode must be one of {', '.join(ROUTERS)}"),
            (
                self.control_plane.mode in ("local", "external"),
                "control-plane mode must be local or external",
            ),
            (self.decode.workers >= 1, "decode workers must be at least 1"),
            (self.prefill.workers >= 1, "prefill workers must be at least 1"),
            (
                self.log_level in LOG_LEVELS,
                f"serve.log-level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}",
            ),
            (bool(self.control_plane.host.strip()), "control-plane host must not be empty"),
            (bool(self.host.strip()), "serve.host must not be empty (127.0.0.1, or 0.0.0.0)"),
            *[
                (
                    not any(ord(c) < 32 or ord(c) == 127 for c in value),
                    f"serve.{key} must be one line, without control characters: {value!r}",
                )
                for key, value in (
                    ("model", self.model),
                    ("served-model-name", self.served_model_name),
                )
            ],
        ]
        sv = self.supervise
        for name, value, least in [
            ("supervise.max-restarts", sv.max_restarts, 0),
            ("supervise.restart-window", sv.restart_window, 0.001),
            ("supervise.backoff", sv.backoff, 0),
            ("supervise.ready-timeout", sv.ready_timeout, 0.001),
            ("model-config.block-size", self.block_size, 1),
            ("model-config.max-model-len", self.max_model_len, 1),
            ("router.min-workers", self.min_workers, 0),
            ("disagg.max-local-prefill-length", self.max_local_prefill_length, 0),
            ("disagg.max-prefill-queue-size", self.max_prefill_queue_size, 0),
            *[
                (f"{role}.{key}", getattr(workers, key.replace("-", "_")), low)
                for role, workers in (("decode", self.decode), ("prefill", self.prefill))
                for key, low in (("gpus-per-worker", 0), ("max-num-batched-tokens", 1))
            ],
        ]:
            checks.append(
                (
                    math.isfinite(value) and value >= least,
                    f"serve.{name} must be a number of at least {least:g}, not {value!r}",
                )
            )
        seen: dict[int, str] = {}
        for what, port in self.ports().items():
            if not 1 <= port <= 65535:
                checks.append((False, f"{what} must be a port from 1 to 65535, not {port}"))
            elif port in seen:
                checks.append((False, f"{what} and {seen[port]} are both port {port}"))
            seen.setdefault(port, what)
        for ok, message in checks:
            if not ok:
                raise DynixError(where + message)
        for url in self.control_plane.etcd_urls:
            if not re.match(r"^https?://[^/]+", url):
                raise DynixError(f"{where}etcd URL must look like http://HOST:PORT, not {url!r}")
        for nats in self.control_plane.nats_urls or [""]:
            if not re.match(r"^nats://[^/]+", nats):
                raise DynixError(f"{where}NATS URL must look like nats://HOST:PORT, not {nats!r}")
        self._validate_cluster(where)

    def _validate_cluster(self, where: str) -> None:
        cp = self.control_plane
        members = cp.members
        if not members:
            return
        for member in members:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", member):
                raise DynixError(
                    f"{where}a cluster member must be an address or host name "
                    f"(e.g. 10.0.0.1), not {member!r}"
                )
        if len(set(members)) != len(members):
            raise DynixError(f"{where}the cluster names a member twice: {cp.cluster}")
        if not cp.advertise:
            raise DynixError(
                f"{where}a clustered control plane needs --advertise ADDR: this member's "
                f"address, one of {', '.join(members)}"
            )
        if cp.advertise not in members:
            raise DynixError(
                f"{where}--advertise {cp.advertise} is not one of the cluster's members "
                f"({', '.join(members)})"
            )


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "dynix" / "serve"


# -- reading ---------------------------------------------------------------------------------
# Each key of the file: (table path, key) -> (field path in StackConfig, type).
_KEYS: dict[tuple[str, str], tuple[str, type]] = {
    ("serve", "graph"): ("graph", str),
    ("serve", "model"): ("model", str),
    ("serve", "served-model-name"): ("served_model_name", str),
    ("serve", "port"): ("port", int),
    ("serve", "host"): ("host", str),
    ("serve", "state-dir"): ("state_dir", str),
    ("serve", "examples"): ("examples", str),
    ("serve", "log-level"): ("log_level", str),
    ("serve.model-config", "block-size"): ("block_size", int),
    ("serve.model-config", "max-model-len"): ("max_model_len", int),
    ("serve.model-config", "kv-connector"): ("kv_connector", str),
    ("serve.router", "mode"): ("router", str),
    ("serve.router", "min-workers"): ("min_workers", int),
    ("serve.disagg", "remote-prefill"): ("remote_prefill", bool),
    ("serve.disagg", "conditional-disagg"): ("conditional_disagg", bool),
    ("serve.disagg", "max-local-prefill-length"): ("max_local_prefill_length", int),
    ("serve.disagg", "max-prefill-queue-size"): ("max_prefill_queue_size", int),
}
for _key, _kind in [
    ("mode", str), ("host", str), ("nats-port", int), ("nats-monitor-port", int),
    ("etcd-port", int), ("etcd-peer-port", int), ("etcd", str), ("nats", str),
    ("nats-cluster-port", int), ("advertise", str), ("cluster", str), ("nats-leaf-port", int),
    ("local-proxy", bool), ("local-etcd-port", int), ("local-nats-port", int),
    ("local-nats-monitor-port", int),
]:  # fmt: skip
    _KEYS[("serve.control-plane", _key)] = ("control_plane." + _key.replace("-", "_"), _kind)
for _table in ("decode", "prefill"):
    for _key in ("workers", "gpus-per-worker", "max-num-batched-tokens"):
        _KEYS[(f"serve.{_table}", _key)] = (f"{_table}.{_key.replace('-', '_')}", int)
for _key, _kind in [
    ("max-restarts", int), ("restart-window", float), ("backoff", float),
    ("ready-timeout", float), ("circus-port", int), ("circus-pubsub-port", int),
]:  # fmt: skip
    _KEYS[("serve.supervise", _key)] = ("supervise." + _key.replace("-", "_"), _kind)
_TABLES = {table for table, _ in _KEYS} | {"serve.services"}


def find_config(path: str | Path | None) -> Path | None:
    """The config file to read: `path` (which must exist), else `./dynix.toml` if present."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DynixError(f"config file {path} not found (write one with `dynix serve init`)")
        return path
    default = Path(CONFIG_NAME)
    return default if default.is_file() else None


def load(path: str | Path | None) -> StackConfig:
    """The stack config from `path` (or the defaults when None)."""
    if path is None:
        return StackConfig()
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise DynixError(f"cannot read {path}: no such file") from None
    return parse(text, str(path))


def parse(text: str, source: str = CONFIG_NAME) -> StackConfig:
    doc = parse_toml(text, source)
    values: dict[str, Any] = {}
    serve = doc.get("serve")
    if serve is None:
        return StackConfig(source=source)
    if not isinstance(serve, dict):
        raise DynixError(f"{source}:{_line(text, 'serve')}: serve must be a table ([serve])")
    services: dict[str, dict[str, Any]] = {}
    _walk(serve.unwrap(), "serve", text, source, values, services)
    return _build(values, services, source)


def _walk(table, name, text, source, values, services) -> None:
    for key, value in table.items():
        path = f"{name}.{key}"
        if name == "serve.services":
            if not isinstance(value, dict):
                raise DynixError(f"{source}:{_line(text, key)}: {path} must be a table")
            services[key] = value
        elif isinstance(value, dict) and path in _TABLES:
            _walk(value, path, text, source, values, services)
        elif (name, key) in _KEYS:
            target, kind = _KEYS[(name, key)]
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                ok, value = True, float(value)
            if not ok:
                raise DynixError(
                    f"{source}:{_line(text, key)}: {path} must be {_KIND[kind]}, not {value!r}"
                )
            values[target] = value
        else:
            known = sorted({k for t, k in _KEYS if t == name} | _subtables(name))
            hint = f" (known: {', '.join(known)})" if known else ""
            raise DynixError(f"{source}:{_line(text, key)}: unknown key {path}{hint}")


_KIND = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}


def _subtables(name: str) -> set[str]:
    prefix = name + "."
    return {
        t[len(prefix) :] for t in _TABLES if t.startswith(prefix) and "." not in t[len(prefix) :]
    }


def _line(text: str, key: str) -> int:
    """The first line that defines `key` (as `key =` or in a table header), for messages."""
    pattern = re.compile(rf"^\s*(\[.*\b{re.escape(key)}\b.*\]|\"?{re.escape(key)}\"?\s*=)")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return 1


def _build(values: dict[str, Any], services: dict, source: str) -> StackConfig:
    nested: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for target, value in values.items():
        if "." in target:
            group, attr = target.split(".", 1)
            nested.setdefault(group, {})[attr] = value
        else:
            top[target] = value
    config = StackConfig(
        **top,
        control_plane=ControlPlane(**nested.get("control_plane", {})),
        decode=Workers(**nested.get("decode", {})),
        prefill=Workers(**nested.get("prefill", {})),
        supervise=Supervise(**nested.get("supervise", {})),
        services=services,
        source=source,
    )
    config.validate_values()
    return config


# -- writing ---------------------------------------------------------------------------------
def write_default(
    path: str | Path, *, force: bool = False, settings: dict[str, str] | None = None
) -> None:
    """Write the commented default config to `path`, with `settings` ({"serve.port": "9000"})."""
    with locked(path) as real:  # read, edit and write back with no other edit in between
        _write_default(Path(path), real, force, settings or {})


def _write_default(path: Path, real: Path, force: bool, settings: dict[str, str]) -> None:
    if real.exists() and not force and not settings:
        raise DynixError(f"{path} already exists (use --force to overwrite it)")
    text = read_text(real) if real.exists() and not force else DEFAULT_TEXT
    doc = parse_toml(text, str(path))
    for dotted, raw in settings.items():
        table_name, _, key = dotted.rpartition(".")
        if (table_name, key) not in _KEYS:
            raise DynixError(f"unknown key {dotted}")
        _, kind = _KEYS[(table_name, key)]
        table = doc
        for part in table_name.split("."):
            table = table.setdefault(part, tomlkit.table())
        table[key] = _convert(dotted, raw, kind)
    new_text = tomlkit.dumps(doc)
    parse(new_text, str(path))  # never write what we could not read back
    write_text_atomic(real, new_text)


def _convert(dotted: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError
            return raw.lower() == "true"
        return kind(raw)
    except ValueError:
        raise DynixError(f"{dotted} must be {_KIND[kind]}, not {raw!r}") from None
