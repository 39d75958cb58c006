"""The stack config rendered as Dynamo's service config (the YAML given to `dynamo serve -f`).

Key names follow Dynamo v0.2.0's `examples/llm/configs/*.yaml`: a `Common` section whose keys a
service receives when it lists them in its `common-configs`, one section per service, and
`ServiceArgs` (workers, GPU resources) that Dynamo's process manager reads instead of passing
them to the service.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .config import StackConfig

# The services of each graph, in the order requests flow through them.
GRAPH_SERVICES = {
    "agg": ("Frontend", "Processor", "VllmWorker"),
    "agg_router": ("Frontend", "Processor", "Router", "VllmWorker"),
    "disagg": ("Frontend", "Processor", "VllmWorker", "PrefillWorker"),
    "disagg_router": ("Frontend", "Processor", "Router", "VllmWorker", "PrefillWorker"),
    "echo": ("Frontend", "Processor", "EchoWorker", "EchoPrefillWorker"),
}
# The Dynamo namespace each graph's components register in.
NAMESPACES = {"echo": "dynix"}
DEFAULT_NAMESPACE = "dynamo"


@dataclass(frozen=True)
class GpuNeed:
    service: str
    workers: int
    gpus_per_worker: int

    @property
    def total(self) -> int:
        return self.workers * self.gpus_per_worker


def namespace(graph: str) -> str:
    return NAMESPACES.get(graph, DEFAULT_NAMESPACE)


def service_config(config: StackConfig) -> dict[str, Any]:
    """Dynamo's service config for `config.graph` (which must be set)."""
    graph = config.graph
    services = GRAPH_SERVICES[graph]
    disagg = "PrefillWorker" in services or "EchoPrefillWorker" in services
    routed = "Router" in services
    echo = graph == "echo"
    common: dict[str, Any] = {"model": config.model_name}
    if not echo:
        common["block-size"] = config.block_size
        common["max-model-len"] = config.max_model_len
    if routed:
        common["router"] = config.router if config.router == "kv" else "kv"
    if not echo and (disagg or routed):
        common["kv-transfer-config"] = json.dumps(
            {"kv_connector": config.kv_connector}, separators=(",", ":")
        )
    model_keys = ["model"] if echo else ["model", "block-size", "max-model-len"]
    worker_keys = model_keys + (["router"] if routed else [])
    if "kv-transfer-config" in common:
        worker_keys.append("kv-transfer-config")

    out: dict[str, Any] = {"Common": common}
    out["Frontend"] = {
        "served_model_name": config.served_name,
        "endpoint": f"{namespace(graph)}.Processor.chat/completions",
        "port": config.port,
        "host": config.host,  # the echo graph and the flake's patched Dynamo bind it
    }
    processor: dict[str, Any] = {}
    if not routed:
        processor["router"] = config.router
    processor["common-configs"] = model_keys + (["router"] if routed else [])
    out["Processor"] = processor
    if routed:
        out["Router"] = {"min-workers": config.min_workers, "common-configs": ["model", "router"]}

    decode_name = "EchoWorker" if echo else "VllmWorker"
    decode: dict[str, Any] = {}
    if not echo:
        decode["max-num-batched-tokens"] = config.decode.max_num_batched_tokens
        decode["tensor-parallel-size"] = config.decode.gpus_per_worker
    if disagg:
        decode["remote-prefill"] = config.remote_prefill
        decode["conditional-disagg"] = config.conditional_disagg
        decode["max-local-prefill-length"] = config.max_local_prefill_length
        decode["max-prefill-queue-size"] = config.max_prefill_queue_size
    if routed and not echo:
        decode["enable-prefix-caching"] = True
    decode["ServiceArgs"] = _service_args(
        config.decode.workers, config.decode.gpus_per_worker, echo
    )
    decode["common-configs"] = worker_keys
    out[decode_name] = decode

    if disagg:
        prefill: dict[str, Any] = {}
        if not echo:
            prefill["max-num-batched-tokens"] = config.prefill.max_num_batched_tokens
            prefill["tensor-parallel-size"] = config.prefill.gpus_per_worker
        prefill["ServiceArgs"] = _service_args(
            config.prefill.workers, config.prefill.gpus_per_worker, echo
        )
        prefill["common-configs"] = [k for k in worker_keys if k != "router"]
        out["EchoPrefillWorker" if echo else "PrefillWorker"] = prefill

    for name, extra in config.services.items():
        out.setdefault(name, {}).update(extra)
    return out


def _service_args(workers: int, gpus: int, echo: bool) -> dict[str, Any]:
    args: dict[str, Any] = {"workers": workers}
    if not echo:
        args["resources"] = {"gpu": gpus}
    return args


def gpu_needs(rendered: dict[str, Any]) -> list[GpuNeed]:
    """The GPUs each service of a rendered config asks for (`ServiceArgs.resources.gpu`)."""
    needs = []
    for name, section in rendered.items():
        args = section.get("ServiceArgs") if isinstance(section, dict) else None
        if not isinstance(args, dict):
            continue
        gpus = int((args.get("resources") or {}).get("gpu", 0) or 0)
        if gpus:
            needs.append(GpuNeed(name, int(args.get("workers", 1)), gpus))
    return needs


def worker_counts(rendered: dict[str, Any], graph: str) -> dict[str, int]:
    """How many processes of each service `dynamo serve` runs."""
    counts = {}
    for name in GRAPH_SERVICES[graph]:
        args = rendered.get(name, {}).get("ServiceArgs", {})
        counts[name] = int(args.get("workers", 1)) if isinstance(args, dict) else 1
    return counts


# -- a small YAML emitter: mappings, lists of scalars, scalars -------------------------------
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_SPECIAL = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _SPECIAL:
        return text
    return json.dumps(text)  # a JSON string is a valid double-quoted YAML scalar


def to_yaml(data: dict[str, Any], indent: int = 0) -> str:
    """Block-style YAML for nested dicts whose leaves are scalars or lists of scalars."""
    lines = []
    pad = "  " * indent
    for key, value in data.items():
        name = _scalar(key)
        if isinstance(value, dict):
            if value:
                lines.append(f"{pad}{name}:")
                lines.append(to_yaml(value, indent + 1).rstrip("\n"))
            else:
                lines.append(f"{pad}{name}: {{}}")
        elif isinstance(value, list | tuple):
            if any(isinstance(v, dict | list | tuple) for v in value):
                raise ValueError(f"{key}: only lists of scalars can be written")
            lines.append(f"{pad}{name}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
        if indent == 0 and isinstance(value, dict):
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
