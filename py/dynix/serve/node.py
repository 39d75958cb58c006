"""Which of a graph's services run on this node, and the graph module `dynamo serve` is given.

What `dynamo serve MODULE:Service` starts is decided by links in a graph module: the named
service and each one linked from it (`A.link(B)`); a `depends()` on a service that is not linked
is dropped. Dynamo 0.2.0's multi-node guide runs one graph across nodes that way, from one config
file: node 1 serves `graphs.agg_router:Frontend` (Frontend, Processor, Router, VllmWorker) and
nodes 2..N serve `components.prefill_worker:PrefillWorker`.

dynix writes that module itself (`<state>/node/dynix_node_graph.py`): for the whole graph it
imports the examples' `graphs/<graph>.py` as it is (a user's own links kept); for the services
named with `--component` it links just those, in the order requests flow through the graph. In
both it adds one start-up hook to each service: the process writes its etcd lease to
`<state>/leases/<pid>.json`. Dynamo 0.2.0's processes exit on SIGTERM without revoking their
lease, so their registrations would outlive them by the lease's time to live (about 10 s), and
clients on other nodes would keep sending them requests; dynix revokes the leases it recorded
when it stops the node, or when one of its processes dies.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DynixError
from . import render

MODULE = "dynix_node_graph"
FOLDER = "node"  # under the state dir: the module, put on the import path
LEASES = "leases"  # under the state dir: the lease records
LEASES_ENV = "DYNIX_LEASES"

# Where each service is defined: Dynamo's examples/llm, and dynix's echo graph.
SERVICE_MODULES = {
    "Frontend": "components.frontend",
    "Processor": "components.processor",
    "Router": "components.kv_router",
    "VllmWorker": "components.worker",
    "PrefillWorker": "components.prefill_worker",
}
ECHO_MODULE = "components.echo"


@dataclass(frozen=True)
class Node:
    graph: str
    services: tuple[str, ...]  # those run here, in the order requests flow

    @property
    def whole(self) -> bool:
        return self.services == render.GRAPH_SERVICES[self.graph]

    @property
    def root(self) -> str:
        return self.services[0]

    @property
    def target(self) -> str:
        return f"{MODULE}:{self.root}"

    @property
    def frontend(self) -> bool:
        return "Frontend" in self.services

    def watcher(self, service: str) -> str:
        """The name of `service`'s watcher in `dynamo serve`'s circus: NAMESPACE_SERVICE, but
        a root served alone gets none (Dynamo 0.2.0 names the root's watcher after the
        namespace of the last service it started before it)."""
        if len(self.services) == 1:
            return f"_{service}"
        return f"{render.namespace(self.graph)}_{service}"

    def describe(self) -> str:
        if self.whole:
            return f"the whole graph ({', '.join(self.services)})"
        return ", ".join(self.services) + f" of graph {self.graph}"


def select(graph: str, names: tuple[str, ...] | list[str]) -> Node:
    """The services of `graph` named in `names` (all of them when empty), checked."""
    services = render.GRAPH_SERVICES[graph]
    if not names:
        return Node(graph, services)
    by_lower = {s.lower(): s for s in services}
    chosen = []
    for name in names:
        service = by_lower.get(name.strip().lower())
        if service is None:
            raise DynixError(
                f"--component {name}: graph {graph} has no such service "
                f"(its services: {', '.join(services)})"
            )
        if service not in chosen:
            chosen.append(service)
    indices = sorted(services.index(s) for s in chosen)
    if indices != list(range(indices[0], indices[-1] + 1)):
        gap = ", ".join(services[i] for i in range(indices[0], indices[-1] + 1) if i not in indices)
        raise DynixError(
            f"--component {','.join(chosen)}: the services of one node must follow each other "
            f"in graph {graph} ({' -> '.join(services)}); {gap} would sit between them: name "
            f"it too, or run the parts as separate nodes"
        )
    return Node(graph, tuple(services[i] for i in indices))


def only(rendered: dict[str, Any], node: Node) -> dict[str, Any]:
    """The sections of the rendered config for the services that run here (and `Common`)."""
    keep = {"Common", *node.services}
    return {name: section for name, section in rendered.items() if name in keep}


def module_text(node: Node) -> str:
    """The Python module `dynamo serve` imports on this node."""
    if node.graph == "echo":
        imports = [f"from {ECHO_MODULE} import {', '.join(sorted(node.services))}"]
    else:
        imports = [f"from {SERVICE_MODULES[s]} import {s}" for s in sorted(node.services)]
    if node.whole:
        imports = [f"from graphs.{node.graph} import {', '.join(sorted(node.services))}"]
        links = [f"# graphs/{node.graph}.py links {' -> '.join(node.services)}"]
    elif len(node.services) == 1:
        # Linked to nothing, and its own depends() dropped: it runs alone.
        links = [f"{node.root}.remove_unused_edges(used_edges=set())"]
    else:
        links = [".".join([node.root, *(f"link({s})" for s in node.services[1:])])]
    return _TEMPLATE.format(
        what=node.describe(),
        imports="\n".join(imports),
        links="\n".join(links),
        services=", ".join(node.services),
        env=LEASES_ENV,
    )


_TEMPLATE = '''\
"""Written by dynix serve: what this node runs, {what}."""

import inspect
import json
import os

from dynamo.sdk import async_on_start, dynamo_context

{imports}

{links}


async def _dynix_record_lease(self):
    """Write this process's etcd lease where dynix revokes it when the node stops."""
    folder = os.environ.get("{env}")
    endpoints = dynamo_context.get("endpoints") or []
    if not folder or not endpoints:
        return
    lease = endpoints[0].lease_id()  # an int in 0.2.0 (its stub says a coroutine)
    if inspect.isawaitable(lease):
        lease = await lease
    record = {{"pid": os.getpid(), "service": type(self).__name__, "lease": lease}}
    path = os.path.join(folder, f"{{os.getpid()}}.json")
    with open(path + ".tmp", "w") as out:
        json.dump(record, out)
    os.replace(path + ".tmp", path)


for _service in ({services},):
    _service.inner._dynix_record_lease = async_on_start(_dynix_record_lease)
'''


@dataclass(frozen=True)
class Lease:
    pid: int
    service: str
    lease: int


def leases(folder: Path) -> list[Lease]:
    """The leases this node's processes recorded (unreadable records are skipped)."""
    out = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            data = json.loads((folder / name).read_text())
            out.append(Lease(int(data["pid"]), str(data["service"]), int(data["lease"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def forget(folder: Path, lease: Lease) -> None:
    with contextlib.suppress(FileNotFoundError):
        (folder / f"{lease.pid}.json").unlink()
