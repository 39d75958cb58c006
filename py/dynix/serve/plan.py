"""What `dynix serve` will run: each component's argv, environment, folder and ports.

The plan is pure data, built before anything starts; `--dry-run` prints it, the supervisor
runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import socket
import sys
import urllib.parse
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import log
from ..errors import DynixError
from ..files import check_links
from ..gpu import workerenv
from . import host, jetstream, node, placement, render
from .config import ControlPlane, StackConfig

ETCD_NAME = "dynix"
NATS_CLUSTER_NAME = "dynix"
JETSTREAM_DOMAIN = "dynix"  # a clustered control plane's; graph nodes' leaves map to it


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set on top of dynix's environment
    cwd: str | None = None
    ports: list[host.Port] = field(default_factory=list)
    health_url: str = ""  # answers 200 when the component is up (control plane)
    peers: int = 0  # other members of its cluster (or members it proxies): ready with them
    files: dict[str, str] = field(default_factory=dict)  # written under the state dir first


@dataclass(frozen=True)
class Plan:
    config: StackConfig
    role: str
    state_dir: Path
    components: list[Component]
    rendered: dict[str, Any] | None  # Dynamo's service config, when the graph runs here
    yaml_path: Path
    etcd_urls: list[str]
    nats_url: str
    circusctl: str | None
    services: dict[str, int]  # service -> processes, for the graph
    gpus: int = 0  # present (nvidia-smi -L)
    gpu_placement: list[placement.ServiceGpus] = field(default_factory=list)
    worker: workerenv.WorkerEnv | None = None  # the driver given to a vLLM graph
    node: node.Node | None = None  # the graph's services that run here
    prefill_queue: tuple[str, int] | None = None  # (stream, replicas) made before the graph

    @property
    def leases_dir(self) -> Path:
        return self.state_dir / node.LEASES

    @property
    def runs_frontend(self) -> bool:
        return self.node is not None and self.node.frontend

    @property
    def frontend(self) -> str:
        where = self.config.host
        return f"http://{'127.0.0.1' if where in ('0.0.0.0', '') else where}:{self.config.port}"

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


def choose_graph(config: StackConfig, gpus: int) -> StackConfig:
    """Fill in the default graph: disagg with GPUs, echo without (saying so)."""
    if config.graph:
        return config
    if gpus:
        return config.override(graph="disagg")
    log.info(
        "dynix: no GPU found (nvidia-smi -L): serving the GPU-free echo graph; "
        "pass --graph to choose another"
    )
    return config.override(graph="echo")


def check_gpus(rendered: dict[str, Any], gpus: int, config: StackConfig | None = None) -> None:
    needs = render.gpu_needs(rendered)
    needed = sum(n.total for n in needs)
    if needed > gpus:
        detail = ", ".join(f"{n.service} {n.workers}x{n.gpus_per_worker}" for n in needs)
        fit = fits_here(config, gpus) if config is not None and gpus else ""
        raise DynixError(
            f"the graph needs {needed} GPU{'s' if needed != 1 else ''} ({detail}) but {gpus} "
            f"{'is' if gpus == 1 else 'are'} present (nvidia-smi -L); "
            + (f"{fit}; " if fit else "")
            + "use fewer workers, or --graph echo to run without GPUs"
        )


def fits_here(config: StackConfig, gpus: int) -> str:
    """Which vLLM graphs fit `gpus` GPUs with `config`'s workers, as a clause."""
    graphs = [g for g in placement.fitting(config, gpus) if g != "echo"]
    many = f"{gpus} GPU{'s' if gpus != 1 else ''}"
    if not graphs:
        return f"no vLLM graph fits {many} with these workers"
    return f"on {many} these graphs fit: {', '.join(graphs)}"


def build(config: StackConfig, role: str, *, gpus: int = 0, dry_run: bool = False) -> Plan:
    """The components to run for `role`; `dry_run` tolerates missing programs and folders and
    does not compare the GPUs the graph needs with the `gpus` present."""
    check_links(config.state_path)  # before its links are resolved away
    state = config.state_path.resolve()
    cp = config.control_plane
    if cp.members and cp.mode == "local" and role != "control-plane":
        raise DynixError(
            "serve.control-plane.cluster runs a member of a clustered control plane: use it "
            "with --role control-plane (graph nodes join with --control-plane URLs)"
        )
    if role == "graph" and cp.mode == "local":
        log.info(
            f"dynix: --role graph joins the control plane at {cp.etcd_urls[0]} and {cp.nats_url}"
        )

    def find(name: str) -> str:
        try:
            return host.program(name)
        except DynixError:
            if dry_run:
                log.warn(f"{name} not found on PATH ({host.HOW_TO_GET.get(name, '')})")
                return name
            raise

    components: list[Component] = []
    if role in ("all", "control-plane"):
        if cp.mode != "local":
            raise DynixError(
                "the control plane is external (joining etcd and NATS by URL): "
                "run with --role graph"
            )
        components += control_plane_components(config, state, find("nats-server"), find("etcd"))

    rendered = None
    services: dict[str, int] = {}
    circusctl = None
    worker = None
    here = None
    gpu_placement: list[placement.ServiceGpus] = []
    if role in ("all", "graph"):
        rendered = render.service_config(config)
        here = node.select(config.graph, config.components)
        mine = node.only(rendered, here)  # what this node's services ask for
        if not dry_run:
            check_gpus(mine, gpus, config)
        if render.gpu_needs(mine):
            worker = workerenv.for_gpu_graph(dry_run=dry_run)
        gpu_placement = placement.place(mine, gpus)
        dynamo = find("dynamo")
        if config.graph == "echo":
            examples: Path | None = host.ECHO_EXAMPLES
        else:
            examples = host.examples_dir(config.examples, dynamo if dynamo != "dynamo" else None)
            if examples is None:
                if not dry_run:
                    raise DynixError(f"Dynamo's examples/llm not found: {host.EXAMPLES_HINT}")
                log.warn(f"Dynamo's examples/llm not found: {host.EXAMPLES_HINT}")
        counts = render.worker_counts(rendered, config.graph)
        services = {s: n for s, n in counts.items() if s in here.services}
        circusctl = host.circusctl(dynamo if dynamo != "dynamo" else None)
        if cp.proxied:
            components += proxy_components(config, state, find("nats-server"))
        components.append(graph_component(config, state, dynamo, examples, here, worker))
    return Plan(
        config=config,
        role=role,
        state_dir=state,
        components=components,
        rendered=rendered,
        yaml_path=state / "dynamo.yaml",
        etcd_urls=cp.etcd_urls,
        nats_url=graph_nats_url(config),
        circusctl=circusctl,
        services=services,
        gpus=gpus,
        gpu_placement=gpu_placement,
        worker=worker,
        node=here,
        prefill_queue=prefill_queue(config, here),
    )


def prefill_queue(config: StackConfig, here: node.Node | None) -> tuple[str, int] | None:
    """The vLLM prefill queue's stream and its replicas, for a node that queues or takes
    prefills and joins several members through its leaf: one replica on each (up to 3)."""
    if here is None or not config.control_plane.proxied:
        return None
    if not {"VllmWorker", "PrefillWorker"} & set(here.services):
        return None
    if "PrefillWorker" not in render.GRAPH_SERVICES[here.graph]:
        return None  # aggregated: no queue
    replicas = min(3, len(config.control_plane.nats_urls))
    return jetstream.stream_name(config.model_name), replicas


def member_name(address: str) -> str:
    """A cluster member's name (etcd `--name`, NATS `--server_name`), from its address."""
    return "dynix-" + address.replace(".", "-").replace(":", "-")


def cluster_token(members: list[str]) -> str:
    """etcd's `--initial-cluster-token`: the same on every member, from the member list."""
    return "dynix-" + hashlib.sha256(",".join(sorted(members)).encode()).hexdigest()[:16]


def graph_nats_url(config: StackConfig) -> str:
    """The NATS URL given to Dynamo (0.2.0 takes one): of several, one on this machine, else
    the first; the client learns the cluster's other servers from it."""
    cp = config.control_plane
    urls = cp.nats_urls
    if cp.mode == "local" or len(urls) < 2:
        return cp.nats_url
    here = {"127.0.0.1", "localhost", *host.non_loopback_ipv4()}
    return next((u for u in urls if urllib.parse.urlsplit(u).hostname in here), urls[0])


def control_plane_components(
    config: StackConfig, state: Path, nats_server: str, etcd: str
) -> list[Component]:
    cp = config.control_plane
    if cp.members:
        return cluster_components(config, state, nats_server, etcd)
    where = "127.0.0.1" if cp.host in ("0.0.0.0", "") else cp.host
    return [
        _nats(nats_server, state, cp, cp.host, where),
        _etcd(
            etcd,
            state,
            cp,
            ETCD_NAME,
            cp.host,
            where,
            f"{ETCD_NAME}=http://{where}:{cp.etcd_peer_port}",
            # A single member: short ticks let it elect itself at once instead of after ~1 s.
            ticks=["--heartbeat-interval", "20", "--election-timeout", "100"],
        ),
    ]


def cluster_components(
    config: StackConfig, state: Path, nats_server: str, etcd: str
) -> list[Component]:
    """One member of a clustered control plane: etcd bootstrapped statically from the member
    list, NATS routed to the other members, JetStream clustered over those routes. Everything
    listens on the advertised address. A member that restarts reuses its data and rejoins."""
    cp = config.control_plane
    me, members = cp.advertise, cp.members
    others = [m for m in members if m != me]
    nats = _nats(
        nats_server,
        state,
        cp,
        me,
        me,
        cluster=[
            "--cluster",
            f"nats://{me}:{cp.nats_cluster_port}",
            "--cluster_name",
            NATS_CLUSTER_NAME,
            "--routes",
            ",".join(f"nats://{m}:{cp.nats_cluster_port}" for m in others),
            "--server_name",
            member_name(me),
        ],
        cluster_port=True,
        peers=len(others),
        conf={
            "jetstream": {"domain": JETSTREAM_DOMAIN},
            "leafnodes": {"host": me, "port": cp.nats_leaf_port},
        },
    )
    etcd_component = _etcd(
        etcd,
        state,
        cp,
        member_name(me),
        me,
        me,
        ",".join(f"{member_name(m)}=http://{m}:{cp.etcd_peer_port}" for m in members),
        token=cluster_token(members),
        peers=len(others),
    )
    return [nats, etcd_component]


def _nats(
    nats_server: str,
    state: Path,
    cp: ControlPlane,
    listen: str,
    reach: str,
    *,
    cluster: list[str] | None = None,
    cluster_port: bool = False,
    peers: int = 0,
    conf: dict[str, Any] | None = None,
) -> Component:
    """nats-server with JetStream, listening on `listen`, asked for health at `reach`; `conf`
    goes in a config file (what has no command-line option: the leaf-node listener)."""
    ports = [
        host.Port("nats client", listen, cp.nats_port),
        host.Port("nats monitoring", listen, cp.nats_monitor_port),
    ]
    if cluster_port:
        ports.append(host.Port("nats cluster", listen, cp.nats_cluster_port))
    if conf and "leafnodes" in conf:
        ports.append(host.Port("nats leaf nodes", listen, conf["leafnodes"]["port"]))
    return Component(
        name="nats",
        files={"nats.conf": nats_conf(conf)} if conf else {},
        argv=[
            nats_server,
            *(["-c", str(state / "nats.conf")] if conf else []),
            "-js",
            "-sd",
            str(state / "nats"),
            "-a",
            listen,
            "-p",
            str(cp.nats_port),
            "-m",
            str(cp.nats_monitor_port),
            *(cluster or []),
        ],
        ports=ports,
        # The server and its JetStream; streams still catching up after a restart are not
        # waited for (a consumer replica can stay behind for minutes while its leader serves).
        health_url=f"http://{reach}:{cp.nats_monitor_port}/healthz?js-server-only=true",
        peers=peers,
    )


def _etcd(
    etcd: str,
    state: Path,
    cp: ControlPlane,
    name: str,
    listen: str,
    reach: str,
    initial_cluster: str,
    *,
    token: str | None = None,
    ticks: list[str] | None = None,
    peers: int = 0,
) -> Component:
    """etcd named `name`, listening on `listen` and advertising `reach`, bootstrapped from
    `initial_cluster` (and `token`): read on the first start only; a member that restarts
    finds its data dir and rejoins with the membership recorded there."""
    advertise_client = f"http://{reach}:{cp.etcd_port}"
    advertise_peer = f"http://{reach}:{cp.etcd_peer_port}"
    return Component(
        name="etcd",
        argv=[
            etcd,
            "--name",
            name,
            "--data-dir",
            str(state / "etcd"),
            "--listen-client-urls",
            f"http://{listen}:{cp.etcd_port}",
            "--advertise-client-urls",
            advertise_client,
            "--listen-peer-urls",
            f"http://{listen}:{cp.etcd_peer_port}",
            "--initial-advertise-peer-urls",
            advertise_peer,
            "--initial-cluster",
            initial_cluster,
            *(["--initial-cluster-token", token] if token else []),
            "--initial-cluster-state",
            "new",
            *(ticks or []),
        ],
        # etcd 3.4 refuses to start on arm64 without this; 3.5 supports arm64 and ignores it.
        env={"ETCD_UNSUPPORTED_ARCH": "arm64"} if platform.machine() == "aarch64" else {},
        ports=[
            host.Port("etcd client", listen, cp.etcd_port),
            host.Port("etcd peer", listen, cp.etcd_peer_port),
        ],
        health_url=f"{advertise_client}/health",
        peers=peers,
    )


def nats_conf(conf: dict[str, Any], indent: int = 0) -> str:
    """nats-server's config format, for the few keys dynix writes (tables, strings, numbers,
    lists of tables or strings)."""
    pad = "  " * indent
    lines = []
    for name, value in conf.items():
        key = name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else json.dumps(name)
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", nats_conf(value, indent + 1).rstrip("\n"), f"{pad}}}"]
        elif isinstance(value, list):
            items = [
                "{ " + nats_conf(v).strip().replace("\n", ", ") + " }"
                if isinstance(v, dict)
                else json.dumps(v)
                for v in value
            ]
            lines.append(f"{pad}{key}: [{', '.join(items)}]")
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def proxy_components(config: StackConfig, state: Path, nats_server: str) -> list[Component]:
    """A graph node's own way to the control plane's members, on 127.0.0.1: a NATS leaf node
    connected to one member at a time (moving to another when it goes), and a forwarder to
    whichever etcd member answers (`forward.py` says why not etcd's gRPC proxy). Dynamo's
    processes keep their NATS connection when a member goes away, and reach a member that
    answers when they start or restart."""
    cp = config.control_plane
    members = [urllib.parse.urlsplit(u).hostname or "" for u in cp.nats_urls]
    name = node_name(config)
    leaf = {
        "host": "127.0.0.1",
        "port": cp.local_nats_port,
        "http": f"127.0.0.1:{cp.local_nats_monitor_port}",
        "server_name": member_name(name).replace("dynix-", "dynix-leaf-", 1),
        # Dynamo's clients use JetStream's default API subjects: map them to the members'
        # JetStream domain across the leaf connection.
        "default_js_domain": {"$G": JETSTREAM_DOMAIN},
        # A member cut off (its link down, not its process killed) is noticed within ~6 s,
        # not the default 4 minutes, and the leaf moves to another.
        "ping_interval": "2s",
        "ping_max": 3,
        "leafnodes": {
            "remotes": [{"urls": [f"nats-leaf://{m}:{cp.nats_leaf_port}" for m in members]}]
        },
    }
    package_root = Path(__file__).resolve().parents[2]  # the folder holding dynix/
    return [
        Component(
            name="etcd-proxy",
            argv=[
                sys.executable,
                "-m",
                "dynix.serve.forward",
                f"127.0.0.1:{cp.local_etcd_port}",
                ",".join(cp.etcd_urls),
                str(zlib.crc32(name.encode()) % len(cp.etcd_urls)),  # spread the nodes
            ],
            env={"PYTHONPATH": str(package_root)},  # stdlib only, wherever dynix runs from
            ports=[host.Port("etcd proxy", "127.0.0.1", cp.local_etcd_port)],
            health_url=f"{cp.local_etcd_url}/health",
            peers=len(cp.etcd_urls),
        ),
        Component(
            name="nats-leaf",
            files={"nats-leaf.conf": nats_conf(leaf)},
            argv=[nats_server, "-c", str(state / "nats-leaf.conf")],
            ports=[
                host.Port("nats leaf", "127.0.0.1", cp.local_nats_port),
                host.Port("nats leaf monitoring", "127.0.0.1", cp.local_nats_monitor_port),
            ],
            health_url=f"http://127.0.0.1:{cp.local_nats_monitor_port}/healthz",
            peers=len(members),
        ),
    ]


def graph_env(config: StackConfig) -> dict[str, str]:
    cp = config.control_plane
    if cp.proxied:
        etcd_endpoints, nats_server = cp.local_etcd_url, cp.local_nats_url
    else:
        # Dynamo 0.2.0 splits ETCD_ENDPOINTS on commas (its etcd client takes every member)
        # but hands NATS_SERVER to its NATS client as one URL.
        etcd_endpoints, nats_server = ",".join(cp.etcd_urls), graph_nats_url(config)
    return {
        "ETCD_ENDPOINTS": etcd_endpoints,
        "NATS_SERVER": nats_server,
        "DYN_LOG": config.log_level,
        "DYN_CIRCUS_ENDPOINT_PORT": str(config.supervise.circus_port),
        "DYN_CIRCUS_PUBSUB_PORT": str(config.supervise.circus_pubsub_port),
        "PYTHONUNBUFFERED": "1",
    }


def frontend_takes_host(examples: Path | None) -> bool:
    """Whether the examples' frontend passes its configured `host` to `http`: the flake's
    Dynamo does (patches/dynamo/0002); Dynamo 0.2.0's own examples start `http` without one."""
    if examples is None:
        return False
    try:
        text = (examples / "components" / "frontend.py").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return "self.frontend_config.host" in text


def frontend_bind(config: StackConfig, examples: Path | None) -> str:
    """Where the frontend really listens: `serve.host` for the echo graph (dynix's own) and for
    a frontend that takes an address; every interface for Dynamo 0.2.0's unpatched one."""
    if config.graph == "echo" or frontend_takes_host(examples):
        return config.host
    return "0.0.0.0"


def node_name(config: StackConfig) -> str:
    """How the node is known to others: its advertised address, else its host name."""
    return config.advertise or socket.gethostname()


def node_env(config: StackConfig, state: Path) -> dict[str, str]:
    """What the node's graph module needs: itself on the import path (before the caller's
    own), the folder its processes record their leases in, and the node's name."""
    path = [str(state / node.FOLDER)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {
        "PYTHONPATH": os.pathsep.join(path),
        node.LEASES_ENV: str(state / node.LEASES),
        "DYNIX_NODE": node_name(config),
    }


def graph_component(
    config: StackConfig,
    state: Path,
    dynamo: str,
    examples: Path | None,
    here: node.Node,
    worker: workerenv.WorkerEnv | None = None,
) -> Component:
    sv = config.supervise
    ports = [
        host.Port("circus control", "127.0.0.1", sv.circus_port),
        host.Port("circus pub/sub", "127.0.0.1", sv.circus_pubsub_port),
    ]
    if here.frontend:
        ports.insert(0, host.Port("frontend", frontend_bind(config, examples), config.port))
    return Component(
        name="graph",
        files={f"{node.FOLDER}/{node.MODULE}.py": node.module_text(here)},
        argv=[dynamo, "serve", here.target, "-f", str(state / "dynamo.yaml")],
        env={**graph_env(config), **node_env(config, state), **(worker.env if worker else {})},
        cwd=str(examples) if examples else "<examples/llm>",
        ports=ports,
    )


def _gpu_lines(plan: Plan) -> list[str]:
    out = []
    worker = plan.worker
    if worker is not None and worker.driver is not None and worker.folder is not None:
        out.append(f"driver: NVIDIA {worker.driver.version or '(version unknown)'} "
                   f"linked in {worker.folder}")  # fmt: skip
    elif worker is not None:
        out.append(f"driver: {worker.problem}")
    out += [f"gpus: {line}" for line in placement.describe(plan.gpu_placement, plan.gpus)]
    if plan.gpu_placement and plan.gpus:
        out.append(f"gpus: {fits_here(plan.config, plan.gpus)}")
    return out


def quorum_text(component: Component) -> str:
    if component.name == "etcd":
        return f"GET {component.health_url} says health true (the cluster has a leader)"
    if component.name == "etcd-proxy":
        return f"GET {component.health_url} (forwarded to a member) says health true"
    if component.name == "nats-leaf":
        base = component.health_url.rsplit("/", 1)[0]
        return f"GET {component.health_url} ok and {base}/leafz has a connection to a member"
    base = component.health_url.rsplit("/", 1)[0]
    return (
        f"GET {component.health_url} ok, {base}/routez has routes to the other "
        f"{component.peers} member(s), {base}/jsz has a JetStream meta leader"
    )


def ready_text(plan: Plan) -> str:
    if plan.runs_frontend:
        return (
            f"GET {plan.frontend}/v1/models lists {plan.config.served_name!r} "
            "and one chat completion is answered"
        )
    counts = ", ".join(f"{n} {s}" for s, n in plan.services.items())
    return f"etcd has the endpoints of this node's processes ({counts}) under their leases"


def describe(plan: Plan) -> str:
    """The plan as `--dry-run` prints it: processes, their environment, the Dynamo config."""
    out = [
        f"# dynix serve: role {plan.role}, graph {plan.config.graph}, "
        f"model {plan.config.served_name}",
        f"# state dir: {plan.state_dir}",
        f"# control plane: etcd {','.join(plan.etcd_urls)}, nats {plan.nats_url}",
    ]
    cp = plan.config.control_plane
    if plan.component("nats-leaf") is not None:
        out[-1] = (
            f"# control plane: etcd {','.join(plan.etcd_urls)}, nats {','.join(cp.nats_urls)}: "
            f"reached through this node's etcd forwarder ({cp.local_etcd_url}) and "
            f"NATS leaf ({cp.local_nats_url})"
        )
    out.append("")
    for component in plan.components:
        out.append(f"[{component.name}]")
        if component.cwd:
            out.append(f"cwd: {component.cwd}")
        for key, value in component.env.items():
            out.append(f"env: {key}={shlex.quote(value)}")
        for name in component.files:
            out.append(f"file: {plan.state_dir / name} (below)")
        out.append(f"argv: {shlex.join(component.argv)}")
        ports = ", ".join(f"{p.what} {p.host}:{p.port}" for p in component.ports)
        if ports:
            out.append(f"ports: {ports}")
        if component.health_url and component.peers:
            out.append(f"ready: {quorum_text(component)}")
        elif component.health_url:
            out.append(f"ready: GET {component.health_url}")
        if component.name == "graph" and plan.prefill_queue is not None:
            stream, replicas = plan.prefill_queue
            out.append(f"before: JetStream stream {stream} (the prefill queue) made or raised "
                       f"to {replicas} replicas")  # fmt: skip
        if component.name == "graph" and plan.node is not None:
            out.append(f"runs here: {plan.node.describe()}")
            answer_at = host.response_address() or "(no non-loopback address)"
            out.append(f"responses: Dynamo's processes take response streams on {answer_at}")
            out += _gpu_lines(plan)
            out.append(f"ready: {ready_text(plan)}")
        out.append("")
    if plan.rendered is not None:
        out.append(f"# {plan.yaml_path}")
        out.append(render.to_yaml(plan.rendered))
    for component in plan.components:
        for name, text in component.files.items():
            out.append(f"# {plan.state_dir / name}")
            out.append(text)
    return "\n".join(out).rstrip("\n") + "\n"
