"""The echo stack run for real by `dynix serve`: Debian's nats-server and etcd, Dynamo 0.2.0
from PyPI (`dynamo serve` with circus, Dynamo's Rust HTTP frontend), the official openai client.

One stack serves the whole module (it takes seconds to start on two cores); the tests that
break it on purpose come after the ones that only ask it questions, and the last one stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
from serve_stack import (
    ask,
    etcd_keys,
    free_ports,
    live_members,
    port_free,
    recorded_groups,
    stack_ports,
    start,
    stop,
    wait_ready,
    write_config,
)

from conftest import require_programs

openai = pytest.importorskip("openai", reason="the tests talk to the stack with openai")

SHORT = "hello from the short prompt"  # 5 words: under max-local-prefill-length (10)
LONG = " ".join(f"word{i}" for i in range(40))  # 40 words: prefilled remotely


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_programs("nats-server", "etcd", "dynamo")
    tmp = tmp_path_factory.mktemp("stack")
    ports = stack_ports()
    config = write_config(tmp / "dynix.toml", tmp / "state", ports, graph="echo")
    running = start(["--config", str(config)], tmp / "state", ports, tmp / "stderr.log")
    try:
        wait_ready(running)
        yield running
    finally:
        stop(running)


@pytest.fixture
def client(stack):
    return openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=30)


def answer_within(client, prompt: str, seconds: float) -> tuple[str, str]:
    deadline = time.monotonic() + seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            content, fingerprint = ask(client, prompt)
            if content == prompt:
                return content, fingerprint
        except openai.OpenAIError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"no answer to {prompt!r} within {seconds} s (last error: {last})")


def test_models_lists_the_echo_model(client):
    assert [m.id for m in client.models.list().data] == ["echo"]


def test_short_prompt_is_answered_without_the_prefill_worker(client):
    content, fingerprint = ask(client, SHORT)
    assert content == SHORT
    assert fingerprint.startswith("echo-prefill:local:5:")


def test_long_prompt_goes_through_the_prefill_worker(client):
    content, fingerprint = ask(client, LONG)
    assert content == LONG
    assert fingerprint.startswith("echo-prefill:remote:40:")


def test_streaming_short_prompt_arrives_in_chunks(client):
    content, fingerprint = ask(client, SHORT, stream=True)
    assert content == SHORT
    assert fingerprint.startswith("echo-prefill:local:")


def test_streaming_long_prompt_goes_through_the_prefill_worker(client):
    content, fingerprint = ask(client, LONG, stream=True)
    assert content == LONG
    assert fingerprint.startswith("echo-prefill:remote:40:")


def test_status_reports_components_services_pids_and_ports(dynix, stack):
    proc = dynix("status", "--state-dir", stack.state_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "ready" and data["running"] is True
    assert [c["name"] for c in data["components"]] == ["nats", "etcd", "graph"]
    assert all(c["alive"] for c in data["components"])
    graph = data["components"][2]
    assert set(graph["services"]) == {"Frontend", "Processor", "EchoWorker", "EchoPrefillWorker"}
    assert graph["ports"]["frontend"] == stack.ports["port"]
    table = dynix("status", "--state-dir", stack.state_dir)
    assert "EchoPrefillWorker" in table.stdout and "healthy" in table.stdout


def test_nothing_listens_on_every_interface(stack):
    """The frontend binds loopback (serve.host's default), as do nats, etcd and circus; only
    Dynamo's response-stream servers listen on the machine's other address, as dynix says."""
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True)
    local = [line.split()[3] for line in listening.stdout.splitlines()]
    ours = {str(p) for p in stack.ports.values()}
    for address in local:
        where, _, port = address.rpartition(":")
        if port in ours:
            assert where == "127.0.0.1", address
    assert f"listening: frontend 127.0.0.1:{stack.ports['port']}" in stack.log()


def test_component_output_is_prefixed_and_logged(stack):
    err = stack.log()
    assert "        etcd | " in err and "        nats | " in err
    assert "  EchoWorker | " in err
    log_dir = stack.state_dir / "logs"
    assert {p.name for p in log_dir.iterdir()} >= {"nats.log", "etcd.log", "graph.log"}
    assert "EchoWorker" in (log_dir / "graph.log").read_text()


def test_sixteen_concurrent_streaming_clients_get_their_own_answers(stack):
    """400 distinct prompts over 16 streaming clients: none lost, none mixed up."""
    total, clients = 400, 16
    prompts = [
        f"request {i} " + ("long " * 12 if i % 4 == 0 else "short") + f" end {i}"
        for i in range(total)
    ]
    results: dict[int, tuple[str, str]] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        own = openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0, timeout=60)
        for i in range(worker, total, clients):
            try:
                answer = ask(own, prompts[i], stream=True)
                with lock:
                    results[i] = answer
            except Exception as exc:  # counted, reported below
                with lock:
                    errors.append(f"{i}: {exc!r}")

    threads = [threading.Thread(target=run, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert errors == []
    assert len(results) == total
    mixed = [i for i, (content, _) in results.items() if content != prompts[i]]
    assert mixed == []
    remote = sorted(i for i, (_, fp) in results.items() if fp.startswith("echo-prefill:remote:"))
    assert remote == [i for i in range(total) if i % 4 == 0]


def test_killed_worker_is_restarted_and_answers_again(stack, client):
    before = stack.component("graph")["services"]["EchoWorker"]
    os.kill(before["pids"][0], signal.SIGKILL)
    answer_within(client, "are you back", 60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = stack.component("graph")["services"].get("EchoWorker", {})
        if after.get("restarts", 0) >= 1 and after.get("pids"):
            break
        time.sleep(0.2)
    assert after["restarts"] >= 1 and after["pids"] != before["pids"]
    assert "dynix: EchoWorker has 0 of 1 processes running; restarting it" in stack.log()


def test_killed_etcd_is_restarted_and_the_stack_recovers(stack, client):
    etcd = stack.component("etcd")
    os.kill(etcd["pid"], signal.SIGKILL)
    # Dynamo's services lose their etcd leases and exit; all of it comes back, or the stack
    # stops with an error naming what failed. Either way within bounded time.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and stack.proc.poll() is None:
        try:
            if ask(client, "after etcd")[0] == "after etcd":
                break
        except openai.OpenAIError:
            pass
        time.sleep(0.5)
    else:
        if stack.proc.poll() is None:
            pytest.fail(f"neither recovered nor stopped within 90 s:\n{stack.log()[-3000:]}")
    assert stack.proc.poll() is None, stack.log()[-3000:]
    # an answer can come before dynix has seen etcd go: wait, bounded, for it to say so
    deadline = time.monotonic() + 30
    while "dynix: etcd exited with code -9; restarting it" not in stack.log():
        assert time.monotonic() < deadline, stack.log()[-3000:]
        time.sleep(0.2)
    assert stack.component("etcd")["restarts"] == 1
    answer_within(client, LONG, 30)


def test_sigterm_stops_every_process_frees_ports_and_removes_the_registration(stack, tmp_path):
    state = stack.state()
    groups = recorded_groups(state)
    assert len(groups) >= 7  # nats, etcd, dynamo serve and its four services' sessions
    assert live_members(groups)
    started = time.monotonic()
    assert stop(stack, timeout=12) == 0, stack.log()[-3000:]
    assert time.monotonic() - started < 10
    assert live_members(groups) == []
    assert all(port_free(port) for port in stack.ports.values())
    assert stack.state()["status"] == "stopped"
    assert "dynix: removed the registration of 'echo' from etcd" in stack.log()
    # Read etcd's data as the stack left it: the model's key is gone.
    etcd_port, peer_port = free_ports(2)
    etcd = subprocess.Popen(
        ["etcd", "--data-dir", str(stack.state_dir / "etcd"), "--name", "dynix",
         "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
         "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{stack.ports['etcd-peer-port']}",
         "--force-new-cluster"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{etcd_port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                keys = etcd_keys(url, "public/components/http/models/")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert keys == []
    finally:
        etcd.terminate()
        etcd.wait(10)
