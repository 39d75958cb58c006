"""The services of a GPU-free Dynamo graph with the shape of the disaggregated one.

Frontend -> Processor -> EchoWorker -> EchoPrefillWorker, written on Dynamo's own SDK. This
module links nothing: `graphs/echo.py` links all four (`dynamo serve graphs.echo:Frontend -f
CONFIG`, from the folder above this one), and a node that runs some of them links those only.

- Frontend registers the model with the HTTP frontend (`llmctl http add chat-models`) and runs
  Dynamo's Rust `http` binary, which speaks the OpenAI API.
- Processor turns an OpenAI chat request into a prompt and its tokens (words stand in for
  tokens here) and turns the worker's pieces back into `chat.completion.chunk` dicts.
- EchoWorker answers with the last user message. Like vLLM's worker with `conditional-disagg`,
  it asks Dynamo's `DisaggregatedRouter` whether a prompt is too long to prefill locally
  (over `max-local-prefill-length` tokens); if so the prefill runs on EchoPrefillWorker.
- EchoPrefillWorker does the prefill work of this model: it counts the prompt's tokens and
  hashes them. The answer's `system_fingerprint` says where the prefill ran, e.g.
  `echo-prefill:remote:12:3fa5c0de`, so a client can see which way the request went:
  `local` (short prompt, or no prefill worker registered), `remote`, or `fallback` (a remote
  prefill failed or took over REMOTE_PREFILL_TIMEOUT, so it ran here). Its last part names the
  node that did the prefill: `$DYNIX_NODE` (dynix sets the node's address), else the host name.

This file is imported by Dynamo's Python, not by dynix: it uses nothing but Dynamo's SDK,
its dependencies (pydantic) and the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from dynamo import sdk
from dynamo.llm import DisaggregatedRouter
from dynamo.sdk import async_on_start, depends, dynamo_context, dynamo_endpoint, service
from dynamo.sdk.lib.config import ServiceConfig
from pydantic import BaseModel, ConfigDict

NAMESPACE = "dynix"
# How long EchoWorker waits for a remote prefill before doing it itself.
REMOTE_PREFILL_TIMEOUT = 5.0
logger = logging.getLogger("echo")


def _args(service_name: str, *options: tuple[str, type, Any]) -> argparse.Namespace:
    """This service's keys of the YAML config (with the `Common` keys it subscribes to)."""
    parser = argparse.ArgumentParser(prog=service_name, add_help=False)
    for name, kind, default in options:
        if kind is bool:
            parser.add_argument(f"--{name}", action="store_true", default=default)
        else:
            parser.add_argument(f"--{name}", type=kind, default=default)
    args, _ = parser.parse_known_args(ServiceConfig.get_instance().as_args(service_name))
    return args


def _sdk_binary(name: str) -> str:
    """Dynamo's Rust binaries ship inside the SDK; fall back to PATH."""
    candidate = Path(sdk.__file__).parent / "cli" / "bin" / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


async def _client(service_name: str, endpoint: str) -> Any:
    runtime = dynamo_context["runtime"]
    client = await runtime.namespace(NAMESPACE).component(service_name).endpoint(endpoint).client()
    await client.wait_for_endpoints()
    return client


class PrefillRequest(BaseModel):
    request_id: str
    tokens: list[str]


class WorkerRequest(BaseModel):
    request_id: str
    prompt: str
    tokens: list[str]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]]


def _node() -> str:
    return os.environ.get("DYNIX_NODE") or socket.gethostname()


def prefill(tokens: list[str]) -> dict[str, Any]:
    """The prefill of the echo model: a count and a digest of the prompt's tokens."""
    digest = hashlib.sha256("\x00".join(tokens).encode()).hexdigest()[:8]
    return {"tokens": len(tokens), "digest": digest}


@service(dynamo={"enabled": True, "namespace": NAMESPACE}, resources={"cpu": "1"}, workers=1)
class EchoPrefillWorker:
    """Prefills long prompts for EchoWorker."""

    @dynamo_endpoint()
    async def generate(self, request: PrefillRequest):
        yield prefill(request.tokens) | {"worker_pid": os.getpid(), "node": _node()}


@service(dynamo={"enabled": True, "namespace": NAMESPACE}, resources={"cpu": "1"}, workers=1)
class EchoWorker:
    """Answers with the user's last message; long prompts are prefilled remotely."""

    prefill_worker = depends(EchoPrefillWorker)

    def __init__(self) -> None:
        self.args = _args(
            "EchoWorker",
            ("model", str, "echo"),
            ("remote-prefill", bool, False),
            ("conditional-disagg", bool, False),
            ("max-local-prefill-length", int, 1000),
        )
        self.prefill_client: Any = None
        self.router: Any = None
        self.turn = 0

    @async_on_start
    async def start(self) -> None:
        if self.args.remote_prefill:
            # Not waiting for a prefill worker: they may run on other nodes, start later or go
            # away; until one is registered every prompt is prefilled here.
            runtime = dynamo_context["runtime"]
            endpoint = runtime.namespace(NAMESPACE).component("EchoPrefillWorker")
            self.prefill_client = await endpoint.endpoint("generate").client()
            with contextlib.suppress(Exception):  # the ones up now, if any, before serving
                await asyncio.wait_for(self.prefill_client.wait_for_endpoints(), 2.0)
            if self.args.conditional_disagg:
                self.router = DisaggregatedRouter(
                    dynamo_context["runtime"], self.args.model, self.args.max_local_prefill_length
                )
        logger.info("EchoWorker ready (remote prefill: %s)", self.args.remote_prefill)

    def _remote(self, length: int) -> bool:
        if self.prefill_client is None or not self.prefill_client.endpoint_ids():
            return False
        if self.router is None:
            return True
        return self.router.prefill_remote(length, 0)

    async def _prefill_remotely(self, request: WorkerRequest) -> dict[str, Any]:
        """Round robin over the registered prefill workers; one that does not answer (gone,
        its registration not yet expired) passes the request to the next."""
        body = PrefillRequest(request_id=request.request_id, tokens=request.tokens).model_dump()
        ids = list(self.prefill_client.endpoint_ids())
        if not ids:
            raise RuntimeError("no prefill worker is registered")
        self.turn = (self.turn + 1) % len(ids)
        errors = []
        for instance in ids[self.turn :] + ids[: self.turn]:
            try:
                stream = await self.prefill_client.direct(body, instance)
                result = None
                async for item in stream:
                    result = item.data()
            except Exception as exc:  # that one is gone: the next
                errors.append(f"{instance:x}: {exc}")
                continue
            if isinstance(result, dict) and "digest" in result:
                return result
            errors.append(f"{instance:x} answered {result!r}")
        raise RuntimeError("; ".join(errors))

    @dynamo_endpoint()
    async def generate(self, request: WorkerRequest):
        if self._remote(len(request.tokens)):
            try:
                result = await asyncio.wait_for(
                    self._prefill_remotely(request), REMOTE_PREFILL_TIMEOUT
                )
                where = "remote"
            except Exception as exc:  # a prefill worker gone or not answering: do it here
                logger.warning("remote prefill failed (%s); prefilling locally", exc or type(exc))
                result, where = prefill(request.tokens), "fallback"
        else:
            result, where = prefill(request.tokens), "local"
        node = result.get("node") or _node()
        fingerprint = f"echo-prefill:{where}:{result['tokens']}:{result['digest']}:{node}"
        pieces = request.prompt.split(" ") if request.prompt else [""]
        for i, piece in enumerate(pieces):
            yield {"text": piece if i == 0 else " " + piece, "fingerprint": fingerprint}


@service(dynamo={"enabled": True, "namespace": NAMESPACE}, resources={"cpu": "1"}, workers=1)
class Processor:
    """OpenAI chat requests in, `chat.completion.chunk` dicts out."""

    worker = depends(EchoWorker)

    def __init__(self) -> None:
        self.worker_client: Any = None

    @async_on_start
    async def start(self) -> None:
        self.worker_client = await _client("EchoWorker", "generate")

    @dynamo_endpoint(name="chat/completions")
    async def chat_completions(self, request: ChatRequest):
        prompt = next(
            (
                _text(m.get("content"))
                for m in reversed(request.messages)
                if m.get("role") == "user"
            ),
            "",
        )
        request_id = uuid.uuid4().hex
        work = WorkerRequest(request_id=request_id, prompt=prompt, tokens=prompt.split())
        stream = await self.worker_client.round_robin(work.model_dump())
        chunk_id, created = f"chatcmpl-{request_id}", int(time.time())
        fingerprint = None
        first = True
        async for item in stream:
            piece = item.data()
            fingerprint = piece["fingerprint"]
            delta = {"content": piece["text"]} | ({"role": "assistant"} if first else {})
            first = False
            yield _chunk(chunk_id, created, request.model, fingerprint, delta, None)
        yield _chunk(chunk_id, created, request.model, fingerprint, {}, "stop")


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _chunk(chunk_id, created, model, fingerprint, delta, finish_reason) -> dict[str, Any]:
    # Every field the frontend's chunk type requires: one missing and the chunk is dropped.
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def _die_with_parent() -> None:
    """Runs in the `http` child: take it down when this service's process goes."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@service(dynamo={"enabled": True, "namespace": NAMESPACE}, resources={"cpu": "1"}, workers=1)
class Frontend:
    """Registers the model and runs Dynamo's OpenAI-compatible HTTP server."""

    processor = depends(Processor)

    def __init__(self) -> None:
        config = ServiceConfig.get_instance().get("Frontend", {})
        self.model = config["served_model_name"]
        self.endpoint = config.get("endpoint", f"{NAMESPACE}.Processor.chat/completions")
        self.port = int(config.get("port", 8000))
        self.host = config.get("host")
        self.http: asyncio.subprocess.Process | None = None

    @async_on_start
    async def start(self) -> None:
        llmctl = _sdk_binary("llmctl")
        for argv in (
            [llmctl, "http", "remove", "chat-models", self.model],
            [llmctl, "http", "add", "chat-models", self.model, self.endpoint],
        ):
            proc = await asyncio.create_subprocess_exec(*argv)
            await proc.wait()
        argv = [_sdk_binary("http"), "-p", str(self.port)]
        if self.host:
            argv += ["--host", self.host]
        self.http = await asyncio.create_subprocess_exec(*argv, preexec_fn=_die_with_parent)
        asyncio.get_running_loop().create_task(self._watch_http())

    async def _watch_http(self) -> None:
        assert self.http is not None
        code = await self.http.wait()
        logger.error("the HTTP server exited with %s; stopping the Frontend", code)
        os._exit(1)

    @dynamo_endpoint()
    async def health(self, request: dict):
        yield {"model": self.model, "port": self.port}
