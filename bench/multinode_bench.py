"""Benchmark: the six-host echo stack of Dynamo's multi-node layout, run by `dynix serve`.

    sudo .venv/bin/python bench/multinode_bench.py [--rounds 3] [--requests 200]

Hosts are network namespaces on a bridge (tests/integration/netns.py): three control-plane
members, one frontend/decode host, two prefill-only hosts. Two figures, each with its baseline
in the same run, rounds alternating:

- start to first answer: all six `dynix serve` launched at once (fresh state) until the frontend
  host answers a chat completion, beside one `dynix serve --graph echo` (the whole stack on one
  host, fresh state) until it answers;
- request latency of a long prompt (40 words) prefilled on a prefill host, beside the same
  prompt prefilled on the frontend host (the prefill hosts stopped: their registrations go
  with them, so the decode worker prefills locally); short prompts, always local, are shown
  too. Sequential non-streaming requests through the official `openai` client, on the
  frontend host.

Needs root, iproute2, nats-server, etcd and ai-dynamo 0.2.0 with the openai client (the test
extras). Figures are min / median / max; nothing here judges them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests"), str(REPO / "py")]

from netns import network, wait_ready  # noqa: E402

from conftest import test_env  # noqa: E402

SUBNET = "10.233.0"
HOSTS = {"cp1": 1, "cp2": 2, "cp3": 3, "fe": 11, "pf1": 21, "pf2": 22, "solo": 31}
CONTROL = ("cp1", "cp2", "cp3")
LONG = " ".join(f"word{i}" for i in range(40))
SHORT = "a short prompt"

ASK = """
import json, sys, time, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="none", max_retries=0, timeout=10)
kinds, count, prompts = sys.argv[2].split(","), int(sys.argv[3]), json.loads(sys.argv[4])
if count == 0:  # until the first answer
    while True:
        try:
            if client.chat.completions.create(model="echo", messages=[
                    {"role": "user", "content": "first"}]).choices[0].message.content == "first":
                break
        except openai.APIError:
            time.sleep(0.05)
    print("{}")
    sys.exit()
out = {k: [] for k in kinds}
for i in range(count):
    kind = kinds[i % len(kinds)]
    start = time.perf_counter()
    answer = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": prompts[kind]}])
    out[kind].append((time.perf_counter() - start, answer.system_fingerprint.split(":")[1]))
print(json.dumps(out))
"""


def graph_config(hosts) -> str:
    members = [hosts[n].address for n in CONTROL]
    return (
        '[serve]\ngraph = "echo"\n[serve.control-plane]\nmode = "external"\n'
        f'etcd = "{",".join(f"http://{a}:2379" for a in members)}"\n'
        f'nats = "{",".join(f"nats://{a}:4222" for a in members)}"\n'
    )


def start_six(hosts, config: Path) -> None:
    cluster = ",".join(hosts[n].address for n in CONTROL)
    for name in CONTROL:
        hosts[name].serve("--role", "control-plane", "--advertise", hosts[name].address,
                          "--cluster", cluster)  # fmt: skip
    for name in ("fe", "pf1", "pf2"):
        services = "Frontend,Processor,EchoWorker" if name == "fe" else "EchoPrefillWorker"
        hosts[name].serve("--config", str(config), "--role", "graph", "--component", services,
                          "--advertise", hosts[name].address)  # fmt: skip


def ask(host, kinds: str, count: int) -> dict:
    url = f"http://{host.address}:8000/v1"
    prompts = json.dumps({"long": LONG, "short": SHORT})
    return json.loads(
        host.run(sys.executable, "-c", ASK, url, kinds, str(count), prompts, timeout=300)
    )


def stop(hosts, names) -> None:
    for name in names:
        hosts[name].stop()


def fresh(hosts, names) -> None:
    for name in names:
        shutil.rmtree(hosts[name].state_dir, ignore_errors=True)


def row(label: str, values: list[float], scale: float = 1.0, unit: str = "s") -> str:
    v = [x * scale for x in values]
    return (f"{label:<44} {min(v):8.2f} {statistics.median(v):8.2f} {max(v):8.2f} {unit}"
            f"  (n={len(v)})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="per phase and round")
    args = parser.parse_args()
    six = (*CONTROL, "fe", "pf1", "pf2")
    starts: dict[str, list[float]] = {"six hosts": [], "one host": []}
    latency: dict[str, list[float]] = {"long, remote": [], "long, local": [], "short": []}
    with (
        tempfile.TemporaryDirectory(prefix="dynix-bench-") as tmp,
        network(SUBNET, HOSTS, Path(tmp), test_env()) as hosts,
    ):
        config = Path(tmp) / "dynix.toml"
        config.write_text(graph_config(hosts))
        for _ in range(args.rounds):
            fresh(hosts, six)
            t0 = time.monotonic()
            start_six(hosts, config)
            ask(hosts["fe"], "first", 0)
            starts["six hosts"].append(time.monotonic() - t0)
            wait_ready([hosts[n] for n in six])
            stop(hosts, ("fe", "pf1", "pf2"))
            stop(hosts, CONTROL)
            fresh(hosts, ["solo"])
            t0 = time.monotonic()
            hosts["solo"].serve("--graph", "echo", "--advertise", hosts["solo"].address)
            ask(hosts["solo"], "first", 0)
            starts["one host"].append(time.monotonic() - t0)
            stop(hosts, ["solo"])
        # Latency: one six-host stack; rounds alternate prefill hosts up and stopped.
        fresh(hosts, six)
        start_six(hosts, config)
        wait_ready([hosts[n] for n in six])
        for _ in range(args.rounds):
            for remote in (True, False):
                if remote and not all(hosts[n].ready() for n in ("pf1", "pf2")):
                    for name in ("pf1", "pf2"):
                        hosts[name].serve("--config", str(config), "--role", "graph",
                                          "--component", "EchoPrefillWorker",
                                          "--advertise", hosts[name].address)  # fmt: skip
                    wait_ready([hosts["pf1"], hosts["pf2"]])
                    time.sleep(1)  # the decode worker sees them registered
                got = ask(hosts["fe"], "long,short", args.requests)
                where = {w for _, w in got["long"]}
                expected = "remote" if remote else "local"
                if where != {expected}:
                    raise SystemExit(f"long prompts went {where}, not {expected}")
                latency[f"long, {expected}"] += [s for s, _ in got["long"]]
                latency["short"] += [s for s, _ in got["short"]]
                if remote:
                    stop(hosts, ("pf1", "pf2"))
        stop(hosts, ("fe", "pf1", "pf2"))
        stop(hosts, CONTROL)
    print(f"{'':<44} {'min':>8} {'median':>8} {'max':>8}")
    for label, values in starts.items():
        print(row(f"start to first answer, {label}", values))
    for label, values in latency.items():
        print(row(f"request latency, {label} prefill" if label != "short"
                  else "request latency, short prompt (local)", values, 1000, "ms"))  # fmt: skip
    remote, local = latency["long, remote"], latency["long, local"]
    print(f"remote / local prefill, median: "
          f"{statistics.median(remote) / statistics.median(local):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
