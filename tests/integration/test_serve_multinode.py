"""Dynamo 0.2.0's multi-node layout on six hosts, each running its own `dynix serve`: three
control-plane members (`--role control-plane --cluster`), one frontend/decode host (Frontend,
Processor, EchoWorker) and two prefill-only hosts (EchoPrefillWorker), the graph nodes sharing
one config file. Hosts are network namespaces on a bridge of their own (10.232.0.0/24), with
Debian's etcd and nats-server and PyPI's Dynamo for real; load comes from the official `openai`
client on the frontend host.

The tests share the six hosts and run in order: where prompts are prefilled, a control-plane
host lost under load and back, a prefill host lost under load, then both, and last SIGTERM on
every node.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from netns import Host, etcdctl, member_names, network, wait_ready

from conftest import REPO, require_programs
from conftest import test_env as dynix_env

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces (ip netns) need root"),
    pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2's ip (ip netns)"),
]
pytest.importorskip("dynamo._core", reason="needs ai-dynamo-runtime 0.2.0")
pytest.importorskip("openai", reason="needs the openai client (the test extras)")

SUBNET = "10.232.0"
HOSTS = {"cp1": 1, "cp2": 2, "cp3": 3, "fe": 11, "pf1": 21, "pf2": 22}
CONTROL = ("cp1", "cp2", "cp3")
LOAD = Path(__file__).with_name("load.py")


def graph_config(hosts: dict[str, Host]) -> str:
    """The one config file of the graph nodes: every control-plane member."""
    members = [hosts[n].address for n in CONTROL]
    return "\n".join([
        "[serve]",
        'graph = "echo"',
        "[serve.control-plane]",
        'mode = "external"',
        f'etcd = "{",".join(f"http://{a}:2379" for a in members)}"',
        f'nats = "{",".join(f"nats://{a}:4222" for a in members)}"',
        "",
    ])  # fmt: skip


def start_member(hosts: dict[str, Host], name: str) -> None:
    cluster = ",".join(hosts[n].address for n in CONTROL)
    hosts[name].serve("--role", "control-plane", "--advertise", hosts[name].address,
                      "--cluster", cluster)  # fmt: skip


def start_graph_node(hosts: dict[str, Host], name: str, config: Path) -> None:
    services = "Frontend,Processor,EchoWorker" if name == "fe" else "EchoPrefillWorker"
    hosts[name].serve("--config", str(config), "--role", "graph", "--component", services,
                      "--advertise", hosts[name].address)  # fmt: skip


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    require_programs("nats-server", "etcd", "etcdctl")
    folder = tmp_path_factory.mktemp("six")
    with network(SUBNET, HOSTS, folder, dynix_env()) as hosts:
        for name in CONTROL:
            start_member(hosts, name)
        wait_ready([hosts[n] for n in CONTROL])
        config = folder / "dynix.toml"
        config.write_text(graph_config(hosts))
        for name in ("fe", "pf1", "pf2"):
            start_graph_node(hosts, name, config)
        wait_ready([hosts[n] for n in ("fe", "pf1", "pf2")])
        hosts["fe"].config = config  # type: ignore[attr-defined]
        yield hosts


RATE = 40  # requests a second, during faults


def load(fe: Host, out: Path, *, count: int = 0, seconds: float = 0, concurrency: int = 4,
         timeout: float = 15, rate: float = 0):  # fmt: skip
    """Start the load on the frontend host; `.finish()` gives its records."""
    argv = [sys.executable, str(LOAD), f"http://{fe.address}:8000/v1", str(out),
            "--count", str(count), "--seconds", str(seconds), "--rate", str(rate),
            "--concurrency", str(concurrency), "--timeout", str(timeout)]  # fmt: skip
    with open(out.with_suffix(".err"), "w") as err:
        proc = fe.popen(*argv, stderr=err)

    class Running:
        def finish(self, limit: float = 120) -> list[dict]:
            proc.wait(limit)
            assert proc.returncode == 0, out.with_suffix(".err").read_text()[-2000:]
            return json.loads(out.read_text())

    return Running()


def outcomes(records: list[dict]) -> dict[str, int]:
    return dict(collections.Counter(r["outcome"] for r in records))


def where(record: dict) -> tuple[str, str]:
    """(how, node) of an answer: `echo-prefill:remote:40:1a2b3c4d:10.232.0.21` -> remote, node."""
    parts = record["fingerprint"].split(":")
    return parts[1], parts[4]


def registrations(host: Host) -> list[str]:
    keys = etcdctl(host, "get", "--prefix", "", "--keys-only").split()
    return sorted(k for k in keys if k.startswith(("dynix/", "public/")))


def test_long_prompts_are_prefilled_on_the_prefill_hosts_and_short_ones_locally(six, tmp_path):
    records = load(six["fe"], tmp_path / "load.json", count=40).finish()
    assert outcomes(records) == {"answered": 40}
    long = {where(r) for r in records if r["kind"] == "long"}
    short = {where(r) for r in records if r["kind"] == "short"}
    assert long == {("remote", six["pf1"].address), ("remote", six["pf2"].address)}
    assert short == {("local", six["fe"].address)}
    # Each graph node registered its own services only.
    keys = registrations(six["cp2"])
    services = collections.Counter(k.split("/")[2] for k in keys if k.startswith("dynix/"))
    assert services == {"EchoPrefillWorker": 2, "EchoWorker": 1, "Frontend": 1, "Processor": 1}


def test_the_frontend_listens_on_the_advertised_address_and_prefill_hosts_have_none(six):
    listening = six["fe"].run("ss", "-ltnH")
    assert f"{six['fe'].address}:8000" in listening
    for name in ("pf1", "pf2"):
        assert ":8000" not in six[name].run("ss", "-ltnH")
        assert f"no frontend on this node; Dynamo's services accept response streams on " \
               f"{six[name].address}" in six[name].log_text()  # fmt: skip


def summary(records: list[dict], fault: float) -> str:
    """One line for the log: outcomes, and when the requests not answered were sent and
    ended, in seconds from the fault (`fault` on CLOCK_MONOTONIC)."""
    bad = [r for r in records if r["outcome"] != "answered"]
    span = f", not answered: sent from {min(r['t'] for r in bad) - fault:+.1f} s to " \
           f"{max(r['t'] for r in bad) - fault:+.1f} s, the last ending " \
           f"{max(r['t'] + r['seconds'] for r in bad) - fault:+.1f} s" if bad else ""  # fmt: skip
    return f"{outcomes(records)}{span}"


def report(what: str, text: str) -> None:
    print(f"\n{what}: {text}", file=sys.stderr)


def etcd_members_used(host: Host) -> set[str]:
    """The members the host's etcd forwarder has connections to now."""
    lines = host.run("ss", "-tnH", "state", "established", "( dport = :2379 )").splitlines()
    return {line.split()[-1].rsplit(":", 1)[0] for line in lines if line.strip()}


def lose_member_under_load(six, tmp_path: Path, victim: str, name: str) -> list[dict]:
    """Kill control-plane host `victim` 4 s into 22 s of paced load; the load's records."""
    running = load(six["fe"], tmp_path / f"{name}.json", seconds=22, rate=RATE)
    time.sleep(4)
    fault = time.monotonic()
    six[victim].kill()
    records = running.finish()
    report(f"control-plane host lost under load ({name})", summary(records, fault))
    assert outcomes(records).get("lost", 0) == 0, [r for r in records if r["outcome"] == "lost"]
    return records


def bring_back(six, victim: str) -> None:
    """Start the member again on its data: it rejoins both clusters; every node is ready."""
    start_member(six, victim)
    wait_ready([six[victim]])
    names = sorted(f"dynix-{SUBNET.replace('.', '-')}-{HOSTS[n]}" for n in CONTROL)
    assert member_names(six[victim]) == names
    health = etcdctl(six[victim], "endpoint", "health", "--cluster", "-w", "json")
    assert [e["health"] for e in json.loads(health)] == [True] * 3
    assert six[victim].get_json(f"http://{six[victim].address}:8222/routez")["num_routes"] == 2
    wait_graph_nodes_ready(six)


def wait_graph_nodes_ready(six, timeout: float = 30) -> None:
    """Until every graph node's every component says ready again (after restarts)."""
    deadline = time.monotonic() + timeout

    def ready(name: str) -> bool:
        state = six[name].state()
        graph = next(c for c in state["components"] if c["name"] == "graph")
        return state["status"] == "ready" and graph["health"] == "ready"

    while not all(ready(n) for n in ("fe", "pf1", "pf2")):
        assert time.monotonic() < deadline, {
            n: (
                six[n].state()["status"],
                [(c["name"], c["health"]) for c in six[n].state()["components"]],
            )
            for n in ("fe", "pf1", "pf2")
        }
        time.sleep(0.3)


def test_a_control_plane_host_the_frontend_host_does_not_use_lost_under_load(six, tmp_path):
    """The prefill hosts' processes whose etcd connection went through it exit and are
    restarted (long prompts meanwhile prefill on the frontend host); every request answered."""
    used = etcd_members_used(six["fe"])
    victim = next(n for n in CONTROL if six[n].address not in used)
    records = lose_member_under_load(six, tmp_path, victim, "not the frontend host's")
    assert outcomes(records) == {"answered": len(records)}
    bring_back(six, victim)


def test_the_control_plane_host_the_frontend_host_uses_lost_under_load(six, tmp_path):
    """The frontend host's processes exit with their etcd connection and are restarted; the
    requests in flight and those sent until the frontend is back fail with an error, within a
    bound; none is lost. Long prompts then go to the prefill hosts again."""
    victim = next(n for n in CONTROL if six[n].address in etcd_members_used(six["fe"]))
    records = lose_member_under_load(six, tmp_path, victim, "the frontend host's")
    failed = [r for r in records if r["outcome"] == "failed"]
    assert all(2 < r["at"] + r["seconds"] < 4 + 15 for r in failed), failed
    late = [r for r in records if r["at"] > 4 + 15]  # back within 15 s
    assert late and {r["outcome"] for r in late} == {"answered"}
    wait_graph_nodes_ready(six)
    after = load(six["fe"], tmp_path / "after.json", count=20).finish()
    assert outcomes(after) == {"answered": 20}
    assert {where(r)[0] for r in after if r["kind"] == "long"} == {"remote"}
    bring_back(six, victim)


def test_the_control_plane_host_the_frontend_host_uses_cut_off_under_load(six, tmp_path):
    """Its link down, not its processes killed: the leaf and the forwarder notice within
    seconds and move on; requests fail, none is lost; back on the network it rejoins."""
    victim = next(n for n in CONTROL if six[n].address in etcd_members_used(six["fe"]))
    running = load(six["fe"], tmp_path / "cut.json", seconds=24, rate=RATE)
    time.sleep(4)
    fault = time.monotonic()
    six[victim].set_link(False)
    records = running.finish()
    six[victim].set_link(True)
    report("control-plane host cut off under load (the frontend host's)", summary(records, fault))
    assert outcomes(records).get("lost", 0) == 0, [r for r in records if r["outcome"] == "lost"]
    late = [r for r in records if r["at"] > 4 + 15]
    assert late and {r["outcome"] for r in late} == {"answered"}
    wait_graph_nodes_ready(six)
    deadline = time.monotonic() + 30
    while not healed(six, victim):  # its etcd member catches up, its NATS routes come back
        assert time.monotonic() < deadline, six[victim].log_text()[-2000:]
        time.sleep(0.5)


def healed(six, name: str) -> bool:
    """Every etcd member healthy, and `name`'s NATS routed to both others with a JetStream
    meta leader."""
    host = six[name]
    # exit 1 ("unhealthy cluster") while a member catches up: not healed yet, asked again
    health = etcdctl(host, "endpoint", "health", "--cluster", "-w", "json", check=False)
    try:
        if [e["health"] for e in json.loads(health)] != [True] * 3:
            return False
    except (ValueError, TypeError, KeyError):  # no answer to read
        return False
    monitor = f"http://{host.address}:8222"
    routes, jsz = host.get_json(f"{monitor}/routez"), host.get_json(f"{monitor}/jsz")
    return routes["num_routes"] == 2 and bool((jsz.get("meta_cluster") or {}).get("leader"))


UPSTREAM_LLM = REPO.parent / "shared" / "upstream" / "dynamo-v0.2.0" / "examples" / "llm"

# Dynamo 0.2.0's own queue (examples/llm utils/nats_queue.py, as the vLLM workers use it): make
# or find the stream, queue one task; prints "queued" or why not.
QUEUE = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from utils.nats_queue import NATSQueue
async def main():
    queue = NATSQueue(stream_name=sys.argv[3], nats_server=sys.argv[2], dequeue_timeout=1)
    try:
        await asyncio.wait_for(queue.connect(), 10)
        await asyncio.wait_for(queue.enqueue_task(b"a prefill request"), 10)
        print("queued")
    except Exception as exc:
        print(f"not queued: {type(exc).__name__}: {exc}")
    finally:
        await queue.close()
asyncio.run(main())
"""

ENSURE = (
    "import sys; from dynix.serve import jetstream; "
    "print(jetstream.ensure_replicated(sys.argv[1], sys.argv[2], int(sys.argv[3])))"
)
LEADER = (
    "import sys; from dynix.serve import jetstream; c = jetstream.Connection(sys.argv[1]); "
    "print(c.request('$JS.API.STREAM.INFO.' + sys.argv[2])['cluster']['leader'])"
)


def queue(host: Host, stream: str) -> str:
    leaf = "nats://127.0.0.1:14222"
    return host.run(sys.executable, "-c", QUEUE, str(UPSTREAM_LLM), leaf, stream).strip()


def test_the_prefill_queue_survives_its_members_loss_only_when_replicated(six):
    """Dynamo's own queue code makes its stream with one replica: with that member gone no
    prompt can be queued until it is back. The stream dynix makes first (a replica on each
    member) keeps taking them."""
    if not UPSTREAM_LLM.is_dir():
        pytest.skip(f"no upstream copy of Dynamo v0.2.0's examples/llm at {UPSTREAM_LLM}")
    fe, leaf = six["fe"], "nats://127.0.0.1:14222"
    deadline = time.monotonic() + 20  # JetStream through the leaf, after the faults before
    while (answer := queue(fe, "one_replica")) != "queued":  # Dynamo makes it: one replica
        assert time.monotonic() < deadline, answer
        time.sleep(0.5)
    assert fe.run(sys.executable, "-c", ENSURE, leaf, "three_replicas", "3").strip() == (
        "stream three_replicas created with 3 replicas"
    )
    assert queue(fe, "three_replicas") == "queued"  # Dynamo finds it and uses it
    assert fe.run(sys.executable, "-c", ENSURE, leaf, "three_replicas", "3").strip() == (
        "stream three_replicas has 3 replicas"
    )
    leader = fe.run(sys.executable, "-c", LEADER, leaf, "one_replica").strip()
    victim = next(n for n in CONTROL if leader == f"dynix-{six[n].address.replace('.', '-')}")
    six[victim].kill()
    assert queue(fe, "one_replica").startswith("not queued")
    deadline = time.monotonic() + 15  # the replicated one: once its replicas elect a leader
    while (answer := queue(fe, "three_replicas")) != "queued":
        assert time.monotonic() < deadline, answer
    bring_back(six, victim)
    deadline = time.monotonic() + 15
    while (answer := queue(fe, "one_replica")) != "queued":  # back with its member
        assert time.monotonic() < deadline, answer


def lose_prefill_host(six, tmp_path: Path, name: str, label: str) -> list[dict]:
    """Kill prefill host `name` 3 s into 10 s of paced load: none lost, at most what was in
    flight there failed, none near the timeout; the long prompts sent 6 s after the kill."""
    running = load(six["fe"], tmp_path / f"{name}.json", seconds=10, rate=RATE)
    time.sleep(3)
    fault = time.monotonic()
    six[name].kill()
    records = running.finish()
    report(label, summary(records, fault))
    assert outcomes(records).get("lost", 0) == 0
    assert outcomes(records).get("failed", 0) <= 4
    assert max(r["seconds"] for r in records) < 15
    late = [r for r in records if r["kind"] == "long" and r["at"] > 3 + 6]
    assert late
    return late


def test_a_prefill_host_lost_under_load_then_both(six, tmp_path):
    """Long prompts move to the prefill host left, then, with none left, are prefilled on the
    frontend host: every request answered, none hangs."""
    late = lose_prefill_host(six, tmp_path, "pf1", "one prefill host lost under load")
    assert {where(r) for r in late} == {("remote", six["pf2"].address)}
    late = lose_prefill_host(six, tmp_path, "pf2", "second prefill host lost under load")
    assert {where(r)[1] for r in late} == {six["fe"].address}
    # Both back: their old leases were revoked, or had expired, and long prompts go to them.
    config = six["fe"].config
    for name in ("pf1", "pf2"):
        start_graph_node(six, name, config)
    wait_ready([six["pf1"], six["pf2"]])
    again = load(six["fe"], tmp_path / "again.json", count=20).finish()
    assert outcomes(again) == {"answered": 20}
    assert {where(r) for r in again if r["kind"] == "long"} == {
        ("remote", six["pf1"].address), ("remote", six["pf2"].address)}  # fmt: skip


def test_sigterm_on_every_node_leaves_no_process_and_no_registration(six):
    for name in ("fe", "pf1", "pf2"):
        six[name].proc.send_signal(15)
    for name in ("fe", "pf1", "pf2"):
        assert six[name].proc.wait(30) == 0, six[name].log_text()[-2000:]
    assert registrations(six["cp2"]) == []  # at once: no lease left to expire
    for name in CONTROL:
        six[name].proc.send_signal(15)
    for name in CONTROL:
        assert six[name].proc.wait(30) == 0, six[name].log_text()[-2000:]
    time.sleep(0.5)
    assert {name: host.pids() for name, host in six.items()} == {n: [] for n in six}
