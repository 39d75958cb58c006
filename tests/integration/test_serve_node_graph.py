"""What `dynamo serve` starts from the graph module dynix writes for a node, read with Dynamo
0.2.0's own loader: the services it links, and nothing else.

The vLLM services are stand-ins with the `depends()` of Dynamo v0.2.0's examples/llm (checked
against the upstream copy in ../shared/upstream when it is there): importing the real ones needs
vLLM. The echo graph is dynix's own, imported as it is.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from conftest import test_env as dynix_env
from dynix.serve import host, node

pytest.importorskip("dynamo.sdk", reason="needs ai-dynamo 0.2.0 (the test extras)")

UPSTREAM = REPO.parent / "shared" / "upstream" / "dynamo-v0.2.0" / "examples" / "llm"

# Each service of examples/llm: its module, and the services it depends() on, as upstream.
SHAPE = {
    "Frontend": ("frontend", ["VllmWorker", "Processor"]),
    "Processor": ("processor", ["VllmWorker", "Router"]),
    "Router": ("kv_router", ["VllmWorker"]),
    "VllmWorker": ("worker", ["PrefillWorker"]),
    "PrefillWorker": ("prefill_worker", []),
}
GRAPHS = {
    "agg": "Frontend.link(Processor).link(VllmWorker)",
    "agg_router": "Frontend.link(Processor).link(Router).link(VllmWorker)",
    "disagg": "Frontend.link(Processor).link(VllmWorker).link(PrefillWorker)",
    "disagg_router": "Frontend.link(Processor).link(Router).link(VllmWorker).link(PrefillWorker)",
}


def test_the_stand_ins_have_upstreams_dependencies():
    if not UPSTREAM.is_dir():
        pytest.skip(f"no upstream copy of Dynamo v0.2.0's examples/llm at {UPSTREAM}")
    for service, (module, deps) in SHAPE.items():
        text = (UPSTREAM / "components" / f"{module}.py").read_text()
        body = re.split(rf"^class {service}\b", text, maxsplit=1, flags=re.M)[1]
        assert re.findall(r"=\s*depends\((\w+)\)", body.split("\nclass ", 1)[0]) == deps
    for graph, links in GRAPHS.items():
        assert links in (UPSTREAM / "graphs" / f"{graph}.py").read_text()


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    (root / "components").mkdir()
    (root / "graphs").mkdir()
    (root / "components" / "__init__.py").write_text("")
    (root / "graphs" / "__init__.py").write_text("")
    for service, (module, deps) in SHAPE.items():
        lines = ["from dynamo.sdk import depends, dynamo_endpoint, service"]
        lines += [f"from components.{SHAPE[d][0]} import {d}" for d in deps]
        lines += [
            "",
            '@service(dynamo={"enabled": True, "namespace": "dynamo"})',
            f"class {service}:",
            *(f"    dep_{d.lower()} = depends({d})" for d in deps),
            "    @dynamo_endpoint()",
            "    async def generate(self, request: dict):",
            "        yield request",
        ]
        (root / "components" / f"{module}.py").write_text("\n".join(lines) + "\n")
    for graph, links in GRAPHS.items():
        names = sorted(set(re.findall(r"\w+", links)) - {"link"})
        imports = [f"from components.{SHAPE[n][0]} import {n}" for n in names]
        (root / "graphs" / f"{graph}.py").write_text("\n".join([*imports, links]) + "\n")
    return root


LOAD = """
import json, sys
from dynamo.sdk.lib.loader import find_and_load_service
from dynamo.sdk.lib.service import LinkedServices
svc = find_and_load_service(sys.argv[1], working_dir=sys.argv[2])
LinkedServices.remove_unused_edges()  # as `dynamo serve` does before it starts them
print(json.dumps(sorted(svc.all_services())))
"""


def started(here: node.Node, examples: Path, tmp_path: Path) -> list[str]:
    """The services `dynamo serve TARGET` would start, in a fresh interpreter."""
    folder = tmp_path / f"node-{'-'.join(here.services)}"
    folder.mkdir()
    (folder / f"{node.MODULE}.py").write_text(node.module_text(here))
    env = dynix_env({"PYTHONPATH": str(folder)})
    result = subprocess.run(
        [sys.executable, "-c", LOAD, here.target, str(examples)],
        env=env, capture_output=True, text=True, timeout=120, cwd=examples,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("graph", "names", "expected"),
    [
        # The multi-node guide's node 1 and nodes 2..N, from one disagg_router config.
        ("disagg_router", ["Frontend", "Processor", "Router", "VllmWorker"],
         ["Frontend", "Processor", "Router", "VllmWorker"]),
        ("disagg_router", ["PrefillWorker"], ["PrefillWorker"]),
        # A decode worker alone: its depends(PrefillWorker) is dropped.
        ("disagg", ["VllmWorker"], ["VllmWorker"]),
        ("disagg", ["Processor", "VllmWorker"], ["Processor", "VllmWorker"]),
        ("disagg", [], ["Frontend", "PrefillWorker", "Processor", "VllmWorker"]),
        ("agg_router", [], ["Frontend", "Processor", "Router", "VllmWorker"]),
    ],
)  # fmt: skip
def test_dynamo_starts_the_named_services_only(examples, tmp_path, graph, names, expected):
    assert started(node.select(graph, names), examples, tmp_path) == expected


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["Frontend", "Processor", "EchoWorker"], ["EchoWorker", "Frontend", "Processor"]),
        (["EchoPrefillWorker"], ["EchoPrefillWorker"]),
        ([], ["EchoPrefillWorker", "EchoWorker", "Frontend", "Processor"]),
    ],
)
def test_the_echo_graph_splits_the_same_way(tmp_path, names, expected):
    assert started(node.select("echo", names), host.ECHO_EXAMPLES, tmp_path) == expected
