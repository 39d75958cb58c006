"""A control-plane node and a graph node (`--role`), joined by URL as on a cluster; the restart
limit; registrations removed from an etcd that outlives the graph."""

from __future__ import annotations

import os
import signal

import pytest
from serve_stack import (
    ask,
    etcd_keys,
    free_ports,
    live_members,
    recorded_groups,
    stack_ports,
    start,
    stop,
    wait_ready,
    write_config,
)

openai = pytest.importorskip("openai")


def test_graph_node_joins_a_control_plane_node_and_stops_at_the_restart_limit(tmp_path):
    ports = stack_ports()
    cp_config = write_config(tmp_path / "cp.toml", tmp_path / "cp", ports)
    control = start(
        ["--config", str(cp_config), "--role", "control-plane"],
        tmp_path / "cp", ports, tmp_path / "cp.log",
    )  # fmt: skip
    try:
        wait_ready(control, timeout=30)
        assert [c["name"] for c in control.state()["components"]] == ["nats", "etcd"]
        assert control.state()["ready_seconds"] < 5
        etcd_url = f"http://127.0.0.1:{ports['etcd-port']}"
        nats_url = f"nats://127.0.0.1:{ports['nats-port']}"
        graph_config = write_config(tmp_path / "graph.toml", tmp_path / "graph", ports)
        graph_config.write_text(
            graph_config.read_text().replace("backoff = 0.2", "backoff = 0.2\nmax-restarts = 0")
        )
        graph = start(
            ["--config", str(graph_config), "--role", "graph", "--graph", "echo",
             "--control-plane", f"{etcd_url},{nats_url}"],
            tmp_path / "graph", ports, tmp_path / "graph.log",
        )  # fmt: skip
        try:
            wait_ready(graph)
            assert [c["name"] for c in graph.state()["components"]] == ["graph"]
            client = openai.OpenAI(base_url=graph.base_url, api_key="unused", max_retries=0)
            assert ask(client, "across nodes")[0] == "across nodes"
            assert etcd_keys(etcd_url, "public/components/http/models/") == [
                "public/components/http/models/chat/echo"
            ]
            groups = recorded_groups(graph.state())
            worker = graph.component("graph")["services"]["EchoWorker"]["pids"][0]
            os.kill(worker, signal.SIGKILL)
            assert graph.proc.wait(30) == 1
        finally:
            stop(graph)
        errors = [line for line in graph.log().splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1
        assert "EchoWorker has 0 of 1 processes running" in errors[0]
        assert "more than the limit of 0: stopping the stack" in errors[0]
        assert graph.state()["status"] == "failed"
        assert live_members(groups) == []
        # The control plane outlives the graph: the model's registration went with the graph.
        assert etcd_keys(etcd_url, "public/components/http/models/") == []
        assert control.proc.poll() is None
    finally:
        assert stop(control) == 0
    assert control.state()["status"] == "stopped"


def test_graph_role_refuses_a_control_plane_that_does_not_answer(dynix, tmp_path):
    etcd_port, nats_port, port = free_ports(3)
    proc = dynix(
        "serve", "--role", "graph", "--graph", "echo", "--port", port,
        "--state-dir", tmp_path / "state",
        "--control-plane", f"http://127.0.0.1:{etcd_port},nats://127.0.0.1:{nats_port}",
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"Error: etcd at http://127.0.0.1:{etcd_port} is not answering /health" in proc.stderr
