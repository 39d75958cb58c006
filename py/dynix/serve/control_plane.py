"""Talking to the control plane and the frontend over HTTP: health, readiness, registrations.

etcd is reached through its v3 HTTP/JSON gateway (`/v3/kv/...`, keys base64-encoded), which
etcd 3.4 and 3.5 both serve on the client URL, so no etcd client library is needed.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from ..errors import DynixError

# Where Dynamo 0.2.0's `llmctl http add chat-models NAME ...` registers a model; the key has no
# lease, so it outlives the stack unless removed.
CHAT_MODEL_PREFIX = "public/components/http/models/chat/"


def http_json(url: str, body: Any | None = None, *, timeout: float = 2.0) -> tuple[int, Any]:
    """GET (or POST `body` as JSON) and return (status, parsed JSON or text); (0, error) when
    nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:  # refused, reset, timed out, bad URL
        return 0, str(exc)
    try:
        return status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def healthy(url: str, timeout: float = 1.0) -> bool:
    """True when `url` answers 200 (NATS `/healthz`, etcd `/health` with health "true")."""
    status, body = http_json(url, timeout=timeout)
    if status != 200:
        return False
    if isinstance(body, dict) and "health" in body:
        return str(body["health"]).lower() == "true"
    return True


def member_ready(name: str, health_url: str, peers: int) -> tuple[bool, str]:
    """Whether a cluster member has a quorum with the others, and if not what it waits for.

    etcd: `/health` says health "true", which it only does once the cluster has a leader.
    NATS: `/healthz` ok, `/routez` has a route to another member, `/jsz` names a JetStream
    meta leader (the cluster's JetStream has a quorum).
    """
    if name == "nats-leaf":
        base = health_url.rsplit("/", 1)[0]
        status, leafz = http_json(f"{base}/leafz", timeout=1.0)
        if status == 0:
            return False, "the NATS leaf is not answering"
        connected = leafz.get("leafnodes", 0) if isinstance(leafz, dict) else 0
        if not connected:
            return False, "the NATS leaf has no connection to a member yet"
        remote = (leafz.get("leafs") or [{}])[0].get("ip", "?")
        return True, f"the NATS leaf is connected to {remote}"
    if name == "etcd-proxy":
        status, body = http_json(health_url, timeout=2.0)
        if isinstance(body, dict) and str(body.get("health", "")).lower() == "true":
            return True, "an etcd member answers through the forwarder"
        return False, "no etcd member answers through the forwarder yet"
    if name == "etcd":
        status, body = http_json(health_url, timeout=1.0)
        if status == 0:
            return False, "etcd not answering"
        if isinstance(body, dict) and str(body.get("health", "")).lower() == "true":
            return True, "etcd has a leader"
        return False, "etcd has no leader yet"
    base = health_url.rsplit("/", 1)[0]
    status, _ = http_json(health_url, timeout=1.0)
    if status == 0:
        return False, "nats not answering"
    status, routes = http_json(f"{base}/routez", timeout=1.0)
    have = routes.get("num_routes", 0) if isinstance(routes, dict) else 0
    if peers and not have:
        return False, f"nats has no route to the other {peers} member(s) yet"
    status, jsz = http_json(f"{base}/jsz", timeout=1.0)
    meta = jsz.get("meta_cluster") if isinstance(jsz, dict) else None
    leader = meta.get("leader") if isinstance(meta, dict) else ""
    if not leader:
        return False, f"nats has {have} route(s), no JetStream meta leader yet"
    status, _ = http_json(health_url, timeout=1.0)
    if status != 200:
        return False, f"nats /healthz: HTTP {status}"
    return True, f"nats has {have} route(s), JetStream meta leader {leader}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def etcd_keys(etcd_urls: list[str], prefix: str, timeout: float = 2.0) -> list[str]:
    """Keys under `prefix`; raises when no etcd endpoint answers."""
    body = {"key": _b64(prefix), "range_end": _prefix_end(prefix), "keys_only": True}
    data = _etcd(etcd_urls, "/v3/kv/range", body, timeout)
    return [base64.b64decode(kv["key"]).decode() for kv in data.get("kvs", [])]


def etcd_delete(etcd_urls: list[str], key: str, timeout: float = 2.0) -> int:
    """Delete `key`; returns how many keys went (0 or 1)."""
    data = _etcd(etcd_urls, "/v3/kv/deleterange", {"key": _b64(key)}, timeout)
    return int(data.get("deleted", 0))


_answered: dict[tuple[str, ...], str] = {}  # the member that answered last, asked first


def _post(etcd_urls: list[str], path: str, body: dict, timeout: float) -> tuple[int, Any, str]:
    """POST `body` to etcd's JSON API on the first member that answers at all (the one that
    answered last time first: a member gone costs one timeout, not one per call); its status,
    its answer, and what went wrong with the others."""
    key = tuple(etcd_urls)
    first = _answered.get(key)
    last = ""
    for url in sorted(etcd_urls, key=lambda u: u != first):
        status, data = http_json(url.rstrip("/") + path, body, timeout=timeout)
        if status != 0 and status < 500:
            _answered[key] = url
            return status, data, last
        last = f"{url}: {data if status == 0 else f'HTTP {status}'}"
    return 0, None, last


def _etcd(etcd_urls: list[str], path: str, body: dict, timeout: float) -> dict:
    status, data, last = _post(etcd_urls, path, body, timeout)
    if status == 200 and isinstance(data, dict):
        return data
    if status:
        last = f"HTTP {status}: {str(data)[:200]}"
    raise DynixError(f"etcd did not answer {path} ({last})")


def revoke_lease(etcd_urls: list[str], lease: int, timeout: float = 2.0) -> bool:
    """Revoke `lease` and so delete its keys; False when etcd no longer has it."""
    status, data, last = _post(etcd_urls, "/v3/lease/revoke", {"ID": str(lease)}, timeout)
    if status == 200:
        return True
    if status == 404 and "not found" in str(data):
        return False
    if status:
        last = f"HTTP {status}: {str(data)[:200]}"
    raise DynixError(f"etcd did not revoke lease {lease:x} ({last})")


def instance_keys(etcd_urls: list[str], namespace: str, service: str) -> list[str]:
    """The registered endpoints of a Dynamo service: `NS/components/SERVICE/ENDPOINT:LEASE`."""
    return etcd_keys(etcd_urls, f"{namespace}/components/{service}/")


def deregister_model(etcd_urls: list[str], name: str) -> int:
    return etcd_delete(etcd_urls, CHAT_MODEL_PREFIX + name)


def frontend_ready(base_url: str, model: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Ready = `/v1/models` lists `model` and one chat completion is answered with content."""
    status, body = http_json(f"{base_url}/v1/models", timeout=timeout)
    if status != 200 or not isinstance(body, dict):
        return False, "frontend not answering" if status == 0 else f"/v1/models: HTTP {status}"
    if model not in [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]:
        return False, f"/v1/models does not list {model!r} yet"
    request = {
        "model": model,
        "messages": [{"role": "user", "content": "ready?"}],
        "max_tokens": 8,
        "stream": False,
    }
    status, body = http_json(f"{base_url}/v1/chat/completions", request, timeout=timeout)
    if status != 200 or not isinstance(body, dict):
        detail = body.get("error", body) if isinstance(body, dict) else body
        return False, f"chat completion: HTTP {status}: {str(detail)[:200]}"
    choices = body.get("choices") or []
    content = choices[0].get("message", {}).get("content") if choices else None
    if not content:
        return False, "chat completion answered without content"
    return True, "ready"
