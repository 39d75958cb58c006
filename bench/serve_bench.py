"""What `dynix serve` costs: cold start, control-plane start, and the request path.

    PYTHONPATH=py python bench/serve_bench.py [--runs 5] [--requests 200] [--json]

- cold start: from launch to the first correct answer of the echo stack, through
  `dynix serve --graph echo` and through the same `dynamo serve graphs.echo:Frontend -f ...`
  started by hand after `nats-server -js` and `etcd` (the two alternate, run by run);
- control plane: `dynix serve --role control-plane` from launch to state `ready`;
- request path: non-streaming chat completions through the 3-hop graph (HTTP frontend ->
  Processor -> EchoWorker) of a stack run by dynix and of one started by hand, and direct calls
  to the EchoWorker with Dynamo's runtime client.

Needs nats-server, etcd and ai-dynamo==0.2.0 / ai-dynamo-runtime==0.2.0. Figures are medians
with min and max; nothing here judges them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "py"))

from dynix.serve import host, render  # noqa: E402
from dynix.serve.config import StackConfig  # noqa: E402

PROMPT = "how fast is this"


def free_ports(count: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()
    return ports


def ask(port: int, prompt: str = PROMPT, timeout: float = 5) -> str | None:
    body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": prompt}]})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        body.encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
        return answer["choices"][0]["message"]["content"]
    except (OSError, KeyError, IndexError, ValueError):
        return None


def wait_answer(port: int, deadline: float) -> float:
    while time.monotonic() < deadline:
        if ask(port, timeout=2) == PROMPT:
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit("no answer before the deadline")


def kill_groups(procs: list[subprocess.Popen]) -> None:
    """Stop what a run started: each process's group and every group below it."""
    from dynix.serve import procs as proctree

    groups = set()
    for proc in procs:
        groups.add(proc.pid)
        groups.update(p.pgid for p in proctree.descendants(proc.pid))
    proctree.stop_groups(groups, 5.0, reap=lambda: [p.poll() for p in procs])


class Ports:
    def __init__(self) -> None:
        names = ["port", "nats", "nats_mon", "etcd", "etcd_peer", "circus", "circus_pub"]
        self.__dict__.update(dict(zip(names, free_ports(len(names)), strict=True)))


def dynix_config(folder: Path, p: Ports) -> Path:
    path = folder / "dynix.toml"
    path.write_text(
        f'[serve]\ngraph = "echo"\nport = {p.port}\nstate-dir = "{folder / "state"}"\n'
        f"[serve.control-plane]\nnats-port = {p.nats}\nnats-monitor-port = {p.nats_mon}\n"
        f"etcd-port = {p.etcd}\netcd-peer-port = {p.etcd_peer}\n"
        f"[serve.supervise]\ncircus-port = {p.circus}\ncircus-pubsub-port = {p.circus_pub}\n"
    )
    return path


def start_dynix(folder: Path, p: Ports, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "py"))
    return subprocess.Popen(
        [sys.executable, "-m", "dynix", "serve", "--config", str(dynix_config(folder, p)), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "dynix.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )


def start_by_hand(folder: Path, p: Ports) -> list[subprocess.Popen]:
    """nats-server, etcd and `dynamo serve` as one would type them, no waiting in between
    except for the control plane's health (as Dynamo's own instructions do)."""
    yaml = folder / "echo.yaml"
    config = StackConfig(graph="echo", port=p.port)
    yaml.write_text(render.to_yaml(render.service_config(config)))
    out = open(folder / "hand.log", "w")  # noqa: SIM115
    common = {"stdout": out, "stderr": subprocess.STDOUT, "start_new_session": True}
    peer = f"http://127.0.0.1:{p.etcd_peer}"
    nats = subprocess.Popen(
        ["nats-server", "-js", "-sd", str(folder / "nats"), "-a", "127.0.0.1",
         "-p", str(p.nats), "-m", str(p.nats_mon)], **common,
    )  # fmt: skip
    etcd = subprocess.Popen(
        ["etcd", "--data-dir", str(folder / "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{p.etcd}",
         "--advertise-client-urls", f"http://127.0.0.1:{p.etcd}",
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"default={peer}"], **common,
    )  # fmt: skip
    for url in (f"http://127.0.0.1:{p.nats_mon}/healthz", f"http://127.0.0.1:{p.etcd}/health"):
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    break
            except OSError:
                time.sleep(0.02)
    env = dict(
        os.environ,
        ETCD_ENDPOINTS=f"http://127.0.0.1:{p.etcd}",
        NATS_SERVER=f"nats://127.0.0.1:{p.nats}",
        DYN_CIRCUS_ENDPOINT_PORT=str(p.circus),
        DYN_CIRCUS_PUBSUB_PORT=str(p.circus_pub),
    )
    graph = subprocess.Popen(
        ["dynamo", "serve", "graphs.echo:Frontend", "-f", str(yaml)],
        cwd=host.ECHO_EXAMPLES, env=env, **common,
    )  # fmt: skip
    return [graph, etcd, nats]


def cold_start(runs: int) -> dict:
    times: dict[str, list[float]] = {"dynix": [], "hand": []}
    for _ in range(runs):
        for way in ("dynix", "hand"):
            with tempfile.TemporaryDirectory() as tmp:
                p = Ports()
                t0 = time.monotonic()
                started = (
                    [start_dynix(Path(tmp), p)] if way == "dynix" else start_by_hand(Path(tmp), p)
                )
                try:
                    times[way].append(wait_answer(p.port, t0 + 120) - t0)
                finally:
                    if way == "dynix":
                        started[0].send_signal(signal.SIGTERM)
                        started[0].wait(15)
                    kill_groups(started)
    return times


def control_plane(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            p = Ports()
            t0 = time.monotonic()
            proc = start_dynix(Path(tmp), p, "--role", "control-plane")
            state = Path(tmp) / "state" / "state.json"
            try:
                while True:
                    try:
                        if json.loads(state.read_text())["status"] == "ready":
                            break
                    except (OSError, ValueError, KeyError):
                        pass
                    if proc.poll() is not None:
                        raise SystemExit("dynix serve --role control-plane exited")
                    time.sleep(0.01)
                times.append(time.monotonic() - t0)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
    return times


def http_latency(port: int, count: int) -> list[float]:
    out = []
    for i in range(count):
        prompt = f"{PROMPT} {i}"
        t0 = time.perf_counter()
        assert ask(port, prompt) == prompt
        out.append(time.perf_counter() - t0)
    return out


def direct_latency(p: Ports, count: int) -> list[float]:
    """Calls to EchoWorker's endpoint with Dynamo's runtime client, no frontend or processor."""
    os.environ["ETCD_ENDPOINTS"] = f"http://127.0.0.1:{p.etcd}"
    os.environ["NATS_SERVER"] = f"nats://127.0.0.1:{p.nats}"
    from dynamo.runtime import DistributedRuntime

    async def run() -> list[float]:
        runtime = DistributedRuntime(asyncio.get_running_loop(), False)
        endpoint = runtime.namespace("dynix").component("EchoWorker").endpoint("generate")
        client = await endpoint.client()
        await client.wait_for_endpoints()
        out = []
        for i in range(count):
            prompt = f"{PROMPT} {i}"
            request = {"request_id": str(i), "prompt": prompt, "tokens": prompt.split()}
            t0 = time.perf_counter()
            text = "".join(
                [item.data()["text"] async for item in await client.round_robin(request)]
            )
            out.append(time.perf_counter() - t0)
            assert text == prompt, text
        runtime.shutdown()
        return out

    return asyncio.run(run())


def request_path(count: int) -> dict:
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        p = Ports()
        proc = start_dynix(Path(tmp), p)
        try:
            wait_answer(p.port, time.monotonic() + 120)
            http_latency(p.port, 20)  # warm-up
            figures["graph via dynix"] = http_latency(p.port, count)
            figures["worker direct"] = direct_latency(p, count)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    with tempfile.TemporaryDirectory() as tmp:
        p = Ports()
        started = start_by_hand(Path(tmp), p)
        try:
            wait_answer(p.port, time.monotonic() + 120)
            http_latency(p.port, 20)
            figures["graph by hand"] = http_latency(p.port, count)
        finally:
            kill_groups(started)
    return figures


def summary(values: list[float], scale: float = 1.0) -> dict:
    return {
        "median": round(statistics.median(values) * scale, 3),
        "min": round(min(values) * scale, 3),
        "max": round(max(values) * scale, 3),
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts of each kind")
    parser.add_argument("--requests", type=int, default=200, help="requests per latency figure")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    for program in ("nats-server", "etcd", "dynamo"):
        if not shutil.which(program):
            raise SystemExit(f"{program} is not on PATH")
    cold = cold_start(args.runs)
    plane = control_plane(args.runs)
    path = request_path(args.requests)
    report = {
        "cold start to first answer, s": {k: summary(v) for k, v in cold.items()},
        "dynix over hand, cold start (ratio of medians)": round(
            statistics.median(cold["dynix"]) / statistics.median(cold["hand"]), 3
        ),
        "control plane ready via dynix, s": summary(plane),
        "request latency, ms": {k: summary(v, 1000) for k, v in path.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, dict) and "median" not in value:
            for sub, figures in value.items():
                print(f"{key} [{sub}]: median {figures['median']} (min {figures['min']}, "
                      f"max {figures['max']}, n {figures['n']})")  # fmt: skip
        elif isinstance(value, dict):
            print(f"{key}: median {value['median']} (min {value['min']}, max {value['max']}, "
                  f"n {value['n']})")  # fmt: skip
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
