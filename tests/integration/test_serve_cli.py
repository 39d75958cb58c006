"""`dynix serve` refusing bad input before anything starts, `--dry-run`, `dynix serve init`.

The vLLM graphs (disagg, agg, *_router) need GPUs and a model, so they are not run here: their
rendered Dynamo config is compared with the keys of Dynamo v0.2.0's own examples/llm/configs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from serve_stack import port_free, stack_ports, write_config

import conftest
from conftest import PATCHES, PLANTER, REPO, one_line_error, plant_link

# Dynamo v0.2.0, examples/llm/configs/disagg.yaml (without its Planner section).
UPSTREAM_DISAGG = {
    "Common": {
        "model": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "block-size": 64,
        "max-model-len": 16384,
        "kv-transfer-config": '{"kv_connector":"DynamoNixlConnector"}',
    },
    "Frontend": {
        "served_model_name": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "endpoint": "dynamo.Processor.chat/completions",
        "port": 8000,
    },
    "Processor": {"router": "round-robin", "common-configs": ["model", "block-size"]},
    "VllmWorker": {
        "remote-prefill": True,
        "conditional-disagg": True,
        "max-local-prefill-length": 10,
        "max-prefill-queue-size": 2,
        "ServiceArgs": {"workers": 1, "resources": {"gpu": 1}},
        "common-configs": ["model", "block-size", "max-model-len", "kv-transfer-config"],
    },
    "PrefillWorker": {
        "max-num-batched-tokens": 16384,
        "ServiceArgs": {"workers": 1, "resources": {"gpu": 1}},
        "common-configs": ["model", "block-size", "max-model-len", "kv-transfer-config"],
    },
}


def rendered_yaml(dry_run_output: str) -> dict:
    """The Dynamo config printed at the end of `--dry-run` (after its `# …/dynamo.yaml` line)."""
    marker = next(
        line
        for line in dry_run_output.splitlines()
        if line.startswith("# ") and line.endswith("/dynamo.yaml")
    )
    after = dry_run_output.split(marker + "\n", 1)[1]
    return yaml.safe_load(after.split("\n# ", 1)[0])  # up to the node's graph module


def test_dry_run_prints_processes_environment_and_config_and_starts_nothing(dynix, tmp_path):
    proc = dynix("serve", "--graph", "echo", "--state-dir", tmp_path / "state", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    state = tmp_path / "state"
    assert f"argv: {shutil.which('nats-server')} -js -sd {state}/nats -a 127.0.0.1 -p 4222" in out
    assert f"--data-dir {state}/etcd --listen-client-urls http://127.0.0.1:2379" in out
    assert f"serve dynix_node_graph:Frontend -f {state}/dynamo.yaml" in out
    assert "runs here: the whole graph (Frontend, Processor, EchoWorker, EchoPrefillWorker)" in out
    assert "from graphs.echo import EchoPrefillWorker, EchoWorker, Frontend, Processor" in out
    for line in (
        "env: ETCD_ENDPOINTS=http://127.0.0.1:2379",
        "env: NATS_SERVER=nats://127.0.0.1:4222",
        "env: DYN_LOG=info",
        "env: DYN_CIRCUS_ENDPOINT_PORT=41234",
        "ready: GET http://127.0.0.1:8222/healthz",
        "ready: GET http://127.0.0.1:2379/health",
    ):
        assert line in out
    config = rendered_yaml(out)
    assert list(config) == ["Common", "Frontend", "Processor", "EchoWorker", "EchoPrefillWorker"]
    assert config["EchoWorker"]["max-local-prefill-length"] == 10
    assert not state.exists()


def test_dry_run_disagg_config_has_the_keys_dynamo_uses(dynix, tmp_path):
    """Rendered only: the vLLM workers need GPUs, which this machine does not have."""
    proc = dynix("serve", "--graph", "disagg", "--state-dir", tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "# GPUs: 2 needed, 0 present (nvidia-smi -L)" in proc.stdout
    config = rendered_yaml(proc.stdout)
    assert set(config) == set(UPSTREAM_DISAGG)
    for service, keys in UPSTREAM_DISAGG.items():
        for key, value in keys.items():
            if key == "common-configs" and service == "Processor":
                assert set(value) <= set(config[service][key])
            else:
                assert config[service][key] == value, (service, key)


@pytest.mark.parametrize("graph", ["agg_router", "disagg_router"])
def test_dry_run_router_graphs_have_a_kv_router(dynix, tmp_path, graph):
    proc = dynix("serve", "--graph", graph, "--state-dir", tmp_path, "--dry-run",
                 "--decode-workers", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = rendered_yaml(proc.stdout)
    assert config["Common"]["router"] == "kv"
    assert config["Router"] == {"min-workers": 1, "common-configs": ["model", "router"]}
    assert "router" in config["VllmWorker"]["common-configs"]
    assert config["VllmWorker"]["ServiceArgs"] == {"workers": 2, "resources": {"gpu": 1}}
    assert ("PrefillWorker" in config) == (graph == "disagg_router")


def test_no_gpu_defaults_to_the_echo_graph_and_says_so(dynix, tmp_path):
    proc = dynix("serve", "--state-dir", tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "no GPU found (nvidia-smi -L): serving the GPU-free echo graph" in proc.stderr
    assert "runs here: the whole graph (Frontend, Processor, EchoWorker" in proc.stdout


def test_vllm_graph_without_gpus_is_refused_naming_the_count(dynix, tmp_path):
    proc = dynix("serve", "--graph", "disagg", "--prefill-workers", "2", "--state-dir", tmp_path)
    error = one_line_error(proc)
    assert "the graph needs 3 GPUs (VllmWorker 1x1, PrefillWorker 2x1) but 0 are present" in error
    assert list(tmp_path.iterdir()) == []


def test_taken_port_is_refused_before_anything_starts(dynix, tmp_path):
    ports = stack_ports()
    config = write_config(tmp_path / "dynix.toml", tmp_path / "state", ports, graph="echo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["etcd-peer-port"]))
        taken.listen()
        proc = dynix("serve", "--config", config, timeout=60)
    error = one_line_error(proc)
    assert f"port {ports['etcd-peer-port']} (etcd peer) on 127.0.0.1 is taken" in error
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[serve]\ngraph = "echo"\nport = \n', ":3:7: Unexpected character"),
        ('[serve]\ngraph = "echo"\nport = "eighty"\n', ":3: serve.port must be an integer"),
        ("[serve]\n\n[serve.decode]\nworkerz = 2\n", ":4: unknown key serve.decode.workerz"),
        ('[serve]\ngraph = "gpt"\n', "graph must be one of disagg, agg"),
    ],
)
def test_malformed_config_is_refused_with_its_line_and_left_untouched(
    dynix, tmp_path, text, message
):
    config = tmp_path / "dynix.toml"
    config.write_text(text)
    before = hashlib.sha256(config.read_bytes()).hexdigest()
    proc = dynix("serve", "--config", config, "--state-dir", tmp_path / "state")
    error = one_line_error(proc)
    assert error.startswith(f"Error: {config}")
    assert message in error
    assert hashlib.sha256(config.read_bytes()).hexdigest() == before
    assert not (tmp_path / "state").exists()


def test_missing_program_is_named_with_how_to_get_it(dynix, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("etcd", "dynamo"):
        (bin_dir / program).symlink_to(shutil.which(program))
    proc = dynix("serve", "--graph", "echo", "--state-dir", tmp_path / "state",
                 env={"PATH": str(bin_dir)})  # fmt: skip
    error = one_line_error(proc)
    assert "nats-server not found on PATH: apt-get install nats-server" in error
    assert "nix run .#dynix" in error


def test_missing_examples_for_a_vllm_graph_say_where_they_come_from(dynix, tmp_path):
    proc = dynix(
        "serve", "--graph", "agg", "--examples", tmp_path, "--state-dir", tmp_path, "--dry-run"
    )
    assert "is not Dynamo's examples/llm (it has no graphs/ folder)" in one_line_error(proc)


def test_control_plane_option_must_name_etcd_and_nats(dynix, tmp_path):
    proc = dynix("serve", "--control-plane", "http://10.0.0.1:2379", "--role", "graph",
                 "--state-dir", tmp_path, "--dry-run")  # fmt: skip
    assert "--control-plane must be `local` or ETCD_URL" in one_line_error(proc)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare"
)
def test_loopback_only_network_is_refused_with_the_reason(tmp_path):
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "dynix", "serve", "--graph", "echo",
         "--state-dir", str(tmp_path / "state")],
        env=conftest.test_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    error = one_line_error(proc)
    assert "no network interface other than loopback has an IPv4 address" in error
    assert "LocalIpAddressNotFound" in error


def test_init_writes_a_commented_default_and_set_keeps_comments(dynix, tmp_path):
    path = tmp_path / "dynix.toml"
    assert dynix("serve", "init", path).returncode == 0
    text = path.read_text()
    assert "# Which Dynamo graph to serve" in text
    again = dynix("serve", "init", path)
    assert "already exists (use --force to overwrite it)" in one_line_error(again)
    proc = dynix("serve", "init", path, "--set", "serve.port=9100", "--set", "serve.graph=echo")
    assert proc.returncode == 0, proc.stderr
    edited = path.read_text()
    assert "port = 9100" in edited and 'graph = "echo"' in edited
    assert "# Which Dynamo graph to serve" in edited
    dry = dynix("serve", "--config", path, "--dry-run")
    assert "port: 9100" in dry.stdout
    bad = dynix("serve", "init", path, "--set", "serve.port=many")
    assert "serve.port must be an integer, not 'many'" in one_line_error(bad)
    assert path.read_text() == edited


def test_status_without_a_stack_says_so(dynix, tmp_path):
    proc = dynix("status", "--state-dir", tmp_path)
    assert f"no stack has run from {tmp_path}" in one_line_error(proc)


def test_serve_examples_ship_inside_the_package():
    import dynix.serve.host as host

    assert (host.ECHO_EXAMPLES / "graphs" / "echo.py").is_file()
    assert (host.ECHO_EXAMPLES / "components" / "echo.py").is_file()
    assert Path(host.ECHO_EXAMPLES).parts[-2:] == ("serve", "examples")


def test_init_set_on_a_malformed_config_names_its_line_and_leaves_it(dynix, tmp_path):
    path = tmp_path / "dynix.toml"
    path.write_text("[serve\nport = 1\n")
    proc = dynix("serve", "init", path, "--set", "serve.port=9000")
    assert one_line_error(proc).startswith(f"Error: {path}:1:")
    assert path.read_text() == "[serve\nport = 1\n"


UPSTREAM_EXAMPLES = REPO.parent / "shared" / "upstream" / "dynamo-v0.2.0" / "examples" / "llm"


@pytest.mark.skipif(
    not UPSTREAM_EXAMPLES.is_dir(), reason=f"needs Dynamo v0.2.0's examples at {UPSTREAM_EXAMPLES}"
)
def test_the_vllm_frontend_binds_serve_host_once_dynamo_is_patched(dynix, tmp_path):
    """Dynamo 0.2.0's own frontend listens on every interface; with our Dynamo series applied
    (as the flake builds it), the vLLM graphs' frontend listens where serve.host says."""
    examples = {}
    for name in ("upstream", "patched"):
        tree = tmp_path / name
        shutil.copytree(UPSTREAM_EXAMPLES, tree / "examples" / "llm")
        examples[name] = tree / "examples" / "llm"
    patch = PATCHES / "dynamo" / "0002-frontend-listen-on-configured-host.patch"
    subprocess.run(
        ["patch", "-p1", "--fuzz=0", "-i", str(patch)], cwd=tmp_path / "patched", check=True
    )
    binds = {}
    for name, folder in examples.items():
        args = ["--graph", "agg", "--examples", folder, "--state-dir", tmp_path / name]
        proc = dynix("serve", *args, "--dry-run")
        assert proc.returncode == 0, proc.stderr
        [ports] = [line for line in proc.stdout.splitlines() if line.startswith("ports: frontend")]
        binds[name] = ports.split(",")[0].removeprefix("ports: frontend ")
        assert rendered_yaml(proc.stdout)["Frontend"]["host"] == "127.0.0.1"
    assert binds == {"upstream": "0.0.0.0:8000", "patched": "127.0.0.1:8000"}


def test_dry_run_of_a_cluster_member_shows_the_clustered_argv(dynix, tmp_path):
    state = tmp_path / "state"
    proc = dynix("serve", "--role", "control-plane", "--advertise", "10.231.0.2",
                 "--cluster", "10.231.0.1,10.231.0.2,10.231.0.3", "--state-dir", state,
                 "--dry-run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    members = "10.231.0.1,10.231.0.2,10.231.0.3"
    token = "dynix-" + hashlib.sha256(members.encode()).hexdigest()[:16]
    assert f"argv: {shutil.which('nats-server')} -c {state}/nats.conf -js -sd {state}/nats " \
        "-a 10.231.0.2 -p 4222 " \
        "-m 8222 --cluster nats://10.231.0.2:6222 --cluster_name dynix " \
        "--routes nats://10.231.0.1:6222,nats://10.231.0.3:6222 " \
        "--server_name dynix-10-231-0-2" in out  # fmt: skip
    assert f"argv: {shutil.which('etcd')} --name dynix-10-231-0-2 --data-dir {state}/etcd " \
        "--listen-client-urls http://10.231.0.2:2379 " \
        "--advertise-client-urls http://10.231.0.2:2379 " \
        "--listen-peer-urls http://10.231.0.2:2380 " \
        "--initial-advertise-peer-urls http://10.231.0.2:2380 " \
        "--initial-cluster dynix-10-231-0-1=http://10.231.0.1:2380," \
        "dynix-10-231-0-2=http://10.231.0.2:2380,dynix-10-231-0-3=http://10.231.0.3:2380 " \
        f"--initial-cluster-token {token} --initial-cluster-state new" in out  # fmt: skip
    assert "# control plane: etcd http://10.231.0.1:2379,http://10.231.0.2:2379," \
        "http://10.231.0.3:2379, nats nats://10.231.0.2:4222" in out  # fmt: skip
    # What the command line cannot say: the leaf-node listener and the JetStream domain.
    conf = proc.stdout.split(f"# {state}/nats.conf\n", 1)[1].split("\n# ", 1)[0]
    assert conf.split() == ["jetstream", "{", "domain:", '"dynix"', "}", "leafnodes", "{",
                            "host:", '"10.231.0.2"', "port:", "7422", "}"]  # fmt: skip
    assert nats_server_accepts(conf, tmp_path / "member.conf")
    assert "ports: nats client 10.231.0.2:4222, nats monitoring 10.231.0.2:8222, nats cluster " \
        "10.231.0.2:6222, nats leaf nodes 10.231.0.2:7422" in out  # fmt: skip
    assert not state.exists()
    # Every member derives the same token from the member list, in whatever order it is given.
    other = dynix("serve", "--role", "control-plane", "--advertise", "10.231.0.3",
                  "--cluster", "10.231.0.3,10.231.0.1,10.231.0.2", "--state-dir", state,
                  "--dry-run")  # fmt: skip
    assert f"--initial-cluster-token {token} " in other.stdout


def nats_server_accepts(text: str, path: Path) -> bool:
    """Whether nats-server itself (`-t`) takes `text` as its config file."""
    path.write_text(text)
    result = subprocess.run(
        [shutil.which("nats-server") or "nats-server", "-t", "-c", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return "is valid" in result.stdout + result.stderr


def test_graph_dry_run_with_every_member_runs_a_local_forwarder_and_leaf(dynix, tmp_path):
    members = ("--control-plane", "http://10.231.0.1:2379,http://10.231.0.2:2379,"
               "nats://10.231.0.1:4222,nats://10.231.0.2:4222")  # fmt: skip
    proc = dynix("serve", "--role", "graph", "--graph", "echo", "--state-dir", tmp_path,
                 "--advertise", "10.231.0.9", *members, "--dry-run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "env: ETCD_ENDPOINTS=http://127.0.0.1:23790\n" in out
    assert "env: NATS_SERVER=nats://127.0.0.1:14222\n" in out
    assert (f"argv: {sys.executable} -m dynix.serve.forward 127.0.0.1:23790 "
            "http://10.231.0.1:2379,http://10.231.0.2:2379 ") in out  # fmt: skip
    assert f"argv: {shutil.which('nats-server')} -c {tmp_path}/nats-leaf.conf\n" in out
    leaf = out.split(f"# {tmp_path}/nats-leaf.conf\n", 1)[1].split("\n# ", 1)[0]
    assert 'remotes: [{ urls: ["nats-leaf://10.231.0.1:7422", "nats-leaf://10.231.0.2:7422"] }]' \
        in leaf  # fmt: skip
    assert 'default_js_domain {\n  "$G": "dynix"\n}' in leaf, leaf
    assert 'ping_interval: "2s"' in leaf
    assert nats_server_accepts(leaf, tmp_path / "leaf.conf")
    # Told not to: every member's etcd, one NATS server (Dynamo 0.2.0 takes one).
    config = tmp_path / "direct.toml"
    config.write_text("[serve.control-plane]\nlocal-proxy = false\n")
    proc = dynix("serve", "--config", config, "--role", "graph", "--graph", "echo",
                 "--state-dir", tmp_path, *members, "--dry-run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "env: ETCD_ENDPOINTS=http://10.231.0.1:2379,http://10.231.0.2:2379" in proc.stdout
    assert "env: NATS_SERVER=nats://10.231.0.1:4222\n" in proc.stdout
    assert "[etcd-proxy]" not in proc.stdout and "[nats-leaf]" not in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "10.0.0.1,10.0.0.2"],
         "a clustered control plane needs --advertise ADDR: this member's address"),
        (["--cluster", "10.0.0.1,10.0.0.2", "--advertise", "10.0.0.5"],
         "--advertise 10.0.0.5 is not one of the cluster's members (10.0.0.1, 10.0.0.2)"),
        (["--cluster", "10.0.0.1,10.0.0.1", "--advertise", "10.0.0.1"],
         "the cluster names a member twice"),
        (["--cluster", "http://10.0.0.1,10.0.0.2", "--advertise", "10.0.0.2"],
         "a cluster member must be an address or host name"),
        (["--cluster", "10.0.0.1", "--advertise", "10.0.0.1",
          "--control-plane", "http://10.0.0.1:2379,nats://10.0.0.1:4222"],
         "--cluster runs a control-plane member; --control-plane joins one: not both"),
    ],
)  # fmt: skip
def test_cluster_options_are_checked(dynix, tmp_path, args, message):
    proc = dynix("serve", "--role", "control-plane", *args, "--state-dir", tmp_path, "--dry-run")
    assert message in one_line_error(proc)


def test_cluster_needs_the_control_plane_role(dynix, tmp_path):
    proc = dynix("serve", "--cluster", "10.0.0.1", "--advertise", "10.0.0.1",
                 "--state-dir", tmp_path, "--dry-run")  # fmt: skip
    assert "--cluster runs a member of a clustered control plane: use it with --role " \
        "control-plane" in one_line_error(proc)  # fmt: skip


def test_an_advertised_address_not_on_this_machine_is_refused(dynix, tmp_path):
    proc = dynix("serve", "--role", "control-plane", "--advertise", "192.0.2.7",
                 "--cluster", "192.0.2.7,192.0.2.8", "--state-dir", tmp_path / "s",
                 timeout=60)  # fmt: skip
    assert "192.0.2.7 (nats client) is not an address of this machine" in one_line_error(proc)


@pytest.mark.parametrize("folder", ["leases", "node"])
def test_a_link_planted_for_a_node_folder_is_refused_and_what_started_stops(
    dynix, tmp_path, folder
):
    """`leases/` is made before anything starts, `node/` (the graph module's folder) just
    before the graph: either way the link is not followed, and nats and etcd, if started,
    stop again."""
    ports = stack_ports()
    state = tmp_path / "state"
    config = write_config(tmp_path / "dynix.toml", state, ports, graph="echo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state.mkdir()
    (state / folder).symlink_to(elsewhere)
    proc = dynix("serve", "--config", config, timeout=90)
    error = one_line_error(proc)
    assert f"{state / folder} is a symbolic link" in error
    assert list(elsewhere.iterdir()) == []
    assert all(port_free(p) for p in ports.values())
    if folder == "node":  # nats and etcd had started: the stack says it failed
        assert json.loads((state / "state.json").read_text())["status"] == "failed"


def test_a_state_folder_through_a_link_another_user_planted_is_refused(dynix, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state = plant_link(tmp_path / "shared", "state", elsewhere)
    ports = stack_ports()
    config = write_config(tmp_path / "dynix.toml", state, ports, graph="echo")
    # refused where the plan is made, before anything starts; --dry-run first, so that a
    # regression fails there and leaves no stack running
    for dry in (["--dry-run"], []):
        proc = dynix("serve", "--config", config, *dry, timeout=30)
        assert f"another user (uid {PLANTER})" in one_line_error(proc)
    assert list(elsewhere.iterdir()) == []


def test_graph_node_advertise_checks(dynix, tmp_path):
    """An --advertise that is no address here is named as such; one that is, but not where
    Dynamo's processes would take response streams, is refused naming both."""
    members = "http://127.0.0.1:1,nats://127.0.0.1:2"
    port = str(stack_ports()["port"])  # free ones, wherever the test runs
    graph = ("serve", "--role", "graph", "--graph", "echo", "--port", port,
             "--control-plane", members)  # fmt: skip
    proc = dynix(*graph, "--state-dir", tmp_path / "a", "--advertise", "192.0.2.254")
    assert "192.0.2.254 (frontend) is not an address of this machine" in one_line_error(proc)
    from dynix.serve import host

    found = host.response_address()
    if found is None or found.startswith("127."):
        pytest.skip("no non-loopback address to compare with")
    proc = dynix(*graph, "--state-dir", tmp_path / "b", "--advertise", "127.0.0.1")
    error = one_line_error(proc)
    assert f"would tell other nodes to send responses to {found}" in error
    assert "not 127.0.0.1" in error
