"""The stack config (TOML) and its rendering as Dynamo's YAML service config."""

from __future__ import annotations

import json

import pytest
import yaml

from dynix.errors import DynixError
from dynix.serve import config, render


def test_default_text_parses_to_the_defaults():
    parsed = config.parse(config.DEFAULT_TEXT)
    assert parsed.graph == "disagg" and parsed.port == 8000
    assert parsed.control_plane.etcd_urls == ["http://127.0.0.1:2379"]
    assert parsed.control_plane.nats_url == "nats://127.0.0.1:4222"
    assert parsed.supervise.max_restarts == 3


def test_external_control_plane_uses_its_urls():
    parsed = config.parse(
        '[serve.control-plane]\nmode = "external"\n'
        'etcd = "http://10.0.0.1:2379, http://10.0.0.2:2379"\nnats = "nats://10.0.0.1:4222"\n'
    )
    assert parsed.control_plane.etcd_urls == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
    assert parsed.control_plane.nats_url == "nats://10.0.0.1:4222"


def test_wildcard_host_is_reached_through_loopback():
    parsed = config.parse('[serve.control-plane]\nhost = "0.0.0.0"\netcd-port = 3000\n')
    assert parsed.control_plane.etcd_urls == ["http://127.0.0.1:3000"]


def test_bad_url_is_refused():
    with pytest.raises(DynixError, match="NATS URL must look like nats://HOST:PORT"):
        config.parse('[serve.control-plane]\nmode = "external"\nnats = "10.0.0.1:4222"\n')


def test_override_applies_only_given_options():
    base = config.parse("[serve]\nport = 9000\n")
    new = base.override(port=None, graph="echo", decode_workers=3, cp_mode="local")
    assert (new.port, new.graph, new.decode.workers) == (9000, "echo", 3)


def test_services_table_is_merged_into_the_rendered_config():
    parsed = config.parse(
        '[serve]\ngraph = "agg"\n[serve.services.VllmWorker]\nenforce-eager = true\n'
    )
    rendered = render.service_config(parsed)
    assert rendered["VllmWorker"]["enforce-eager"] is True
    assert "PrefillWorker" not in rendered


def test_gpu_needs_count_workers_times_gpus():
    parsed = config.parse("[serve.decode]\nworkers = 2\ngpus-per-worker = 4\n").override(
        graph="disagg"
    )
    rendered = render.service_config(parsed)
    assert rendered["VllmWorker"]["tensor-parallel-size"] == 4
    assert sum(n.total for n in render.gpu_needs(rendered)) == 9


@pytest.mark.parametrize("graph", render.GRAPH_SERVICES)
def test_rendered_yaml_reads_back_as_the_same_config(graph):
    rendered = render.service_config(config.StackConfig(graph=graph))
    assert yaml.safe_load(render.to_yaml(rendered)) == rendered
    assert list(rendered)[1:] == list(render.GRAPH_SERVICES[graph])


def test_yaml_scalars_that_need_quotes_are_quoted():
    text = render.to_yaml({"a": "true", "b": "1.5", "c": '{"x":1}', "d": "plain/name-1", "e": []})
    assert yaml.safe_load(text) == {"a": "true", "b": "1.5", "c": '{"x":1}', "d": "plain/name-1",
                                    "e": []}  # fmt: skip
    assert "d: plain/name-1" in text
    assert json.dumps('{"x":1}') in text
